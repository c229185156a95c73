"""`finscore compress fraud|market`: run a plan, print the table, write the report, register.

Mounted lazily by ``finscore.cli`` so that worker commands never import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from finscore.compression.family import Family, TrainData
from finscore.compression.plan import Gate, Plan, RunResult, to_artifact
from finscore.compression.steps import (
    ArchitectureSearch,
    Distill,
    PruneStructured,
    PruneUnstructured,
    QuantizeDynamic,
    QuantizeStatic,
    WeightShare,
)
from finscore.registry import Artifact


def fraud_plan(name: str, epochs: int, teacher_epochs: int, seed: int) -> Plan:
    """``quick``: one distilled width-32 student, pruned, shared, int8 (sidecar, demos).
    ``default``: a width search under 16 kB distilled at a high learning rate (T = 2,
    alpha = 0.9), then structured pruning and weight sharing (64 clusters) fine-tuned by
    distillation, and both int8 quantisations branching from the pruned model (the benchmark's
    plan). No unstructured pruning: with weight sharing every weight costs one byte, zero or
    not, so it saves nothing and cost validation AP on the handbook data."""
    if name == "quick":
        steps = [Distill(32), PruneStructured(0.5, 3), WeightShare(16, 2), QuantizeDynamic()]
        return Plan(steps, teacher_epochs=teacher_epochs, epochs=epochs, seed=seed)
    ft = max(2, epochs // 4)
    steps = [
        ArchitectureSearch(
            (16, 32, 64, (32, 32, 16)), budget_bytes=16_000, temperature=2.0, alpha=0.9, lr=5e-3
        ),
        PruneStructured(0.25, ft),
        WeightShare(64, ft),
        QuantizeDynamic(),
        QuantizeStatic(2048),
    ]
    return Plan(steps, teacher_epochs=teacher_epochs, epochs=epochs, seed=seed,
                fine_tune_lr=2e-3, fine_tune_alpha=0.9)  # fmt: skip


def market_plan(name: str, epochs: int, teacher_epochs: int, seed: int) -> Plan:
    if name == "quick":
        steps = [Distill(16), PruneUnstructured(0.5, 1), QuantizeDynamic()]
    else:
        steps = [
            ArchitectureSearch((8, 16, 32)),
            PruneUnstructured(0.5, 2),
            QuantizeDynamic(),
            QuantizeStatic(1024),
        ]
    return Plan(steps, teacher_epochs=teacher_epochs, epochs=epochs, seed=seed)


def load(
    family: str,
    data: str,
    data_dir: Path | None,
    seed: int,
    quick: bool,
    sim_size: tuple[int, int] | None = None,
) -> tuple[Family, TrainData]:
    """The family and its data; ``sim_size`` = (customers, days) overrides the fraud
    simulator's size (tiny runs in tests and demos)."""
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

    mfam = MarketFamily(window=50 if quick else 100)
    return mfam, mfam.load_data(data, data_dir=data_dir, seed=seed, quick=quick)


