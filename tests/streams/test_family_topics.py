"""``family_topics`` for every built-in declaration: the topics `finscore topics --create
--family F` makes, with the family's own output schema and a label topic only where it has one."""

from __future__ import annotations

import pytest

from finscore.families import BUILTIN_FAMILIES, builtin_family
from finscore.schemas.topics import shadow
from finscore.streams.declared import family_topics


@pytest.mark.parametrize(
    ("name", "output_schema", "label_topic"),
    [
        ("market", "price_signal", None),  # a sequence family: its label is derived
        ("cashflow", "cashflow_forecast", None),  # a series family: no [label]
        ("credit", "family_score", None),  # no feature reads its outcomes
        ("fraud_declared", "family_score", "fraud-labels"),
        ("fraud_handbook", "family_score", "fraud-labels"),
    ],
)
def test_each_built_in_family_names_its_topics(
    name: str, output_schema: str, label_topic: str | None
) -> None:
    spec = builtin_family(name)
    topics = {t.name: t for t in family_topics(spec, partitions=3)}
    out = spec.output.topic
    assert topics[out].schema == output_schema
    assert topics[shadow(out)].schema == output_schema
    assert spec.input.topic in topics
    labels = {t.name for t in topics.values() if t.schema not in (output_schema, "dead_letter")
              and t.name != spec.input.topic}  # fmt: skip
    assert labels == ({label_topic} if label_topic else set())


def test_every_built_in_family_is_covered() -> None:
    covered = {"market", "cashflow", "credit", "fraud_declared", "fraud_handbook"}
    assert set(BUILTIN_FAMILIES) == covered, "a new built-in family needs a case above"
