"""The fraud stream: transactions → fraud flags (stream, pipeline, columnar decode/encode)."""

__all__ = ["columns", "pipeline", "stream"]
