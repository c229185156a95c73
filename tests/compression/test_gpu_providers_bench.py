"""bench/gpu_providers.py runs on a machine without a GPU: the CPU column is measured and
CUDA/TensorRT are reported as unavailable, clearly (issue 19)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
from click.testing import CliRunner

from finscore.models.registry import Registry
from tests.artifacts import artifact

ROOT = Path(__file__).resolve().parents[2]
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def _bench():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("gpu_providers", ROOT / "bench/gpu_providers.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    reg = Registry(tmp_path / "registry")
    reg.publish(artifact("fraud", seed=1))
    reg.publish(artifact("fraud", seed=2))
    reg.publish(artifact("market", window=20))
    return tmp_path / "registry"


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime build has CUDA")
def test_without_a_gpu_the_cpu_column_runs_and_cuda_is_reported_unavailable(
    registry: Path, tmp_path: Path
) -> None:
    bench = _bench()
    docs = tmp_path / "BENCHMARKS.md"
    docs.write_text("# Benchmarks\n\nintro\n")
    out = tmp_path / "gpu.md"
    args = [str(registry), "--repeats", "20", "--seconds", "0.01", "--batches", "1,64",
            "--fp16", "--out", str(out), "--docs", str(docs)]  # fmt: skip
    res = CliRunner().invoke(bench.main, args)
    assert res.exit_code == 0, res.output
    table = out.read_text()
    assert "**CUDA unavailable**: not in this onnxruntime build (install finscore[gpu])" in table
    assert "**TensorRT unavailable**" in table
    rows = [line for line in table.splitlines() if line.startswith("| fraud") or
            line.startswith("| market")]  # fmt: skip
    # 3 fp32 versions + their fp16 conversions, CPU only
    assert len(rows) == 6 and all(" | CPU | " in r for r in rows)
    assert sum(" | fp16 | " in r for r in rows) == 3
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n") and text.count(bench.START) == 1
    # a second run replaces the block between the markers instead of adding one
    assert CliRunner().invoke(bench.main, args).exit_code == 0
    assert docs.read_text().count(bench.START) == 1


def test_precision_is_read_from_the_graph() -> None:
    import numpy as np

    from finscore.compression.quantize import float16_bytes, quantize_static_bytes

    bench = _bench()
    fp32 = artifact("fraud").onnx
    assert bench.precision_of(fp32) == "fp32"
    assert bench.precision_of(float16_bytes(fp32)) == "fp16"
    n = len(artifact("fraud").manifest.feature_names)
    calib = np.random.default_rng(0).normal(size=(64, n)).astype(np.float32)
    assert bench.precision_of(quantize_static_bytes(fp32, calib)) == "int8"
