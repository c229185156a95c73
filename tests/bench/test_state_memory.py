"""bench/state_memory.py at toy size: a worker-built state is measured (arrays, RSS, changelog
bytes per transaction) and the CLI's tables and JSON come out, so the script cannot rot."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("state_memory", ROOT / "bench/state_memory.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


sm = _load()


def test_measure_holds_the_fed_entries_and_counts_their_bytes() -> None:
    d = sm.Density(tx_per_card_day=2.0, fraud_share=0.01, terminals_per_card=2.0,
                   sim_cards=0, sim_days=0)  # fmt: skip
    r = sm.measure(300, d, contract="all_outcomes", days=10, chunk_hours=6, commit_tx=300)
    st = r["stores"]
    # 10 days < every window: nothing evicted; labels of the first 3 days are known.
    assert st["customers"]["entries"] >= 0.9 * r["transactions_fed"]
    assert st["cards"]["entries"] == st["terminals"]["entries"] > 0
    assert r["bytes_per_entry"]["customers"] >= 40  # 5 int64 columns at least
    assert r["state_bytes"] == sum(sm.total(s) for s in st.values())
    assert 40 <= r["changelog_bytes_per_tx"] < 120  # FSM1: 40 B a row + the names
    assert r["changelog_records"] <= sm.PARTITIONS


def test_fraud_reports_keeps_the_terminal_transactions() -> None:
    d = sm.Density(2.0, 0.01, 2.0, 0, 0)
    r = sm.measure(200, d, contract="fraud_reports", days=9, chunk_hours=12, commit_tx=200)
    st = r["stores"]
    assert st["terminal_transactions"]["entries"] >= st["customers"]["entries"] * 0.9
    assert st["terminals"]["entries"] < 0.1 * st["terminal_transactions"]["entries"]


def test_cli_runs_each_size_in_its_own_process(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench/state_memory.py"), "--cards", "200,400", "--days", "8",
         "--sim-cards", "200", "--commit-tx", "200", "--json-out", str(out)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "Linear fit" in proc.stdout and "B/card" in proc.stdout
    runs = json.loads(out.read_text())["runs"]
    assert [r["cards"] for r in runs] == [200, 400]
    a, b, r2 = sm.fit([1, 2, 3], [2, 4, 6])
    assert abs(a - 2) < 1e-9 and abs(b) < 1e-9 and r2 == 1.0
