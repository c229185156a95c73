"""A ``book40+mid`` market model in the columnar pipeline (real ONNX session, no broker): the
signals equal the offline windows of that layout scored by the model; a model whose layout is
not the stream's is refused at load (``input_mismatch``)."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from finscore.compression.export import export_onnx
from finscore.compression.market import MarketFamily
from finscore.features.market import (
    BOOK_LAYOUT,
    PATH_LAYOUT,
    book_array,
    make_windows,
    rows_from_book_array,
)
from finscore.features.market_windows import MarketWindows
from finscore.models.registry import Artifact, ArtifactError
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.market.pipeline import MarketPipeline
from finscore.streams.scoring import InputSpec, Scorer, admit
from tests.artifacts import _session_out, artifact
from tests.streams.test_market_pipeline import NOW_S, SIGNALS, messages, run, sim_ticks

WINDOW = 20


@pytest.fixture(scope="module")
def path_artifact() -> Artifact:
    """A (randomly initialised) distilled-student architecture reading ``book40+mid``."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    fam = MarketFamily(window=WINDOW, horizon=5, layout=PATH_LAYOUT)
    data = fam.load_data("sim", n=2500, seed=6, quick=True, max_train=300)
    head = fam.head(fam.student(data, 8)).eval()
    onnx = export_onnx(head, data.x_test[:4], fam.input_name, fam.output_name)
    ref_in = data.x_test[:2].astype(np.float32)
    base = artifact("market", "4", window=WINDOW)
    manifest = dataclasses.replace(
        base.manifest, sha256=hashlib.sha256(onnx).hexdigest(), size_bytes=len(onnx),
        input_shape=[None, WINDOW, ref_in.shape[2]], params=fam.params(data),
        reference_inputs=ref_in.tolist(), reference_outputs=_session_out(onnx, ref_in).tolist(),
    )  # fmt: skip
    return Artifact(manifest=manifest, onnx=onnx, signature=None)


def test_path_layout_signals_are_the_offline_path_windows_scored(path_artifact) -> None:
    records = sim_ticks(900)
    scorer = Scorer(path_artifact)
    pipe = MarketPipeline(
        MarketWindows(WINDOW, layout=PATH_LAYOUT), ModelSlot(scorer), "price-signals",
        clock=lambda: NOW_S,
    )  # fmt: skip
    outs, dead = run(pipe, messages(records), 97)
    assert dead == []
    signals = [SIGNALS.decode(o.value) for o in outs]
    for inst in ("SIMA", "SIMB", "SIMC"):
        mine = [r for r in records if r["instrument"] == inst]
        rows = rows_from_book_array(book_array(mine), PATH_LAYOUT)
        x, _ = make_windows(rows, np.zeros(len(mine), np.int8), window=WINDOW)
        got = [s for s in signals if s["instrument"] == inst]
        probs = np.array([[s["prob_down"], s["prob_flat"], s["prob_up"]] for s in got])
        np.testing.assert_allclose(probs, scorer.score_batch(x).astype(np.float64), rtol=1e-6)


def test_a_model_of_another_layout_is_refused_at_load(path_artifact) -> None:
    path_model, book_model = Scorer(path_artifact), Scorer(artifact("market", "3", window=WINDOW))
    admit(path_model, InputSpec.market(WINDOW))  # layout not fixed yet: the model's
    admit(path_model, InputSpec.market(WINDOW, PATH_LAYOUT))
    admit(book_model, InputSpec.market(WINDOW, BOOK_LAYOUT))
    for scorer, spec in (
        (path_model, InputSpec.market(WINDOW, BOOK_LAYOUT)),
        (book_model, InputSpec.market(WINDOW, PATH_LAYOUT)),
    ):
        with pytest.raises(ArtifactError, match="rows; the stream provides") as err:
            admit(scorer, spec)
        assert err.value.reason == "input_mismatch"
    odd = dataclasses.replace(
        path_artifact.manifest, params={**path_artifact.manifest.params, "layout": "book40+vol"}
    )
    with pytest.raises(ArtifactError) as err:
        admit(Scorer(Artifact(manifest=odd, onnx=path_artifact.onnx, signature=None)),
              InputSpec.market(WINDOW))  # fmt: skip
    assert err.value.reason == "input_mismatch"
