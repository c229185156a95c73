"""The model registry: versions, champion/rollback, signatures, tamper detection (no torch)."""

from __future__ import annotations

import dataclasses
import json
import threading

import pytest

from finscore.models.registry import (
    MAX_ARTIFACT_BYTES,
    Artifact,
    ArtifactError,
    Manifest,
    Registry,
    generate_keypair,
)
from tests.artifacts import artifact


@pytest.fixture
def reg(tmp_path) -> Registry:  # noqa: ANN001
    return Registry(tmp_path / "registry")


def test_publish_assigns_consecutive_versions_and_writes_files(reg: Registry) -> None:
    a1 = reg.publish(artifact("fraud", version="", seed=0))
    a2 = reg.publish(artifact("fraud", version="", seed=1))
    m1 = reg.publish(artifact("market", version="", seed=0))
    assert (a1.manifest.version, a2.manifest.version, m1.manifest.version) == ("1", "2", "1")
    assert [m.version for m in reg.list("fraud")] == ["1", "2"]
    assert reg.names() == ["fraud", "market"]
    d = reg.root / "fraud" / "2"
    assert sorted(p.name for p in d.iterdir()) == ["manifest.json", "model.onnx"]
    on_disk = Manifest.from_json((d / "manifest.json").read_text())
    assert on_disk == a2.manifest
    assert on_disk.sha256 == a2.sha256 and on_disk.size_bytes == len(a2.onnx)
    assert reg.get("fraud", "2").onnx == a2.onnx
    reg.get("fraud", "2").verify()  # hash, size and smoke test hold
    assert not list(reg.root.glob("fraud/.publish-*")), "no temp folders left behind"


def test_manifest_json_round_trip_is_canonical() -> None:
    m = artifact("fraud").manifest
    text = m.to_json()
    assert Manifest.from_json(text) == m
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    # unknown keys from a newer writer are ignored
    assert Manifest.from_json(json.dumps({**json.loads(text), "new_field": 1})) == m


def test_concurrent_publishers_never_share_a_version(reg: Registry) -> None:
    got: list[str] = []
    lock = threading.Lock()

    def publish(seed: int) -> None:
        v = reg.publish(artifact("fraud", version="", seed=seed)).manifest.version
        with lock:
            got.append(v)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got, key=int) == [str(i) for i in range(1, 9)]
    assert [m.version for m in reg.list("fraud")] == [str(i) for i in range(1, 9)]


def test_promote_champion_and_rollback(reg: Registry) -> None:
    for seed in range(3):
        reg.publish(artifact("fraud", version="", seed=seed))
    assert reg.champion("fraud") is None
    with pytest.raises(ArtifactError) as e:
        reg.get("fraud")
    assert e.value.reason == "missing"
    reg.promote("fraud", "1")
    reg.promote("fraud", "3")
    assert reg.get("fraud").manifest.version == "3"
    assert (reg.root / "fraud" / "CHAMPION").read_text() == "3"
    assert reg.rollback("fraud").version == "1"
    assert reg.champion("fraud").manifest.version == "1"  # type: ignore[union-attr]
    with pytest.raises(ArtifactError) as e:
        reg.rollback("fraud")
    assert e.value.reason == "no_history"
    with pytest.raises(ArtifactError) as e:
        reg.promote("fraud", "9")
    assert e.value.reason == "missing"


def test_signed_artifact_verifies_and_survives_the_registry(reg: Registry) -> None:
    private, public = generate_keypair()
    published = reg.publish(artifact("fraud", version=""), signing_key_hex=private)
    assert published.signature is not None
    assert (reg.root / "fraud" / "1" / "signature").read_bytes() == published.signature
    loaded = reg.get("fraud", "1")
    loaded.verify(public, require_signature=True)
    # signing after publishing + save_signature is the other route
    other = reg.publish(artifact("fraud", version="", seed=5))
    reg.save_signature(other.sign(private))
    reg.get("fraud", "2").verify(public, require_signature=True)


def _reason(a: Artifact, *args, **kw) -> str:  # noqa: ANN002, ANN003
    with pytest.raises(ArtifactError) as e:
        a.verify(*args, **kw)
    return e.value.reason


def test_tampered_bytes_are_refused(reg: Registry) -> None:
    private, public = generate_keypair()
    a = reg.publish(artifact("fraud", version=""), signing_key_hex=private)
    flipped = bytearray(a.onnx)
    flipped[-5] ^= 0xFF
    assert _reason(dataclasses.replace(a, onnx=bytes(flipped)), public) == "hash_mismatch"
    # tampering on disk is caught the same way
    path = reg.root / "fraud" / "1" / "model.onnx"
    path.write_bytes(bytes(flipped))
    assert _reason(reg.get("fraud", "1"), public, require_signature=True) == "hash_mismatch"


def test_tampered_manifest_or_wrong_key_fails_the_signature() -> None:
    private, public = generate_keypair()
    _, stranger = generate_keypair()
    signed = artifact("fraud").sign(private)
    signed.verify(public, require_signature=True)
    assert _reason(signed, stranger) == "bad_signature"
    # a manifest edit keeps the hash right but breaks the signature (e.g. a raised threshold)
    edited = dataclasses.replace(
        signed, manifest=dataclasses.replace(signed.manifest, threshold=0.9)
    )
    assert _reason(edited, public) == "bad_signature"
    garbage = dataclasses.replace(signed, signature=b"\x00" * 64)
    assert _reason(garbage, public) == "bad_signature"


def test_unsigned_is_refused_only_when_a_signature_is_required() -> None:
    _, public = generate_keypair()
    unsigned = artifact("fraud")
    unsigned.verify(public)  # accepted where signatures are optional
    assert _reason(unsigned, public, require_signature=True) == "unsigned"
    signed = unsigned.sign(generate_keypair()[0])
    assert _reason(signed, None, require_signature=True) == "no_key"


def test_failing_smoke_test_is_refused() -> None:
    a = artifact("fraud")
    wrong = [[v + 0.5 for v in row] if isinstance(row, list) else row + 0.5
             for row in a.manifest.reference_outputs]  # fmt: skip
    bad = dataclasses.replace(a, manifest=dataclasses.replace(a.manifest, reference_outputs=wrong))
    assert _reason(bad) == "smoke_test"
    bad.verify(smoke=False)  # the hash alone is fine
    broken = b"not an onnx model"
    m = dataclasses.replace(
        a.manifest,
        sha256=__import__("hashlib").sha256(broken).hexdigest(),
        size_bytes=len(broken),
    )
    assert _reason(Artifact(m, broken)) == "load_failed"


def test_oversized_artifacts_are_not_published(reg: Registry) -> None:
    a = artifact("fraud")
    big = dataclasses.replace(a, onnx=a.onnx + b"\x00" * (MAX_ARTIFACT_BYTES + 1))
    with pytest.raises(ArtifactError) as e:
        reg.publish(big)
    assert e.value.reason == "too_large"
    assert reg.list("fraud") == []


def test_registry_module_is_torch_free() -> None:
    import subprocess
    import sys

    code = "import sys, finscore.models.registry; assert 'torch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
