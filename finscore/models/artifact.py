"""Model artifacts: ONNX bytes + a manifest + an optional Ed25519 signature, and the ONE check
that decides whether an artifact can be trusted (torch-free; workers import it).

An :class:`Artifact` is ONNX bytes + a :class:`Manifest` (+ an optional Ed25519 signature over
:func:`signed_payload`: the sha256 and the canonical manifest JSON).

:func:`verify_artifact` is the verification every loader runs (the worker's registry fallback
and announcement watcher, ``finscore models``, the compression checks; :meth:`Artifact.verify`
calls it): hash and size of the bytes, the manifest (:func:`check_manifest`), the signature
(:func:`check_signature`, also the check for any other signed payload such as an announcement
envelope) and, optionally, the smoke test (:func:`check_reference_outputs`, the one comparison
of a model's outputs against its manifest's reference outputs).

Size: artifacts travel whole on the compacted ``model-updates`` topic. A broker with default
settings takes messages up to 1 MiB (:data:`KAFKA_DEFAULT_MESSAGE_BYTES`); finscore's producers
and consumers raise that to 8 MB and the registry refuses anything over
:data:`MAX_ARTIFACT_BYTES` (4 MiB).

cryptography, numpy and onnxruntime are imported inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from finscore.exceptions import FinscoreError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "KAFKA_DEFAULT_MESSAGE_BYTES",
    "MAX_ARTIFACT_BYTES",
    "Artifact",
    "ArtifactError",
    "Manifest",
    "check_manifest",
    "check_reference_outputs",
    "check_signature",
    "generate_keypair",
    "manifest_dict",
    "public_key_of",
    "sha256_hex",
    "sign_bytes",
    "signature_valid",
    "signed_payload",
    "verify_artifact",
]

MAX_ARTIFACT_BYTES = 4 * 1024 * 1024
KAFKA_DEFAULT_MESSAGE_BYTES = 1024 * 1024


class ArtifactError(FinscoreError):
    """An artifact is invalid: hash mismatch, bad or missing signature, failing smoke test.

    ``reason`` is a short machine-readable cause (``hash_mismatch``, ``size_mismatch``,
    ``unsigned``, ``no_key``, ``bad_signature``, ``wrong_model``, ``bad_threshold``,
    ``load_failed``, ``smoke_test``, ``missing``, ``no_history``, ``too_large``, ``invalid``,
    ``invalid_name``), used as a metric label by the workers.
    """

    def __init__(self, message: str, *, reason: str = "invalid", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


@dataclass(frozen=True)
class Manifest:
    """Everything known about one artifact; JSON-serialisable."""

    name: str
    version: str
    family: str
    sha256: str
    size_bytes: int
    input_name: str
    output_name: str
    input_shape: list
    feature_names: list = field(default_factory=list)
    params: dict = field(default_factory=dict)
    parent_sha256: str | None = None
    teacher_sha256: str | None = None
    steps: list = field(default_factory=list)
    data_fingerprint: str = ""
    metrics: dict = field(default_factory=dict)
    latency: dict = field(default_factory=dict)
    reference_inputs: list = field(default_factory=list)
    reference_outputs: list = field(default_factory=list)
    created_at: str = ""
    threshold: float | None = None

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): what the signature covers."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest; unknown keys (from newer writers) are ignored.

        Raises :class:`ArtifactError` (reason ``invalid``) for anything that is not a JSON object
        with the required fields: a manifest arrives on a topic anyone may write to.
        """
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"manifest is not JSON: {exc}", reason="invalid") from exc
        if not isinstance(data, dict):
            raise ArtifactError("manifest is not a JSON object", reason="invalid")
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise ArtifactError(f"manifest lacks fields: {exc}", reason="invalid") from exc


def manifest_dict(m: Manifest) -> dict[str, Any]:
    """The manifest as a plain dict (what ``manifest.json`` holds)."""
    return dataclasses.asdict(m)


# -- hashing and signing ----------------------------------------------------------------------


