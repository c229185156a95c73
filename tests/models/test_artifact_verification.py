"""finscore.models.artifact: the one verification every loader uses (hash, size, signature,
manifest), the signing helpers, and the registry module's re-exports (no torch, no broker).

``tests/models/`` has no ``__init__.py``: ``tests/artifacts.py`` (the test-model builder) keeps
its import name, so these files have basenames unique in the suite.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import finscore.models
import finscore.models.artifact as artifact_module
import finscore.models.registry as registry_module
from finscore.models.artifact import (
    Artifact,
    ArtifactError,
    check_manifest,
    check_reference_outputs,
    check_signature,
    generate_keypair,
    sha256_hex,
    sign_bytes,
    signed_payload,
    verify_artifact,
)
from tests.artifacts import artifact


def _reason(call) -> str:  # noqa: ANN001
    with pytest.raises(ArtifactError) as e:
        call()
    return e.value.reason


def test_verify_artifact_is_what_artifact_verify_runs() -> None:
    private, public = generate_keypair()
    signed = artifact("fraud", "3").sign(private)
    verify_artifact(signed, public, require_signature=True)
    flipped = dataclasses.replace(signed, onnx=signed.onnx[:-1] + bytes([signed.onnx[-1] ^ 1]))
    assert _reason(lambda: verify_artifact(flipped, public)) == "hash_mismatch"
    assert _reason(lambda: flipped.verify(public)) == "hash_mismatch"
    short = dataclasses.replace(
        signed, manifest=dataclasses.replace(signed.manifest, size_bytes=1), signature=None
    )
    assert _reason(lambda: verify_artifact(short, smoke=False)) == "size_mismatch"
    assert _reason(lambda: verify_artifact(signed.sign(generate_keypair()[0]), public)) == (
        "bad_signature"
    )


def test_the_manifest_must_name_what_the_caller_expects() -> None:
    a = artifact("fraud", "3")
    verify_artifact(a, smoke=False, expect_name="fraud", expect_version="3")
    assert _reason(lambda: verify_artifact(a, smoke=False, expect_name="market")) == "wrong_model"
    assert _reason(lambda: verify_artifact(a, smoke=False, expect_version="4")) == "wrong_model"
    assert _reason(lambda: check_manifest(a.manifest, expect_version="4")) == "wrong_model"


@pytest.mark.parametrize("threshold", [1.5, -0.1, float("nan"), float("inf"), "0.5", True])
def test_a_threshold_outside_0_1_is_refused_before_any_load(threshold: object) -> None:
    a = artifact("fraud")
    bad = dataclasses.replace(a, manifest=dataclasses.replace(a.manifest, threshold=threshold))
    assert _reason(lambda: check_manifest(bad.manifest)) == "bad_threshold"
    assert _reason(lambda: verify_artifact(bad, smoke=False)) == "bad_threshold"


def test_check_signature_reasons_in_order() -> None:
    private, public = generate_keypair()
    payload = b"payload"
    sig = sign_bytes(private, payload)
    check_signature(public, payload, sig, required=True, label="x")
    check_signature(public, payload, None, required=False, label="x")  # optional and absent
    check_signature(None, payload, sig, required=False, label="x")  # nothing to check against
    assert _reason(lambda: check_signature(public, payload, None, required=True, label="x")) == (
        "unsigned"
    )
    assert _reason(lambda: check_signature(None, payload, sig, required=True, label="x")) == (
        "no_key"
    )
    # no key is reported before a missing signature: the configuration refuses everything
    assert _reason(lambda: check_signature(None, payload, None, required=True, label="x")) == (
        "no_key"
    )
    assert _reason(lambda: check_signature(public, b"other", sig, required=False, label="x")) == (
        "bad_signature"
    )
    assert _reason(lambda: check_signature("zz", payload, sig, required=False, label="x")) == (
        "bad_signature"
    )


def test_signing_covers_the_hash_and_the_canonical_manifest() -> None:
    private, public = generate_keypair()
    a = artifact("fraud").sign(private)
    assert signed_payload(a.manifest) == (a.manifest.sha256 + "\n" + a.manifest.to_json()).encode()
    assert a.sha256 == sha256_hex(a.onnx)
    check_signature(public, signed_payload(a.manifest), a.signature, required=True, label="a")
    assert _reason(lambda: a.sign("not hex")) == "invalid"
    assert _reason(lambda: sign_bytes("00" * 5, b"x")) == "invalid"


def test_reference_outputs_are_compared_in_one_place() -> None:
    a = artifact("fraud")
    want = np.asarray(a.manifest.reference_outputs, np.float32)
    check_reference_outputs(a.manifest, lambda x: want)
    assert _reason(lambda: check_reference_outputs(a.manifest, lambda x: want + 1)) == (
        "smoke_test"
    )
    assert _reason(lambda: check_reference_outputs(a.manifest, lambda x: want[:1])) == (
        "smoke_test"
    )


def test_the_registry_module_re_exports_the_artifact_api() -> None:
    for name in artifact_module.__all__:
        assert getattr(registry_module, name) is getattr(artifact_module, name), name
    assert registry_module.Artifact is Artifact
    for name in finscore.models.__all__:
        assert hasattr(finscore.models, name), name
    assert {"Artifact", "Manifest", "ArtifactError", "Registry", "verify_artifact"} <= set(
        finscore.models.__all__
    )
