"""The fraud family: tabular features per transaction → fraud probability.

Data comes from the fraud family's declaration (``fraud_declared.toml``), replayed by the
worker's own engine (:func:`finscore.families.fraud.training_features`), over
either the simulator or the fraud handbook's dataset with its published protocol: train on
2018-07-25 → 07-31, leave the one-week label delay, test on 2018-08-08 → 08-14 (the week
before the training week is the validation set for thresholds and early choices).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from finscore.compression.family import Sigmoid, TrainData
from finscore.compression.nn import MLP, Ensemble, fit, predict
from finscore.families import builtin_family
from finscore.families.fraud import FAMILY, training_features
from finscore.features.fraud import FEATURES_VERSION, FRAUD_FEATURE_NAMES, FraudFeatureConfig
from finscore.models.evaluation import average_precision, card_precision_at_k, roc_auc

DAY_MS = 86_400_000


def _ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True)
class FraudSplits:
    """Half-open day ranges [start, end) of the three splits."""

    train: tuple[str, str] = ("2018-07-25", "2018-08-01")
    val: tuple[str, str] = ("2018-07-18", "2018-07-25")
    test: tuple[str, str] = ("2018-08-08", "2018-08-15")

    def shifted(self, days: int) -> FraudSplits:
        """The same splits ``days`` later: fold ``k`` of the handbook's prequential test
        estimate is the default splits shifted by ``7 * k`` days."""

        def move(r: tuple[str, str]) -> tuple[str, str]:
            a, b = (datetime.fromisoformat(d) + timedelta(days=days) for d in r)
            return a.date().isoformat(), b.date().isoformat()

        return FraudSplits(move(self.train), move(self.val), move(self.test))


def known_compromised_filter(
    frame, train: np.ndarray, test_start: int, days: int, delay_days: int
) -> np.ndarray:  # noqa: ANN001
    """The handbook's test filter: drop test-day transactions of cards already known as
    compromised — frauds in the training set, plus frauds up to the day before each test day
    minus the delay (``get_train_test_set`` in the handbook)."""
    known = set(frame.customer_id[train & (frame.is_fraud == 1)].tolist())
    day = (frame.event_time - test_start) // DAY_MS
    keep = np.zeros(len(frame), dtype=bool)
    for d in range(days):
        seen = (day == d - delay_days - 1) & (frame.is_fraud == 1)
        known |= set(frame.customer_id[seen].tolist())
        today = day == d
        keep |= today & ~np.isin(frame.customer_id, np.fromiter(known, dtype=np.int64))
    return keep


def cached_features(frame, cfg: FraudFeatureConfig | None = None) -> np.ndarray:  # noqa: ANN001
    """:func:`~finscore.families.fraud.training_features`, cached in ``~/.cache/finscore`` keyed by the frame's bytes, the
    config, the declaration, the feature names and the feature code's version (the handbook's 1.75M rows take
    seconds to minutes)."""
    from finscore.sim.data import cache_dir

    cfg = cfg or FraudFeatureConfig()
    # the declaration the features come from is part of the key: editing it invalidates the cache
    declared = builtin_family(FAMILY).to_toml()
    h = hashlib.sha256(repr((cfg, FRAUD_FEATURE_NAMES, FEATURES_VERSION, declared)).encode())
    for col in (frame.transaction_id, frame.event_time, frame.customer_id, frame.terminal_id,
                frame.amount, frame.is_fraud):  # fmt: skip
        h.update(np.ascontiguousarray(col).tobytes())
    path = cache_dir() / f"fraud-features-{h.hexdigest()[:20]}.npy"
    if path.exists():
        return np.load(path)
    x = training_features(frame, cfg)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, x)
    tmp.replace(path)
    return x


def split_frame(
    frame, splits: FraudSplits, cfg: FraudFeatureConfig | None = None,  # noqa: ANN001
    exclude_known_compromised: bool = True, cache: bool = False,
) -> TrainData:  # fmt: skip
    """Featurise the whole history (warm windows), then cut the three weeks (the handbook's
    protocol: the test week drops cards already known as compromised)."""
    cfg = cfg or FraudFeatureConfig()
    first = min(_ms(getattr(splits, n)[0]) for n in ("train", "val", "test"))
    last = max(_ms(getattr(splits, n)[1]) for n in ("train", "val", "test"))
    # Only the rows that feed some split's windows: every feature looks back at most
    # ``cfg.horizon_ms`` (delay + longest window); a day of slack for day-aligned label replay.
    frame = frame.select(frame.between(first - cfg.horizon_ms - DAY_MS, last))
    x = cached_features(frame, cfg) if cache else training_features(frame, cfg)
    y = frame.is_fraud.astype(np.float32)
    out = {}
    for name in ("train", "val", "test"):
        start, end = getattr(splits, name)
        m = frame.between(_ms(start), _ms(end))
        out[name] = m
    if exclude_known_compromised:
        days = (_ms(splits.test[1]) - _ms(splits.test[0])) // DAY_MS
        delay_days = cfg.label_delay_ms // DAY_MS
        out["test"] = known_compromised_filter(
            frame, out["train"], _ms(splits.test[0]), days, delay_days
        )
    test = out["test"]
    return TrainData(
        x[out["train"]], y[out["train"]], x[out["val"]], y[out["val"]], x[test], y[test],
        meta={
            "test_day": frame.event_time[test] // DAY_MS,
            "test_customer": frame.customer_id[test],
            "val_day": frame.event_time[out["val"]] // DAY_MS,
            "val_customer": frame.customer_id[out["val"]],
            "label_delay_ms": cfg.label_delay_ms,
            "splits": splits,
        },
    )  # fmt: skip


def sim_splits(start: str, days: int) -> FraudSplits:
    """Splits for a simulated history of ``days`` days: val, train, delay week, test week."""
    t0 = datetime.fromisoformat(start).replace(tzinfo=UTC)

    def day(k: int) -> str:
        return datetime.fromtimestamp(t0.timestamp() + k * 86400, UTC).date().isoformat()

    return FraudSplits(train=(day(days - 21), day(days - 14)), val=(day(days - 28), day(days - 21)),
                       test=(day(days - 7), day(days)))  # fmt: skip


class FraudFamily:
    """Teacher: a wide MLP with dropout. Students: small MLPs. Gate metric: average precision."""

    name = "fraud"
    metric = "ap"
    input_name = "features"
    output_name = "score"

    def __init__(
        self,
        teacher_hidden: tuple[int, ...] = (256, 256, 128),
        dropout: float = 0.2,
        members: int = 1,
        schedule: str = "cosine",
        teacher_weight_decay: float = 0.0,
    ) -> None:
        """``teacher_weight_decay``: Adam L2 penalty of the teacher's members only (students
        are distilled without it); on the handbook data 1e-4 with 40 epochs lifts the
        validation AP (see docs/BENCHMARKS.md)."""
        self.teacher_hidden = list(teacher_hidden)
        self.dropout = dropout
        self.members = members
        self.schedule = schedule
        self.teacher_weight_decay = teacher_weight_decay

    # -- data -------------------------------------------------------------------------------
    def load_data(
        self,
        source: str = "sim",
        *,
        data_dir: Path | None = None,
        n_customers: int = 2000,
        days: int = 60,
        seed: int = 0,
        drift_day: int | None = None,
        splits: FraudSplits | None = None,
    ) -> TrainData:
        """``handbook``: the handbook's data with its protocol (``splits``, default
        :class:`FraudSplits`); ``sim``: the simulator, splits over its last four weeks."""
        if source == "handbook":
            from finscore.sim.handbook import handbook_path, load_handbook_frame

            return split_frame(
                load_handbook_frame(handbook_path(data_dir)), splits or FraudSplits(), cache=True
            )
        from finscore.sim.transactions import TxSimConfig, simulate_frame

        cfg = TxSimConfig(n_customers=n_customers, n_terminals=2 * n_customers, days=days,
                          seed=seed, drift_day=drift_day)  # fmt: skip
        return split_frame(simulate_frame(cfg), sim_splits(cfg.start, days))

    # -- models -----------------------------------------------------------------------------
    def _mlp(self, data: TrainData, hidden: list[int], dropout: float) -> MLP:
        return MLP(
            len(FRAUD_FEATURE_NAMES), hidden, 1, data.x_train.mean(0), data.x_train.std(0), dropout
        )

    def teacher(self, data: TrainData) -> nn.Module:
        """An MLP, or an :class:`Ensemble` of ``members`` MLPs (a stronger teacher to distil).
        Members are tagged with the teacher's weight decay (what :meth:`train` applies)."""
        members = [self._mlp(data, self.teacher_hidden, self.dropout) for _ in range(self.members)]
        for m in members:
            m.weight_decay = float(self.teacher_weight_decay)
        return Ensemble(members) if self.members > 1 else members[0]

    def student(self, data: TrainData, width: int | tuple[int, ...] | list[int]) -> nn.Module:
        """An MLP student: a width → hidden layers (width, width // 2); a sequence → exactly
        those hidden widths (depth search)."""
        if isinstance(width, int):
            return self._mlp(data, [width, max(4, width // 2)], 0.0)
        return self._mlp(data, [int(w) for w in width], 0.0)

    def train(
        self,
        model: nn.Module,
        data: TrainData,
        *,
        epochs: int,
        seed: int,
        soft: np.ndarray | None = None,
        temperature: float = 1.0,
        alpha: float = 0.0,
        lr: float = 1e-3,
        after_step=None,  # noqa: ANN001
    ) -> nn.Module:
        """BCE on hard labels, or (with ``soft`` teacher logits) the distillation loss
        α·T²·BCE(s/T, σ(t/T)) + (1 − α)·BCE(s, y)."""
        if isinstance(model, Ensemble):  # members learn independently (hard labels, own seeds)
            for i, member in enumerate(model.members):
                self.train(member, data, epochs=epochs, seed=seed + 1000 * i, lr=lr)
            return model.eval()
        t = temperature

        def loss(out: torch.Tensor, y: torch.Tensor, soft_t: torch.Tensor | None) -> torch.Tensor:
            hard = F.binary_cross_entropy_with_logits(out, y.float())
            if soft_t is None or alpha == 0:
                return hard
            target = torch.sigmoid(soft_t / t)
            return (
                alpha * t * t * F.binary_cross_entropy_with_logits(out / t, target)
                + (1 - alpha) * hard
            )

        return fit(model, data.x_train, data.y_train, loss=loss, epochs=epochs, lr=lr, seed=seed,
                   targets=soft, batch_size=max(64, min(512, len(data.x_train) // 100)),
                   after_step=after_step, schedule=self.schedule,
                   weight_decay=float(getattr(model, "weight_decay", 0.0)))  # fmt: skip

    def logits(self, model: nn.Module, x: np.ndarray) -> np.ndarray:
        return predict(model, x)

    def head(self, model: nn.Module) -> nn.Module:
        return Sigmoid(model)

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, outputs: np.ndarray, data: TrainData, split: str = "test") -> dict:
        """AUC ROC, average precision and card precision@100 of probabilities on a split."""
        y = data.y_test if split == "test" else data.y_val
        p = np.asarray(outputs, dtype=np.float64).reshape(-1)
        return {
            "ap": average_precision(y, p),
            "auc": roc_auc(y, p),
            "cp100": card_precision_at_k(
                data.meta[f"{split}_day"], data.meta[f"{split}_customer"], y, p, 100
            ),
        }

    def threshold(self, outputs_val: np.ndarray, data: TrainData) -> float | None:
        """The probability threshold maximising F1 on the validation week."""
        p = np.asarray(outputs_val, dtype=np.float64).reshape(-1)
        y = data.y_val.astype(bool)
        if not y.any():
            return 0.5
        best, best_f1 = 0.5, -1.0
        for th in np.unique(np.quantile(p, np.linspace(0.9, 0.9999, 200))):
            pred = p >= th
            tp = np.sum(pred & y)
            f1 = 2 * tp / (pred.sum() + y.sum()) if pred.sum() else 0.0
            if f1 > best_f1:
                best, best_f1 = float(th), f1
        return best

    def params(self, data: TrainData) -> dict:
        return {
            "feature_mean": data.x_train.mean(0).round(6).tolist(),
            "feature_std": data.x_train.std(0).round(6).tolist(),
            "label_delay_ms": int(data.meta.get("label_delay_ms", 7 * DAY_MS)),
        }

    def feature_names(self) -> list[str]:
        return list(FRAUD_FEATURE_NAMES)

    def example(self, data: TrainData, n: int = 4) -> np.ndarray:
        return data.x_test[:n].astype(np.float32)
