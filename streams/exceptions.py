"""Errors of the streaming workers. Bad *records* are not errors here: they are dead letters."""

from __future__ import annotations

from finscore.exceptions import FinscoreError


class StreamsError(FinscoreError):
    """Base class of errors raised by ``finscore.streams``."""


class TransportError(StreamsError):
    """The Kafka transport failed (broker unreachable, produce failed, fenced producer)."""


class ModelUnavailable(StreamsError):
    """No usable model could be found for a worker (none announced, none in the registry)."""


class TopicMissing(StreamsError):
    """A topic the worker needs does not exist on the cluster."""
