"""Scoring with ONNX Runtime: a :class:`Scorer` is one loaded model version; :func:`admit`
says whether it can serve a stream; a :class:`Challenger` scores beside the live model.

The slot that makes hot swaps atomic per batch (``ModelSlot``) is in
:mod:`finscore.streams.hot_swap`, with the rest of the swap.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnxruntime as ort

from finscore.families import FamilySpecError, builtin_family
from finscore.families.series import DailySeries
from finscore.features.cashflow import LOOKBACK as CASHFLOW_LOOKBACK
from finscore.features.exceptions import UnknownFeature
from finscore.features.fraud import N_FEATURES as FRAUD_WIDTH
from finscore.features.fraud import feature_columns
from finscore.features.market import BOOK_LAYOUT, LAYOUTS, layout_width
from finscore.features.market import N_FEATURES as MARKET_WIDTH
from finscore.logging import get_logger
from finscore.models.artifact import check_reference_outputs
from finscore.models.registry import Artifact, ArtifactError, Manifest
from finscore.providers import create_session, short

log = get_logger(__name__)

__all__ = [
    "Challenger",
    "ChallengerMode",
    "InputSpec",
    "Scorer",
    "admit",
    "decision_threshold",
    "in_canary",
    "session_options",
    "top_features",
]


def decision_threshold(scorer: Scorer, override: float | None = None) -> float:
    """The decision threshold of ``scorer``'s scores: ``override``, else the manifest's, else
    0.5."""
    if override is not None:
        return override
    t = scorer.manifest.threshold
    return 0.5 if t is None else float(t)


def top_features(
    x: np.ndarray, scorer: Scorer, k: int, default_names: Sequence[str] | None = None
) -> list[list[dict]]:
    """Per row of ``x`` (the columns ``scorer`` reads), the k features furthest from the
    training mean, in standard deviations: a cheap, model-agnostic "what is unusual about this
    event". Uses the manifest's ``feature_mean``/``feature_std`` params and its feature names
    (``default_names`` when it names none); empty lists when it has no statistics, or they do
    not match the columns."""
    params = scorer.manifest.params or {}
    mean, std = params.get("feature_mean"), params.get("feature_std")
    names = list(scorer.manifest.feature_names or default_names or [])
    if not mean or not std or len(mean) != x.shape[1] or len(names) != x.shape[1]:
        return [[] for _ in range(len(x))]
    z = (x - np.asarray(mean, dtype=np.float32)) / np.maximum(np.asarray(std, np.float32), 1e-6)
    order = np.argsort(-np.abs(z), axis=1)[:, :k]
    return [
        [{"feature": names[j], "value": float(x[r, j]), "contribution": float(z[r, j])}
         for j in row]
        for r, row in enumerate(order.tolist())
    ]  # fmt: skip


def session_options(threads: int = 1) -> ort.SessionOptions:
    """CPU session options: ``threads`` intra-op threads, full graph optimisation."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


