"""Errors of the event contract: records that cannot be decoded or encoded."""

from __future__ import annotations

from finscore.exceptions import FinscoreError


class SchemaError(FinscoreError):
    """Base class of schema and codec errors."""


class EncodeError(SchemaError):
    """A record does not fit its schema (missing field, wrong type, decimal out of range)."""


class DecodeError(SchemaError):
    """Bytes could not be decoded into a valid record.

    ``reason`` says why; ``topic``/``partition``/``offset`` say where, when known, and appear
    in the message so a dead letter or a log line points at the exact record.
    """

    def __init__(
        self,
        reason: str,
        *,
        encoding: str | None = None,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.reason = reason
        self.encoding = encoding
        self.topic = topic
        self.partition = partition
        self.offset = offset
        where = ""
        if (topic, partition, offset) != (None, None, None):
            t = topic if topic is not None else "?"
            p = partition if partition is not None else "?"
            o = offset if offset is not None else "?"
            where = f" at {t}[{p}]@{o}"
        enc = f" ({encoding})" if encoding else ""
        super().__init__(f"cannot decode record{where}{enc}: {reason}", hint=hint)

    def at(self, topic: str | None, partition: int | None, offset: int | None) -> DecodeError:
        """A copy of this error located at ``topic[partition]@offset``."""
        return DecodeError(
            self.reason,
            encoding=self.encoding,
            topic=topic,
            partition=partition,
            offset=offset,
            hint=self.hint or None,
        )