def print_table(result: RunResult) -> None:
    from rich.console import Console
    from rich.table import Table

    from finscore.compression.report import rows

    table_rows = rows(result)
    t = Table(
        title=f"{result.family}: candidates (gate: {result.gate.metric} ± {result.gate.tolerance})"
    )
    console = Console(width=max(Console().width, 170))
    for col in table_rows[0]:
        t.add_column(col, justify="right")
    for r in table_rows:
        t.add_row(*[str(v) for v in r.values()])
    console.print(t)


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
    registry_dir: Path | None = None,
    report_dir: Path | None = None,
    signing_key: str | None = None,
    promote: bool = False,
    echo: bool = True,
    sim_size: tuple[int, int] | None = None,
) -> tuple[RunResult, Artifact | None]:
    """Run a plan end to end; returns the result and the published artifact (if any).

    Prints the candidate table (``echo``), writes the report to ``report_dir`` (also when the
    gate fails) and publishes the deployed candidate to ``registry_dir`` (signed with
    ``signing_key``, promoted with ``promote``). Raises
    :class:`~finscore.compression.exceptions.GateFailed` when no candidate passes the gate;
    nothing is published then.
    """
    import torch

    from finscore.compression.exceptions import GateFailed
    from finscore.compression.report import write_report
    from finscore.registry import Registry

    torch.set_num_threads(1)
    quick = plan == "quick"
    fam, td = load(family, data, data_dir, seed, quick, sim_size)
    # (students, teacher); fraud: 60 student epochs, a 40-epoch teacher with weight decay 1e-4
    # (the best validation AP on the handbook data, see docs/BENCHMARKS.md)
    default_epochs = (10, 8) if quick else ((60, 40) if family == "fraud" else (30, 12))
    make = fraud_plan if family == "fraud" else market_plan
    p = make(plan, epochs or default_epochs[0], teacher_epochs or default_epochs[1], seed)
    tol = tolerance if tolerance is not None else (0.05 if quick else 0.01)
    title = f"{family} compression ({data}, plan {plan})"
    try:
        result = p.run(fam, td, Gate(fam.metric, tol))
    except GateFailed as exc:
        if isinstance(exc.result, RunResult):
            if echo:
                print_table(exc.result)
            if report_dir is not None:
                path = write_report(exc.result, report_dir, title + ": GATE FAILED")
                if echo:
                    click.echo(f"report: {path}")
        raise
    if echo:
        print_table(result)
    if report_dir is not None:
        path = write_report(result, report_dir, title)
        if echo:
            click.echo(f"report: {path}")
    artifact = None
    if registry_dir is not None and result.deployed is not None:
        reg = Registry(registry_dir)
        artifact = reg.publish(to_artifact(result, result.deployed, fam, td), signing_key)
        if promote:
            reg.promote(family, artifact.manifest.version)
        if echo:
            m = artifact.manifest
            click.echo(
                f"registered {family} v{m.version} ({result.deployed.name}, {m.size_bytes:,} "
                f"bytes, {fam.metric} {m.metrics[fam.metric]:.4f}"
                f"{', signed' if artifact.signature else ''}) in {registry_dir}"
                + (" and promoted" if promote else "")
            )
    return result, artifact


@click.group()
def compress() -> None:
    """Train a teacher, compress it, gate, report and register the deployed student."""


def _common(f):  # noqa: ANN001, ANN202
    options = [
        click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                     help="Real data folder (default FINSCORE_DATA_DIR)."),
        click.option("--plan", "plan_name", type=click.Choice(["quick", "default"]),
                     default="quick", show_default=True),
        click.option("--epochs", type=int, default=None, help="Student / fine-tune epochs."),
        click.option("--teacher-epochs", type=int, default=None),
        click.option("--tolerance", type=float, default=None,
                     help="Allowed metric drop vs the teacher (quick 0.05, default 0.01)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--registry", "registry_dir", type=click.Path(path_type=Path), default=None,
                     help="Registry folder (default FINSCORE_REGISTRY_DIR, var/registry)."),
        click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
                     help="Report folder (default reports/<family>)."),
        click.option("--publish/--no-publish", default=True, show_default=True,
                     help="Register the deployed student."),
        click.option("--promote", is_flag=True, help="Also make it the registry champion."),
    ]  # fmt: skip
    for opt in reversed(options):
        f = opt(f)
    return f


def _run(family: str, data: str, **kw: Any) -> None:
    from finscore.compression.exceptions import GateFailed
    from finscore.settings import Settings

    s = Settings()
    try:
        run_compression(
            family, data=data, data_dir=kw["data_dir"] or s.data_dir, plan=kw["plan_name"],
            epochs=kw["epochs"], teacher_epochs=kw["teacher_epochs"], tolerance=kw["tolerance"],
            seed=kw["seed"],
            registry_dir=(kw["registry_dir"] or s.registry_dir) if kw["publish"] else None,
            report_dir=kw["report_dir"] or Path("reports") / family,
            signing_key=s.signing_key.get_secret_value() if s.signing_key else None,
            promote=kw["promote"], sim_size=kw.get("sim_size"),
        )  # fmt: skip
    except GateFailed as exc:
        raise click.ClickException(str(exc)) from exc


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
@_common
def market(data: str, **kw: Any) -> None:
    """Market family (DeepLOB-style teacher; gate: macro-F1)."""
    _run("market", data, **kw)
