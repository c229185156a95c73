"""`finscore compress fraud|market|cashflow|FAMILY.toml`: run a plan, print the table, write the
report, register.

``compress cashflow [--source sim|handbook] [--terminals N]`` trains the cash-flow family
(:class:`~finscore.compression.cashflow.CashflowFamily`, quantile forecasts of a terminal's
daily takings, its rows as ``finscore/families/cashflow.toml`` declares them) with the
``cashflow_quick`` plan and registers it as model ``cashflow``.

``compress FAMILY.toml --data PATH [--map FIELD=COLUMN ...] [--teacher PATH]`` (or a built-in
declaration's name for FAMILY) trains a declared family from a file
(:func:`run_declared_compression`).

Mounted lazily by ``finscore.app.cli.group`` so that worker commands never import torch.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from finscore.compression.family import Family, TrainData
from finscore.compression.plan import Gate, Plan, RunResult
from finscore.compression.plans import PLAN_NAMES, fraud_plan, market_plan
from finscore.features.market import LAYOUTS
from finscore.models.registry import Artifact

if TYPE_CHECKING:
    from finscore.families import FamilySpec

__all__ = [
    "compress",
    "gate_hint",
    "is_declared",
    "load",
    "load_declared",
    "print_table",
    "run_compression",
    "run_declared_compression",
]


def load(
    family: str,
    data: str,
    data_dir: Path | None,
    seed: int,
    quick: bool,
    sim_size: tuple[int, int] | None = None,
    layout: str | None = None,
    terminals: int | None = None,
    declaration: str | Path | None = None,
) -> tuple[Family, TrainData]:
    """The family and its data; ``sim_size`` = (customers, days) overrides the fraud and
    cash-flow simulators' size (tiny runs in tests and demos); ``terminals``: the cash-flow
    family's random subset of terminals (default: all). The market family's window, horizon
    and feature layout are its declaration's (``declaration``: a market TOML or a built-in
    name, default ``market``; :func:`~finscore.compression.market.declared_market`: the
    declared window on every plan, ``quick`` reads fewer ticks); ``layout`` overrides the
    declared one (``book40+mid`` keeps the mid-price path)."""
    if family == "cashflow":
        from finscore.compression.cashflow import CashflowFamily

        cfam = CashflowFamily()
        ckw: dict[str, Any] = {"n_customers": 500, "days": 90}
        if sim_size is not None:
            ckw = {"n_customers": sim_size[0], "days": sim_size[1]}
        return cfam, cfam.load_data(
            data, data_dir=data_dir, seed=seed, max_terminals=terminals,
            **(ckw if data == "sim" else {}),
        )  # fmt: skip
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
    from finscore.compression.market import declared_market

    try:
        mfam = declared_market(load_declared(declaration or "market"), layout=layout)
    except ValueError as exc:
        raise click.UsageError(f"{declaration or 'market'}: {exc}") from None
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
    terminals: int | None = None,
    declaration: str | Path | None = None,
) -> tuple[RunResult, Artifact | None]:
    """Run a plan end to end (``cashflow``: always the ``cashflow_quick`` plan); returns the result and the published artifact (if any).

    ``seed`` seeds training only; ``data_seed`` seeds the simulated data (fixed by default, so
    versions trained with different seeds are measured on the same data). Shows progress on
    stderr and prints the candidate table (``echo``; ``wide``: every column). Publishes the
    deployed candidate to ``registry_dir`` (signed with ``signing_key``, promoted with
    ``promote``) and writes its report to ``report_dir/v<version>/`` (each registered version
    keeps its own); a run that registers nothing (gate failed, or no registry) writes
    ``report_dir/report.md``. Raises :class:`~finscore.compression.exceptions.GateFailed` when
    no candidate passes the gate (with :func:`gate_hint`'s advice as its hint); nothing is
    published then. ``declaration`` (market): the family's declaration (see :func:`load`).
    """
    import torch
    from rich.console import Console

    torch.set_num_threads(1)
    quick = plan == "quick"
    err = Console(stderr=True)
    status = err.status(f"{family}: loading {data} data") if echo else contextlib.nullcontext()
    with status as st:

        def progress(msg: str) -> None:
            if st is not None:
                st.update(f"{family}: {msg}")

        fam, td = load(family, data, data_dir, data_seed, quick, sim_size, layout, terminals,
                       declaration)  # fmt: skip
        # (students, teacher); fraud: 60 student epochs, a 40-epoch teacher with weight decay
        # 1e-4 (the best validation AP on the handbook data, see docs/BENCHMARKS.md)
        default_epochs = (10, 8) if quick else ((60, 40) if family == "fraud" else (30, 12))
        make = fraud_plan if family == "fraud" else market_plan
        if family == "cashflow":  # one plan (the benchmark's): 8 student, 10 teacher epochs
            default_epochs, make = (8, 10), _cashflow_plan
        n_epochs = epochs or default_epochs[0]
        p = make(plan, n_epochs, teacher_epochs or default_epochs[1], seed)
        tol = tolerance if tolerance is not None else (0.05 if quick else 0.01)
        title = f"{family} compression ({data}, plan {plan}, seed {seed}, data seed {data_seed})"
        result = _gated_run(p, fam, td, tol, plan_name=plan, epochs=n_epochs, status=st,
                            echo=echo, wide=wide, report_dir=report_dir, title=title,
                            progress=progress)  # fmt: skip
    artifact = _register_and_report(result, fam, td, registry_dir=registry_dir,
                                    report_dir=report_dir, signing_key=signing_key,
                                    promote=promote, echo=echo, wide=wide, title=title)  # fmt: skip
    return result, artifact


def _gated_run(
    p: Plan, fam: Family, td: TrainData, tolerance: float, *, plan_name: str, epochs: int,
    status: Any, echo: bool, wide: bool, report_dir: Path | None, title: str,
    progress: Any = None, teacher: Any = None,
) -> RunResult:  # fmt: skip
    """Run plan ``p`` behind the gate; on a failed gate, print the table and write the report
    (when asked), then re-raise with :func:`gate_hint`'s advice as the hint."""
    from finscore.compression.exceptions import GateFailed
    from finscore.compression.report import write_report

    try:
        return p.run(fam, td, Gate(fam.metric, tolerance), teacher=teacher, progress=progress)
    except GateFailed as exc:
        exc.hint = gate_hint(exc, plan_name, epochs)
        if isinstance(exc.result, RunResult):
            if status is not None:
                status.stop()
            if echo:
                print_table(exc.result, wide)
            if report_dir is not None:
                path = write_report(exc.result, report_dir, title + ": GATE FAILED")
                if echo:
                    click.echo(f"report: {path}")
        raise


def _register_and_report(
    result: RunResult, fam: Family, td: TrainData, *, registry_dir: Path | None,
    report_dir: Path | None, signing_key: str | None, promote: bool, echo: bool, wide: bool,
    title: str, notes: str = "",
) -> Artifact | None:  # fmt: skip
    """Print the table, register the deployed candidate under ``fam.name`` (the one path:
    :func:`finscore.app.sidecar.gate.register`, signed), promote it when asked, and write the
    version's report (or ``report.md`` when nothing was registered)."""
    from finscore.app.sidecar.gate import register
    from finscore.compression.report import write_report, write_version_report
    from finscore.models.registry import Registry

    family = fam.name
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
            path = write_version_report(result, report_dir, family, v, title, notes)
        else:
            path = write_report(result, report_dir, title + ": not registered", notes)
        if echo:
            click.echo(f"report: {path}")
    return artifact


def is_declared(name: str) -> bool:
    """``name`` names a declared family: a ``.toml`` path or a built-in declaration
    (:data:`finscore.families.BUILTIN_FAMILIES`)."""
    from finscore.families import BUILTIN_FAMILIES

    return name.lower().endswith(".toml") or name in BUILTIN_FAMILIES


class _FamilyGroup(click.Group):
    """``compress fraud|market``, and ``compress FAMILY --data PATH`` for a declared family
    (a ``.toml`` declaration or a built-in one): a command made for it on demand."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and is_declared(cmd_name):
            return _declared_command(cmd_name)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_commands(ctx, formatter)
        from finscore.families import BUILTIN_FAMILIES

        with formatter.section("Declared families"):
            formatter.write_dl([
                ("FAMILY.toml", "A family declared in TOML, trained from --data CSV/Parquet "
                                "(--map FIELD=COLUMN, --teacher ONNX/TorchScript)."),
                # declared families with a command of their own (cashflow) are listed above
                (", ".join(n for n in BUILTIN_FAMILIES if n not in self.commands),
                 "Built-in declarations, the same options."),
            ])  # fmt: skip


@click.group(cls=_FamilyGroup)
def compress() -> None:
    """Train a teacher, compress it, gate, report and register the deployed student.

    FAMILY is fraud, market, a declared family's FAMILY.toml or a built-in declaration
    (finscore compress FAMILY.toml --help)."""


def _options() -> dict[str, Any]:
    """The options every family's command takes, by parameter name."""
    return {
        "data_dir": click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                                 help="Real data folder (default FINSCORE_DATA_DIR)."),
        "plan_name": click.option("--plan", "plan_name", type=click.Choice(PLAN_NAMES),
                                  default="quick", show_default=True),
        "epochs": click.option("--epochs", type=int, default=None,
                               help="Student / fine-tune epochs."),
        "teacher_epochs": click.option("--teacher-epochs", type=int, default=None),
        "tolerance": click.option("--tolerance", type=float, default=None,
                                  help="Allowed metric drop vs the teacher (quick 0.05, "
                                       "default 0.01)."),
        "seed": click.option("--seed", type=int, default=0, show_default=True,
                             help="Training seed (teacher and students); the data stays the "
                                  "same."),
        "data_seed": click.option("--data-seed", type=int, default=0, show_default=True,
                                  help="Seed of the simulated data (--data sim)."),
        "registry_dir": click.option("--registry", "registry_dir",
                                     type=click.Path(path_type=Path), default=None,
                                     help="Registry folder (default FINSCORE_REGISTRY_DIR, "
                                          "var/registry)."),
        "report_dir": click.option("--report", "report_dir", type=click.Path(path_type=Path),
                                   default=None, help="Report folder (default reports/<family>)."),
        "publish": click.option("--publish/--no-publish", default=True, show_default=True,
                                help="Register the deployed student."),
        "promote": click.option("--promote", is_flag=True,
                                help="Also make it the registry champion."),
        "wide": click.option("--wide", is_flag=True,
                             help="Every column of the report (about 170 wide; default fits 80)."),
    }  # fmt: skip


