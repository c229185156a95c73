"""The fraud stream: transactions → fraud flags (stream, pipeline, columnar decode/encode), and
the two-stage fleet (``stages``: cards → rows by terminal (``repartition``) → terminals)."""

__all__ = ["columns", "pipeline", "repartition", "stages", "stream"]