def sha256_hex(data: bytes | str) -> str:
    """The sha256 of ``data`` (a str is hashed as UTF-8), as 64 hex digits."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def signed_payload(manifest: Manifest) -> bytes:
    """What an artifact's signature covers: the sha256 of the bytes, a newline, the canonical
    manifest JSON (so a manifest edit such as a raised threshold breaks the signature)."""
    return (manifest.sha256 + "\n" + manifest.to_json()).encode()


def _private_key(signing_key_hex: str) -> Ed25519PrivateKey:
    """The Ed25519 private key of a hex string; :class:`ArtifactError` (``invalid``) when it is
    not one."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(signing_key_hex))
    except (TypeError, ValueError) as exc:
        raise ArtifactError("invalid Ed25519 signing key", reason="invalid") from exc


def sign_bytes(signing_key_hex: str, payload: bytes) -> bytes:
    """An Ed25519 signature of ``payload``; :class:`ArtifactError` (``invalid``) on a bad key."""
    return _private_key(signing_key_hex).sign(payload)


def signature_valid(verify_key_hex: str, payload: bytes, signature: bytes | None) -> bool:
    """True when ``signature`` is an Ed25519 signature of ``payload`` by ``verify_key_hex``
    (False for a missing signature or a malformed key)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not signature:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(verify_key_hex)).verify(signature, payload)
    except (InvalidSignature, TypeError, ValueError):
        return False
    return True


def public_key_of(signing_key_hex: str) -> str:
    """The public key (hex) of an Ed25519 private key (hex); :class:`ArtifactError`
    (``invalid``) on a bad key."""
    from cryptography.hazmat.primitives import serialization

    return (
        _private_key(signing_key_hex)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex()
    )


def generate_keypair() -> tuple[str, str]:
    """A new Ed25519 key pair as (private hex, public hex)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return private.hex(), public.hex()


def check_signature(
    verify_key_hex: str | None,
    payload: bytes,
    signature: bytes | None,
    *,
    required: bool,
    label: str,
) -> None:
    """Raise :class:`ArtifactError` unless ``signature`` is acceptable for ``payload``.

    In order: with ``required``, a key was given (``no_key``: without one nothing can be
    trusted) and a signature is present (``unsigned``); a present signature verifies against a
    given key (``bad_signature``; a malformed key counts as a bad signature). Without
    ``required`` a missing signature, or a missing key, passes. ``label`` names what was signed
    in the messages. The same rule serves an artifact's signature and an announcement's
    envelope (``required = not allow_unsigned``).
    """
    if required and not verify_key_hex:
        raise ArtifactError("a signature is required but no verify key is set", reason="no_key")
    if required and signature is None:
        raise ArtifactError(
            f"{label} is unsigned",
            reason="unsigned",
            hint="sign it: set FINSCORE_SIGNING_KEY where it is promoted",
        )
    if (
        signature is not None
        and verify_key_hex
        and not signature_valid(verify_key_hex, payload, signature)
    ):
        raise ArtifactError(f"{label}: bad signature", reason="bad_signature")


# -- the manifest and the smoke test ----------------------------------------------------------


def check_manifest(
    manifest: Manifest, *, expect_name: str | None = None, expect_version: str | None = None
) -> None:
    """Raise :class:`ArtifactError` unless the manifest says what its loader expects.

    In order: the name and version equal ``expect_name`` / ``expect_version`` when given
    (``wrong_model``: an announcement or registry entry carrying another model); a threshold,
    when set, is a finite number within [0, 1] (``bad_threshold``).
    """
    m = manifest
    if expect_name is not None and m.name != expect_name:
        raise ArtifactError(
            f"expected model {expect_name!r}, the manifest names {m.name!r}", reason="wrong_model"
        )
    if expect_version is not None and m.version != expect_version:
        raise ArtifactError(
            f"expected {m.name} v{expect_version}, the manifest says v{m.version}",
            reason="wrong_model",
        )
    t = m.threshold
    if t is not None and (
        isinstance(t, bool)
        or not isinstance(t, int | float)
        or not math.isfinite(t)
        or not 0.0 <= t <= 1.0
    ):
        raise ArtifactError(
            f"{m.name} v{m.version}: threshold {t!r} is outside [0, 1]", reason="bad_threshold"
        )


