"""The drift scenario end to end: a new fraud pattern appears, the sidecar sees the live
model's AP fall, recompresses on recent labelled data, gates the candidate against the
champion, and the running worker hot-swaps to it."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from finscore.app.console.produce import produce
from finscore.app.sidecar import OutcomeBuffer, Sidecar, SidecarConfig
from finscore.compression.fraud import FraudFamily, sim_splits, split_frame
from finscore.compression.plan import Gate, to_artifact
from finscore.compression.plans import fraud_plan
from finscore.models.registry import Registry
from finscore.schemas import topics as T
from finscore.sim.transactions import DAY_MS, TxSimConfig, merged_events, simulate_frame
from tests.artifacts import TEST_SIGNING_KEY
from tests.streams.kit import make_topics, publish, running, worker_config

pytestmark = pytest.mark.broker
torch.set_num_threads(1)


def test_drift_triggers_a_recompression_that_passes_the_gate_and_is_swapped_in(
    client, prefix, tmp_path
) -> None:
    cfg = TxSimConfig(n_customers=500, n_terminals=1000, days=56, drift_day=40, seed=3)
    frame = simulate_frame(cfg)
    # v1: trained before the drift (days 0–39), like a model that has been live for a while.
    before = frame.select(frame.event_time < cfg.start_ms + 40 * DAY_MS)
    fam = FraudFamily(teacher_hidden=(64, 32))
    data = split_frame(before, sim_splits(cfg.start, 40), exclude_known_compromised=False)
    result = fraud_plan("quick", 4, 6, seed=0).run(fam, data, Gate("ap", 0.2))
    reg = Registry(tmp_path / "registry")
    v1 = reg.publish(to_artifact(result, result.deployed, fam, data))
    reg.promote("fraud", v1.manifest.version)
    # Training distributions travel with the model, for the sidecar's population-stability checks.
    assert len(v1.manifest.params["score_quantiles"]) == 11
    assert len(v1.manifest.params["feature_quantiles"]) == len(v1.manifest.feature_names)
    make_topics(client, prefix, partitions=2)
    publish(client, prefix, v1)

    def events():  # noqa: ANN202
        for kind, rec in merged_events(frame, cfg.label_delay_days * DAY_MS):
            if kind == "transaction":
                yield prefix + T.TRANSACTIONS, rec["customer_id"], "transaction", rec
            else:
                yield prefix + T.FRAUD_LABELS, rec["customer_id"], "fraud_label", rec

    sc = Sidecar(SidecarConfig(client=client, topic_prefix=prefix, registry_dir=tmp_path / "registry",
                               signing_key=TEST_SIGNING_KEY, min_outcomes=3000, ap_drop=0.1, tolerance=0.02, cooldown_s=0,
                               reports_dir=tmp_path / "reports"))  # fmt: skip
    side = threading.Thread(target=sc.run, daemon=True)
    with running(worker_config(client, prefix)) as w:
        side.start()
        produce(client, events(), rate=0)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and w.slot.live.version == "1":
            time.sleep(0.5)
        sc.stop()
        side.join(300)
        live = w.slot.live.version
    runs = sc.state.recompressions
    assert runs and runs[0]["reason"].startswith("drift"), runs
    promoted = [r for r in runs if r["outcome"] == "promoted"]
    assert promoted, runs
    assert promoted[0]["candidate_ap"] >= promoted[0]["champion_ap"] - 0.02
    # The target: within 0.02 AP of a model trained on the new regime (same hold-out).
    assert promoted[0]["candidate_ap"] >= promoted[0]["new_regime_teacher_ap"] - 0.02
    assert live == promoted[0]["version"] == "2"
    assert reg.champion("fraud").manifest.version == "2"


def test_the_outcome_buffer_gives_whole_frames_while_labels_keep_arriving() -> None:
    """The consumer adds labels while a recompression thread takes a frame: every frame's
    columns are one snapshot (a frame built from a list still growing had columns of
    different lengths)."""
    buf = OutcomeBuffer(history_days=400)
    done = threading.Event()

    def add() -> None:
        for i in range(200_000):
            buf.add({"transaction_id": str(i), "tx_time": i * 1000, "customer_id": str(i % 97),
                     "terminal_id": str(i % 89), "amount": 1.5, "is_fraud": i % 50 == 0})  # fmt: skip
        done.set()

    thread = threading.Thread(target=add)
    thread.start()
    sizes = []
    while not done.is_set():
        f = buf.frame()
        lengths = {len(getattr(f, k)) for k in f.__dataclass_fields__}
        assert len(lengths) == 1, lengths
        sizes.append(lengths.pop())
    thread.join()
    assert len(buf.frame()) == 200_000 and len(sizes) > 1
