"""The cash-flow stream: transactions → per-terminal daily takings → quantile forecasts."""

from finscore.streams.cashflow.pipeline import CashflowPipeline, TerminalTakings
from finscore.streams.cashflow.stream import CashflowStream

__all__ = ["CashflowPipeline", "CashflowStream", "TerminalTakings"]
