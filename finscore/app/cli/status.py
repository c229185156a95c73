"""`finscore status`: broker, lag per consumer group, workers and models on one screen."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from finscore.app.cli.context import Ctx, pass_ctx


@click.command()
@click.option("--worker", "workers", multiple=True, help="Worker metrics URL (repeatable).")
@click.option(
    "--group", "describe", multiple=True,
    help="Consumer group to describe: per-partition lag and members (repeatable).",
)  # fmt: skip
@pass_ctx
def status(ctx: Ctx, workers: tuple[str, ...], describe: tuple[str, ...]) -> None:
    """One screen: broker, topics with lag per group, workers and their models, the registry;
    with ``--group G``, G's partitions (committed offset, end offset, lag, owner) as
    ``kafka-consumer-groups --describe`` shows them, never a negative lag."""
    from finscore.app.console.observe import health, scrape
    from finscore.models.registry import Registry
    from finscore.schemas.topics import catalog
    from finscore.streams.admin import check_reachable, offsets

    s = ctx.settings
    console = Console()
    names = check_reachable(ctx.client)
    console.print(
        f"[bold]broker[/] {s.bootstrap} ({'embedded' if s.embedded else 'external'}): "
        f"{len(names)} topics"
    )
    t = Table(title="streams")
    t.add_column("topic", no_wrap=True, min_width=max(len(n) for n in names) if names else 5)
    for col in ("messages", "consumer group", "lag"):
        t.add_column(col, overflow="fold")
    groups = {
        "transactions": f"{s.topic_prefix}finscore-fraud",
        "market-ticks": f"{s.topic_prefix}finscore-market",
    }
    misreported = False
    for spec in catalog(s.partitions, s.topic_prefix):
        if spec.name not in names:
            t.add_row(spec.name, "[red]missing", "", "")
            continue
        group = groups.get(spec.name.removeprefix(s.topic_prefix))
        parts = offsets(ctx.client, [spec.name], group)
        # A partition whose committed offset is past the broker's end offset (the embedded
        # broker's high watermark can lag its last batch) has lag 0, marked: never negative.
        stale = any(p.lag is not None and p.lag < 0 for p in parts)
        misreported |= stale
        lag = sum(max(0, p.lag or 0) for p in parts) if group else None
        t.add_row(
            spec.name,
            f"{sum(p.messages for p in parts):,}",
            group or "",
            "" if lag is None else f"{lag:,}" + ("*" if stale else ""),
        )
    console.print(t)
    if misreported:
        console.print(
            "* the broker reports an end offset below the group's committed offset (a stale "
            "high watermark): that partition's lag is shown as 0 and its message count is low",
            highlight=False,
        )
    for g in describe:
        _print_group(console, ctx, g)
    if workers:
        w = Table(title="workers")
        for col in ("url", "status", "stream", "model", "partitions", "in", "out", "dead letters"):
            w.add_column(col, overflow="fold")
        for url in workers:
            h = health(url) or {}
            m = scrape(url)
            model = h.get("model") or {}
            w.add_row(
                url, h.get("status", "[red]down"), h.get("stream", ""),
                f"{model.get('name', '')} v{model.get('version', '')}" if model else "",
                ",".join(map(str, h.get("assigned_partitions", []))),
                f"{m.events_in:,.0f}" if m else "", f"{m.events_out:,.0f}" if m else "",
                f"{m.dead_letters:,.0f}" if m else "",
            )  # fmt: skip
        console.print(w)
    reg = Registry(s.registry_dir)
    r = Table(title=f"models ({s.registry_dir})")
    for col in ("model", "champion", "versions", "bytes", "metrics"):
        r.add_column(col, overflow="fold")
    for name in ("fraud", "market"):
        champ = reg.champion(name)
        versions = reg.list(name)
        if champ is None:
            r.add_row(name, "[yellow]none", str(len(versions)), "", "")
            continue
        mf = champ.manifest
        r.add_row(
            name, f"v{mf.version}", str(len(versions)), f"{mf.size_bytes:,}",
            ", ".join(f"{k}={v:.3f}" for k, v in mf.metrics.items() if isinstance(v, float)),
        )  # fmt: skip
    console.print(r)


def _print_group(console: Console, ctx: Ctx, group: str) -> None:
    """One consumer group: a row per partition, lag clamped at 0 and marked where the broker
    reports an end offset below the committed one."""
    from finscore.streams.admin import describe_group

    view = describe_group(ctx.client, group)
    members = "?" if view.members is None else str(len(view.members))
    t = Table(title=f"group {group} ({view.state}, {members} members)")
    widest = max((len(p.topic) for p in view.partitions), default=5)
    t.add_column("topic", no_wrap=True, min_width=widest)  # whole names, piped or not
    for col in ("partition", "committed", "end", "lag", "owner"):
        t.add_column(col, overflow="fold")
    for p in view.partitions:
        stale = p.lag is not None and p.lag < 0
        owner = view.owner(p.topic, p.partition)
        t.add_row(
            p.topic, str(p.partition), "" if p.committed is None else f"{p.committed:,}",
            f"{p.high:,}", "" if p.lag is None else f"{max(0, p.lag):,}" + ("*" if stale else ""),
            f"{owner.client_id}@{owner.host}" if owner else "",
        )  # fmt: skip
    console.print(t)
