"""bench/cost_model.py at toy size: every component is timed, the in-process 1-vs-2-worker
fleet is measured, and the cost model has the shape it claims (per-worker cost falls with N
towards the label-side floor; no fleet fits above it)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from tests.artifacts import artifact

ROOT = Path(__file__).resolve().parents[2]


def _load():  # noqa: ANN202
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("cost_model", ROOT / "bench/cost_model.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


cm = _load()
COSTS = {"c_tx": 10e-6, "c_label": 5e-6, "c_entry": 5e-6, "a_tx": 1e-3, "a_label": 0.5e-3,
         "evict_s": 0.01}  # fmt: skip


def test_model_falls_with_workers_to_the_label_floor() -> None:
    r = 50_000.0
    t = [cm.worker_cpu(n, 64, r, r, COSTS, "all_outcomes", 5000) for n in (1, 2, 4, 64)]
    assert t == sorted(t, reverse=True)
    floor = r * (COSTS["c_label"] + cm.C_CONSUME)
    assert floor < t[-1] < floor + 0.05
    # all outcomes at 200K tx/s: the labels alone need a whole core: no fleet fits
    assert cm.fleet_size(1024, 200_000, 200_000, COSTS, "all_outcomes", 5000, 0.7) is None
    assert cm.fleet_size(64, 10_000, 10_000, COSTS, "all_outcomes", 5000, 0.7) == 1
    # fraud reports: the entries of the other workers take the place of the labels
    t2 = cm.worker_cpu(2, 64, r, 0.005 * r, COSTS, "fraud_reports", 5000)
    assert t2 > cm.worker_cpu(2, 64, r, 0.005 * r, COSTS, "all_outcomes", 5000) - r * 5e-6


def test_toy_run_measures_every_component(tmp_path: Path) -> None:
    state = tmp_path / "state.json"  # the fields bench/state_memory.py writes that are used
    state.write_text(json.dumps({"runs": [{
        "cards": 1000, "batch_us_per_row_median": {"tx_5000": 20.0, "labels_5000": 10.0},
        "bytes_per_entry": {"customers": 57.0, "cards": 81.0, "terminals": 91.0}}]}))  # fmt: skip
    args = argparse.Namespace(transactions=4000, batch=500, flush_every=2, repeat=1,
                              partitions=16, utilisation=0.7, report_share=None,
                              rates="10000,100000", customers=150, state_json=str(state),
                              json_out=str(tmp_path / "c.json"))  # fmt: skip
    res = cm.model_run(args, champion=artifact("fraud"))
    for contract in ("all_outcomes", "fraud_reports"):
        c = res["components_s"][contract]
        for k in ("decode", "validate", "features", "inference", "encode", "changelog flush",
                  "label apply"):  # fmt: skip
            assert c[k] > 0, (contract, k)
    two = res["fleet_validation"]["all_outcomes"]["two_workers"]
    one = res["fleet_validation"]["all_outcomes"]["one_worker"]
    assert sum(w["tx"] for w in two) == one["tx"]
    assert all(w["labels"] == one["labels"] for w in two)  # every worker applies every label
    assert (tmp_path / "c.json").exists()
    scaled = res["at_scale"]["costs_s"]
    assert scaled["c_label"] > res["model"]["all_outcomes"]["costs_s"]["c_label"]
