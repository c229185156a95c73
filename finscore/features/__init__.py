"""Feature code shared by training (finscore.compression) and the workers (finscore.streams).

numpy + stdlib only: no torch, no Kafka. The fraud features (:mod:`~finscore.features.fraud`,
over per-key time stores, :mod:`~finscore.features.timestore`, terminal entries,
:mod:`~finscore.features.terminal_entries`, and the fraud reports waiting for their entries,
:mod:`~finscore.features.pending`) and the market features
(:mod:`~finscore.features.market`, rows and labels; :mod:`~finscore.features.market_windows`,
the worker's per-instrument windows). Module-level constants with the same name in both
families (``N_FEATURES``) are reached through their modules.
"""

from finscore.features.exceptions import FeatureStateError, UnknownFeature
from finscore.features.fraud import (
    FEATURES_VERSION,
    FRAUD_FEATURE_NAMES,
    FraudFeatureConfig,
    FraudFeatures,
    feature_columns,
    featurize_frame,
)
from finscore.features.market import BOOK_LAYOUT, LAYOUTS, PATH_LAYOUT, layout_width
from finscore.features.market_windows import MarketWindows, ReadyWindows
from finscore.features.terminal_entries import TerminalEntries
from finscore.features.timestore import TimeStore

__all__ = [
    "BOOK_LAYOUT",
    "FEATURES_VERSION",
    "FRAUD_FEATURE_NAMES",
    "LAYOUTS",
    "PATH_LAYOUT",
    "FeatureStateError",
    "FraudFeatureConfig",
    "FraudFeatures",
    "MarketWindows",
    "ReadyWindows",
    "TerminalEntries",
    "TimeStore",
    "UnknownFeature",
    "feature_columns",
    "featurize_frame",
    "layout_width",
]
