"""The handbook recipe's knobs are wired (no training here: the benchmark measures them)."""

from __future__ import annotations

import numpy as np

from finscore.compression.fraud import FraudFamily, FraudSplits
from finscore.compression.nn import Ensemble
from finscore.compression.plans import fraud_plan


def test_teacher_weight_decay_reaches_the_members_only(fraud_ctx) -> None:  # noqa: ANN001
    fam = FraudFamily(teacher_hidden=(8,), members=2, teacher_weight_decay=1e-4)
    teacher = fam.teacher(fraud_ctx.data)
    assert isinstance(teacher, Ensemble)
    assert [m.weight_decay for m in teacher.members] == [1e-4, 1e-4]
    student = fam.student(fraud_ctx.data, 4)
    assert getattr(student, "weight_decay", 0.0) == 0.0


def test_weight_decay_shrinks_the_teacher_weights(fraud_ctx) -> None:  # noqa: ANN001
    data = fraud_ctx.data
    norms = []
    for wd in (0.0, 0.5):
        fam = FraudFamily(teacher_hidden=(8,), members=1, teacher_weight_decay=wd)
        model = fam.train(fam.teacher(data), data, epochs=1, seed=0)
        norms.append(float(sum(p.detach().norm() for p in model.body.parameters())))
    assert norms[1] < norms[0], norms
    assert np.isfinite(norms).all()


def test_default_plan_shares_weights_without_unstructured_pruning() -> None:
    steps = [s.describe() for s in fraud_plan("default", 8, 4, 0).steps]
    names = [s["step"] for s in steps]
    assert names == ["architecture_search", "prune_structured", "weight_share",
                     "quantize_dynamic", "quantize_static"]  # fmt: skip
    assert steps[2]["params"]["clusters"] == 64


def test_prequential_folds_move_every_split_by_whole_weeks() -> None:
    """Fold k of the handbook's test estimator: the protocol's weeks, k weeks later."""
    base = FraudSplits()
    assert base.shifted(0) == base
    fold3 = base.shifted(21)
    assert fold3.train == ("2018-08-15", "2018-08-22")
    assert fold3.val == ("2018-08-08", "2018-08-15")
    assert fold3.test == ("2018-08-29", "2018-09-05")
    assert base.shifted(7).shifted(-7) == base
