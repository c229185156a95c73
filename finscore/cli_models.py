"""`finscore models ...`: the registry and the announcements that drive hot swaps."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from finscore.cli import Ctx, cli, pass_ctx
from finscore.exceptions import FinscoreError


def _registry(ctx: Ctx):  # noqa: ANN202 - lazy import keeps `finscore --help` light
    from finscore.registry import Registry

    return Registry(ctx.settings.registry_dir)


def _signed(ctx: Ctx, artifact):  # noqa: ANN001, ANN202
    key = ctx.settings.signing_key
    if artifact.signature is None and key is not None:
        return artifact.sign(key.get_secret_value())
    return artifact


def _announce(ctx: Ctx, artifact, action: str, **kw) -> None:  # noqa: ANN001
    from finscore.schemas.topics import MODEL_UPDATES
    from finscore.streams.admin import check_reachable
    from finscore.streams.announcements import announce

    check_reachable(ctx.client)
    announce(ctx.client, ctx.settings.topic_prefix + MODEL_UPDATES, artifact, action, **kw)


@cli.group()
def models() -> None:
    """List, promote, roll back, shadow and canary model versions."""


@models.command("list")
@click.argument("name", required=False)
@pass_ctx
def list_models(ctx: Ctx, name: str | None) -> None:
    """Versions in the local registry (champion marked) with their metrics and size."""
    reg = _registry(ctx)
    root = ctx.settings.registry_dir
    names = [name] if name else sorted(p.name for p in root.glob("*") if p.is_dir())
    table = Table(title=f"registry {ctx.settings.registry_dir}")
    for col in ("model", "version", "champion", "bytes", "metrics", "steps", "created"):
        table.add_column(col)
    for n in names:
        champ = reg.champion(n)
        cv = champ.manifest.version if champ else None
        for m in reg.list(n):
            metrics = ", ".join(
                f"{k}={v:.4g}" for k, v in m.metrics.items() if isinstance(v, float | int)
            )
            steps = "→".join(s.get("step", "?") for s in m.steps)
            table.add_row(
                n,
                m.version,
                "★" if m.version == cv else "",
                f"{m.size_bytes:,}",
                metrics,
                steps,
                m.created_at[:19],
            )
    Console().print(table)


@models.command()
@click.argument("name")
@click.argument("version", required=False)
@pass_ctx
def promote(ctx: Ctx, name: str, version: str | None) -> None:
    """Make VERSION (default: the newest) the champion and announce it to every worker."""
    reg = _registry(ctx)
    if version is None:
        versions = reg.list(name)
        if not versions:
            raise FinscoreError(
                f"no {name} model in the registry", hint=f"run `finscore compress {name}`"
            )
        version = versions[-1].version
    reg.promote(name, version)
    _announce(ctx, _signed(ctx, reg.get(name, version)), "PROMOTE")
    click.echo(f"{name} v{version} promoted and announced")


@models.command()
@click.argument("name")
@pass_ctx
def rollback(ctx: Ctx, name: str) -> None:
    """Return to the previous champion: just another announcement."""
    reg = _registry(ctx)
    manifest = reg.rollback(name)
    _announce(ctx, _signed(ctx, reg.get(name, manifest.version)), "ROLLBACK")
    click.echo(f"{name} rolled back to v{manifest.version} and announced")


@models.command()
@click.argument("name")
@click.argument("version", required=False)
@click.option("--clear", is_flag=True, help="Remove the challenger.")
@pass_ctx
def shadow(ctx: Ctx, name: str, version: str | None, clear: bool) -> None:
    """Score VERSION beside the live model; its outputs go to <output>-shadow."""
    if clear or version is None:
        _announce(ctx, None, "SHADOW", model_name=name)
        click.echo(f"{name}: challenger removed")
        return
    _announce(ctx, _signed(ctx, _registry(ctx).get(name, version)), "SHADOW")
    click.echo(f"{name} v{version} now scores in shadow")


@models.command()
@click.argument("name")
@click.argument("version")
@click.option("--share", type=float, default=0.1, show_default=True, help="Share of keys.")
@pass_ctx
def canary(ctx: Ctx, name: str, version: str, share: float) -> None:
    """Let VERSION score a share of keys (its outputs replace the live model's for them)."""
    if not 0 < share < 1:
        raise click.BadParameter("share must be between 0 and 1", param_hint="--share")
    _announce(ctx, _signed(ctx, _registry(ctx).get(name, version)), "CANARY", canary_share=share)
    click.echo(f"{name} v{version} scores {share:.0%} of keys")


@models.command()
def keygen() -> None:
    """Print a new Ed25519 key pair as FINSCORE_SIGNING_KEY / FINSCORE_VERIFY_KEY lines."""
    from finscore.registry import generate_keypair

    private, public = generate_keypair()
    click.echo(f"FINSCORE_SIGNING_KEY={private}\nFINSCORE_VERIFY_KEY={public}")


@models.command()
@click.argument("name", type=click.Choice(["fraud", "market"]))
@pass_ctx
def recompress(ctx: Ctx, name: str) -> None:
    """Ask the running sidecar to recompress NAME now (it gates and announces the result)."""
    import json

    from confluent_kafka import Producer

    from finscore.schemas.topics import SIDECAR_COMMANDS
    from finscore.streams.admin import check_reachable

    check_reachable(ctx.client)
    p = Producer(ctx.client)
    p.produce(
        ctx.settings.topic_prefix + SIDECAR_COMMANDS,
        json.dumps({"command": "recompress", "model": name}).encode(),
        name.encode(),
    )
    if p.flush(10):
        raise FinscoreError("the command was not delivered", hint="is the topic catalog created?")
    click.echo(
        f"asked the sidecar to recompress {name}; watch its log or `finscore models list {name}`"
    )


@models.command()
@click.argument("name", type=click.Choice(["fraud"]))
@pass_ctx
def compare(ctx: Ctx, name: str) -> None:
    """Live vs shadow challenger on the same transactions: agreement, scores, AP on labels."""
    from finscore.compare import compare as run_compare
    from finscore.streams.admin import check_reachable

    check_reachable(ctx.client)
    try:
        c = run_compare(ctx.client, ctx.settings.topic_prefix)
    except ValueError as exc:
        raise FinscoreError(str(exc)) from exc
    t = Table(title=f"{name}: live v{c.live_version} vs challenger v{c.challenger_version}")
    t.add_column("measure")
    t.add_column("value", justify="right")
    rows = [
        ("transactions scored by both", f"{c.compared:,}"),
        ("of which labelled so far", f"{c.labelled:,}"),
        ("same decision", f"{c.decision_agreement:.2%}"),
        ("score correlation", f"{c.score_correlation:.3f}"),
        ("mean |score difference|", f"{c.mean_abs_score_diff:.4f}"),
        ("flagged: live / challenger", f"{c.live_flagged:,} / {c.challenger_flagged:,}"),
        ("average precision: live / challenger",
         "n/a (no labelled frauds yet)" if c.live_ap is None else f"{c.live_ap:.4f} / {c.challenger_ap:.4f}"),
    ]  # fmt: skip
    for k, v in rows:
        t.add_row(k, v)
    Console().print(t)
