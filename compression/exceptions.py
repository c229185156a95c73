"""Errors of the compression toolkit."""

from __future__ import annotations

from finscore.exceptions import FinscoreError


class CompressionError(FinscoreError):
    """Base class of compression errors."""


class GateFailed(CompressionError):
    """A candidate lost more accuracy than the plan tolerates; nothing was registered."""

    def __init__(self, metric: str, reference: float, candidate: float, tolerance: float) -> None:
        self.result: object | None = None  # the plan's RunResult, set by Plan.run
        self.metric, self.reference, self.candidate, self.tolerance = (
            metric,
            reference,
            candidate,
            tolerance,
        )
        super().__init__(
            f"accuracy gate failed: validation {metric} {candidate:.4f} is more than {tolerance:.4f} below "
            f"the reference {reference:.4f}; nothing was registered",
            hint="raise --tolerance, train longer (--epochs) or use a larger student",
        )


class ExportError(CompressionError):
    """A model could not be exported to ONNX."""


class ParityError(CompressionError):
    """The exported ONNX model does not reproduce its torch source within tolerance."""