class Scorer:
    """One model version loaded in ONNX Runtime; ``score_batch`` maps an input array to outputs.

    Fraud models return a score per row (shape [N]); market models class probabilities [N, 3];
    a declared family's (``probability`` output) a score per row.
    A fraud model names the features it reads (``manifest.feature_names``): :meth:`select`
    takes them from the worker's full feature rows, so models trained on an older, shorter
    feature list keep working; one that needs a feature the worker lacks is refused here.
    A declared family's model names them too; its columns are found by name once the stream's
    feature row is known (:meth:`bind`, which :func:`admit` calls).
    """

    def __init__(
        self, artifact: Artifact, threads: int = 1, providers: Sequence[str] | None = None
    ) -> None:
        """``providers``: execution providers in order of preference (short or full names,
        see :mod:`finscore.providers`); None = the process default (CPU unless configured).
        Unavailable ones are dropped (logged once); :attr:`provider` is the one in use."""
        self.artifact = artifact
        self.manifest: Manifest = artifact.manifest
        self.columns = _input_columns(self.manifest)
        self.session = create_session(artifact.onnx, session_options(threads), providers)
        self.provider: str = short(self.session.get_providers()[0])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def bind(self, features: Sequence[str]) -> None:
        """Read rows whose columns are named ``features`` (a declared family's feature row):
        :meth:`select` then takes the manifest's feature names from them, by name, in the
        manifest's order. Raises :class:`ArtifactError` (``unknown_features``) when the
        manifest names no feature, or one that is not in ``features``."""
        label = f"{self.manifest.name} v{self.manifest.version}"
        names = [str(n) for n in self.manifest.feature_names or []]
        if not names:
            raise ArtifactError(
                f"{label} names no features: a family's model must name the features it reads",
                reason="unknown_features",
            )
        position = {n: i for i, n in enumerate(features)}
        missing = [n for n in names if n not in position]
        if missing:
            raise ArtifactError(
                f"{label} reads features the family does not declare: {', '.join(missing)}",
                reason="unknown_features",
            )
        cols = np.array([position[n] for n in names], dtype=np.intp)
        identity = len(cols) == len(features) and bool((cols == np.arange(len(cols))).all())
        self.columns = None if identity else cols

    def select(self, features: np.ndarray) -> np.ndarray:
        """This model's input columns of a batch of the worker's feature rows."""
        return features if self.columns is None else features[:, self.columns]

    def score_batch(self, x: np.ndarray) -> np.ndarray:
        """Run the model on a batch (float32 C-contiguous input is passed without a copy);
        returns the first output."""
        if len(x) == 0:
            shape = (0, 3) if self.manifest.family == "market" else (0,)
            return np.zeros(shape, dtype=np.float32)
        x = np.ascontiguousarray(x, dtype=np.float32)  # no copy when it already is
        out = self.session.run([self.output_name], {self.input_name: x})[0]
        return np.asarray(out)

    def smoke_test(self, atol: float = 1e-4) -> None:
        """Raise :class:`ArtifactError` (``smoke_test``) unless the model reproduces its
        manifest's reference outputs within ``atol``, on this session
        (:func:`~finscore.models.artifact.check_reference_outputs`)."""
        check_reference_outputs(self.manifest, self.score_batch, atol)


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
class InputSpec:
    """What a stream feeds its model: the model ``family``, the ``width`` of a feature row and
    (market) the ``window`` of rows per input and the feature ``layout`` of a row
    (:mod:`finscore.features.market`); ``None`` means "not fixed yet" (a market worker adopts the
    first model's window and layout at start). ``features``: the names of a row's columns, for
    a declared family (its models are bound to them by name, :meth:`Scorer.bind`)."""

    family: str
    width: int
    window: int | None = None
    layout: str | None = None
    features: tuple[str, ...] | None = None

    @classmethod
    def fraud(cls) -> InputSpec:
        """The fraud stream: rows of every feature the worker computes."""
        return cls("fraud", FRAUD_WIDTH)

    @classmethod
    def declared(cls, family: str, features: Sequence[str]) -> InputSpec:
        """A declared family's stream (:mod:`finscore.families`): rows of its ``features``
        in declaration order; its models are named ``family`` and read a score per row."""
        return cls(family, len(features), features=tuple(features))

    @classmethod
    def market(cls, window: int | None = None, layout: str | None = None) -> InputSpec:
        """The market stream: ``window`` rows of ``layout`` (default width: the book's
        :data:`MARKET_WIDTH` values)."""
        return cls("market", layout_width(layout) if layout else MARKET_WIDTH, window, layout)

    @classmethod
    def cashflow(cls, lookback: int | None = None) -> InputSpec:
        """The cash-flow stream: rows of ``lookback + 8`` values
        (:func:`~finscore.features.cashflow.cashflow_feature_names`); ``window`` is the
        ``lookback`` in days (None: not fixed yet, the first model's is adopted)."""
        return cls("cashflow", (lookback or CASHFLOW_LOOKBACK) + 8, lookback)


