"""Scoring with ONNX Runtime, and the model slot that makes hot swaps atomic per batch.

A :class:`Scorer` is one loaded model version. A :class:`ModelSlot` holds the live scorer and
at most one staged successor (plus an optional challenger for shadow/canary scoring). The
worker calls :meth:`ModelSlot.swap_if_staged` between two batches, so every event is scored
by exactly one version and outputs name it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from finscore.features.exceptions import UnknownFeature
from finscore.features.fraud import feature_columns
from finscore.logging import get_logger
from finscore.registry import Artifact, ArtifactError, Manifest

log = get_logger(__name__)


def session_options(threads: int = 1) -> ort.SessionOptions:
    """CPU session options: ``threads`` intra-op threads, full graph optimisation."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


class Scorer:
    """One model version loaded in ONNX Runtime; ``score_batch`` maps an input array to outputs.

    Fraud models return a score per row (shape [N]); market models class probabilities [N, 3].
    A fraud model names the features it reads (``manifest.feature_names``): :meth:`select`
    takes them from the worker's full feature rows, so models trained on an older, shorter
    feature list keep working; one that needs a feature the worker lacks is refused here.
    """

    def __init__(self, artifact: Artifact, threads: int = 1) -> None:
        self.artifact = artifact
        self.manifest: Manifest = artifact.manifest
        self.columns = _input_columns(self.manifest)
        self.session = ort.InferenceSession(
            artifact.onnx, sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def select(self, features: np.ndarray) -> np.ndarray:
        """This model's input columns of a batch of the worker's feature rows."""
        return features if self.columns is None else features[:, self.columns]

    def score_batch(self, x: np.ndarray) -> np.ndarray:
        """Run the model on a batch (float32 C-contiguous input is passed without a copy);
        returns the first output."""
        if len(x) == 0:
            shape = (0,) if self.manifest.family == "fraud" else (0, 3)
            return np.zeros(shape, dtype=np.float32)
        x = np.ascontiguousarray(x, dtype=np.float32)  # no copy when it already is
        out = self.session.run([self.output_name], {self.input_name: x})[0]
        return np.asarray(out)

    def smoke_test(self, atol: float = 1e-4) -> None:
        """Raise ValueError unless the model reproduces its manifest's reference outputs."""
        ref_in = self.manifest.reference_inputs
        if not ref_in:
            return
        got = self.score_batch(np.asarray(ref_in, dtype=np.float32))
        want = np.asarray(self.manifest.reference_outputs, dtype=np.float32)
        if got.shape != want.shape or not np.allclose(got, want, atol=atol):
            raise ValueError("smoke test failed: outputs differ from the manifest's reference")


def _input_columns(manifest: Manifest) -> np.ndarray | None:
    """Positions of a fraud model's features in the worker's rows (None: the rows as they are);
    raises :class:`ArtifactError` (``unknown_features``) when the worker lacks one."""
    if manifest.family != "fraud":
        return None
    try:
        return feature_columns(manifest.feature_names or [])
    except UnknownFeature as exc:
        raise ArtifactError(
            f"{manifest.name} v{manifest.version}: {exc.args[0]}", reason="unknown_features"
        ) from exc


@dataclass(frozen=True)
class Challenger:
    """A model scoring beside the live one: ``mode`` is ``shadow`` (every key, outputs to the
    shadow topic) or ``canary`` (``share`` of keys, its outputs replace the live ones)."""

    scorer: Scorer
    mode: str
    share: float = 0.0


class ModelSlot:
    """The live model of a worker, a staged successor, and an optional challenger.

    ``stage`` may be called from any thread (loading happens off the hot path);
    ``swap_if_staged`` is called by the worker loop between batches and is the only place the
    live model changes.
    """

    def __init__(self, live: Scorer | None = None) -> None:
        self._live = live
        self._staged: Scorer | None = None
        self._challenger: Challenger | None = None
        self._staged_challenger: Challenger | None | bool = False
        self._lock = threading.Lock()
        self.swaps: list[tuple[float, str, str]] = []  # (time, from_version, to_version)

    @property
    def live(self) -> Scorer | None:
        return self._live

    @property
    def challenger(self) -> Challenger | None:
        return self._challenger

    def stage(self, scorer: Scorer) -> None:
        """Queue ``scorer`` to become live at the next batch boundary."""
        with self._lock:
            self._staged = scorer

    def stage_challenger(self, challenger: Challenger | None) -> None:
        """Queue a challenger (or its removal with ``None``) for the next batch boundary."""
        with self._lock:
            self._staged_challenger = challenger

    def swap_if_staged(self) -> Scorer | None:
        """Make the staged model live; returns it, or None when nothing was staged."""
        with self._lock:
            staged, self._staged = self._staged, None
            if self._staged_challenger is not False:
                self._challenger = self._staged_challenger or None  # type: ignore[assignment]
                self._staged_challenger = False
        if staged is None:
            return None
        old = self._live.version if self._live else ""
        self._live = staged
        self.swaps.append((time.time(), old, staged.version))
        log.info("model.swapped", model=staged.name, old_version=old, version=staged.version)
        return staged
