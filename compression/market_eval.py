"""What a market model must beat, what it is worth, and training it to convergence.

* Baselines on the windows :meth:`MarketFamily.load_data` made (it records each split's window
  ends and the mids): :func:`majority_baseline` (the training split's most common class),
  :func:`persistence_baseline` (the newest label already known at the window's last event t:
  the smoothed move that ended k events ago, ``label[t − k]``, whose future half is the mids
  t − k + 1 … t), and :func:`fit_returns_logistic` (multinomial logistic regression on the mid
  returns over the window: ``ln(mid_t / mid_{t−j})`` for a few lags j < window, plus the
  smoothed move that ended at t).
* :func:`signal_pnl`: a signal-following strategy per window (long on UP, short on DOWN, flat
  on FLAT, held for k events), its hit rate and P&L before costs in mid-price ticks.
* :func:`train_early_stopping`: minibatch Adam epoch by epoch, the validation macro-F1 after
  each, stopping after ``patience`` epochs without a new best and returning the best weights;
  with ``checkpoint`` every epoch is saved (model, optimiser, data-order generator, curve) so a
  killed run resumes where it stopped and ends bit-identical to one that never stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from finscore.compression.family import TrainData
from finscore.compression.market import MarketFamily
from finscore.compression.nn import predict, seed_everything
from finscore.features.market import DOWN, FLAT, UP, direction_labels
from finscore.models.evaluation import accuracy, macro_f1

__all__ = [
    "RETURN_LAGS",
    "EpochRecord",
    "TrainResult",
    "majority_baseline",
    "persistence_baseline",
    "return_features",
    "fit_returns_logistic",
    "signal_pnl",
    "score",
    "train_early_stopping",
]

RETURN_LAGS = (1, 2, 5, 10, 20, 50, 99)


def score(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Macro-F1 and accuracy of class predictions."""
    return {"macro_f1": macro_f1(y, pred), "accuracy": accuracy(y, pred)}


def majority_baseline(data: TrainData) -> np.ndarray:
    """Test-split predictions: the training split's most common class everywhere."""
    return np.full(len(data.y_test), int(np.bincount(data.y_train, minlength=3).argmax()))


def persistence_baseline(fam: MarketFamily, split: int = 2) -> np.ndarray:
    """Predictions for split ``split`` (0 train, 1 validation, 2 test): at a window ending at
    event t, the label at t − k (the newest one whose future mids are all known at t), FLAT
    where there is none."""
    k = fam.horizon
    start, ends = fam.splits[split]
    hi = fam.splits[split + 1][0] if split < 2 else len(fam.mid)
    labels = direction_labels(fam.mid[start:hi], k, fam.alpha)
    at = ends - start - k
    known = at >= 0
    pred = np.full(len(ends), FLAT, dtype=np.int64)
    pred[known] = labels[at[known]]
    pred[pred < 0] = FLAT
    return pred


def return_features(fam: MarketFamily, split: int) -> np.ndarray:
    """[windows, len(RETURN_LAGS) + 1] float32: the mid's log returns into each window's last
    event over :data:`RETURN_LAGS` (lags beyond the window are clipped to it), in basis
    points, and the smoothed move that ended there ((m₋(t) − m₋(t − k)) / m₋(t − k), the
    persistence baseline's quantity before thresholding)."""
    _, ends = fam.splits[split]
    lm = np.log(fam.mid)
    k = fam.horizon
    cols = [(lm[ends] - lm[ends - min(j, fam.window - 1)]) * 1e4 for j in RETURN_LAGS]
    c = np.r_[0.0, np.cumsum(fam.mid)]
    m_now = (c[ends + 1] - c[ends + 1 - k]) / k
    m_then = (c[ends + 1 - k] - c[np.maximum(ends + 1 - 2 * k, 0)]) / k
    cols.append((m_now - m_then) / m_then * 1e4)
    return np.stack(cols, axis=1).astype(np.float32)


