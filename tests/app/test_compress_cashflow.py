"""`finscore compress cashflow`: trains the cash-flow family on simulated daily takings, runs
cashflow_quick and registers (signed, promoted) the deployed candidate as model "cashflow"."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from click.testing import CliRunner

from finscore.app.cli.group import cli
from finscore.features.cashflow import HORIZON, LOOKBACK, QUANTILES
from finscore.models.registry import Registry


def test_compress_cashflow_registers_a_signed_model(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("FINSCORE_REGISTRY_DIR", str(tmp_path / "registry"))
    monkeypatch.setenv("FINSCORE_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.delenv("FINSCORE_SIGNING_KEY", raising=False)
    monkeypatch.delenv("FINSCORE_VERIFY_KEY", raising=False)
    args = ["compress", "cashflow", "--source", "sim", "--sim-size", "60", "70",
            "--terminals", "60", "--epochs", "2", "--teacher-epochs", "2", "--tolerance", "10",
            "--report", str(tmp_path / "report"), "--promote"]  # fmt: skip
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    reg = Registry(tmp_path / "registry")
    art = reg.champion("cashflow")
    assert art is not None and art.signature is not None
    from finscore.settings import Settings

    art.verify(Settings().model_keys(create=False).verify_key, require_signature=True)
    params = art.manifest.params
    assert params["lookback_days"] == LOOKBACK and params["horizon_days"] == HORIZON
    assert list(params["quantiles"]) == list(QUANTILES)
    s = ort.InferenceSession(art.onnx, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(0, 2, (5, LOOKBACK + 8)).astype(np.float32)
    out = s.run(["quantiles"], {s.get_inputs()[0].name: x})[0]
    assert out.shape == (5, HORIZON, len(QUANTILES))
    assert (np.diff(out, axis=-1) >= 0).all()  # never crossing
