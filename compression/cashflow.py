"""The cash-flow family: a terminal's next days of takings as quantiles (issue 18, line 5).

- **Data**: as declared in ``finscore/families/cashflow.toml`` (compiled by
  :class:`finscore.families.series.DailySeries`): the daily takings of each terminal
  (:func:`finscore.features.cashflow.daily_takings`) from a transaction frame (the simulator,
  or the fraud handbook's transactions); a row is a terminal at a forecast origin ``d``
  (:func:`~finscore.features.cashflow.forecast_rows`): the 28 days before ``d`` scaled by
  their mean, ``log1p`` of that mean and the weekday of ``d``; its targets are the 7 days
  ``[d, d + 7)``, scaled the same way. Another declaration (``CashflowFamily(spec)``) gives
  other rows.
- **Splits** (:meth:`CashflowFamily.split`): by origin, in time order, so no target day of a
  training row is on or after the first validation origin, and none of a validation row on or
  after the first test origin (by default: the last ``test_origins`` origins whose targets fit
  are the test split, the ``val_origins`` before them, minus a horizon's gap, validation).
- **Models**: MLPs (:class:`~finscore.compression.nn.MLP`, standardised inputs) with
  ``horizon × len(quantiles)`` outputs (index ``h · Q + q``), trained with the pinball
  (quantile) loss; distillation (``soft`` = the teacher's sorted outputs) minimises
  ``alpha · mean |s − t| + (1 − alpha) · pinball(s, y)`` (the temperature does not apply to a
  regression and is ignored). The exported head (:class:`QuantileHead`) reshapes to
  ``[N, horizon, Q]`` and sorts each day's quantiles ascending, so they never cross (sorting
  never raises the pinball loss: Chernozhukov, Fernández-Val and Galichon, 2010).
- **Metric**: the gate's is ``neg_pinball``, **minus** the mean pinball loss of the scaled
  outputs over days and quantiles (the plan's gate keeps a candidate whose metric is at least
  the reference minus the tolerance: higher is better, so the loss is negated). Reported
  beside it: ``pinball`` (the loss itself), ``mase`` (MASE of the median, scaled by the
  in-sample seasonal-naive MAE of the row's own input window, m = 7, rows where that is 0 left
  out) and ``coverage`` (share of target days inside [q_lo, q_hi]).

Baselines and metrics in currency units (the benchmark's) are numpy functions here too:
:func:`pinball_loss`, :func:`mase`, :func:`seasonal_naive`, :func:`simple_es`,
:func:`seasonal_es`, :func:`residual_quantiles`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from finscore.compression.family import TrainData
from finscore.compression.nn import MLP, fit, predict
from finscore.compression.plan import Plan
from finscore.compression.steps import Distill, PruneStructured, QuantizeStatic, WeightShare
from finscore.families import FamilySpec, builtin_family
from finscore.families.series import DailySeries
from finscore.features.cashflow import (
    HORIZON,
    LOOKBACK,
    QUANTILES,
    SEASON,
    DailyTakings,
    seasonal_naive_scale,
)

__all__ = [
    "CashflowFamily",
    "CashflowSplits",
    "QuantileHead",
    "cashflow_quick",
    "mase",
    "pinball_loss",
    "residual_quantiles",
    "seasonal_es",
    "seasonal_naive",
    "simple_es",
]


# -- metrics ------------------------------------------------------------------------------------
def pinball_loss(y: np.ndarray, q: np.ndarray, levels: tuple[float, ...] | np.ndarray) -> float:
    """Mean pinball loss of quantile forecasts ``q`` (``[..., Q]``) of ``y`` (``[...]``) at
    ``levels``: ``mean over every value and level of max(τ (y − q), (τ − 1)(y − q))``."""
    tau = np.asarray(levels, dtype=np.float64)
    diff = np.asarray(y, dtype=np.float64)[..., None] - np.asarray(q, dtype=np.float64)
    return float(np.mean(np.maximum(tau * diff, (tau - 1) * diff)))


def mase(y: np.ndarray, point: np.ndarray, scale: np.ndarray) -> tuple[float, int]:
    """Mean absolute scaled error: per series (row of ``y``, ``[n, H]``) the MAE of ``point``
    divided by the series' in-sample seasonal-naive MAE ``scale`` (``[n]``), averaged over the
    series with ``scale > 0``; returns ``(mase, series left out for a zero scale)``."""
    s = np.asarray(scale, dtype=np.float64)
    mae = np.abs(np.asarray(y, dtype=np.float64) - np.asarray(point, dtype=np.float64)).mean(1)
    ok = s > 0
    return (float(np.mean(mae[ok] / s[ok])) if ok.any() else float("nan")), int((~ok).sum())


# -- baselines (numpy, [series, days] histories) ------------------------------------------------
def seasonal_naive(history: np.ndarray, horizon: int = HORIZON, season: int = SEASON):  # noqa: ANN201
    """Seasonal-naive forecasts: day ``T + h`` takes day ``T + h − season``'s value (the same
    weekday of the last week for ``horizon <= season``). Returns ``(point [n, horizon],
    residuals [n, T − season])``, the in-sample one-season errors ``y_t − y_{t − season}``."""
    h = np.asarray(history, dtype=np.float64)
    idx = h.shape[1] - season + (np.arange(horizon) % season)
    return h[:, idx], h[:, season:] - h[:, :-season]


_SES_ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


def simple_es(history: np.ndarray, horizon: int = HORIZON, alphas=_SES_ALPHAS):  # noqa: ANN001, ANN201
    """Simple exponential smoothing per series (level ``l_t = α y_t + (1 − α) l_{t−1}``,
    ``l_0 = y_0``), ``α`` chosen per series from ``alphas`` by the in-sample one-step squared
    error over ``t >= 1``; the forecast is flat at the last level. Returns ``(point [n,
    horizon], residuals [n, T − 1])`` (the chosen α's one-step errors)."""
    h = np.asarray(history, dtype=np.float64)
    n, t_len = h.shape
    best_sse = np.full(n, np.inf)
    point = np.zeros((n, horizon))
    resid = np.zeros((n, t_len - 1))
    for a in alphas:
        level = h[:, 0].copy()
        err = np.zeros((n, t_len - 1))
        for t in range(1, t_len):
            err[:, t - 1] = h[:, t] - level
            level = a * h[:, t] + (1 - a) * level
        sse = (err**2).sum(1)
        better = sse < best_sse
        best_sse[better] = sse[better]
        point[better] = level[better, None]
        resid[better] = err[better]
    return point, resid


_HW_ALPHAS = (0.05, 0.1, 0.2, 0.4)
_HW_GAMMAS = (0.01, 0.05, 0.1, 0.3)


def seasonal_es(  # noqa: ANN201
    history: np.ndarray, horizon: int = HORIZON, season: int = SEASON,
    alphas=_HW_ALPHAS, gammas=_HW_GAMMAS,  # noqa: ANN001
):  # fmt: skip
    """Exponential smoothing with an additive weekly season and no trend (Holt-Winters
    ETS(A,N,A)) per series: ``l_t = α (y_t − s_{t−m}) + (1 − α) l_{t−1}``, ``s_t = γ (y_t −
    l_t) + (1 − γ) s_{t−m}``, initialised on the first season (level: its mean; season: its
    deviations from it); ``(α, γ)`` chosen per series from the grid by the in-sample one-step
    squared error after the first season. Forecast ``l_T + s_{T − m + 1 + (h mod m)}``.
    Returns ``(point [n, horizon], residuals [n, T − m])`` (one-step errors)."""
    h = np.asarray(history, dtype=np.float64)
    n, t_len = h.shape
    m = season
    best_sse = np.full(n, np.inf)
    point = np.zeros((n, horizon))
    resid = np.zeros((n, t_len - m))
    for a in alphas:
        for g in gammas:
            level = h[:, :m].mean(1)
            seas = list((h[:, :m] - level[:, None]).T)  # s_{t} for the first season
            err = np.zeros((n, t_len - m))
            for t in range(m, t_len):
                s_old = seas[t - m]
                err[:, t - m] = h[:, t] - (level + s_old)
                level = a * (h[:, t] - s_old) + (1 - a) * level
                seas.append(g * (h[:, t] - level) + (1 - g) * s_old)
            sse = (err**2).sum(1)
            better = sse < best_sse
            best_sse[better] = sse[better]
            fc = np.stack([level + seas[t_len - m + (k % m)] for k in range(horizon)], 1)
            point[better] = fc[better]
            resid[better] = err[better]
    return point, resid


def residual_quantiles(
    point: np.ndarray, residuals: np.ndarray, levels: tuple[float, ...] = QUANTILES,
    window: int = LOOKBACK, floor: float | None = 0.0,
) -> np.ndarray:  # fmt: skip
    """Quantile forecasts of a point forecast: ``point + `` the series' empirical ``levels``
    quantiles of its last ``window`` in-sample one-step residuals (the same offsets for every
    day ahead: multi-step widening is ignored), clipped below at ``floor`` (takings are never
    negative; None: no clip). ``[n, H]`` → ``[n, H, Q]``."""
    r = np.asarray(residuals, dtype=np.float64)[:, -window:]
    offs = np.quantile(r, np.asarray(levels), axis=1).T  # [n, Q]
    q = np.asarray(point, dtype=np.float64)[:, :, None] + offs[:, None, :]
    return np.maximum(q, floor) if floor is not None else q


# -- the family ---------------------------------------------------------------------------------
class QuantileHead(nn.Module):
    """Exported head: outputs ``[N, H·Q]`` → ``[N, H, Q]``, each day's quantiles sorted."""

    def __init__(self, model: nn.Module, horizon: int, n_quantiles: int) -> None:
        super().__init__()
        self.model, self.horizon, self.n_quantiles = model, horizon, n_quantiles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x).reshape(-1, self.horizon, self.n_quantiles)
        return torch.sort(out, dim=-1).values