def fit_returns_logistic(
    fam: MarketFamily, data: TrainData, *, epochs: int = 200, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on :func:`return_features` (standardised on the
    training split, full-batch L-BFGS, small L2). Returns (validation, test) predictions."""
    seed_everything(seed)
    xs = [torch.as_tensor(return_features(fam, i)) for i in range(3)]
    mu, sd = xs[0].mean(0), xs[0].std(0).clamp_min(1e-6)
    xs = [(x - mu) / sd for x in xs]
    y = torch.as_tensor(data.y_train).long()
    model = nn.Linear(xs[0].shape[1], 3)
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=epochs)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(xs[0]), y) + 1e-4 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return model(xs[1]).argmax(1).numpy(), model(xs[2]).argmax(1).numpy()


def signal_pnl(fam: MarketFamily, pred: np.ndarray, tick: float = 0.01) -> dict[str, float]:
    """Follow each test window's signal for k events (long UP, short DOWN, nothing on FLAT),
    one unit each, entering and leaving at the mid: trades, hit rate (share of trades whose
    P&L is positive), P&L per trade and in total in ``tick`` units, before costs."""
    _, ends = fam.splits[2]
    pos = np.where(pred == UP, 1.0, np.where(pred == DOWN, -1.0, 0.0))
    move = (fam.mid[ends + fam.horizon] - fam.mid[ends]) / tick
    pnl = pos * move
    trades = pos != 0
    n = int(trades.sum())
    return {
        "trades": n,
        "hit_rate": float((pnl[trades] > 0).mean()) if n else 0.0,
        "pnl_per_trade_ticks": float(pnl[trades].mean()) if n else 0.0,
        "pnl_ticks": float(pnl.sum()),
    }


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_macro_f1: float
    val_loss: float
    seconds: float


@dataclass
class TrainResult:
    model: nn.Module
    curve: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    resumed_from: int = 0


def train_early_stopping(
    model: nn.Module,
    data: TrainData,
    *,
    max_epochs: int = 40,
    patience: int = 4,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    checkpoint: Path | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Cross-entropy training until the validation macro-F1 has not improved for
    ``patience`` epochs (or ``max_epochs``); the model returned holds the best epoch's
    weights. ``checkpoint``: a file written after every epoch and read at the start, so a
    killed run resumes (a checkpoint of another shape fails to load: delete it)."""
    seed_everything(seed)
    xt = torch.as_tensor(data.x_train, dtype=torch.float32)
    yt = torch.as_tensor(data.y_train).long()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    result = TrainResult(model)
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    best = -1.0
    if checkpoint is not None and checkpoint.exists():
        ck = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        best_state, best = ck["best_state"], ck["best"]
        result.curve = [EpochRecord(**r) for r in ck["curve"]]
        result.best_epoch, result.resumed_from = ck["best_epoch"], len(result.curve)
    while len(result.curve) < max_epochs:
        if result.curve and len(result.curve) - result.best_epoch >= patience:
            result.stopped_early = True
            break
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(xt), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        logits = predict(model, data.x_val, batch_size=1024)
        val_f1 = macro_f1(data.y_val, logits.argmax(1))
        val_loss = float(
            F.cross_entropy(torch.as_tensor(logits), torch.as_tensor(data.y_val).long())
        )
        rec = EpochRecord(
            len(result.curve) + 1, total / max(count, 1), val_f1, val_loss,
            round(time.perf_counter() - t0, 1),
        )  # fmt: skip
        result.curve.append(rec)
        if val_f1 > best:
            best, result.best_epoch = val_f1, rec.epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            tmp = checkpoint.with_suffix(".tmp")
            torch.save(
                {"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                 "best_state": best_state, "best": best, "best_epoch": result.best_epoch,
                 "curve": [vars(r) for r in result.curve]},
                tmp,
            )  # fmt: skip
            tmp.replace(checkpoint)
        if on_epoch is not None:
            on_epoch(rec)
    else:
        result.stopped_early = len(result.curve) - result.best_epoch >= patience
    model.load_state_dict(best_state)
    model.eval()
    return result
