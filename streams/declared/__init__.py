"""The stream of a declared family (:mod:`finscore.families`): its events → its features →
its model → ``family_score`` records (``stream``: topics, labels as a side input; ``pipeline``:
the pure batch; ``columns``: decoding any of the family's schemas into columns, encoding
scores)."""

from finscore.streams.declared.columns import FamilyColumns, RecordDecoder, ScoreEncoder
from finscore.streams.declared.pipeline import DeclaredPipeline, LabelsPipeline
from finscore.streams.declared.stream import OUTPUT_SCHEMA, DeclaredStream, family_topics

__all__ = [
    "OUTPUT_SCHEMA",
    "DeclaredPipeline",
    "DeclaredStream",
    "FamilyColumns",
    "LabelsPipeline",
    "RecordDecoder",
    "ScoreEncoder",
    "family_topics",
]
