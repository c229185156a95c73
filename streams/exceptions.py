"""Errors of the streaming workers. Bad *records* are not errors here: they are dead letters."""

from __future__ import annotations

from finscore.exceptions import FinscoreError


class StreamsError(FinscoreError):
    """Base class of errors raised by ``finscore.streams``."""


class TransportError(StreamsError):
    """The Kafka transport failed (broker unreachable, produce failed, fenced producer)."""


class BrokerUnreachable(TransportError):
    """No Kafka broker answers at ``bootstrap``.

    ``source`` names what chose that address (``FINSCORE_BOOTSTRAP_SERVERS``,
    ``-b/--bootstrap-servers``), None for the embedded broker's default address; the message
    and hint follow it: check the setting when one was given, start ``finscore broker`` when
    none was. The core raises it without a source; the console's edge adds it
    (:meth:`with_source`), since only the edge knows where settings came from."""

    def __init__(self, bootstrap: str, source: str | None = None) -> None:
        self.bootstrap, self.source = bootstrap, source
        where = f" ({source})" if source else ""
        hint = (
            f"check {source}: is a broker running at {bootstrap}, reachable from here?"
            if source
            else "start the embedded one with `finscore broker` (or point "
            "FINSCORE_BOOTSTRAP_SERVERS or -b at your cluster)"
        )
        super().__init__(f"no Kafka broker answers at {bootstrap}{where}", hint=hint)

    def with_source(self, source: str | None) -> BrokerUnreachable:
        """The same error, saying where its address came from."""
        return BrokerUnreachable(self.bootstrap, source)


class ModelUnavailable(StreamsError):
    """No usable model could be found for a worker (none announced, none in the registry)."""


class TopicMissing(StreamsError):
    """A topic the worker needs does not exist on the cluster."""
