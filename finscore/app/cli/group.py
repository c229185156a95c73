"""The `finscore` console: one click group whose commands are mounted lazily.

Every command lives in the module named in :attr:`LazyGroup.lazy` (bus, worker, models,
status, demo, compress, dashboard, sidecar, bench) and is imported only when invoked, so
``finscore --help`` stays light. Settings come from ``FINSCORE_*`` environment variables (see
the README); errors are one sentence plus a hint; tracebacks only with
``FINSCORE_LOG_LEVEL=DEBUG``.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from finscore import __version__
from finscore.exceptions import FinscoreError

if TYPE_CHECKING:
    pass

from finscore.app.cli.context import Ctx


class LazyGroup(click.Group):
    """Mounts command modules only when they are invoked (compression needs torch, the others
    confluent-kafka, rich, numpy...): ``finscore --help`` lists them from :attr:`lazy`'s short
    help without importing any."""

    lazy = {  # name: (module, attribute, short help for `finscore --help`)
        "broker": ("finscore.app.cli.bus", "broker",
                   "Run the embedded Kafka-compatible broker until Ctrl-C."),
        "topics": ("finscore.app.cli.bus", "topics",
                   "List finscore topics with partitions and offsets (--create)."),
        "produce": ("finscore.app.cli.bus", "produce",
                    "Produce records to TOPIC: your own from FILE or -, else simulated."),
        "tail": ("finscore.app.cli.bus", "tail",
                 "Print a topic's records as JSON, like kcat -C / tail -f."),
        "worker": ("finscore.app.cli.worker", "worker",
                   "Run a scoring worker (fraud, market, or a declared family) until Ctrl-C/SIGTERM."),
        "compress": ("finscore.app.cli.compress", "compress",
                     "Train, compress, gate, report and register a model."),
        "dashboard": ("finscore.app.cli.dashboard", "dashboard",
                      "Live dashboard: rates, lag, dead letters, models."),
        "sidecar": ("finscore.app.cli.sidecar", "sidecar",
                    "Recompress from fresh labels, gate, hot-swap."),
        "bench": ("finscore.app.cli.bench", "bench", "Throughput and latency benchmarks."),
        "models": ("finscore.app.cli.models", "models",
                   "List, promote, roll back, shadow and canary model versions."),
        "status": ("finscore.app.cli.status", "status",
                   "One screen: broker, lag per group, workers, models."),
        "demo": ("finscore.app.cli.demo", "demo",
                 "Run the whole system on the embedded broker with a live view."),
    }  # fmt: skip

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help``: eager commands' own short help, lazy ones' from
        :attr:`lazy` (nothing imported)."""
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy:
                rows.append((name, self.lazy[name][2]))
                continue
            cmd = super().get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            import importlib

            module, attr, _help = self.lazy[name]
            try:
                return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
            except ImportError as exc:
                missing = getattr(exc, "name", "") or ""
                hint = (
                    "install the compress extra: pip install 'finscore[compress]'"
                    if missing in ("torch", "onnx")
                    else f"({exc})"
                )
                raise click.ClickException(
                    f"`finscore {name}` is unavailable here: {hint}"
                ) from exc
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="finscore")
@click.option("-b", "--bootstrap-servers", metavar="HOST:PORT[,...]", default=None,
              help="Kafka bootstrap servers (overrides FINSCORE_BOOTSTRAP_SERVERS; "
                   "default: the embedded broker).")  # fmt: skip
@click.pass_context
def cli(click_ctx: click.Context, bootstrap_servers: str | None) -> None:
    """finscore: stream card transactions and market ticks through compressed ONNX models."""
    from finscore.logging import configure_logging

    obj = Ctx(bootstrap_servers)
    click_ctx.obj = obj
    configure_logging(obj.settings.log_level, obj.settings.log_format)
    from finscore.providers import configure as configure_providers

    # the default for sessions not given a list (compress, the sidecar, registry smoke tests)
    configure_providers(obj.settings.provider_list())


def main() -> None:
    """Entry point: run the CLI, turning finscore errors into one sentence and a hint."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        exc.show()  # usage line, then the error
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # same shape as finscore errors: `error:` (+ `hint:`)
        click.secho(f"error: {exc.format_message()}", fg="red", err=True)
        sys.exit(exc.exit_code)
    except FinscoreError as exc:
        if os.environ.get("FINSCORE_LOG_LEVEL", "").upper() == "DEBUG":
            raise
        exc = _named_source(exc)
        click.secho(f"error: {exc}", fg="red", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        sys.exit(130)


def _named_source(exc: FinscoreError) -> FinscoreError:
    """An unreachable broker's error, naming where its address came from (this invocation's
    ``-b``, ``FINSCORE_BOOTSTRAP_SERVERS``, or the embedded default): its hint then says to
    check that setting, or to start ``finscore broker``."""
    from finscore.streams.exceptions import BrokerUnreachable

    if isinstance(exc, BrokerUnreachable) and exc.source is None and Ctx.current is not None:
        return exc.with_source(Ctx.current.bootstrap_source)
    return exc
