"""Where the model keys come from: the settings, else a key pair kept once per machine.

Workers, the sidecar and ``finscore models promote`` refuse unsigned models by default. A
deployment sets ``FINSCORE_SIGNING_KEY`` (sidecar and model jobs) and ``FINSCORE_VERIFY_KEY``
(workers) explicitly. Without them, :func:`resolve_keys` uses the local key pair in the key
folder (``var/keys`` beside the registry by default)::

    <key_dir>/signing.key   Ed25519 private key, hex, mode 0600 (never logged)
    <key_dir>/verify.key    its public key, hex

creating it on first use (atomically: two processes racing create one pair), so ``finscore
demo``, ``compress``, ``models promote`` and the workers on one machine sign and verify with the
same pair without any setup. This module takes plain values; the settings are read at the edge.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from finscore.exceptions import FinscoreError
from finscore.models.artifact import ArtifactError, generate_keypair, public_key_of

__all__ = ["ModelKeys", "resolve_keys", "SIGNING_FILE", "VERIFY_FILE"]

SIGNING_FILE = "signing.key"
VERIFY_FILE = "verify.key"


@dataclass(frozen=True)
class ModelKeys:
    """The keys a process signs and verifies models with (hex; None = none).

    ``source`` says where they came from: ``settings``, ``local`` (the key folder) or
    ``created`` (the key folder, made just now); ``none`` when there are no keys at all.
    """

    signing_key: str | None = field(repr=False)
    verify_key: str | None
    source: str
    key_dir: Path | None = None


def _read(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def _create(key_dir: Path) -> bool:
    """Write a new pair into ``key_dir`` unless one exists; True when this call made it."""
    key_dir.parent.mkdir(parents=True, exist_ok=True)
    private, public = generate_keypair()
    tmp = Path(tempfile.mkdtemp(dir=key_dir.parent, prefix=f".{key_dir.name}-"))
    try:
        fd = os.open(tmp / SIGNING_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(private + "\n")
        (tmp / VERIFY_FILE).write_text(public + "\n")
        os.chmod(tmp, 0o700)
        try:
            os.rename(tmp, key_dir)  # atomic; fails when another process created it first
        except OSError:
            if not (key_dir / VERIFY_FILE).exists():
                raise
            return False
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_keys(
    signing_key: str | None,
    verify_key: str | None,
    key_dir: Path | None,
    *,
    create: bool = True,
) -> ModelKeys:
    """The keys to use: explicit ones first (a verify key follows from a signing key), else
    the pair in ``key_dir`` (created there when missing and ``create``). Raises
    :class:`FinscoreError` when the key folder holds a private key that does not match its
    public key."""
    if signing_key or verify_key:
        if signing_key and not verify_key:
            verify_key = public_key_of(signing_key)
        return ModelKeys(signing_key or None, verify_key or None, "settings")
    if key_dir is None:
        return ModelKeys(None, None, "none")
    source = "local"
    if not (key_dir / VERIFY_FILE).exists():
        if not create:
            return ModelKeys(None, None, "none", key_dir)
        source = "created" if _create(key_dir) else "local"
    private = _read(key_dir / SIGNING_FILE)
    public = _read(key_dir / VERIFY_FILE)
    if private and public:
        try:
            matches = public_key_of(private) == public
        except ArtifactError:
            matches = False
        if not matches:
            raise FinscoreError(
                f"the key pair in {key_dir} does not match",
                hint=f"remove {key_dir} to make a new pair, or set FINSCORE_SIGNING_KEY",
            )
    return ModelKeys(private, public, source, key_dir)
