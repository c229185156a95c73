"""Training and compression (torch; the ``compress`` extra): a :class:`Plan` of compression
steps run over a model family (:class:`FraudFamily`, :class:`MarketFamily`) behind a
:class:`Gate`, giving :class:`Candidate` models and the deployed one as an artifact
(:func:`to_artifact`), with an HTML report (:func:`write_report`).

The exceptions are imported with the package; every other name imports torch and is loaded on
first access (``finscore.compression.Plan``), so ``import finscore.compression.exceptions``
(e.g. the sidecar catching :class:`GateFailed`) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from finscore.compression.exceptions import CompressionError, ExportError, GateFailed, ParityError

if TYPE_CHECKING:
    from finscore.compression.family import Family, TrainData
    from finscore.compression.fraud import FraudFamily
    from finscore.compression.market import MarketFamily
    from finscore.compression.plan import Candidate, Gate, Plan, RunResult, to_artifact
    from finscore.compression.report import write_report
    from finscore.compression.search import BudgetedSearch

#: The names loaded on first access, and the module of each.
_LAZY = {
    "BudgetedSearch": "search",
    "Candidate": "plan",
    "Family": "family",
    "FraudFamily": "fraud",
    "Gate": "plan",
    "MarketFamily": "market",
    "Plan": "plan",
    "RunResult": "plan",
    "TrainData": "family",
    "to_artifact": "plan",
    "write_report": "report",
}

__all__ = [
    "BudgetedSearch",
    "Candidate",
    "CompressionError",
    "ExportError",
    "Family",
    "FraudFamily",
    "Gate",
    "GateFailed",
    "MarketFamily",
    "ParityError",
    "Plan",
    "RunResult",
    "TrainData",
    "to_artifact",
    "write_report",
]


def __getattr__(name: str) -> Any:
    """A torch-backed name of :data:`__all__`, imported from its module on first access."""
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
