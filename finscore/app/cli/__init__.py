"""The ``finscore`` console: :func:`cli` (the click group) and :func:`main` (the entry point).

Both live in :mod:`finscore.app.cli.group` and are imported on first access, never by
importing this package: ``finscore --help`` must stay fast (bench/cli_help.py,
tests/app/test_console.py) and the worker command module (:mod:`finscore.app.cli.worker`) must
not pay for the console. ``python -m finscore.app.cli`` runs it (``__main__.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from finscore.app.cli.group import cli, main

__all__ = ["cli", "main"]


def __getattr__(name: str) -> Any:
    """``cli`` and ``main`` from :mod:`finscore.app.cli.group`, imported on first access."""
    if name in __all__:
        return getattr(importlib.import_module(f"{__name__}.group"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
