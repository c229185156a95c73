"""`finscore models ...`: the registry and the announcements that drive hot swaps.

Every artifact announced from here is checked (hash, size, smoke test, its signature when it
has one) and announced with a signed envelope. The signing key is ``FINSCORE_SIGNING_KEY``, else
the machine's local key pair (created once, see :mod:`finscore.models.keys`); without a key nothing is
announced unless ``FINSCORE_ALLOW_UNSIGNED_MODELS`` is set (development only, warned loudly).
Model names and versions are checked against the registry's patterns before anything is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from finscore.app.cli.context import Ctx, pass_ctx
from finscore.exceptions import FinscoreError
from finscore.logging import get_logger

if TYPE_CHECKING:
    from finscore.app.sidecar.gate import Announcer
    from finscore.models.registry import Artifact, Registry

log = get_logger("finscore.models")


def _name(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Click callback: a model name matching the registry's pattern (no paths)."""
    from finscore.models.registry import ArtifactError, check_model_name

    if value is None:
        return None
    try:
        return check_model_name(value)
    except ArtifactError as exc:
        raise click.BadParameter(str(exc)) from exc


def _version(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Click callback: a version made of digits."""
    from finscore.models.registry import ArtifactError, check_version

    if value is None:
        return None
    try:
        return check_version(value)
    except ArtifactError as exc:
        raise click.BadParameter(str(exc)) from exc


def _registry(ctx: Ctx) -> Registry:
    from finscore.models.registry import Registry  # lazy: keeps `finscore --help` light

    return Registry(ctx.settings.registry_dir)


def _signing_key(ctx: Ctx) -> str | None:
    """The key announcements are signed with; refuses (FinscoreError) when there is none and
    unsigned models are not allowed."""
    keys = ctx.settings.model_keys()
    if keys.signing_key:
        return keys.signing_key
    if ctx.settings.allow_unsigned_models:
        log.warning(
            "security.unsigned_models_allowed",
            message="FINSCORE_ALLOW_UNSIGNED_MODELS is set: announcing WITHOUT a signature. "
            "Development only.",
        )
        return None
    raise FinscoreError(
        "no signing key: models are announced signed only",
        hint="set FINSCORE_SIGNING_KEY (`finscore models keygen`), or FINSCORE_KEY_DIR to a "
        "folder holding signing.key",
    )


def _announcer(ctx: Ctx) -> Announcer:
    """Announcements to this bus's ``model-updates``, signed with this machine's key (checked
    reachable first: a bus that is not there fails fast, before anything changes)."""
    from finscore.app.sidecar.gate import Announcer
    from finscore.schemas.topics import MODEL_UPDATES
    from finscore.streams.admin import check_reachable

    key = _signing_key(ctx)
    check_reachable(ctx.client)
    return Announcer(ctx.client, ctx.settings.topic_prefix + MODEL_UPDATES, key)


def _trusted(ctx: Ctx, reg: Registry, name: str, version: str) -> Artifact:
    """Version ``version`` of ``name``, checked (hash, size, smoke test, its signature when it
    has one) and, when unsigned, signed with this machine's key — the signature kept in the
    registry (:func:`finscore.app.sidecar.gate.trusted`). FinscoreError when it cannot be
    trusted."""
    from finscore.app.sidecar.gate import trusted
    from finscore.models.registry import ArtifactError

    key = _signing_key(ctx)
    verify = ctx.settings.model_keys().verify_key
    try:
        return trusted(reg, reg.get(name, version), signing_key=key, verify_key=verify)
    except ArtifactError as exc:
        raise FinscoreError(
            f"refusing to announce it: {exc}",
            hint="a registry artifact signed with another key must be re-published with this "
            "one (or set FINSCORE_SIGNING_KEY to the key that signed it)"
            if exc.reason == "bad_signature"
            else exc.hint,
        ) from exc


@click.group()
def models() -> None:
    """List, promote, roll back, shadow and canary model versions."""


@models.command("list")
@click.argument("name", required=False, callback=_name)
@click.option("--wide", is_flag=True, help="Every metric and step (wider than 80 columns).")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of version summaries.")
@pass_ctx
def list_models(ctx: Ctx, name: str | None, wide: bool, as_json: bool) -> None:
    """Versions in the local registry (champion marked) with their metrics and size."""
    from finscore.app.cli.model_table import model_rows, print_models

    reg = _registry(ctx)
    names = [name] if name else reg.names()
    rows = model_rows(reg, names)
    print_models(rows, f"registry {ctx.settings.registry_dir}", wide=wide, as_json=as_json)


@models.command()
@click.argument("name", callback=_name)
@click.argument("version", required=False, callback=_version)
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
    from finscore.app.sidecar.gate import promote as announce_and_promote

    artifact = _trusted(ctx, reg, name, version)  # checked before anything changes
    announce_and_promote(reg, _announcer(ctx), artifact)  # the registry moves once acknowledged
    click.echo(f"{name} v{version} promoted and announced")


@models.command()
@click.argument("name", callback=_name)
@pass_ctx
def rollback(ctx: Ctx, name: str) -> None:
    """Return to the previous champion: just another announcement."""
    from finscore.app.sidecar.gate import rollback as announce_and_roll_back

    reg = _registry(ctx)
    manifest = reg.previous(name)
    artifact = _trusted(ctx, reg, name, manifest.version)
    announce_and_roll_back(reg, _announcer(ctx), artifact)  # the registry moves once acknowledged
    click.echo(f"{name} rolled back to v{manifest.version} and announced")


@models.command()
@click.argument("name", callback=_name)
@click.argument("version", required=False, callback=_version)
@click.option("--clear", is_flag=True, help="Remove the challenger.")
@pass_ctx
def shadow(ctx: Ctx, name: str, version: str | None, clear: bool) -> None:
    """Score VERSION beside the live model; its outputs go to <output>-shadow."""
    from finscore.app.sidecar.gate import challenge

    if clear or version is None:
        challenge(_announcer(ctx), name, None, "SHADOW")
        click.echo(f"{name}: challenger removed")
        return
    artifact = _trusted(ctx, _registry(ctx), name, version)
    challenge(_announcer(ctx), name, artifact, "SHADOW")
    click.echo(f"{name} v{version} now scores in shadow")


@models.command()
@click.argument("name", callback=_name)
@click.argument("version", callback=_version)
@click.option("--share", type=float, default=0.1, show_default=True, help="Share of keys.")
@pass_ctx
def canary(ctx: Ctx, name: str, version: str, share: float) -> None:
    """Let VERSION score a share of keys (its outputs replace the live model's for them)."""
    if not 0 < share < 1:
        raise click.BadParameter("share must be between 0 and 1", param_hint="--share")
    from finscore.app.sidecar.gate import challenge

    artifact = _trusted(ctx, _registry(ctx), name, version)
    challenge(_announcer(ctx), name, artifact, "CANARY", share)
    click.echo(f"{name} v{version} scores {share:.0%} of keys")


@models.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write DIR/signing.env (mode 0600) and DIR/verify.env (e.g. for docker/compose.yaml) "
    "instead of printing; existing files are kept.",
)
def keygen(out_dir: Path | None) -> None:
    """A new Ed25519 key pair as FINSCORE_SIGNING_KEY / FINSCORE_VERIFY_KEY lines: the signing
    key for whoever promotes models (sidecar, model jobs), the verify key for workers."""
    import os

    from finscore.models.registry import generate_keypair

    private, public = generate_keypair()
    if out_dir is None:
        click.echo(f"FINSCORE_SIGNING_KEY={private}\nFINSCORE_VERIFY_KEY={public}")
        return
    signing, verify = out_dir / "signing.env", out_dir / "verify.env"
    if signing.exists() or verify.exists():
        raise FinscoreError(
            f"{signing} or {verify} exists: keeping them",
            hint="remove both to make a new pair (every model must then be signed again)",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(signing, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"FINSCORE_SIGNING_KEY={private}\n")
    verify.write_text(f"FINSCORE_VERIFY_KEY={public}\n")
    click.echo(f"wrote {signing} (private, mode 0600) and {verify}")


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
    from finscore.app.sidecar.compare import compare as run_compare
    from finscore.streams.admin import check_reachable

    check_reachable(ctx.client)
    try:
        c = run_compare(
            ctx.client, ctx.settings.topic_prefix, ctx.settings.schema_registry_config()
        )
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
