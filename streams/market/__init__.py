"""The market stream: book ticks → price signals (stream, pipeline, columnar decode)."""

__all__ = ["columns", "pipeline", "stream"]