def check_reference_outputs(
    manifest: Manifest, run: Callable[[Any], Any], atol: float = 1e-4
) -> None:
    """The smoke test's comparison: ``run`` (a loaded model, e.g. a scorer's batch call) on the
    manifest's reference inputs must reproduce its reference outputs within ``atol`` (same
    shape); else :class:`ArtifactError` (``smoke_test``). Nothing to compare passes (callers
    that need reference data check for it). Exceptions raised by ``run`` propagate."""
    import numpy as np

    if not manifest.reference_inputs:
        return
    got = np.asarray(run(np.asarray(manifest.reference_inputs, np.float32)))
    want = np.asarray(manifest.reference_outputs, np.float32)
    if got.shape != want.shape or not np.allclose(got, want, atol=atol):
        raise ArtifactError(
            f"{manifest.name} v{manifest.version}: smoke test failed on reference inputs "
            "(outputs differ from the manifest's reference)",
            reason="smoke_test",
        )


def _smoke_test(artifact: Artifact, atol: float) -> None:
    """Load the bytes in onnxruntime (the configured execution providers) and run
    :func:`check_reference_outputs`; ``load_failed`` when the model does not load or run."""
    m = artifact.manifest
    if not m.reference_inputs:
        return
    from finscore.providers import create_session

    try:
        session = create_session(artifact.onnx)
        input_name = session.get_inputs()[0].name
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
        raise ArtifactError(f"model does not load: {exc}", reason="load_failed") from exc

    def run(x: Any) -> Any:
        try:
            return session.run(None, {input_name: x})[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
            raise ArtifactError(f"model does not run: {exc}", reason="load_failed") from exc

    check_reference_outputs(m, run, atol)


# -- the one verification ---------------------------------------------------------------------


def verify_artifact(
    artifact: Artifact,
    verify_key_hex: str | None = None,
    *,
    require_signature: bool = False,
    smoke: bool = True,
    expect_name: str | None = None,
    expect_version: str | None = None,
) -> None:
    """Raise :class:`ArtifactError` (with ``reason``) unless ``artifact`` can be trusted.

    In order: the sha256 and size of the bytes match the manifest (``hash_mismatch``,
    ``size_mismatch``); the manifest passes :func:`check_manifest` (``wrong_model``,
    ``bad_threshold``); the signature passes :func:`check_signature` over
    :func:`signed_payload` (``unsigned``, ``no_key``, ``bad_signature``); with ``smoke`` the
    model loads in onnxruntime (``load_failed``) and reproduces the manifest's reference outputs
    within 1e-4 (``smoke_test``). A loader that builds its own session anyway passes
    ``smoke=False`` and runs :func:`check_reference_outputs` on that session (one session, one
    smoke test).
    """
    m = artifact.manifest
    label = f"{m.name} v{m.version}"
    if artifact.sha256 != m.sha256:
        raise ArtifactError(
            f"{label}: sha256 of the bytes does not match the manifest (tampered or corrupted)",
            reason="hash_mismatch",
        )
    if len(artifact.onnx) != m.size_bytes:
        raise ArtifactError(
            f"{label}: {len(artifact.onnx)} bytes, manifest says {m.size_bytes}",
            reason="size_mismatch",
        )
    check_manifest(m, expect_name=expect_name, expect_version=expect_version)
    check_signature(
        verify_key_hex,
        signed_payload(m),
        artifact.signature,
        required=require_signature,
        label=label,
    )
    if smoke:
        _smoke_test(artifact, 1e-4)


@dataclass(frozen=True)
class Artifact:
    """ONNX bytes, their manifest and an optional signature."""

    manifest: Manifest
    onnx: bytes
    signature: bytes | None = None

    @property
    def sha256(self) -> str:
        """The sha256 of the bytes (hex)."""
        return sha256_hex(self.onnx)

    def sign(self, signing_key_hex: str) -> Artifact:
        """A copy signed with an Ed25519 private key (hex) over :func:`signed_payload`;
        :class:`ArtifactError` (``invalid``) on a bad key."""
        return dataclasses.replace(
            self, signature=sign_bytes(signing_key_hex, signed_payload(self.manifest))
        )

    def verify(
        self,
        verify_key_hex: str | None = None,
        *,
        require_signature: bool = False,
        smoke: bool = True,
        expect_name: str | None = None,
        expect_version: str | None = None,
    ) -> None:
        """:func:`verify_artifact` on this artifact."""
        verify_artifact(
            self,
            verify_key_hex,
            require_signature=require_signature,
            smoke=smoke,
            expect_name=expect_name,
            expect_version=expect_version,
        )

    def smoke_test(self, atol: float = 1e-4) -> None:
        """Run the model on the manifest's reference inputs (onnxruntime) and compare
        (``load_failed``, ``smoke_test``)."""
        _smoke_test(self, atol)
