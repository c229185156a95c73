"""The market family: the last ``window`` book snapshots → mid-price direction (down/flat/up).

Teacher: DeepLOB-style (Zhang, Zohren & Roberts, 2019), scaled for 2 CPU cores — convolutions
that pair price/size then levels, an inception module over time, an LSTM, a linear head.
Students: :class:`WindowMLP` — an MLP over a summary of the window (last snapshot, mean of the
last 10, mean of the window), so every compression step (including structured pruning and
weight sharing) applies. Both read either feature layout (:mod:`finscore.features.market`):
with ``book40+mid`` the teacher's LSTM also reads the window's log-mid path relative to its
last snapshot and its one-step returns, and the students' summary includes the relative path.
Labels: FI-2010 smoothed mid change at horizon k against α, with α set
on the training part so the three classes are roughly balanced.

The window, the horizon and the layout are declared (``finscore/families/market.toml``: a
``sequence`` feature and a ``smoothed_move`` label): :func:`declared_market`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from finscore.compression.family import Softmax, TrainData
from finscore.compression.nn import MLP, Standardize, fit, predict
from finscore.features.market import (
    BOOK_LAYOUT,
    LEVELS,
    N_FEATURES,
    direction_labels,
    layout_width,
    make_windows,
    rows_from_book_array,
    rows_from_levels,
    window_ends,
)
from finscore.models.evaluation import accuracy, macro_f1

if TYPE_CHECKING:
    from finscore.families.spec import FamilySpec

LOBSTER_LEVELS = {"GOOG": 10, "AMZN": 5, "AAPL": 1}  # the stored sample files


def relative_path(x: torch.Tensor) -> torch.Tensor:
    """``book40+mid`` windows [N, T, 41]: the log-mid column becomes its difference from the
    window's last snapshot (basis points); ``book40`` windows are returned unchanged."""
    if x.shape[-1] == N_FEATURES:
        return x
    lm = x[..., N_FEATURES:]
    return torch.cat([x[..., :N_FEATURES], lm - lm[:, -1:]], dim=-1)


