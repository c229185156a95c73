"""Single-object fingerprints: CRC-64-AVRO of the Parsing Canonical Form, as the spec says."""

from __future__ import annotations

import json

import avro.schema
import pytest

from finscore.schemas import SCHEMA_NAMES, Codec, load_schema
from finscore.schemas.codec import fingerprint


@pytest.mark.parametrize(
    ("schema", "java_long"),  # values from the Avro spec's test suite (Java's parsingFingerprint64)
    [
        ('"null"', 7195948357588979594),
        ('"int"', 8247732601305521295),
        ('"string"', -8142146995180207161),
    ],
)
def test_spec_vectors(schema: str, java_long: int) -> None:
    want = (java_long & (2**64 - 1)).to_bytes(8, "little")
    assert fingerprint(json.loads(schema)) == want
    assert avro.schema.parse(schema).fingerprint("CRC-64-AVRO") == want


def _no_logical_types(schema):
    if isinstance(schema, dict):
        if "logicalType" in schema:
            return schema["type"]
        return {k: _no_logical_types(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_no_logical_types(v) for v in schema]
    return schema


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_agrees_with_the_avro_package(name: str) -> None:
    """The ``avro`` package computes the same fingerprint for each schema.

    Logical types are taken out first: the ``avro`` package keeps ``{"type": "long"}`` in the
    canonical form of a logical-typed long, where the spec's PRIMITIVES rule (and Java, fastavro,
    Rust) give ``"long"``; logical types are never part of the canonical form, so removing them
    does not change ours.
    """
    ours = fingerprint(name)
    assert ours == fingerprint(_no_logical_types(load_schema(name)))
    theirs = avro.schema.parse(json.dumps(_no_logical_types(load_schema(name))))
    assert theirs.fingerprint("CRC-64-AVRO") == ours


def test_docs_and_defaults_do_not_change_the_fingerprint() -> None:
    schema = load_schema("transaction")
    schema["doc"] = "other words"
    schema["fields"][5]["default"] = "USD"
    assert fingerprint(schema) == fingerprint("transaction")
    schema["fields"].append({"name": "channel", "type": "string", "default": "web"})
    assert fingerprint(schema) != fingerprint("transaction")


def test_header_is_magic_plus_fingerprint() -> None:
    codec = Codec("price_signal")
    assert codec.header == b"\xc3\x01" + fingerprint("price_signal")
    assert len(set(fingerprint(n) for n in SCHEMA_NAMES)) == len(SCHEMA_NAMES)
