"""Everything that runs: the ``finscore`` console (:mod:`~finscore.app.cli`), the sidecar, the
console helpers (produce, tail, observe), the dashboard, the benchmark, the demo and the embedded
broker. The app may import every other room; nothing imports the app.

Its public surface is its modules; each is imported on first access (``finscore.app.demo``), so
importing this package (as every ``finscore.app.*`` import does) costs nothing.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["bench", "broker", "cli", "console", "dashboard", "demo", "sidecar"]


def __getattr__(name: str) -> ModuleType:
    """The submodule ``name`` of :data:`__all__`, imported on first access."""
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
