"""A version the sidecar promotes keeps its report with it, in ``<reports>/<family>/v<N>/``, as
`finscore compress` does (issue 16): the dashboard's compression panel shows the live version's
report from there. Real broker, real (short) training on simulated labels, real registry."""

from __future__ import annotations

import pytest
import torch

from finscore.app.sidecar import Sidecar, SidecarConfig
from finscore.sim.transactions import DAY_MS, TxSimConfig, merged_events, simulate_frame
from tests.artifacts import TEST_SIGNING_KEY
from tests.streams.kit import make_topics

pytestmark = pytest.mark.broker
torch.set_num_threads(1)


def test_a_version_the_sidecar_promotes_keeps_its_report(client, prefix, tmp_path) -> None:
    make_topics(client, prefix, partitions=1)
    sim = TxSimConfig(n_customers=300, n_terminals=600, days=40, seed=3)
    frame = simulate_frame(sim)
    sc = Sidecar(SidecarConfig(client=client, topic_prefix=prefix, markets=False,
                               registry_dir=tmp_path / "registry", signing_key=TEST_SIGNING_KEY,
                               reports_dir=tmp_path / "runs", version_reports_dir=tmp_path / "reports",
                               min_labelled=100, min_split_rows=50, epochs=2, tolerance=1.0,
                               max_bytes=50_000_000))  # fmt: skip
    try:
        for kind, rec in merged_events(frame, sim.label_delay_days * DAY_MS):
            if kind != "transaction":
                sc.buffer.add(rec)
        done = sc.recompress("test")
    finally:
        sc.consumer.close()
    assert done["outcome"] == "promoted", done
    kept = tmp_path / "reports" / "fraud" / f"v{done['version']}"
    assert (kept / "report.md").exists() and (kept / "size.svg").exists()  # was: missing
    assert f"fraud v{done['version']}" in (kept / "report.md").read_text().splitlines()[0]
    assert done["report"] == str(kept / "report.md")
