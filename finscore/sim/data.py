"""Where real data lives (internal benchmarks only; never shipped): ``FINSCORE_DATA_DIR``."""

from __future__ import annotations

import io
import lzma
import os
from pathlib import Path

from finscore.exceptions import FinscoreError

REPO = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """``$FINSCORE_DATA_DIR``, else ``../shared/data`` next to the repository."""
    env = os.environ.get("FINSCORE_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


def require(path: Path) -> Path:
    """``path`` if it exists; otherwise a clear error saying how to provide it."""
    if not path.exists():
        raise FinscoreError(
            f"data file {path} not found",
            hint="set FINSCORE_DATA_DIR to the folder holding the benchmark data",
        )
    return path


def open_text(path: Path) -> io.TextIOBase:
    """A text stream of ``path``, transparently decompressing ``.xz``."""
    if path.suffix == ".xz":
        return io.TextIOWrapper(lzma.open(path), encoding="utf-8")  # type: ignore[return-value]
    return open(path, encoding="utf-8")  # noqa: SIM115


def cache_dir() -> Path:
    """``~/.cache/finscore`` (created)."""
    d = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "finscore"
    d.mkdir(parents=True, exist_ok=True)
    return d
