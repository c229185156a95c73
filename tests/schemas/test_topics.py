"""The topic catalog is consistent with itself and with the schemas."""

from __future__ import annotations

from finscore.schemas import SCHEMA_NAMES
from finscore.schemas import topics as T


def test_catalog_sanity() -> None:
    specs = T.catalog()
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    for topic in T.INPUTS:
        assert T.dlq(topic) in names
        assert next(s for s in specs if s.name == T.dlq(topic)).schema == "dead_letter"
    updates = next(s for s in specs if s.name == T.MODEL_UPDATES)
    assert updates.config.get("cleanup.policy") == "compact" and updates.partitions == 1
    for spec in specs:
        assert spec.schema in SCHEMA_NAMES or spec.schema == "json"
        assert spec.partitions >= 1


def test_prefix_and_partitions() -> None:
    specs = T.catalog(partitions=3, prefix="t1-")
    assert all(s.name.startswith("t1-") for s in specs)
    assert next(s for s in specs if s.name == "t1-transactions").partitions == 3
