"""Execution providers as a setting: requested providers that this onnxruntime build lacks are
dropped (CPU always last) and the fallback is said once, clearly (issue 19)."""

from __future__ import annotations

from collections.abc import Iterator

import onnxruntime as ort
import pytest
import structlog
from structlog.testing import capture_logs

from finscore import providers
from finscore.providers import CPU, batch_size_for, parse, resolve
from finscore.settings import Settings
from finscore.streams.scoring import Scorer
from tests.artifacts import artifact

CUDA = "CUDAExecutionProvider"
NO_CUDA = CUDA not in ort.get_available_providers()


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:
    """structlog events of finscore.providers (a fresh logger, so none cached elsewhere)."""
    providers.reset_warnings()
    with capture_logs() as captured:
        monkeypatch.setattr(providers, "log", structlog.get_logger(component="providers"))
        yield captured
    providers.reset_warnings()


def _fallbacks(logs: list[dict]) -> list[dict]:
    return [e for e in logs if e["event"] == "providers.fallback"]


def test_short_and_full_names_parse_in_order_without_duplicates() -> None:
    assert parse("CUDA,CPU") == (CUDA, CPU)
    assert parse(" tensorrt , cuda,CPU") == ("TensorrtExecutionProvider", CUDA, CPU)
    assert parse(["OpenVINOExecutionProvider", "cpu", "CPU"]) == ("OpenVINOExecutionProvider", CPU)
    assert parse("") == parse(None) == (CPU,)
    with pytest.raises(ValueError, match="unknown execution provider 'GPU'"):
        parse("GPU,CPU")


def test_an_unknown_provider_in_the_setting_is_refused_at_the_edge(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("FINSCORE_EXECUTION_PROVIDERS", "Cuda,Quantum")
    with pytest.raises(ValueError, match="Quantum"):
        Settings()
    monkeypatch.setenv("FINSCORE_EXECUTION_PROVIDERS", "CUDA,CPU")
    assert Settings().provider_list() == (CUDA, CPU)


def test_unavailable_providers_fall_back_to_cpu_and_say_so_once(logs) -> None:  # noqa: ANN001
    for _ in range(3):
        res = resolve("TensorRT,CUDA,CPU", available_providers=[CUDA, CPU])
        assert res.using == (CUDA, CPU) and res.missing == ("TensorrtExecutionProvider",)
    events = _fallbacks(logs)
    assert len(events) == 1
    assert events[0]["log_level"] == "warning"
    assert events[0]["requested"] == "TensorRT,CUDA,CPU" and events[0]["using"] == "CUDA,CPU"
    assert "TensorrtExecutionProvider not available" in events[0]["reason"]
    # CPU is always last, even when not asked for; nothing to say when all are available
    assert resolve("CUDA", available_providers=[CUDA, CPU]).using == (CUDA, CPU)
    assert len(_fallbacks(logs)) == 1


@pytest.mark.skipif(not NO_CUDA, reason="this onnxruntime build has CUDA")
def test_a_scorer_asked_for_cuda_runs_on_cpu_and_says_so_once(logs) -> None:  # noqa: ANN001
    scorers = [Scorer(artifact("fraud", str(v)), providers=("CUDA", "CPU")) for v in (1, 2, 3)]
    assert {s.provider for s in scorers} == {"CPU"}
    assert scorers[0].session.get_providers() == [CPU]
    scorers[0].smoke_test()
    events = _fallbacks(logs)
    assert len(events) == 1, events
    assert events[0]["requested"] == "CUDA,CPU" and events[0]["using"] == "CPU"
    assert events[0]["reason"] == (
        "CUDAExecutionProvider not available in this onnxruntime build (install finscore[gpu])"
    )


def test_the_process_default_applies_where_no_list_is_given(logs) -> None:  # noqa: ANN001
    before = providers.default()
    try:
        providers.configure("CUDA,CPU")
        s = Scorer(artifact("fraud"))
        assert s.provider == ("CUDA" if not NO_CUDA else "CPU")
        assert len(_fallbacks(logs)) == (1 if NO_CUDA else 0)
    finally:
        providers.configure(before)


def test_gpu_providers_get_large_batches() -> None:
    assert batch_size_for(CUDA, 100) == providers.GPU_MIN_BATCH == 1024
    assert batch_size_for("TensorrtExecutionProvider", 5000) == 5000
    assert batch_size_for(CPU, 100) == 100


@pytest.mark.broker
@pytest.mark.skipif(not NO_CUDA, reason="this onnxruntime build has CUDA")
def test_a_worker_asked_for_cuda_runs_on_cpu_says_so_once_and_labels_it(
    client, prefix, logs, monkeypatch
) -> None:  # noqa: ANN001
    from finscore.app.cli.worker import worker_config as edge_config
    from finscore.streams import worker
    from tests.streams.kit import make_topics, publish, running, worker_config

    monkeypatch.setattr(worker, "log", structlog.get_logger(component="worker"))
    make_topics(client, prefix, partitions=1)
    publish(client, prefix, artifact("fraud", "4"))
    cfg = worker_config(client, prefix, execution_providers=("CUDA", "CPU"))
    with running(cfg) as w:
        assert w.slot.live is not None and w.slot.live.provider == "CPU"
        text = w.metrics.exposition().decode()
    assert 'finscore_execution_provider{provider="CPU",stream="fraud"} 1.0' in text
    assert "CUDA" not in text.split("finscore_execution_provider")[-1]
    events = _fallbacks(logs)
    assert len(events) == 1, events  # worker start + model load: one warning, not one each
    assert (events[0]["requested"], events[0]["using"]) == ("CUDA,CPU", "CPU")
    started = [e for e in logs if e["event"] == "worker.execution_provider"]
    assert [(e["provider"], e["requested"]) for e in started] == [("CPU", "CUDA,CPU")]
    # the edge turns the setting into the plain tuple and a GPU-sized batch only on a GPU
    s = Settings(execution_providers="CUDA,CPU", bootstrap_servers="127.0.0.1:1")
    wc = edge_config(s, "fraud", batch_size=100)
    assert wc.execution_providers == (CUDA, CPU) and wc.batch_size == 100
