"""Model artifacts, manifests and the local registry (torch-free; workers import it).

An :class:`Artifact` is ONNX bytes + a :class:`Manifest` (+ an optional Ed25519 signature over
the sha256 and the canonical manifest JSON). The :class:`Registry` is a directory::

    <root>/<name>/<version>/model.onnx, manifest.json, signature   (signature optional)
    <root>/<name>/CHAMPION                                          (current version)
    <root>/<name>/HISTORY                                           (previous champions)

Versions are consecutive integers as strings. Writes are atomic: a version is written into a
hidden temp folder and renamed into place (a reader never sees half a version, and two
publishers racing for one number cannot both take it); pointer files are replaced with
``os.replace``.

Size: artifacts travel whole on the compacted ``model-updates`` topic. A broker with default
settings takes messages up to 1 MiB (:data:`KAFKA_DEFAULT_MESSAGE_BYTES`); finscore's producers
and consumers raise that to 8 MB and the registry refuses anything over
:data:`MAX_ARTIFACT_BYTES` (4 MiB). Compressed students are a few kilobytes; fp32 teachers a
few hundred kilobytes.

cryptography and onnxruntime are imported inside the functions that need them.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finscore.exceptions import FinscoreError

MAX_ARTIFACT_BYTES = 4 * 1024 * 1024
KAFKA_DEFAULT_MESSAGE_BYTES = 1024 * 1024
#: What a model name may look like (it becomes a folder name and a Kafka key).
MODEL_NAME_PATTERN = r"[a-z][a-z0-9_-]{0,63}"
#: What a version may look like (consecutive integers, as strings).
VERSION_PATTERN = r"[1-9][0-9]{0,8}"
_NAME_RE = re.compile(MODEL_NAME_PATTERN)
_VERSION_RE = re.compile(VERSION_PATTERN)


class ArtifactError(FinscoreError):
    """An artifact is invalid: hash mismatch, bad or missing signature, failing smoke test.

    ``reason`` is a short machine-readable cause (``hash_mismatch``, ``size_mismatch``,
    ``unsigned``, ``no_key``, ``bad_signature``, ``load_failed``, ``smoke_test``, ``missing``,
    ``no_history``, ``too_large``, ``invalid``, ``invalid_name``), used as a metric label by the
    workers.
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


def check_model_name(name: object) -> str:
    """``name`` when it matches :data:`MODEL_NAME_PATTERN`; else :class:`ArtifactError`
    (``invalid_name``). A name is a folder of the registry: nothing else may reach the disk."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ArtifactError(
            f"invalid model name {name!r}: expected {MODEL_NAME_PATTERN}",
            reason="invalid_name",
            hint="model names are lower-case letters, digits, '-' and '_' (e.g. fraud)",
        )
    return name


def check_version(version: object) -> str:
    """``version`` (as a string) when it matches :data:`VERSION_PATTERN`; else
    :class:`ArtifactError` (``invalid_name``)."""
    text = str(version) if isinstance(version, int) and not isinstance(version, bool) else version
    if not isinstance(text, str) or not _VERSION_RE.fullmatch(text):
        raise ArtifactError(
            f"invalid model version {version!r}: expected a positive integer",
            reason="invalid_name",
            hint="`finscore models list` shows the versions there are",
        )
    return text


def _signed_payload(manifest: Manifest) -> bytes:
    """What is signed: the sha256 of the bytes, a newline, the canonical manifest JSON."""
    return (manifest.sha256 + "\n" + manifest.to_json()).encode()


def sign_bytes(signing_key_hex: str, payload: bytes) -> bytes:
    """An Ed25519 signature of ``payload``; :class:`ArtifactError` (``invalid``) on a bad key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(signing_key_hex))
    except ValueError as exc:
        raise ArtifactError("invalid Ed25519 signing key", reason="invalid") from exc
    return key.sign(payload)


