"""A declared family (:class:`~finscore.families.spec.FamilySpec`, a TOML file) as a model family
of the compression toolkit: tabular binary classification, as fraud.

- **Data**: a file of the family's events (:func:`finscore.families.data.read_events`: CSV, or
  Parquet with pyarrow; labels in the same file), featurised by the family's engine
  (:func:`finscore.families.engine.featurize`, the code the workers run), so training sees the
  features the workers compute.
- **Splits** (:class:`DeclaredSplits`): rows in event-time order; the warm-up (the longest look
  back of any feature: a window's days, or a label risk's delay plus days; at most a third of
  the history) is left out, since its windows are not full yet; the rest is cut by rows into
  train (60 %), validation (20 %) and test (20 %), in that time order: every training row is
  no later than any validation row, which is no later than any test row. Each split needs
  both outcomes.
- **Models**: the fraud family's (:class:`~finscore.compression.fraud.FraudFamily`): an MLP
  teacher (or a teacher from a file, :mod:`finscore.compression.teacher`), MLP students
  (width ``w`` → hidden layers ``(w, w // 2)``), distilled with
  α·T²·BCE(s/T, σ(t/T)) + (1 − α)·BCE(s, y), a sigmoid head: one probability per row.
- **Metric**: the gate's is **average precision** (``ap``; positives are usually rare);
  ROC AUC (``auc``) is reported beside it. The threshold maximises F1 on the validation split.
- **Manifest**: the model's name is the family's (``spec.name``, which must then be a registry
  name: lower-case letters, digits, ``-``, ``_``), its ``feature_names`` the family's
  (:attr:`FamilySpec.feature_names`), and its params record the declaration as
  ``params["family"] = {"name", "sha256"}`` (:func:`family_sha256`: the sha256 of the
  canonical declaration, :meth:`FamilySpec.to_toml`, so comments and layout do not count) and,
  for a teacher from a file, ``params["teacher"]`` (kind, file name, sha256, size, output
  rule). A worker compares ``params["family"]["sha256"]`` with its own declaration's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from finscore.compression.exceptions import CompressionError
from finscore.compression.family import TrainData
from finscore.compression.fraud import FraudFamily
from finscore.compression.nn import MLP
from finscore.families import FamilySpec, LabelRiskFeature, WindowFeature, featurize
from finscore.models.evaluation import average_precision, roc_auc

if TYPE_CHECKING:
    from finscore.compression.teacher import ExternalTeacher
    from finscore.families.data import FamilyTable

__all__ = ["DeclaredFamily", "DeclaredSplits", "family_sha256", "lookback_ms"]

MIN_SPLIT_ROWS = 20


def family_sha256(spec: FamilySpec) -> str:
    """sha256 (hex) of the canonical declaration (:meth:`FamilySpec.to_toml`): what the
    manifest records in ``params["family"]["sha256"]`` and a worker checks."""
    return hashlib.sha256(spec.to_toml().encode()).hexdigest()


def lookback_ms(spec: FamilySpec) -> int:
    """How far back any feature looks: the longest window, or label delay + label-risk window."""
    spans = [f.span_ms for f in spec.features if isinstance(f, WindowFeature)]
    spans += [spec.label.delay_ms + f.span_ms for f in spec.features
              if isinstance(f, LabelRiskFeature)]  # fmt: skip
    return max(spans, default=0)


@dataclass(frozen=True)
class DeclaredSplits:
    """Shares of the rows after the warm-up: ``train``, ``val``, and the rest for test (in
    that time order); ``warmup_days``: left out at the start (None: :func:`lookback_ms`, at
    most a third of the history)."""

    train: float = 0.6
    val: float = 0.2
    warmup_days: float | None = None

    def warmup_ms(self, spec: FamilySpec, span_ms: int) -> int:
        if self.warmup_days is not None:
            return round(self.warmup_days * 86_400_000)
        return min(lookback_ms(spec), span_ms // 3)


class DeclaredFamily(FraudFamily):
    """The family declared in ``spec`` (see the module docstring); the teacher and student
    settings are the fraud family's."""

    metric = "ap"
    input_name = "features"
    output_name = "score"

    def __init__(
        self,
        spec: FamilySpec,
        *,
        teacher_hidden: tuple[int, ...] = (128, 64),
        dropout: float = 0.2,
        members: int = 1,
        schedule: str = "cosine",
        teacher_weight_decay: float = 0.0,
        splits: DeclaredSplits | None = None,
    ) -> None:
        from finscore.models.registry import ArtifactError, check_model_name

        try:
            check_model_name(spec.name)
        except ArtifactError:
            raise CompressionError(
                f"family {spec.name!r}: its name becomes the model's registry name, which must "
                "be lower-case letters, digits, '-' and '_' (at most 64, starting with a letter)",
                hint="rename the family (name = ... in its declaration)",
            ) from None
        super().__init__(teacher_hidden, dropout, members, schedule, teacher_weight_decay)
        self.spec = spec
        self.name = spec.name
        self.splits = splits or DeclaredSplits()
        self.spec_sha256 = family_sha256(spec)
        self.external_teacher: ExternalTeacher | None = None

    # -- data -------------------------------------------------------------------------------
    def load_data(  # type: ignore[override]
        self, path: str | Path, mapping: Mapping[str, str] | None = None
    ) -> TrainData:
        """The family's events in ``path`` (with ``mapping``: schema field → column),
        featurised and split (:meth:`split`)."""
        from finscore.families.data import read_events

        return self.split(read_events(path, self.spec, mapping))

    def split(self, table: FamilyTable) -> TrainData:
        """Featurise ``table`` (the whole history, so windows are warm) and cut the splits
        (see :class:`DeclaredSplits`). Raises :class:`CompressionError` when a split is too
        small or lacks an outcome."""
        if table.label is None:
            raise CompressionError(
                f"{table.source}: no labels", hint=f"add the label column {self.spec.label.field!r}"
            )
        x = featurize(self.spec, table.columns, table.labels)
        y = table.label.astype(np.float32)
        t = table.times
        if len(t) == 0:
            raise CompressionError(f"{table.source}: no rows", hint="give the family's history")
        order = np.argsort(t, kind="stable")
        t0, t1 = int(t[order[0]]), int(t[order[-1]])
        warm = self.splits.warmup_ms(self.spec, t1 - t0)
        kept = order[t[order] >= t0 + warm]
        n = len(kept)
        a = int(n * self.splits.train)
        b = a + int(n * self.splits.val)
        parts = {"train": kept[:a], "val": kept[a:b], "test": kept[b:]}
        for name, rows in parts.items():
            pos = int(y[rows].sum())
            if len(rows) < MIN_SPLIT_ROWS or pos == 0 or pos == len(rows):
                raise CompressionError(
                    f"{table.source}: the {name} split has {len(rows)} rows and {pos} positive "
                    f"labels (of {len(t)} rows, {int(y.sum())} positive, after a warm-up of "
                    f"{warm / 86_400_000:g} days); each split needs both outcomes",
                    hint="give a longer history or more labelled positives",
                )
        tr, va, te = parts["train"], parts["val"], parts["test"]
        return TrainData(
            x[tr], y[tr], x[va], y[va], x[te], y[te],
            meta={
                "label_delay_ms": self.spec.label.delay_ms,
                "source": table.source,
                "rows": len(t),
                "warmup_ms": warm,
                "splits": {k: [int(t[v[0]]), int(t[v[-1]])] for k, v in parts.items()},
                "val_time": t[va],
                "test_time": t[te],
            },
        )  # fmt: skip

    # -- models -----------------------------------------------------------------------------
    def _mlp(self, data: TrainData, hidden: list[int], dropout: float) -> MLP:
        return MLP(len(self.spec.feature_names), hidden, 1, data.x_train.mean(0),
                   data.x_train.std(0), dropout)  # fmt: skip

    def use_teacher(self, teacher: ExternalTeacher) -> None:
        """Record ``teacher`` (a file) in the manifests of this family's runs
        (``params["teacher"]``: :meth:`ExternalTeacher.describe` when the manifest is made)."""
        self.external_teacher = teacher

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, outputs: np.ndarray, data: TrainData, split: str = "test") -> dict:
        """Average precision (the gate's) and ROC AUC of probabilities on a split."""
        y = data.y_test if split == "test" else data.y_val
        p = np.asarray(outputs, dtype=np.float64).reshape(-1)
        return {"ap": average_precision(y, p), "auc": roc_auc(y, p)}

    def threshold(self, outputs_val: np.ndarray, data: TrainData) -> float | None:
        """The probability threshold maximising F1 on the validation split (over 400
        quantiles of the scores; 0.5 without a positive)."""
        p = np.asarray(outputs_val, dtype=np.float64).reshape(-1)
        y = data.y_val.astype(bool)
        if not y.any() or not len(p):
            return 0.5
        best, best_f1 = 0.5, -1.0
        for th in np.unique(np.quantile(p, np.linspace(0.0, 0.9999, 400))):
            pred = p >= th
            f1 = 2 * np.sum(pred & y) / (pred.sum() + y.sum())
            if f1 > best_f1:
                best, best_f1 = float(th), float(f1)
        return min(max(best, 0.0), 1.0)

    def params(self, data: TrainData) -> dict:
        out = super().params(data)
        out["family"] = {"name": self.spec.name, "sha256": self.spec_sha256}
        if self.external_teacher is not None:
            out["teacher"] = self.external_teacher.describe()
        return out

    def feature_names(self) -> list[str]:
        return list(self.spec.feature_names)
