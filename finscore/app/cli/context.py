"""Per-invocation state shared by every command: settings, the Kafka client config, output."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from finscore.settings import Settings


class Ctx:
    """Per-invocation state: settings, built once (``-b`` overrides the bootstrap servers).

    ``bootstrap_source`` says what chose the broker address (the option, the setting, or None
    for the embedded broker's default): what an unreachable broker's error names."""

    current: Ctx | None = None  # this invocation's, for main()'s error messages

    def __init__(self, bootstrap_servers: str | None = None) -> None:
        from finscore.settings import Settings

        overrides: dict[str, Any] = (
            {"bootstrap_servers": bootstrap_servers} if bootstrap_servers else {}
        )
        self.settings = Settings(**overrides)
        self.bootstrap_source: str | None = (
            "-b/--bootstrap-servers"
            if bootstrap_servers
            else "FINSCORE_BOOTSTRAP_SERVERS"
            if self.settings.bootstrap_servers
            else None
        )
        Ctx.current = self

    @property
    def client(self) -> dict[str, Any]:
        """The Kafka client config, with librdkafka's own log lines (``%3|...|FAIL|...``)
        routed to structlog and shown only at ``FINSCORE_LOG_LEVEL=DEBUG``: the console's
        errors are one sentence and a hint."""
        return {**self.settings.kafka_config(), "logger": librdkafka_logger(self.settings)}


class _StructlogHandler(logging.Handler):
    """Forwards stdlib records (librdkafka's, via confluent-kafka's ``logger``) to structlog."""

    def emit(self, record: logging.LogRecord) -> None:
        from finscore.logging import get_logger

        get_logger("librdkafka").log(record.levelno, "librdkafka", message=record.getMessage())


def librdkafka_logger(s: Settings) -> logging.Logger:
    """The logger confluent-kafka clients of the console log to: structlog at DEBUG level,
    silent otherwise."""
    log = logging.getLogger("finscore.librdkafka")
    if not log.handlers:
        log.addHandler(_StructlogHandler())
        log.propagate = False
    log.setLevel(logging.DEBUG if s.log_level.upper() == "DEBUG" else logging.CRITICAL + 1)
    return log


pass_ctx = click.make_pass_decorator(Ctx, ensure=True)


def dump(obj: Any) -> str:
    """Pretty JSON for console output."""
    return json.dumps(obj, indent=2, sort_keys=False, default=str)


# `models`, `status` and `demo` live in finscore.app.cli.models / finscore.app.cli.status (each reads in
# one sitting); LazyGroup mounts them when invoked.


def family_files(ctx: click.Context, param: click.Parameter, value: Any) -> Any:  # noqa: ARG001
    """``--family`` values as declaration files: a built-in family's name (``credit``) is its
    TOML in the package, anything else a path that must exist (a usage error otherwise)."""
    from finscore.families.spec import family_file

    def one(ref: str) -> Path:
        path = family_file(ref)
        if not path.is_file():
            raise click.BadParameter(f"{ref}: no such file, and not a built-in family name")
        return path

    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(one(v) for v in value)
    return one(value)