def admit(scorer: Scorer, spec: InputSpec) -> None:
    """Raise :class:`ArtifactError` unless ``scorer`` can serve a stream fed as ``spec`` says.

    Checked at load time (:func:`~finscore.streams.hot_swap.load_scorer`, after the artifact's
    verification, which refuses a threshold outside [0, 1]), before a model can become live or
    a challenger, in order: the family (``wrong_family``); reference inputs and outputs present
    (``no_reference``: the smoke test must run); for a declared family, the features the model
    names, all among the family's (``unknown_features``, :meth:`Scorer.bind`); a dry run on a
    batch shaped exactly as the stream provides it, whose output must have the stream's shape,
    [N] for fraud and declared families, [N, 3] for market and [N, horizon_days, quantiles]
    for cashflow (``input_mismatch``: wrong rank, width, feature names, window or lookback);
    the reference outputs reproduced within 1e-4 (``smoke_test``: :meth:`Scorer.smoke_test`).
    """
    m = scorer.manifest
    label = f"{m.name} v{m.version}"
    if m.family != spec.family:
        raise ArtifactError(
            f"{label} is a {m.family!r} model; this worker scores {spec.family}",
            reason="wrong_family",
        )
    if not m.reference_inputs or not m.reference_outputs:
        raise ArtifactError(
            f"{label} has no reference inputs/outputs: it cannot be smoke-tested",
            reason="no_reference",
        )
    if spec.features is not None:
        scorer.bind(spec.features)
    n = 2
    if spec.family == "market":
        window = int((m.params or {}).get("window", 0) or 0)
        if window <= 0 or (spec.window is not None and window != spec.window):
            raise ArtifactError(
                f"{label} reads windows of {window} rows; the stream provides {spec.window}",
                reason="input_mismatch",
            )
        layout = str((m.params or {}).get("layout", BOOK_LAYOUT))
        if layout not in LAYOUTS or (spec.layout is not None and layout != spec.layout):
            raise ArtifactError(
                f"{label} reads {layout!r} rows; the stream provides {spec.layout!r}",
                reason="input_mismatch",
            )
        x = np.zeros((n, window, layout_width(layout)), dtype=np.float32)
        want: tuple[int, ...] = (n, 3)
    elif spec.family == "cashflow":  # [N, lookback + 8] -> [N, horizon_days, quantiles]
        params = m.params or {}
        lookback = int(params.get("lookback_days", 0) or 0)
        if lookback <= 0 or (spec.window is not None and lookback != spec.window):
            raise ArtifactError(
                f"{label} reads {lookback} days of takings; the stream provides {spec.window}",
                reason="input_mismatch",
            )
        try:  # a series the worker could not forecast with: refused now, not per forecast
            DailySeries.of(builtin_family("cashflow")).for_model(params)
        except FamilySpecError as exc:
            raise ArtifactError(f"{label}: {exc}", reason="input_mismatch") from None
        # the stream's rows: the lookback's days, then the declaration's extra columns
        extra = spec.width - (spec.window or CASHFLOW_LOOKBACK)
        x = np.zeros((n, lookback + extra), dtype=np.float32)
        want = (n, int(params.get("horizon_days", 0) or 0), len(params.get("quantiles") or []))
    else:
        x = scorer.select(np.zeros((n, spec.width), dtype=np.float32))
        want = (n,)
    try:
        got = scorer.score_batch(x).shape
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        raise ArtifactError(
            f"{label} does not accept the stream's input {list(x.shape)}: {exc}",
            reason="input_mismatch",
        ) from exc
    if tuple(got) != want:
        raise ArtifactError(
            f"{label} returns {list(got)} for the stream's input {list(x.shape)}, "
            f"expected {list(want)}",
            reason="input_mismatch",
        )
    try:
        scorer.smoke_test()
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime on malformed reference inputs
        raise ArtifactError(
            f"{label}: smoke test does not run: {exc}", reason="smoke_test"
        ) from exc


def in_canary(key: bytes | None, share: float) -> bool:
    """Deterministic key-based canary split: the same key always lands on the same side (every
    stream splits the same way, so a canary's share is the share of keys it scores)."""
    if share <= 0:
        return False
    return (zlib.crc32(key or b"") % 10_000) < share * 10_000


ChallengerMode = Literal["shadow", "canary"]


@dataclass(frozen=True)
class Challenger:
    """A model scoring beside the live one: ``mode`` is ``shadow`` (every key, outputs to the
    shadow topic) or ``canary`` (``share`` of keys, its outputs replace the live ones; see
    :meth:`finscore.streams.pipeline.StreamPipeline.emit`). Any other mode is a ValueError."""

    scorer: Scorer
    mode: ChallengerMode
    share: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("shadow", "canary"):
            raise ValueError(f"challenger mode {self.mode!r}: expected 'shadow' or 'canary'")
