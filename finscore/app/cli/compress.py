"""`finscore compress fraud|market`: run a plan, print the table, write the report, register.

Mounted lazily by ``finscore.app.cli.group`` so that worker commands never import torch.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import click

from finscore.compression.family import Family, TrainData
from finscore.compression.plan import Gate, RunResult
from finscore.compression.plans import PLAN_NAMES, fraud_plan, market_plan
from finscore.models.registry import Artifact

__all__ = ["compress", "gate_hint", "load", "print_table", "run_compression"]


def load(
    family: str,
    data: str,
    data_dir: Path | None,
    seed: int,
    quick: bool,
    sim_size: tuple[int, int] | None = None,
    layout: str | None = None,
) -> tuple[Family, TrainData]:
    """The family and its data; ``sim_size`` = (customers, days) overrides the fraud
    simulator's size (tiny runs in tests and demos); ``layout``: the market feature layout
    (default ``book40``; ``book40+mid`` keeps the mid-price path)."""
    if family == "fraud":
        from finscore.compression.fraud import FraudFamily

        fam = FraudFamily(
            teacher_hidden=(128, 64) if quick else (256, 256, 128),
            members=1 if quick else 3,
            teacher_weight_decay=0.0 if quick else 1e-4,
        )
        kw = {"n_customers": 1500, "days": 60} if quick else {"n_customers": 3000, "days": 75}
        if sim_size is not None:
            kw = {"n_customers": sim_size[0], "days": sim_size[1]}
        return fam, fam.load_data(
            data, data_dir=data_dir, seed=seed, **(kw if data == "sim" else {})
        )
    from finscore.compression.market import MarketFamily

    mfam = MarketFamily(window=50 if quick else 100, **({"layout": layout} if layout else {}))
    return mfam, mfam.load_data(data, data_dir=data_dir, seed=seed, quick=quick)


def _compact(r: dict, metric: str) -> dict[str, str]:
    """One row of the 80-column table."""
    gate = {"teacher": "ref", "pass": "pass", "FAIL": "FAIL"}.get(r["gate"], r["gate"])
    return {
        "candidate": r["candidate"],
        "val": f"{r[f'val {metric}']:.4f}",
        "test": f"{r[metric]:.4f}",
        "bytes (smaller)": f"{r['bytes']:,} ({r['x smaller']:.1f}x)",
        "p50 ms": f"{r['p50 ms']:.3f}",
        "gate": gate,
        "": r["deployed"],
    }


def print_table(result: RunResult, wide: bool = False, console: Any = None) -> None:
    """The candidate table: compact (fits 80 columns: the gated validation metric, the test
    metric, size, batch-1 latency, gate verdict, ★ deployed) unless ``wide`` (every column of
    the report, about 170 wide)."""
    from rich.console import Console
    from rich.table import Table

    from finscore.compression.report import rows

    metric = result.gate.metric
    table_rows = rows(result)
    if not wide:
        table_rows = [_compact(r, metric) for r in table_rows]
    t = Table(
        title=f"{result.family}: candidates (gate: val {metric} ± {result.gate.tolerance})",
        caption=None if wide else f"val / test: {metric} on the validation / test split",
    )
    if console is None:
        console = Console(width=max(Console().width, 170)) if wide else Console()
    for col in table_rows[0]:
        t.add_column(col, justify="left" if col == "candidate" else "right", no_wrap=True)
    for r in table_rows:
        t.add_row(*[str(v) for v in r.values()])
    console.print(t)
    if not wide:
        failed = [r for r in rows(result) if r["gate"] == "FAIL"]
        for r in failed:
            console.print(f"  {r['candidate']}: {r['verdict']}", highlight=False)


def gate_hint(exc: Any, plan: str, epochs: int) -> str:
    """What to change after a failed gate: a larger plan, longer training, or a looser gate that
    the best candidate would have passed."""
    gap = exc.reference - exc.candidate
    loose = math.ceil((gap + 0.005) * 100) / 100
    options = ["--plan default (a larger search, minutes)"] if plan == "quick" else []
    options += [f"--epochs {epochs * 2}", f"--tolerance {loose:.2f} (accepts a loss of {gap:.3f})"]
    return (
        f"the best candidate is {gap:.4f} below the reference; try "
        + ", ".join(options[:-1])
        + f" or {options[-1]}"
    )


def run_compression(
    family: str,
    *,
    data: str = "sim",
    data_dir: Path | None = None,
    plan: str = "quick",
    epochs: int | None = None,
    teacher_epochs: int | None = None,
    tolerance: float | None = None,
    seed: int = 0,
    data_seed: int = 0,
    registry_dir: Path | None = None,
    report_dir: Path | None = None,
    signing_key: str | None = None,
    promote: bool = False,
    echo: bool = True,
    sim_size: tuple[int, int] | None = None,
    wide: bool = False,
    layout: str | None = None,
) -> tuple[RunResult, Artifact | None]:
    """Run a plan end to end; returns the result and the published artifact (if any).

    ``seed`` seeds training only; ``data_seed`` seeds the simulated data (fixed by default, so
    versions trained with different seeds are measured on the same data). Shows progress on
    stderr and prints the candidate table (``echo``; ``wide``: every column). Publishes the
    deployed candidate to ``registry_dir`` (signed with ``signing_key``, promoted with
    ``promote``) and writes its report to ``report_dir/v<version>/`` (each registered version
    keeps its own); a run that registers nothing (gate failed, or no registry) writes
    ``report_dir/report.md``. Raises :class:`~finscore.compression.exceptions.GateFailed` when
    no candidate passes the gate (with :func:`gate_hint`'s advice as its hint); nothing is
    published then.
    """
    import torch
    from rich.console import Console

    from finscore.app.sidecar.gate import register
    from finscore.compression.exceptions import GateFailed
    from finscore.compression.report import write_report, write_version_report
    from finscore.models.registry import Registry

    torch.set_num_threads(1)
    quick = plan == "quick"
    err = Console(stderr=True)
    status = err.status(f"{family}: loading {data} data") if echo else contextlib.nullcontext()
    with status as st:

        def progress(msg: str) -> None:
            if st is not None:
                st.update(f"{family}: {msg}")

        fam, td = load(family, data, data_dir, data_seed, quick, sim_size, layout)
        # (students, teacher); fraud: 60 student epochs, a 40-epoch teacher with weight decay
        # 1e-4 (the best validation AP on the handbook data, see docs/BENCHMARKS.md)
        default_epochs = (10, 8) if quick else ((60, 40) if family == "fraud" else (30, 12))
        make = fraud_plan if family == "fraud" else market_plan
        n_epochs = epochs or default_epochs[0]
        p = make(plan, n_epochs, teacher_epochs or default_epochs[1], seed)
        tol = tolerance if tolerance is not None else (0.05 if quick else 0.01)
        title = f"{family} compression ({data}, plan {plan}, seed {seed}, data seed {data_seed})"
        try:
            result = p.run(fam, td, Gate(fam.metric, tol), progress=progress)
        except GateFailed as exc:
            exc.hint = gate_hint(exc, plan, n_epochs)
            if isinstance(exc.result, RunResult):
                if st is not None:
                    st.stop()
                if echo:
                    print_table(exc.result, wide)
                if report_dir is not None:
                    path = write_report(exc.result, report_dir, title + ": GATE FAILED")
                    if echo:
                        click.echo(f"report: {path}")
            raise
    if echo:
        print_table(result, wide)
    artifact = None
    if registry_dir is not None and result.deployed is not None:
        reg = Registry(registry_dir)
        artifact = register(reg, result, result.deployed, fam, td, signing_key)
        if (
            promote
        ):  # the registry's champion only: nothing is announced (`finscore models promote`)
            reg.promote(family, artifact.manifest.version)
        if echo:
            m = artifact.manifest
            click.echo(
                f"registered {family} v{m.version} ({result.deployed.name}, {m.size_bytes:,} "
                f"bytes, {fam.metric} {m.metrics[fam.metric]:.4f}"
                f"{', signed' if artifact.signature else ''}) in {registry_dir}"
                + (" and promoted" if promote else "")
            )
    if report_dir is not None:
        if artifact is not None:
            v = artifact.manifest.version
            path = write_version_report(result, report_dir, family, v, title)
        else:
            path = write_report(result, report_dir, title + ": not registered")
        if echo:
            click.echo(f"report: {path}")
    return result, artifact


@click.group()
def compress() -> None:
    """Train a teacher, compress it, gate, report and register the deployed student."""


def _common(f):  # noqa: ANN001, ANN202
    options = [
        click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                     help="Real data folder (default FINSCORE_DATA_DIR)."),
        click.option("--plan", "plan_name", type=click.Choice(PLAN_NAMES),
                     default="quick", show_default=True),
        click.option("--epochs", type=int, default=None, help="Student / fine-tune epochs."),
        click.option("--teacher-epochs", type=int, default=None),
        click.option("--tolerance", type=float, default=None,
                     help="Allowed metric drop vs the teacher (quick 0.05, default 0.01)."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Training seed (teacher and students); the data stays the same."),
        click.option("--data-seed", type=int, default=0, show_default=True,
                     help="Seed of the simulated data (--data sim)."),
        click.option("--registry", "registry_dir", type=click.Path(path_type=Path), default=None,
                     help="Registry folder (default FINSCORE_REGISTRY_DIR, var/registry)."),
        click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
                     help="Report folder (default reports/<family>)."),
        click.option("--publish/--no-publish", default=True, show_default=True,
                     help="Register the deployed student."),
        click.option("--promote", is_flag=True, help="Also make it the registry champion."),
        click.option("--wide", is_flag=True,
                     help="Every column of the report (about 170 wide; default fits 80)."),
    ]  # fmt: skip
    for opt in reversed(options):
        f = opt(f)
    return f


def _signing_key(s: Any) -> str | None:
    """The key published models are signed with: FINSCORE_SIGNING_KEY, else the machine's
    local pair (created once, see finscore.models.keys); none only with the development opt-out."""
    key = s.model_keys().signing_key
    if key is None and not s.allow_unsigned_models:
        raise click.ClickException(
            "no signing key: published models must be signed\nhint: set FINSCORE_SIGNING_KEY "
            "or FINSCORE_KEY_DIR (a folder holding signing.key)"
        )
    return key


def _run(family: str, data: str, **kw: Any) -> None:
    from finscore.compression.exceptions import GateFailed
    from finscore.settings import Settings

    s = Settings()
    try:
        run_compression(
            family, data=data, data_dir=kw["data_dir"] or s.data_dir, plan=kw["plan_name"],
            epochs=kw["epochs"], teacher_epochs=kw["teacher_epochs"], tolerance=kw["tolerance"],
            seed=kw["seed"], data_seed=kw["data_seed"], wide=kw["wide"],
            registry_dir=(kw["registry_dir"] or s.registry_dir) if kw["publish"] else None,
            report_dir=kw["report_dir"] or Path("reports") / family,
            signing_key=_signing_key(s) if kw["publish"] else None,
            promote=kw["promote"], sim_size=kw.get("sim_size"), layout=kw.get("layout"),
        )  # fmt: skip
    except GateFailed as exc:
        raise click.ClickException(f"{exc}\nhint: {exc.hint}" if exc.hint else str(exc)) from exc


@compress.command()
@click.option("--data", type=click.Choice(["sim", "handbook"]), default="sim", show_default=True)
@click.option("--sim-size", type=(int, int), default=None, metavar="CUSTOMERS DAYS",
              help="Simulator size for --data sim (quick: 1500 60, default: 3000 75).")  # fmt: skip
@_common
def fraud(data: str, **kw: Any) -> None:
    """Fraud family (tabular MLP; gate: average precision)."""
    _run("fraud", data, **kw)


@compress.command()
@click.option("--data", type=click.Choice(["sim", "lobster"]), default="sim", show_default=True)
@click.option("--layout", type=click.Choice(["book40", "book40+mid"]), default="book40",
              show_default=True,
              help="Feature layout: book40+mid adds the mid-price path (see docs/BENCHMARKS.md).")  # fmt: skip
@_common
def market(data: str, **kw: Any) -> None:
    """Market family (DeepLOB-style teacher; gate: macro-F1)."""
    _run("market", data, **kw)