class DeepLOB(nn.Module):
    """Conv blocks over (price, size) pairs and levels → inception → LSTM → linear."""

    def __init__(
        self, mean: np.ndarray, std: np.ndarray, filters: int = 16, lstm: int = 32,
        path_std: tuple[float, float] | None = None,
    ) -> None:  # fmt: skip
        """``path_std``: read ``book40+mid`` windows; the LSTM also gets the log-mid relative
        to the last snapshot and the one-step log-mid return, divided by these scales."""
        super().__init__()
        self.scale = Standardize(mean[:N_FEATURES], std[:N_FEATURES])
        self.path = path_std is not None
        self.path_scale = Standardize(np.zeros(2), np.asarray(path_std or (1.0, 1.0)))
        f = filters
        act = nn.LeakyReLU(0.01)
        self.conv = nn.Sequential(
            nn.Conv2d(1, f, (1, 2), stride=(1, 2)), act,  # 40 → 20: (price, size) pairs
            nn.Conv2d(f, f, (3, 1), padding=(1, 0)), act,
            nn.Conv2d(f, f, (3, 1), padding=(1, 0)), act,
            nn.Conv2d(f, f, (1, 2), stride=(1, 2)), act,  # 20 → 10: ask/bid at each level
            nn.Conv2d(f, f, (3, 1), padding=(1, 0)), act,
            nn.Conv2d(f, f, (1, 10)), act,  # 10 levels → 1
        )  # fmt: skip
        self.inc1 = nn.Sequential(nn.Conv2d(f, f, (1, 1)), nn.LeakyReLU(0.01),
                                  nn.Conv2d(f, f, (3, 1), padding=(1, 0)), nn.LeakyReLU(0.01))  # fmt: skip
        self.inc2 = nn.Sequential(nn.Conv2d(f, f, (1, 1)), nn.LeakyReLU(0.01),
                                  nn.Conv2d(f, f, (5, 1), padding=(2, 0)), nn.LeakyReLU(0.01))  # fmt: skip
        self.inc3 = nn.Sequential(nn.MaxPool2d((3, 1), stride=1, padding=(1, 0)),
                                  nn.Conv2d(f, f, (1, 1)), nn.LeakyReLU(0.01))  # fmt: skip
        self.lstm = nn.LSTM(3 * f + (2 if self.path else 0), lstm, batch_first=True)
        self.out = nn.Linear(lstm, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(self.scale(x[..., :N_FEATURES]).unsqueeze(1))  # [N, f, T, 1]
        h = torch.cat([self.inc1(h), self.inc2(h), self.inc3(h)], dim=1)  # [N, 3f, T, 1]
        h = h.squeeze(-1).transpose(1, 2)  # [N, T, 3f]
        if self.path:
            lm = x[..., N_FEATURES]  # [N, T]
            rel = lm - lm[:, -1:]
            ret = torch.cat([lm[:, :1] - lm[:, :1], lm[:, 1:] - lm[:, :-1]], dim=1)
            h = torch.cat([h, self.path_scale(torch.stack([rel, ret], dim=-1))], dim=-1)
        out, _ = self.lstm(h)
        return self.out(out[:, -1])


def summarize(x: torch.Tensor) -> torch.Tensor:
    """[N, T, W] → [N, 3W]: last snapshot, mean of the last 10, mean of the window (of
    :func:`relative_path` of it)."""
    x = relative_path(x)
    return torch.cat([x[:, -1], x[:, -10:].mean(1), x.mean(1)], dim=1)


class WindowMLP(MLP):
    """An :class:`MLP` over :func:`summarize` of the window (students of the market family)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(summarize(x))


class MarketFamily:
    name = "market"
    metric = "macro_f1"
    input_name = "book"
    output_name = "probs"

    def __init__(
        self, window: int = 100, horizon: int = 10, *, symbol: str = "GOOG",
        layout: str = BOOK_LAYOUT,
    ) -> None:  # fmt: skip
        """``symbol``: the LOBSTER sample read by ``load_data("lobster")``; ``layout``: the
        feature layout the models read (recorded in :meth:`params`)."""
        self.window, self.horizon = window, horizon
        self.symbol, self.layout = symbol, layout
        self.width = layout_width(layout)
        self.alpha = 0.0
        # set by load_data: the mid of every event, and each split's (start, window ends)
        self.mid = np.zeros(0)
        self.splits: list[tuple[int, np.ndarray]] = []

    # -- data -------------------------------------------------------------------------------
    def _rows_and_mid(
        self, source: str, data_dir: Path | None, seed: int, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if source == "lobster":
            from finscore.sim.lobster import load_lobster

            levels = LOBSTER_LEVELS.get(self.symbol, LEVELS)
            book = load_lobster(self.symbol, levels, data_dir).book
            if levels < LEVELS:  # fewer levels: padded as the worker pads a short book
                mid = (book[:, 0] + book[:, 2]) / 2
                wide = np.zeros((len(book), LEVELS, 4))
                wide[:, :levels] = book.reshape(len(book), levels, 4)
                count = np.full(len(book), levels)
                rows = rows_from_levels(
                    wide[..., 0], wide[..., 1], count, wide[..., 2], wide[..., 3], count,
                    self.layout,
                )  # fmt: skip
                return rows, mid
        else:
            from finscore.sim.market import MarketSimConfig, simulate_book

            book = simulate_book(n, MarketSimConfig(seed=seed)).lobster_order()
        mid = (book[:, 0] + book[:, 2]) / 2
        return rows_from_book_array(book, self.layout), mid

    def load_data(
        self, source: str = "sim", *, data_dir: Path | None = None, seed: int = 0, quick: bool = True,
        n: int | None = None, max_train: int | None = None,
    ) -> TrainData:  # fmt: skip
        """Time-ordered splits: train 0–60 %, val 60–75 %, test 75–100 %, with a gap of
        window + horizon events between them so no window or label crosses a boundary."""
        rows, mid = self._rows_and_mid(source, data_dir, seed, n or (30_000 if quick else 120_000))
        total = len(rows)
        gap = self.window + self.horizon
        cuts = [0, int(0.6 * total), int(0.75 * total), total]
        # α from the training part only: about a third of the changes are "flat".
        train_mid = mid[: cuts[1]]
        raw = direction_labels(train_mid, self.horizon, 0.0)
        c = np.r_[0.0, np.cumsum(train_mid)]
        k = self.horizon
        idx = np.arange(k - 1, len(train_mid) - k)
        change = (
            np.abs((c[idx + 1 + k] - c[idx + 1]) - (c[idx + 1] - c[idx + 1 - k]))
            / k
            / train_mid[idx]
        )
        self.alpha = float(np.quantile(change, 1 / 3)) if len(change) else 0.0
        del raw
        stride = 4 if quick else 2
        limit = max_train or (20_000 if quick else 60_000)
        parts = []
        self.mid, self.splits = mid, []
        for i in range(3):
            lo, hi = cuts[i] + (gap if i else 0), cuts[i + 1]
            y = direction_labels(mid[lo:hi], self.horizon, self.alpha)
            x_w, y_w = make_windows(rows[lo:hi], y, self.window, stride)
            ends = lo + window_ends(y, self.window, stride)
            if i == 0 and len(x_w) > limit:
                x_w, y_w, ends = x_w[-limit:], y_w[-limit:], ends[-limit:]
            parts.append((x_w, y_w))
            self.splits.append((lo, ends))
        (xtr, ytr), (xva, yva), (xte, yte) = parts
        return TrainData(xtr, ytr, xva, yva, xte, yte,
                         meta={"alpha": self.alpha, "source": source, "events": total})  # fmt: skip

    # -- models -----------------------------------------------------------------------------
    def _stats(self, data: TrainData) -> tuple[np.ndarray, np.ndarray]:
        flat = data.x_train[:, -1, :]
        return flat.mean(0), flat.std(0)

    def teacher(self, data: TrainData) -> nn.Module:
        path_std = None
        if data.x_train.shape[-1] > N_FEATURES:
            lm = data.x_train[:4096, :, N_FEATURES].astype(np.float64)
            rel, ret = lm - lm[:, -1:], np.diff(lm, axis=1)
            path_std = (float(rel.std()), float(ret.std()))
        return DeepLOB(*self._stats(data), path_std=path_std)

    def student(self, data: TrainData, width: int) -> nn.Module:
        s = summarize(torch.as_tensor(data.x_train[:4096])).numpy()
        n_in = 3 * data.x_train.shape[-1]
        return WindowMLP(n_in, [width, max(4, width // 2)], 3, s.mean(0), s.std(0))

    def train(
        self, model: nn.Module, data: TrainData, *, epochs: int, seed: int,
        soft: np.ndarray | None = None, temperature: float = 1.0, alpha: float = 0.0,
        lr: float = 1e-3, after_step=None,  # noqa: ANN001
    ) -> nn.Module:  # fmt: skip
        """Cross-entropy, or with teacher logits α·T²·KL(σ(t/T) ‖ σ(s/T)) + (1 − α)·CE."""
        t = temperature

        def loss(out: torch.Tensor, y: torch.Tensor, soft_t: torch.Tensor | None) -> torch.Tensor:
            hard = F.cross_entropy(out, y.long())
            if soft_t is None or alpha == 0:
                return hard
            kl = F.kl_div(
                F.log_softmax(out / t, -1), F.softmax(soft_t / t, -1), reduction="batchmean"
            )
            return alpha * t * t * kl + (1 - alpha) * hard

        return fit(model, data.x_train, data.y_train, loss=loss, epochs=epochs, lr=lr, seed=seed,
                   targets=soft, batch_size=128, after_step=after_step)  # fmt: skip

    def logits(self, model: nn.Module, x: np.ndarray) -> np.ndarray:
        return predict(model, x, batch_size=1024)

    def head(self, model: nn.Module) -> nn.Module:
        return Softmax(model)

    def evaluate(self, outputs: np.ndarray, data: TrainData, split: str = "test") -> dict:
        y = data.y_test if split == "test" else data.y_val
        pred = np.asarray(outputs).argmax(1)
        return {"macro_f1": macro_f1(y, pred), "accuracy": accuracy(y, pred)}

    def threshold(self, outputs_val: np.ndarray, data: TrainData) -> float | None:
        return None

    def params(self, data: TrainData) -> dict:
        return {"window": self.window, "horizon": self.horizon, "alpha": self.alpha,
                "layout": self.layout}  # fmt: skip

    def feature_names(self) -> list[str]:
        return []

    def example(self, data: TrainData, n: int = 2) -> np.ndarray:
        return data.x_test[:n].astype(np.float32)


def declared_market(
    spec: FamilySpec, *, layout: str | None = None, symbol: str = "GOOG"
) -> MarketFamily:
    """The :class:`MarketFamily` a declaration describes: windows of its ``sequence``'s
    ``events`` (on every plan: a worker started with the declaration admits models of that
    window only), its ``layout`` unless ``layout`` overrides it (both recorded in the
    manifest's params, which workers check), and its ``smoothed_move`` label's horizon.
    :class:`ValueError` for a declaration that is not a window model's."""
    seq, move = spec.sequence, spec.move
    if seq is None or move is None:
        raise ValueError(
            f"family {spec.name!r} is not a window model's: it needs a sequence feature and a "
            "smoothed_move label (see finscore/families/market.toml)"
        )
    return MarketFamily(window=seq.events, horizon=move.horizon, symbol=symbol,
                        layout=layout or seq.layout)  # fmt: skip
