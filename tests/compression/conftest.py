"""Tiny real training data and teachers for the compression tests (seconds on 2 cores)."""

from __future__ import annotations

import pytest
import torch

from finscore.compression.fraud import FraudFamily
from finscore.compression.market import MarketFamily
from finscore.compression.steps import StepContext

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def fraud_ctx() -> StepContext:
    fam = FraudFamily(teacher_hidden=(32, 16))
    data = fam.load_data("sim", n_customers=400, days=45, seed=1)
    teacher = fam.train(fam.teacher(data), data, epochs=3, seed=0)
    return StepContext(fam, data, teacher, seed=0, epochs=1)


@pytest.fixture(scope="session")
def market_ctx() -> StepContext:
    fam = MarketFamily(window=20, horizon=5)
    data = fam.load_data("sim", n=6000, seed=1, quick=True, max_train=1500)
    teacher = fam.train(fam.teacher(data), data, epochs=1, seed=0)
    return StepContext(fam, data, teacher, seed=0, epochs=1)


@pytest.fixture(scope="session")
def cashflow_ctx() -> StepContext:
    from finscore.compression.cashflow import CashflowFamily

    fam = CashflowFamily(teacher_hidden=(32, 32))
    data = fam.load_data("sim", n_customers=80, days=70)
    teacher = fam.train(fam.teacher(data), data, epochs=2, seed=0)
    return StepContext(fam, data, teacher, seed=0, epochs=1)