def _common(f, skip: tuple[str, ...] = ()):  # noqa: ANN001, ANN202
    options = [opt for name, opt in _options().items() if name not in skip]
    for opt in reversed(options):
        f = opt(f)
    return f


def _common_except(*skip: str):  # noqa: ANN202
    """:func:`_common` without the options ``skip`` (parameter names), as a decorator."""
    return lambda f: _common(f, skip)


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


def _cashflow_plan(plan: str, epochs: int, teacher_epochs: int, seed: int) -> Plan:
    """:func:`~finscore.compression.cashflow.cashflow_quick` (the only cash-flow plan)."""
    from finscore.compression.cashflow import cashflow_quick

    return cashflow_quick(epochs, teacher_epochs, seed)


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
            terminals=kw.get("terminals"), declaration=kw.get("declaration"),
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
@click.option(
    "--family",
    "declaration",
    default="market",
    show_default=True,
    help="The market declaration (a TOML path or a built-in name): window, horizon "
    "and layout (docs/FAMILIES.md).",
)
@click.option("--layout", type=click.Choice(list(LAYOUTS)), default=None,
              help="Feature layout, overriding the declaration's (book40+mid adds the "
                   "mid-price path, see docs/BENCHMARKS.md).")  # fmt: skip
@_common
def market(data: str, **kw: Any) -> None:
    """Market family (DeepLOB-style teacher; gate: macro-F1): window, horizon and layout from
    its declaration (finscore/families/market.toml; every plan keeps the declared window, so
    `finscore worker market --family` admits the model)."""
    _run("market", data, **kw)


