"""structlog setup: JSON lines by default, pretty console output on a TTY."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import structlog

__all__ = ["configure_logging", "get_logger", "kafka_logger", "with_kafka_logger"]


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Configure structlog and the stdlib root logger once per process.

    ``fmt`` is ``json``, ``console`` or ``auto`` (console when stderr is a TTY).
    Logs go to stderr so stdout stays clean for data (``finscore tail``).
    """
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(message)s")


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A structlog logger bound to a component name."""
    return structlog.get_logger(component=name)  # type: ignore[no-any-return]


# -- librdkafka's own log lines ------------------------------------------------------------------
KAFKA_LOGGER = "finscore.librdkafka"
REPEAT_S = 60.0  # the same librdkafka error is a warning at most once a minute
_DURATION = re.compile(r"\d+ms\b")


class _LibrdkafkaToStructlog(logging.Handler):
    """Forwards confluent-kafka's log records to structlog (component ``librdkafka``): errors
    and worse (syslog level <= 3, e.g. ``FAIL`` connection refused) as warnings, at most once
    per ``REPEAT_S`` for the same text (repeats, and everything else, at debug level)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._last: dict[str, float] = {}
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        level = logging.DEBUG
        if record.levelno >= logging.ERROR:
            now = time.monotonic()
            key = _DURATION.sub("", text)  # "(after 2ms in state CONNECT)": the same error
            with self._guard:
                if now - self._last.get(key, -REPEAT_S) >= REPEAT_S:
                    self._last[key] = now
                    if len(self._last) > 1000:  # bounded: forget the oldest texts
                        for old in sorted(self._last, key=self._last.__getitem__)[:500]:
                            del self._last[old]
                    level = logging.WARNING
        get_logger("librdkafka").log(level, "librdkafka", message=text)


def kafka_logger() -> logging.Logger:
    """The logger confluent-kafka clients are given (their ``logger`` config entry): librdkafka's
    lines go through structlog instead of raw ``%3|...|FAIL|...`` lines on stderr; errors are
    warnings (each text once a minute), the rest debug. One logger per process."""
    log = logging.getLogger(KAFKA_LOGGER)
    if not any(isinstance(h, _LibrdkafkaToStructlog) for h in log.handlers):
        log.addHandler(_LibrdkafkaToStructlog())
        log.propagate = False
        log.setLevel(logging.DEBUG)
    return log


def with_kafka_logger(conf: Mapping[str, Any]) -> dict[str, Any]:
    """``conf`` with librdkafka's logs routed to structlog (:func:`kafka_logger`), unless it
    already names a ``logger`` of its own (the console's, silent below DEBUG)."""
    return {"logger": kafka_logger(), **conf}
