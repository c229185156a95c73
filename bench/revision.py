"""Import the code of another git revision beside this one, in the same process.

The pipeline benchmarks run a previous revision's pipeline side by side with the current one
(same messages, same process, interleaved runs). Loading one file of that revision breaks as
soon as the layout changes (a module moved, split or renamed), so :func:`import_from` imports
the *whole* revision instead: its tree is extracted once (``git archive``, nothing in the
repository changes) and its modules are imported under a private top-level name, ``finscore``
and every package mapped by that revision's ``pyproject.toml`` (``package-dir``) included, with
their ``finscore`` imports pointed at that copy. Third-party packages are shared.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import re
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import types
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_IMPORTS = re.compile(rb"^(\s*)(from|import)(\s+)finscore\b", re.MULTILINE)


class _Loader(importlib.machinery.SourceFileLoader):
    """A source loader whose modules import ``finscore`` from the revision's copy."""

    def __init__(self, fullname: str, path: str, prefix: str) -> None:
        super().__init__(fullname, path)
        self.prefix = prefix.encode()

    def source_to_code(self, data, path, *, _optimize=-1):  # type: ignore[override]  # noqa: ANN001, ANN202
        text = _IMPORTS.sub(rb"\1\2\3" + self.prefix + rb".finscore", bytes(data))
        return compile(text, path, "exec", dont_inherit=True, optimize=_optimize)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``<prefix>.finscore...`` modules in an extracted tree, by its package mapping."""

    def __init__(self, prefix: str, root: Path, mapping: dict[str, str]) -> None:
        self.prefix, self.root = prefix, root
        # longest package names first: finscore.streams before finscore
        self.mapping = sorted(mapping.items(), key=lambda kv: -len(kv[0]))

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ANN201
        if not fullname.startswith(self.prefix + ".finscore"):
            return None
        name = fullname[len(self.prefix) + 1 :]
        for package, folder in self.mapping:
            if name == package or name.startswith(package + "."):
                rest = name[len(package) :].lstrip(".").split(".") if name != package else []
                base = self.root.joinpath(folder, *[p for p in rest if p])
                break
        else:
            return None
        init = base / "__init__.py"
        if init.is_file():
            loader = _Loader(fullname, str(init), self.prefix)
            return importlib.util.spec_from_file_location(
                fullname, init, loader=loader, submodule_search_locations=[str(base)]
            )
        file = base.with_suffix(".py")
        if file.is_file():
            return importlib.util.spec_from_file_location(
                fullname, file, loader=_Loader(fullname, str(file), self.prefix)
            )
        return None


def _extract(rev: str) -> tuple[str, Path]:
    """(full commit id, folder holding the revision's tree)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    folder = Path(tempfile.gettempdir()) / f"finscore-revision-{sha}"
    if not (folder / "pyproject.toml").is_file():
        tar = subprocess.run(
            ["git", "archive", "--format=tar", sha], cwd=ROOT, check=True, capture_output=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            t.extractall(folder, filter="data")
    return sha, folder


def import_from(rev: str, candidates: Sequence[str], attribute: str) -> types.ModuleType:
    """The first of the ``candidates`` modules (``finscore...`` names) of revision ``rev`` that
    defines ``attribute``; e.g. ``("finscore.streams.fraud.pipeline",
    "finscore.streams.fraud")`` finds the fraud pipeline before and after it moved into a
    folder. Raises ImportError when none does."""
    sha, root = _extract(rev)
    prefix = f"revision_{sha[:12]}"
    if prefix not in sys.modules:
        config = tomllib.loads((root / "pyproject.toml").read_text())
        mapping = config["tool"]["setuptools"].get("package-dir", {"finscore": "finscore"})
        top = types.ModuleType(prefix)
        top.__path__ = []  # a package holding only the revision's finscore
        sys.modules[prefix] = top
        sys.meta_path.insert(0, _Finder(prefix, root, mapping))
    tried = []
    for name in candidates:
        try:
            module = importlib.import_module(f"{prefix}.{name}")
        except ModuleNotFoundError as exc:
            tried.append(f"{name}: {exc}")
            continue
        if hasattr(module, attribute):
            return module
        tried.append(f"{name}: no {attribute}")
    raise ImportError(f"revision {rev} has no {attribute} in {list(candidates)} ({tried})")
