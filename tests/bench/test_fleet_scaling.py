"""bench/fleet_scaling.py on a real broker, at a tiny scale: each configuration's workers run
as processes, every transaction is flagged, and each worker's input and CPU are reported (the
cards workers of a fleet split the transactions between them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from finscore.models.registry import Registry
from finscore.sim.transactions import TxSimConfig, simulate_frame
from tests.artifacts import artifact

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]


def _load():  # noqa: ANN202
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("fleet_scaling", ROOT / "bench/fleet_scaling.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(("topology", "n"), [("stages", 2), ("single", 1)])
def test_each_worker_reports_its_share(client, tmp_path, topology: str, n: int) -> None:  # noqa: ANN001
    fs = _load()
    reg = Registry(tmp_path / "registry")
    art = reg.publish(artifact("fraud"))
    reg.promote(art.manifest.name, art.manifest.version)
    frame = simulate_frame(TxSimConfig(n_customers=60, n_terminals=80, days=10, seed=2))
    r = fs.run_config(client, frame, topology, n, 2, tmp_path / "registry", tmp_path)
    assert r["transactions"] == len(frame) and r["workers"] == n
    first = [w for w in r["per_worker"] if w["stage"] in ("cards", "all")]
    assert len(first) == n
    assert sum(w["records_in"] for w in first) >= len(frame)  # at-least-once: maybe more
    if n == 2:  # the partitions are split, so is the work
        assert all(0 < w["records_in"] < len(frame) for w in first)
    assert all(w["cpu_s"] > 0 and w["rss_mib"] > 0 for w in r["per_worker"])
    assert "| " + topology in fs.report([r])