@dataclass(frozen=True)
class CashflowSplits:
    """Origins (day columns) of the three splits; ``None``: :meth:`default` for a history."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    @classmethod
    def default(
        cls, n_days: int, *, lookback: int = LOOKBACK, horizon: int = HORIZON,
        val_origins: int = 7, test_origins: int = 7,
    ) -> CashflowSplits:  # fmt: skip
        """Test: the last ``test_origins`` origins whose targets fit; validation: the
        ``val_origins`` origins whose targets end just before the first test origin;
        training: every origin from ``lookback`` whose targets end before the first
        validation origin."""
        t0 = n_days - horizon - test_origins + 1
        v0 = t0 - horizon - val_origins + 1
        train = tuple(range(lookback, v0 - horizon + 1))
        if not train:
            raise ValueError(f"{n_days} days leave no training origin")
        return cls(
            train, tuple(range(v0, t0 - horizon + 1)), tuple(range(t0, n_days - horizon + 1))
        )

    def check(self, horizon: int = HORIZON) -> None:
        """Raise ValueError unless every split's targets end before the next split begins."""
        for a, b in ((self.train, self.val), (self.val, self.test)):
            if a and b and max(a) + horizon > min(b):
                raise ValueError("a split's target days overlap the next split's origins")


class CashflowFamily:
    """Quantile MLPs over a declared daily series (see the module docstring): ``spec`` (the
    built-in ``cashflow`` declaration by default); ``lookback``, ``horizon``, ``quantiles``,
    ``min_scale``: the declaration's unless given (:meth:`DailySeries.replace`)."""

    name = "cashflow"
    metric = "neg_pinball"
    input_name = "features"
    output_name = "quantiles"
    # int8 parity, in scaled units (a day's takings over the 28-day mean): the probability
    # families' 0.05 refused int8 students whose validation pinball equalled the teacher's
    # (parity error 0.08 on the handbook's terminals); the gate's pinball still decides.
    parity_atol = 0.15

    def __init__(
        self,
        spec: FamilySpec | None = None,
        *,
        lookback: int | None = None,
        horizon: int | None = None,
        quantiles: tuple[float, ...] | None = None,
        teacher_hidden: tuple[int, ...] = (128, 128),
        dropout: float = 0.1,
        min_scale: float | None = None,
        batch_size: int = 512,
    ) -> None:
        self.series = DailySeries.of(spec or builtin_family("cashflow")).replace(
            lookback=lookback, horizon=horizon, quantiles=quantiles, min_scale=min_scale
        )
        self.spec = self.series.spec
        self.lookback, self.horizon = self.series.lookback, self.series.horizon
        self.quantiles = self.series.quantiles
        self.teacher_hidden = list(teacher_hidden)
        self.dropout = dropout
        self.min_scale = self.series.min_scale
        self.batch_size = batch_size

    # -- data -------------------------------------------------------------------------------
    def load_data(
        self,
        source: str = "sim",
        *,
        data_dir: Path | None = None,
        n_customers: int = 500,
        days: int = 90,
        seed: int = 0,
        max_terminals: int | None = None,
    ) -> TrainData:
        """``handbook``: the handbook's transactions (``data_dir``/fraud_handbook_sim, default
        ``FINSCORE_DATA_DIR``); ``sim``: the simulator (``n_customers``, twice as many
        terminals, ``days``). ``max_terminals``: a random subset (seeded) of the terminals."""
        if source == "handbook":
            from finscore.sim.handbook import handbook_path, load_handbook_frame

            frame = load_handbook_frame(handbook_path(data_dir))
        else:
            from finscore.sim.transactions import TxSimConfig, simulate_frame

            frame = simulate_frame(TxSimConfig(n_customers=n_customers,
                                               n_terminals=2 * n_customers, days=days, seed=seed))  # fmt: skip
        takings = self.series.daily(frame)
        if max_terminals is not None and max_terminals < len(takings.terminals):
            rows = np.sort(np.random.default_rng(seed).choice(
                len(takings.terminals), max_terminals, replace=False))  # fmt: skip
            takings = takings.select(rows)
        return self.split(takings)

    def rows(self, takings: DailyTakings, origins: tuple[int, ...] | np.ndarray):  # noqa: ANN201
        """(x, y, scale, seasonal-naive scale in scaled units) of every terminal at ``origins``
        (the declared rows: :meth:`DailySeries.rows`)."""
        x, y, scale = self.series.rows(
            takings.values, np.asarray(origins, dtype=np.int64), first_day=takings.first_day
        )
        assert y is not None
        snaive = seasonal_naive_scale(x[:, : self.lookback])  # scaled inputs → scaled MAE
        return x, y, scale, snaive

    def split(self, takings: DailyTakings, splits: CashflowSplits | None = None) -> TrainData:
        """Rows of ``takings`` at each split's origins (:class:`CashflowSplits`, default
        :meth:`CashflowSplits.default`); ``meta`` keeps each split's scales (``{split}_scale``,
        currency per scaled unit) and seasonal-naive MAEs (``{split}_snaive``, scaled)."""
        splits = splits or CashflowSplits.default(
            takings.values.shape[1], lookback=self.lookback, horizon=self.horizon
        )
        splits.check(self.horizon)
        parts = {k: self.rows(takings, getattr(splits, k)) for k in ("train", "val", "test")}
        (xtr, ytr, _, _), (xva, yva, sva, nva), (xte, yte, ste, nte) = (
            parts["train"], parts["val"], parts["test"],
        )  # fmt: skip
        return TrainData(
            xtr, ytr, xva, yva, xte, yte,
            meta={"val_scale": sva, "val_snaive": nva, "test_scale": ste, "test_snaive": nte,
                  "splits": splits, "terminals": len(takings.terminals),
                  "first_day": takings.first_day},
        )  # fmt: skip

    # -- models -----------------------------------------------------------------------------
    @property
    def n_out(self) -> int:
        return self.horizon * len(self.quantiles)

    def _mlp(self, data: TrainData, hidden: list[int], dropout: float) -> MLP:
        """A fresh MLP whose initial weights depend on its shape only (seeded under a forked
        RNG), so a step that makes a student gives the same model however much of the global
        RNG ran before it (the contract's ``is_seeded_deterministic``)."""
        with torch.random.fork_rng():
            torch.manual_seed(len(hidden) * 1_000_003 + sum(hidden))
            return MLP(data.x_train.shape[1], hidden, self.n_out, data.x_train.mean(0),
                       data.x_train.std(0), dropout)  # fmt: skip

    def teacher(self, data: TrainData) -> nn.Module:
        """An MLP with ``teacher_hidden`` layers and dropout."""
        return self._mlp(data, self.teacher_hidden, self.dropout)

    def student(self, data: TrainData, width: int | tuple[int, ...] | list[int]) -> nn.Module:
        """An MLP student: a width → hidden layers (width, width // 2); a sequence → those."""
        if isinstance(width, int):
            return self._mlp(data, [width, max(4, width // 2)], 0.0)
        return self._mlp(data, [int(w) for w in width], 0.0)

    def _levels(self) -> torch.Tensor:
        return torch.tensor(self.quantiles, dtype=torch.float32).repeat(self.horizon)

    def train(
        self,
        model: nn.Module,
        data: TrainData,
        *,
        epochs: int,
        seed: int,
        soft: np.ndarray | None = None,
        temperature: float = 1.0,
        alpha: float = 0.0,
        lr: float = 1e-3,
        after_step=None,  # noqa: ANN001
    ) -> nn.Module:
        """Pinball loss against the targets (each output ``h · Q + q`` against day ``h`` at
        level ``quantiles[q]``), or with ``soft`` (the teacher's outputs, :meth:`logits`)
        ``alpha · mean |s − t| + (1 − alpha) · pinball``; ``temperature`` is ignored."""
        tau = self._levels()
        q_n = len(self.quantiles)

        def loss(out: torch.Tensor, y: torch.Tensor, soft_t: torch.Tensor | None) -> torch.Tensor:
            diff = y.float().repeat_interleave(q_n, dim=1) - out
            hard = torch.maximum(tau * diff, (tau - 1) * diff).mean()
            if soft_t is None or alpha == 0:
                return hard
            return alpha * (out - soft_t).abs().mean() + (1 - alpha) * hard

        return fit(model, data.x_train, data.y_train, loss=loss, epochs=epochs, lr=lr, seed=seed,
                   targets=soft, batch_size=self.batch_size, after_step=after_step,
                   schedule="cosine")  # fmt: skip

    def logits(self, model: nn.Module, x: np.ndarray) -> np.ndarray:
        """The model's outputs with each day's quantiles sorted, flat ``[N, H·Q]`` (the
        distillation targets)."""
        out = predict(model, x).reshape(-1, self.horizon, len(self.quantiles))
        return np.sort(out, axis=-1).reshape(len(out), -1)

    def head(self, model: nn.Module) -> nn.Module:
        return QuantileHead(model, self.horizon, len(self.quantiles))

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, outputs: np.ndarray, data: TrainData, split: str = "test") -> dict:
        """On a split's scaled outputs ``[N, H, Q]`` (or flat): ``neg_pinball`` (the gate's),
        ``pinball``, ``mase`` of the median (the level nearest 0.5) and ``coverage`` of the
        outermost quantiles; all in scaled units (MASE is scale-free)."""
        y = data.y_test if split == "test" else data.y_val
        q = np.sort(np.asarray(outputs, dtype=np.float64).reshape(len(y), self.horizon, -1), -1)
        loss = pinball_loss(y, q, self.quantiles)
        mid = int(np.argmin(np.abs(np.asarray(self.quantiles) - 0.5)))
        m, _ = mase(y, q[..., mid], data.meta[f"{split}_snaive"])
        cover = float(np.mean((y >= q[..., 0]) & (y <= q[..., -1])))
        return {"neg_pinball": -loss, "pinball": loss, "mase": m, "coverage": cover}

    def threshold(self, outputs_val: np.ndarray, data: TrainData) -> float | None:
        """No decision threshold: a forecast, not a score."""
        return None

    def params(self, data: TrainData) -> dict[str, Any]:
        """What a worker needs to build rows and read outputs."""
        return {
            "lookback_days": self.lookback,
            "horizon_days": self.horizon,
            "quantiles": list(self.quantiles),
            "min_scale": self.min_scale,
            "scaling": "inputs and outputs divided by max(mean of the lookback window, min_scale)",
            "output_layout": "[batch, horizon_days, quantiles], sorted along quantiles",
        }

    def feature_names(self) -> list[str]:
        """The declared row's columns (``lag_28`` … ``lag_1``, ``log_scale``, ``dow_0`` …
        ``dow_6`` for the built-in declaration)."""
        return list(self.series.feature_names)

    def example(self, data: TrainData, n: int = 4) -> np.ndarray:
        return data.x_test[:n].astype(np.float32)


def cashflow_quick(epochs: int, teacher_epochs: int, seed: int = 0) -> Plan:
    """A width-32 student distilled (alpha 0.5, lr 3e-3), a quarter of its neurons pruned,
    32 shared weights per layer (2 fine-tune epochs each), static int8."""
    steps = [
        Distill(32, alpha=0.5, lr=3e-3),
        PruneStructured(0.25, 2),
        WeightShare(32, 2),
        QuantizeStatic(1024),
    ]
    return Plan(steps, teacher_epochs=teacher_epochs, epochs=epochs, seed=seed,
                fine_tune_lr=1e-3, fine_tune_alpha=0.5)  # fmt: skip