def signature_valid(verify_key_hex: str, payload: bytes, signature: bytes | None) -> bool:
    """True when ``signature`` is an Ed25519 signature of ``payload`` by ``verify_key_hex``
    (False for a missing signature or a malformed key)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not signature:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(verify_key_hex)).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True


def public_key_of(signing_key_hex: str) -> str:
    """The public key (hex) of an Ed25519 private key (hex)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(signing_key_hex))
    except ValueError as exc:
        raise ArtifactError("invalid Ed25519 signing key", reason="invalid") from exc
    return (
        key.public_key()
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


@dataclass(frozen=True)
class Artifact:
    """ONNX bytes, their manifest and an optional signature."""

    manifest: Manifest
    onnx: bytes
    signature: bytes | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.onnx).hexdigest()

    def sign(self, signing_key_hex: str) -> Artifact:
        """A copy signed with an Ed25519 private key (hex) over sha256 + canonical manifest."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(signing_key_hex))
        except ValueError as exc:
            raise ArtifactError("invalid Ed25519 signing key", reason="invalid") from exc
        return dataclasses.replace(self, signature=key.sign(_signed_payload(self.manifest)))

    def verify(
        self,
        verify_key_hex: str | None = None,
        *,
        require_signature: bool = False,
        smoke: bool = True,
    ) -> None:
        """Raise :class:`ArtifactError` (with ``reason``) unless the artifact can be trusted.

        In order: sha256 and size of the bytes match the manifest (``hash_mismatch``,
        ``size_mismatch``); with ``require_signature`` a signature is present (``unsigned``)
        and a key was given (``no_key``); a present signature verifies against a given key
        (``bad_signature``); with ``smoke`` the model loads in onnxruntime (``load_failed``)
        and reproduces the manifest's reference outputs within 1e-4 (``smoke_test``).
        """
        m = self.manifest
        if self.sha256 != m.sha256:
            raise ArtifactError(
                f"{m.name} v{m.version}: sha256 of the bytes does not match the manifest "
                "(tampered or corrupted)",
                reason="hash_mismatch",
            )
        if len(self.onnx) != m.size_bytes:
            raise ArtifactError(
                f"{m.name} v{m.version}: {len(self.onnx)} bytes, manifest says {m.size_bytes}",
                reason="size_mismatch",
            )
        if require_signature and self.signature is None:
            raise ArtifactError(
                f"{m.name} v{m.version} is unsigned",
                reason="unsigned",
                hint="sign it: set FINSCORE_SIGNING_KEY where it is promoted",
            )
        if require_signature and not verify_key_hex:
            raise ArtifactError("a signature is required but no verify key is set", reason="no_key")
        if self.signature is not None and verify_key_hex:
            self._check_signature(verify_key_hex)
        if smoke:
            self.smoke_test()

    def _check_signature(self, verify_key_hex: str) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        m = self.manifest
        try:
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(verify_key_hex)).verify(
                self.signature or b"", _signed_payload(m)
            )
        except (InvalidSignature, ValueError) as exc:
            raise ArtifactError(
                f"{m.name} v{m.version}: bad signature", reason="bad_signature"
            ) from exc

    def smoke_test(self, atol: float = 1e-4) -> None:
        """Run the model on the manifest's reference inputs (onnxruntime) and compare."""
        import numpy as np

        from finscore.providers import create_session

        m = self.manifest
        if not m.reference_inputs:
            return
        try:
            s = create_session(self.onnx)  # the configured execution providers
            feed = {s.get_inputs()[0].name: np.asarray(m.reference_inputs, np.float32)}
            got = s.run(None, feed)[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
            raise ArtifactError(f"model does not load: {exc}", reason="load_failed") from exc
        want = np.asarray(m.reference_outputs, np.float32)
        if got.shape != want.shape or not np.allclose(got, want, atol=atol):
            raise ArtifactError(
                f"{m.name} v{m.version}: smoke test failed on reference inputs", reason="smoke_test"
            )


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Registry:
    """A directory of versioned artifacts with a champion pointer per model name."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        """Model names with at least one folder in the registry."""
        if not self.root.exists():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def _versions(self, name: str) -> list[str]:
        d = self.root / check_model_name(name)
        if not d.exists():
            return []
        return sorted((p.name for p in d.iterdir() if p.is_dir() and p.name.isdigit()), key=int)

    def publish(self, artifact: Artifact, signing_key_hex: str | None = None) -> Artifact:
        """Write ``artifact`` as the next version of its model; returns it with that version.

        The manifest gets the version, the sha256 and the size of the bytes. A signature made
        before publishing cannot cover the version and is dropped: pass ``signing_key_hex`` to
        sign the versioned manifest (its file is written in the same atomic step) or sign later
        and call :meth:`save_signature`. Raises :class:`ArtifactError` (``too_large``) over
        :data:`MAX_ARTIFACT_BYTES`.
        """
        size = len(artifact.onnx)
        if size > MAX_ARTIFACT_BYTES:
            raise ArtifactError(
                f"artifact of {size:,} bytes exceeds {MAX_ARTIFACT_BYTES:,}",
                reason="too_large",
                hint="compress it further: it must travel on the model-updates topic",
            )
        name = check_model_name(artifact.manifest.name)
        base = self.root / name
        base.mkdir(parents=True, exist_ok=True)
        while True:
            versions = self._versions(name)
            version = str(int(versions[-1]) + 1) if versions else "1"
            manifest = dataclasses.replace(
                artifact.manifest, version=version, sha256=artifact.sha256, size_bytes=size
            )
            out = Artifact(manifest, artifact.onnx, None)
            if signing_key_hex:
                out = out.sign(signing_key_hex)
            tmp = Path(tempfile.mkdtemp(dir=base, prefix=".publish-"))
            (tmp / "model.onnx").write_bytes(out.onnx)
            (tmp / "manifest.json").write_text(json.dumps(dataclasses.asdict(manifest), indent=2))
            if out.signature is not None:
                (tmp / "signature").write_bytes(out.signature)
            try:
                os.rename(tmp, base / version)  # fails when another publisher took the number
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if not (base / version).exists():
                    raise
                continue
            return out

    def save_signature(self, artifact: Artifact) -> None:
        """Store the signature of an already published artifact."""
        if artifact.signature is None:
            return
        m = artifact.manifest
        self.get(m.name, m.version)  # a valid name and version that exist?
        _atomic_write(self.root / m.name / m.version / "signature", artifact.signature)

    def list(self, name: str) -> list[Manifest]:
        """Manifests of every version of ``name``, oldest first."""
        return [
            Manifest.from_json((self.root / name / v / "manifest.json").read_text())
            for v in self._versions(name)
        ]

    def get(self, name: str, version: str | None = None) -> Artifact:
        """Version ``version`` (None = the champion) of ``name``; not verified. Raises
        :class:`ArtifactError`: ``invalid_name`` for a name or version outside the patterns,
        ``missing`` when there is no such version."""
        check_model_name(name)
        if version is None:
            champ = self.champion(name)
            if champ is None:
                raise ArtifactError(
                    f"no champion for {name}",
                    reason="missing",
                    hint="`finscore models promote` makes one",
                )
            return champ
        d = self.root / name / check_version(version)
        if not (d / "model.onnx").exists():
            raise ArtifactError(
                f"{name} v{version} is not in the registry at {self.root}",
                reason="missing",
                hint="`finscore models list` shows what there is",
            )
        sig = d / "signature"
        return Artifact(
            Manifest.from_json((d / "manifest.json").read_text()),
            (d / "model.onnx").read_bytes(),
            sig.read_bytes() if sig.exists() else None,
        )

    def champion(self, name: str) -> Artifact | None:
        """The promoted version of ``name``, or None before any promotion."""
        pointer = self.root / check_model_name(name) / "CHAMPION"
        if not pointer.exists():
            return None
        return self.get(name, pointer.read_text().strip())

    def _history(self, name: str) -> builtins.list[str]:
        h = self.root / check_model_name(name) / "HISTORY"
        return h.read_text().split() if h.exists() else []

    def promote(self, name: str, version: str) -> None:
        """Make ``version`` the champion (the previous one goes to the history); a name or
        version outside the patterns is :class:`ArtifactError` (``invalid_name``)."""
        version = check_version(version)
        self.get(name, version)  # exists?
        current = self.champion(name)
        if current is not None and current.manifest.version != version:
            hist = self._history(name) + [current.manifest.version]
            _atomic_write(self.root / name / "HISTORY", " ".join(hist).encode())
        _atomic_write(self.root / name / "CHAMPION", version.encode())

    def previous(self, name: str) -> Manifest:
        """The champion a :meth:`rollback` would return to, changing nothing (announce it
        first, roll back the pointer once the announcement is acknowledged)."""
        hist = self._history(name)
        if not hist:
            raise ArtifactError(
                f"{name} has no previous champion to roll back to", reason="no_history"
            )
        return self.get(name, hist[-1]).manifest

    def rollback(self, name: str) -> Manifest:
        """Return to the previous champion; returns its manifest."""
        self.previous(name)  # exists and readable, else ArtifactError before anything moves
        hist = self._history(name)
        previous = hist.pop()
        _atomic_write(self.root / name / "HISTORY", " ".join(hist).encode())
        _atomic_write(self.root / name / "CHAMPION", previous.encode())
        return self.get(name, previous).manifest


def manifest_dict(m: Manifest) -> dict[str, Any]:
    return dataclasses.asdict(m)
