"""The local model registry: versions, the champion pointer, promote / rollback / previous,
and the validation of the names and versions that become its folders (torch-free; workers
import it).

The :class:`Registry` is a directory::

    <root>/<name>/<version>/model.onnx, manifest.json, signature   (signature optional)
    <root>/<name>/CHAMPION                                          (current version)
    <root>/<name>/HISTORY                                           (previous champions)

Versions are consecutive integers as strings. Writes are atomic: a version is written into a
hidden temp folder and renamed into place (a reader never sees half a version, and two
publishers racing for one number cannot both take it); pointer files are replaced with
``os.replace``. The registry refuses artifacts over :data:`MAX_ARTIFACT_BYTES` (they must travel
on the ``model-updates`` topic). :meth:`Registry.get` does not verify: loaders call
:func:`~finscore.models.artifact.verify_artifact`.

Artifacts, manifests, signing and verification live in :mod:`finscore.models.artifact`; their
names are re-exported here so ``from finscore.models.registry import Artifact`` keeps working.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from finscore.models.artifact import (
    KAFKA_DEFAULT_MESSAGE_BYTES,
    MAX_ARTIFACT_BYTES,
    Artifact,
    ArtifactError,
    Manifest,
    check_manifest,
    check_reference_outputs,
    check_signature,
    generate_keypair,
    manifest_dict,
    public_key_of,
    sha256_hex,
    sign_bytes,
    signature_valid,
    signed_payload,
    verify_artifact,
)

__all__ = [
    # the registry
    "MODEL_NAME_PATTERN",
    "VERSION_PATTERN",
    "Registry",
    "check_model_name",
    "check_version",
    # re-exported from finscore.models.artifact
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

#: What a model name may look like (it becomes a folder name and a Kafka key).
MODEL_NAME_PATTERN = r"[a-z][a-z0-9_-]{0,63}"
#: What a version may look like (consecutive integers, as strings).
VERSION_PATTERN = r"[1-9][0-9]{0,8}"
_NAME_RE = re.compile(MODEL_NAME_PATTERN)
_VERSION_RE = re.compile(VERSION_PATTERN)


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