@compress.command()
@click.option(
    "--source",
    type=click.Choice(["sim", "handbook"]),
    default="sim",
    show_default=True,
    help="Transactions whose daily takings are forecast.",
)
@click.option(
    "--sim-size",
    type=(int, int),
    default=None,
    metavar="CUSTOMERS DAYS",
    help="Simulator size for --source sim (default 500 90; twice as many terminals).",
)
@click.option(
    "--terminals",
    type=int,
    default=None,
    help="Train on a random subset of this many terminals (default: all).",
)
@_common_except("plan_name")
def cashflow(source: str, **kw: Any) -> None:
    """Cash-flow family (quantile MLP over 28 days of a terminal's takings, 7 days ahead;
    plan cashflow_quick; gate: minus the pinball loss)."""
    _run("cashflow", source, plan_name="quick", **kw)  # fmt: skip


# -- declared families ----------------------------------------------------------------------------
def load_declared(ref: str | Path) -> FamilySpec:
    """The :class:`~finscore.families.FamilySpec` named by ``ref``: a built-in declaration's
    name, else a TOML path."""
    from finscore.families import load_family
    from finscore.families.spec import family_file

    return load_family(family_file(ref))


def run_declared_compression(
    family: FamilySpec | str | Path,
    *,
    data: str | Path,
    mapping: dict[str, str] | None = None,
    teacher: str | Path | None = None,
    teacher_output: str = "auto",
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
    wide: bool = False,
) -> tuple[RunResult, Artifact | None]:
    """:func:`run_compression` for a declared family (a :class:`FamilySpec`, a built-in name
    or a TOML path): its events read from ``data`` (``mapping``: schema field → column; see
    :mod:`finscore.families.data`), featurised and split
    (:class:`~finscore.compression.declared.DeclaredFamily`); the teacher trained here, or
    ``teacher`` (an ONNX or TorchScript file, :mod:`finscore.compression.teacher`) distilled
    as it is; the fraud family's plans (tabular MLP students); the same gate, report and
    registry path (the model is registered under the family's name)."""
    import torch
    from rich.console import Console

    from finscore.compression.declared import DeclaredFamily
    from finscore.compression.teacher import load_teacher, with_external_teacher
    from finscore.families import FamilySpec

    torch.set_num_threads(1)
    spec = family if isinstance(family, FamilySpec) else load_declared(family)
    quick = plan == "quick"
    fam = DeclaredFamily(
        spec,
        teacher_hidden=(128, 64) if quick else (256, 256, 128),
        members=1 if quick else 3,
        teacher_weight_decay=0.0 if quick else 1e-4,
    )
    err = Console(stderr=True)
    name = spec.name
    status = err.status(f"{name}: reading {data}") if echo else contextlib.nullcontext()
    notes = ""
    with status as st:

        def progress(msg: str) -> None:
            if st is not None:
                st.update(f"{name}: {msg}")

        td = fam.load_data(data, mapping)
        ext = None
        if teacher is not None:
            progress(f"loading the teacher {Path(teacher).name}")
            ext = load_teacher(teacher, len(spec.feature_names), family=f"family {name!r}",
                               output=teacher_output)  # fmt: skip
            ext.settle(td.x_train)
            fam.use_teacher(ext)
            d = ext.describe()
            notes = (f"Teacher: `{d['file']}` ({d['kind']}, {d['size_bytes']:,} bytes, sha256 "
                     f"`{d['sha256']}`, output read as {d['output']}), distilled as it is.")  # fmt: skip
        n_epochs = epochs or (10 if quick else 60)
        p: Plan = fraud_plan(plan, n_epochs, teacher_epochs or (8 if quick else 40), seed)
        if ext is not None:
            p = with_external_teacher(p)
        tol = tolerance if tolerance is not None else (0.05 if quick else 0.01)
        title = (f"{name} compression ({Path(data).name}, plan {plan}, seed {seed}"
                 + (f", teacher {Path(teacher).name})" if teacher is not None else ")"))  # fmt: skip
        result = _gated_run(p, fam, td, tol, plan_name=plan, epochs=n_epochs, status=st,
                            echo=echo, wide=wide, report_dir=report_dir, title=title,
                            progress=progress, teacher=ext)  # fmt: skip
    if echo and notes:
        click.echo(notes.replace("`", ""))
    artifact = _register_and_report(result, fam, td, registry_dir=registry_dir,
                                    report_dir=report_dir, signing_key=signing_key,
                                    promote=promote, echo=echo, wide=wide, title=title,
                                    notes=notes)  # fmt: skip
    return result, artifact


