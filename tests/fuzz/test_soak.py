"""The long fuzz run (``slow``): every property of the suite with ``FINSCORE_FUZZ_EXAMPLES``
examples (default 2,000) instead of the default command's few, and every atheris target for
``FINSCORE_FUZZ_ATHERIS_RUNS`` inputs (default 20,000; at most ``FINSCORE_FUZZ_ATHERIS_SECONDS``
seconds each, default 120). Run it with::

    .venv/bin/python -m pytest -p no:cacheprovider -m slow tests/fuzz
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

from tests.fuzz import test_control, test_decoders, test_fraud, test_market
from tests.fuzz.conftest import SOAK_EXAMPLES

ROOT = Path(__file__).resolve().parents[2]


def _properties() -> list[tuple[str, Callable[[], None]]]:
    """Every hypothesis test of the suite (module.name, test)."""
    out = []
    for mod in (test_decoders, test_fraud, test_market, test_control):
        for name, fn in vars(mod).items():
            if name.startswith("test_") and hasattr(fn, "hypothesis"):
                out.append((f"{mod.__name__.rsplit('.', 1)[-1]}.{name}", fn))
    return out


PROPERTIES = _properties()


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("prop", [f for _, f in PROPERTIES], ids=[n for n, _ in PROPERTIES])
def test_soak_property(prop: Callable[[], None]) -> None:
    """The property with the soak profile's example count."""
    settings(settings.get_profile("soak"), max_examples=SOAK_EXAMPLES)(prop)()


def _targets() -> list[str]:
    try:
        from tests.fuzz.atheris_targets import TARGETS
    except ImportError:  # atheris is optional (a dev extra that builds on x86-64 Linux)
        return []
    return sorted(TARGETS)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("target", _targets())
def test_atheris_target(target: str) -> None:
    """Coverage-guided fuzzing of one parser: libFuzzer exits non-zero on the first input that
    raises anything but the parser's typed error (the input is saved as crash-* in tmp)."""
    runs = int(os.environ.get("FINSCORE_FUZZ_ATHERIS_RUNS", "20000"))
    seconds = int(os.environ.get("FINSCORE_FUZZ_ATHERIS_SECONDS", "120"))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.atheris_targets", target, f"-atheris_runs={runs}",
         f"-max_total_time={seconds}", "-artifact_prefix=/tmp/finscore-fuzz-"],
        cwd=ROOT, capture_output=True, text=True, timeout=seconds + 300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
