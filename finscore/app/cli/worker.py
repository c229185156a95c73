"""`finscore worker fraud|market|cashflow`, `finscore worker family --family PATH.toml`: one
scoring worker, configured from the settings (a declared family's from its TOML declaration,
see :mod:`finscore.families`). `finscore worker market --family market` keeps the windows a
market declaration names (a ``sequence`` feature; models of another window or layout are
refused); `finscore worker cashflow --family F` computes the daily series F declares (default:
the built-in ``cashflow``). A declaration the worker cannot compute is refused in one sentence
before any connection."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from finscore.settings import Settings

from finscore.app.cli.context import Ctx, family_files, pass_ctx


# -- workers -------------------------------------------------------------------------------------
@click.command()
@click.argument("stream", type=click.Choice(["fraud", "market", "cashflow", "family"]))
@click.option("--family", "family_path", default=None, callback=family_files,
              help="family: the family's TOML declaration, or a built-in family's name such as "
                   "credit (its model is the family's name); market: a market declaration "
                   "such as market (its windows; default: the first model's); cashflow: a "
                   "series declaration (default: cashflow).")  # fmt: skip
@click.option("--exactly-once", is_flag=True, help="Kafka transactions (read_committed outputs).")
@click.option("--metrics-port", type=int, default=None, help="/metrics + /health port (0 = any).")
@click.option("--batch-size", type=int, default=5000, show_default=True)
@click.option("--commit-interval", type=float, default=1.0, show_default=True,
              help="Seconds between commits (state changelog + offsets); EOS commits per batch.")  # fmt: skip
@click.option("--threshold", type=float, default=None, help="Fraud decision threshold override.")
@click.option("--explain", type=int, default=0, show_default=True,
              help="Fraud: add the top-K unusual features to each flag (costs throughput).")  # fmt: skip
@click.option("--group", default=None, help="Consumer group (default finscore-<stream>).")
@click.option("--instance-id", default=None, help="Stable id (transactional.id in EOS mode).")
@click.option("--stage", type=click.Choice(["all", "cards", "terminals"]), default=None,
              help="Fraud: one stage of the two-stage fleet (needs FINSCORE_LABEL_CONTRACT="
              "fraud_reports; default FINSCORE_FRAUD_STAGE, all).")  # fmt: skip
@pass_ctx
def worker(
    ctx: Ctx,
    stream: str,
    family_path: Path | None,
    exactly_once: bool,
    metrics_port: int | None,
    batch_size: int,
    commit_interval: float,
    threshold: float | None,
    explain: int,
    group: str | None,
    instance_id: str | None,
    stage: str | None,
) -> None:
    """Run a scoring worker (fraud, market, cashflow, or a declared family) until
    Ctrl-C/SIGTERM."""
    from finscore.streams.admin import check_reachable
    from finscore.streams.worker import Worker

    if stream == "family" and family_path is None:
        raise click.UsageError("`finscore worker family` needs --family PATH.toml")
    if family_path is not None and stream not in ("family", "market", "cashflow"):
        raise click.UsageError(
            f"--family is for `finscore worker family`, market or cashflow, not {stream}"
        )
    if family_path is not None:
        # a bad declaration: one sentence, before any connection
        _check_declaration(stream, family_path)
    check_reachable(ctx.client)
    settings = ctx.settings
    if stage is not None:
        settings = settings.model_copy(update={"fraud_stage": stage})
    cfg = worker_config(
        settings, stream, exactly_once, metrics_port, batch_size, threshold, group, instance_id,
        family_path=family_path,
    )  # fmt: skip
    cfg = dataclasses.replace(cfg, explain=explain, commit_interval=commit_interval)
    w = Worker(cfg)
    signal.signal(signal.SIGTERM, lambda *_: w.stop())
    signal.signal(signal.SIGINT, lambda *_: w.stop())
    w.run()


def _check_declaration(stream: str, family_path: Path) -> None:
    """Raise :class:`click.UsageError` (one sentence) unless ``stream``'s worker computes the
    declaration ``family_path``: a tabular family for ``family``, a sequence the market stream
    computes for ``market``, a daily series the cash-flow stream computes for ``cashflow``."""
    from finscore.families import FamilySpecError
    from finscore.families.spec import load_family
    from finscore.streams.cashflow.pipeline import declared_series
    from finscore.streams.market.pipeline import declared_sequence

    spec = load_family(family_path)
    windowed = spec.sequence is not None
    series = spec.output.kind == "quantiles"
    if stream == "market" and not windowed:
        raise click.UsageError(
            f"{family_path} declares no sequence feature: not a market family (run "
            "`finscore worker family --family` for it)"
        )
    if stream == "cashflow" and not series:
        raise click.UsageError(
            f"{family_path} declares no daily_series feature: not a cash-flow family (run "
            f"`finscore worker {'market' if windowed else 'family'} --family` for it)"
        )
    if stream == "family" and windowed:
        raise click.UsageError(
            f"{family_path} declares a sequence (a window model): run `finscore worker "
            "market --family` for it"
        )
    if stream == "family" and series:
        raise click.UsageError(
            f"{family_path} declares a daily series (a quantiles family): run `finscore worker "
            "cashflow --family` for it"
        )
    try:
        if stream == "market":
            declared_sequence(spec)
        elif stream == "cashflow":
            declared_series(spec)
    except FamilySpecError as exc:
        raise click.UsageError(f"{family_path}: {exc}") from None


def worker_config(
    s: Settings,
    stream: str,
    exactly_once: bool = False,
    metrics_port: int | None = None,
    batch_size: int = 5000,
    threshold: float | None = None,
    group: str | None = None,
    instance_id: str | None = None,
    *,
    family_path: Path | None = None,
) -> Any:
    """A WorkerConfig from settings and CLI options (settings only at the edge);
    ``family_path``: the declaration a ``family`` worker scores."""
    from finscore.providers import batch_size_for, resolve
    from finscore.streams.bounds import InputBounds
    from finscore.streams.worker import WorkerConfig

    extra: dict[str, Any] = {}
    providers = s.provider_list()
    # GPUs want large batches: at least FINSCORE_GPU_MIN_BATCH on a GPU provider
    batch_size = batch_size_for(resolve(providers).primary, batch_size, s.gpu_min_batch)
    if family_path is not None:
        extra["family_path"] = family_path
    if instance_id:
        extra["instance_id"] = instance_id
        part = "" if stream != "fraud" or s.fraud_stage == "all" else f"-{s.fraud_stage}"
        if stream == "family" and family_path is not None:
            from finscore.families.spec import load_family

            part = f"-{load_family(family_path).name}"
        extra["transactional_id"] = f"finscore-{stream}{part}-{instance_id}"
    if s.schema_registry_url:  # inputs in the Confluent wire format are read with it
        registry = {"url": s.schema_registry_url}
        if s.schema_registry_user_info is not None:
            registry["basic.auth.user.info"] = s.schema_registry_user_info.get_secret_value()
        extra["schema_registry"] = registry
    return WorkerConfig(
        stream=stream,
        client=s.kafka_config(),
        topic_prefix=s.topic_prefix,
        group_id=group,
        exactly_once=exactly_once,
        batch_size=batch_size,
        session_timeout_ms=s.session_timeout_ms,
        verify_key=s.model_keys(create=False).verify_key,  # explicit, else the local pair
        allow_unsigned=s.allow_unsigned_models,
        registry_dir=s.registry_dir,
        json_topics=s.json_topic_set(),
        threshold=threshold,
        metrics_port=metrics_port if metrics_port is not None else s.metrics_port,
        metrics_host=s.metrics_host,
        health_grace_s=s.health_grace_s,
        expected_partitions=s.partitions,
        bounds=InputBounds(**s.input_bounds_values()),  # type: ignore[arg-type]
        execution_providers=providers,
        label_contract=s.label_contract,
        fraud_stage=s.fraud_stage,
        **extra,
    )
