"""Population stability against a training reference given by deciles."""

from __future__ import annotations

import numpy as np

from finscore.app.sidecar.quality import psi, psi_against_quantiles


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shifted_one() -> None:
    rng = np.random.default_rng(0)
    train = rng.lognormal(3, 0.6, 50_000)
    deciles = np.quantile(train, np.linspace(0, 1, 11)).tolist()
    same = rng.lognormal(3, 0.6, 5_000)
    shifted = np.r_[rng.lognormal(3, 0.6, 3_000), rng.uniform(1, 5, 2_000)]  # card testing
    assert psi_against_quantiles(deciles, same) < 0.05
    assert psi_against_quantiles(deciles, shifted) > 0.25
    assert abs(psi_against_quantiles(deciles, same) - psi(train, same)) < 0.05


def test_psi_handles_repeated_deciles() -> None:
    deciles = [0.0] * 6 + [0.1, 0.2, 0.5, 0.9, 1.0]  # a score mass at zero
    rng = np.random.default_rng(1)
    sample = np.r_[np.zeros(600), rng.uniform(0, 1, 400)]
    assert np.isfinite(psi_against_quantiles(deciles, sample))