def _declared_command(ref: str) -> click.Command:
    """The command ``compress REF`` for a declared family (see :func:`run_declared_compression`)."""

    @click.command(name=ref, help=f"Declared family {ref} (tabular MLP; gate: average "
                                   "precision), trained from --data.")  # fmt: skip
    @click.option(
        "--data",
        "data_path",
        required=True,
        type=click.Path(path_type=Path, exists=True, dir_okay=False),
        help="The family's events: CSV with a header (or Parquet with pyarrow), the "
        "label column in each row.",
    )
    @click.option(
        "--map",
        "mapping",
        multiple=True,
        metavar="FIELD=COLUMN",
        help="Read schema field FIELD from column COLUMN (repeatable).",
    )
    @click.option(
        "--teacher",
        type=click.Path(path_type=Path, exists=True, dir_okay=False),
        default=None,
        help="Distil this ONNX or TorchScript model (reads the family's features, "
        "float32 [n, F]) instead of training a teacher.",
    )
    @click.option(
        "--teacher-output",
        type=click.Choice(["auto", "probability", "logit"]),
        default="auto",
        show_default=True,
        help="How a teacher's tensor output is read (auto: by its range).",
    )
    @_common_except("data_dir", "data_seed")
    def command(data_path: Path, mapping: tuple[str, ...], teacher: Path | None,
                teacher_output: str, **kw: Any) -> None:  # fmt: skip
        from finscore.compression.exceptions import GateFailed
        from finscore.families.data import parse_mapping
        from finscore.settings import Settings

        s = Settings()
        spec = load_declared(ref)
        if spec.sequence is not None:  # a window model's declaration: the market command
            raise click.UsageError(
                f"{ref} declares a sequence (a window model): run `finscore compress market "
                f"--family {ref}`"
            )
        try:
            run_declared_compression(
                spec, data=data_path, mapping=parse_mapping(mapping), teacher=teacher,
                teacher_output=teacher_output, plan=kw["plan_name"], epochs=kw["epochs"],
                teacher_epochs=kw["teacher_epochs"], tolerance=kw["tolerance"],
                seed=kw["seed"], wide=kw["wide"],
                registry_dir=(kw["registry_dir"] or s.registry_dir) if kw["publish"] else None,
                report_dir=kw["report_dir"] or Path("reports") / spec.name,
                signing_key=_signing_key(s) if kw["publish"] else None, promote=kw["promote"],
            )  # fmt: skip
        except GateFailed as exc:
            raise click.ClickException(
                f"{exc}\nhint: {exc.hint}" if exc.hint else str(exc)
            ) from exc

    return command
