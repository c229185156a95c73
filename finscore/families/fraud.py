"""The fraud stream's features from the fraud family's declaration (``fraud_declared.toml``).

:class:`DeclaredFraudFeatures` runs :class:`~finscore.families.engine.DeclaredFeatures` on
:func:`builtin_family("fraud_declared") <finscore.families.builtin_family>` (the 23 columns of
:data:`~finscore.features.fraud.FRAUD_FEATURE_NAMES`, bit for bit those of
:class:`~finscore.features.fraud.FraudFeatures` under the ``all_outcomes`` label contract)
behind FraudFeatures' interface for its part ``"all"`` under that contract: the fraud pipeline
and stream drive either alike. Its arguments are FraudFeatures' (columns of transactions and
labels, amounts in integer cents), mapped onto the declaration's fields; its changelog records
are FraudFeatures' byte for byte (the customer windows' rows: time, tag, cents, cents²), so a
worker switching engines restores from the other's changelog; :meth:`held` and :meth:`oldest`
name the stores as FraudFeatures does (``customers``, ``cards``, ``terminals``).

Not covered (the declaration's vocabulary does not express them, so the fraud stream keeps
FraudFeatures there): the ``fraud_reports`` contract (counts from the transactions
themselves, each scored transaction's habit flag, reports pending their terminal entry) and
the two-stage topology's halves (``part="cards"`` / ``"terminals"``, the terminal entries
exchanged between workers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from finscore.families import builtin_family
from finscore.families.engine import DeclaredFeatures
from finscore.families.spec import LabelRiskFeature, WindowFeature
from finscore.features.fraud import FraudFeatureConfig, label_columns, transaction_columns

__all__ = ["FAMILY", "DeclaredFraudFeatures", "declared_covers", "training_features"]

FAMILY = "fraud_declared"  # the built-in declaration of the fraud features
# FraudFeatures' store names (held, oldest) for the declared engine's
_STORE_NAMES = {
    "window:customer_id": "customers",
    "label_risk:customer_id": "cards",
    "label_risk:terminal_id": "terminals",
}


def declared_covers(cfg: FraudFeatureConfig, part: str = "all") -> bool:
    """Whether the declaration computes what FraudFeatures(cfg, part=part) does: part
    ``"all"`` under ``all_outcomes`` with the declared delay, windows and habit ratio."""
    return part == "all" and not cfg.reports_only and _declared_windows(cfg)


def _declared_windows(cfg: FraudFeatureConfig) -> bool:
    """Whether ``cfg`` has the declaration's label delay, customer windows and habit ratio
    (read from ``fraud_declared.toml``)."""
    spec = builtin_family(FAMILY)
    days = sorted({f.days for f in spec.features
                   if isinstance(f, WindowFeature) and f.key == spec.input.key})  # fmt: skip
    ratios = {f.habit_ratio for f in spec.features
              if isinstance(f, LabelRiskFeature) and f.positives == "habit"}  # fmt: skip
    return (
        cfg.label_delay_ms == spec.label.delay_ms
        and tuple(cfg.windows_days) == tuple(days)
        and ratios == {cfg.habit_ratio}
    )


def training_features(frame: Any, cfg: FraudFeatureConfig | None = None) -> np.ndarray:
    """The fraud features of every transaction of a history (a
    :class:`~finscore.sim.transactions.TransactionFrame`), every outcome known
    ``cfg.label_delay_ms`` after its transaction: what training reads. Computed from the
    declaration (:func:`finscore.families.engine.featurize`, the worker's engine replayed day
    by day) whenever it covers ``cfg``'s delay, windows and habit ratio, so training and the
    worker run one code path; offline the label contract changes nothing (every outcome is
    replayed). Otherwise :func:`finscore.features.fraud.featurize_frame`; the two are equal
    bit for bit where both apply (tests/families/test_fraud_declared.py). float32
    ``[N, 23]`` in the frame's order."""
    from finscore.families.engine import featurize
    from finscore.features.fraud import featurize_frame

    cfg = FraudFeatureConfig() if cfg is None else cfg
    if not _declared_windows(cfg):
        return featurize_frame(frame, cfg)
    t = np.asarray(frame.event_time, dtype=np.int64)
    events = {"transaction_id": frame.transaction_id, "event_time": t,
              "customer_id": frame.customer_id, "terminal_id": frame.terminal_id,
              "amount": frame.amount}  # fmt: skip
    labels = {"transaction_id": frame.transaction_id, "customer_id": frame.customer_id,
              "terminal_id": frame.terminal_id, "tx_time": t,
              "label_time": t + cfg.label_delay_ms, "is_fraud": frame.is_fraud,
              "amount": frame.amount}  # fmt: skip
    return featurize(builtin_family(FAMILY), events, labels, time_origin_ms=cfg.time_origin_ms)


class DeclaredFraudFeatures:
    """FraudFeatures' interface (part ``"all"``, ``all_outcomes``) on the declared engine; see
    the module docstring."""

    part = "all"
    unmatched_reports = 0  # no pending reports under all_outcomes

    def __init__(self, cfg: FraudFeatureConfig | None = None) -> None:
        """``cfg``: FraudFeatures' (default: its default). Raises ValueError when it asks what
        the declaration does not compute (:func:`declared_covers`)."""
        cfg = FraudFeatureConfig() if cfg is None else cfg
        if not declared_covers(cfg):
            raise ValueError(
                f"the {FAMILY} declaration computes the all_outcomes features with a 7-day "
                "delay, 1/7/30-day windows and a habit ratio of 2.5; use FraudFeatures for "
                f"{cfg!r} (label contract {cfg.label_contract})"
            )
        self.cfg = cfg
        self.engine = DeclaredFeatures(builtin_family(FAMILY), time_origin_ms=cfg.time_origin_ms)

    @property
    def latest_ms(self) -> int:
        return self.engine.latest_ms

    # -- transactions and labels --------------------------------------------------------------
    def transform(self, txs: Iterable[dict]) -> np.ndarray:
        """FraudFeatures.transform: features of dict transactions."""
        return self.transform_columns(*transaction_columns(txs))

    def transform_columns(
        self,
        transaction_id: Sequence[str],
        event_time: np.ndarray,
        customer_id: Sequence[str],
        terminal_id: Sequence[str],
        amount_cents: np.ndarray,
    ) -> np.ndarray:
        """FraudFeatures.transform_columns: float32 ``[n, 23]``, each row added first."""
        return self.engine.transform_columns(
            _tx(transaction_id, event_time, customer_id, terminal_id, amount_cents)
        )

    def find_conflicts(
        self,
        transaction_id: Sequence[str],
        event_time: np.ndarray,
        customer_id: Sequence[str],
        amount_cents: np.ndarray,
    ) -> np.ndarray:
        """FraudFeatures.find_conflicts: ids reused for the customer with another time or
        amount."""
        cols = {"transaction_id": transaction_id, "event_time": event_time,
                "customer_id": customer_id, "amount": amount_cents}  # fmt: skip
        return self.engine.find_conflicts(cols)

    def apply_labels(self, labels: Iterable[dict]) -> None:
        """FraudFeatures.apply_labels: dict ``fraud_label`` records."""
        self.apply_label_columns(*label_columns(labels))

    def apply_label_columns(
        self,
        transaction_id: Sequence[str],
        customer_id: Sequence[str],
        terminal_id: Sequence[str],
        tx_time: np.ndarray,
        label_time: np.ndarray,
        is_fraud: np.ndarray,
        amount_cents: np.ndarray,
    ) -> None:
        """FraudFeatures.apply_label_columns (amounts in integer cents)."""
        self.engine.apply_label_columns({
            "transaction_id": transaction_id, "customer_id": customer_id,
            "terminal_id": terminal_id, "tx_time": np.asarray(tx_time, dtype=np.int64),
            "label_time": np.asarray(label_time, dtype=np.int64),
            "is_fraud": np.asarray(is_fraud, dtype=bool),
            "amount": np.asarray(amount_cents, dtype=np.int64),
        })  # fmt: skip

    def accepts_times(self, event_time: np.ndarray) -> np.ndarray:
        return self.engine.accepts_times(event_time)

    def accepts_label_times(self, tx_time: np.ndarray) -> np.ndarray:
        return self.engine.accepts_label_times(tx_time)

    # -- memory and changelog -----------------------------------------------------------------
    def watermark_ms(self) -> int:
        return self.engine.watermark_ms()

    def evict(self, now_ms: int | None = None) -> None:
        self.engine.evict(now_ms)

    def take_changes(self, partition_of: Mapping[str, int]) -> list[tuple[int, bytes]]:
        return self.engine.take_changes(partition_of)

    def add_changes(
        self, records: Iterable[tuple[str, bytes]], keep: Callable | None = None
    ) -> int:
        return self.engine.add_changes(records, keep)

    def forget_changes(self, customer_ids: Iterable[str]) -> None:
        self.engine.forget_changes(customer_ids)

    def snapshot_customers(self, customer_ids: Iterable[str]) -> list[bytes]:
        return self.engine.snapshot_keys(customer_ids)

    def snapshot_customer(self, customer_id: str) -> bytes:
        return self.engine.snapshot_keys([customer_id])[0]

    def restore_customers(self, snapshots: dict[str, bytes]) -> None:
        self.engine.restore_keys(snapshots)

    def restore_customer(self, customer_id: str, snap: bytes) -> None:
        self.engine.restore_keys({customer_id: snap})

    def customers(self) -> list[str]:
        return self.engine.keys()

    def terminals(self) -> list[str]:
        """Terminals that have labelled outcomes."""
        return self.engine.label_keys("terminal_id")

    def take_terminal_entries(self, group_of: Any = None, max_rows: int = 1 << 16) -> list:
        """Empty: there are no terminal entries to share under ``all_outcomes``."""
        return []

    def add_terminal_entries(self, records: Iterable[bytes]) -> int:
        """0: terminal entries are the ``fraud_reports`` contract's."""
        return 0

    def held(self) -> dict[str, int]:
        """Entries per store, named as FraudFeatures names them."""
        return {_STORE_NAMES.get(k, k): v for k, v in self.engine.held().items()}

    def oldest(self) -> dict[str, int | None]:
        """The oldest time per store, named as FraudFeatures names them."""
        return {_STORE_NAMES.get(k, k): v for k, v in self.engine.oldest().items()}


def _tx(
    transaction_id: Sequence[str],
    event_time: np.ndarray,
    customer_id: Sequence[str],
    terminal_id: Sequence[str],
    amount_cents: np.ndarray,
) -> dict[str, Any]:
    """FraudFeatures' transaction columns as the declaration's input columns."""
    return {"transaction_id": transaction_id, "event_time": event_time,
            "customer_id": customer_id, "terminal_id": terminal_id,
            "amount": np.asarray(amount_cents, dtype=np.int64)}  # fmt: skip
