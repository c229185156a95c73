"""Honest health of a worker: is it delivering, and do its topics exist?

A :class:`HealthMonitor` runs on its own thread (so it sees a worker whose loop is blocked in
the client, e.g. a transaction commit waiting for a lost broker). Every ``interval_s`` it lists
the cluster's topics (a full listing: it never creates one) and reads the transport's
acknowledgement bookkeeping (:class:`~finscore.streams.kafka.DeliveryStats`). A condition is a
*problem* once it has lasted longer than ``grace_s``:

- **delivery stalled**: records are pending and no acknowledgement has arrived for ``grace_s``;
- **deliveries failed**: a delivery failed within the last ``grace_s`` (at once, no wait);
- **topics missing**: a required topic is absent from the cluster (e.g. a broker restarted
  empty);
- **broker unreachable**: the topic listing fails.

No problem → healthy. Problems clear by themselves: when acknowledgements progress again and
the topics are back, the next check reports healthy. The monitor only observes; it never
creates topics (the catalog is created by ``finscore topics --create``) and never stops the
worker (a delivery that finally fails still ends the worker with one sentence: at-least-once
re-reads the batch after the restart).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from finscore.logging import get_logger, with_kafka_logger
from finscore.streams.exceptions import TransportError
from finscore.streams.transport import DeliveryStats

__all__ = ["HealthMonitor"]

log = get_logger(__name__)


class HealthMonitor:
    """Watches delivery acknowledgements and required topics; see the module docstring.

    ``delivery`` returns the transport's stats (None before the transport exists);
    ``on_change`` is called with ``(healthy, problems)`` after every check.
    """

    def __init__(
        self,
        client: Mapping[str, str | int],
        required_topics: Sequence[str],
        delivery: Callable[[], DeliveryStats | None],
        grace_s: float = 10.0,
        interval_s: float = 1.0,
        on_change: Callable[[bool, list[str]], None] | None = None,
        list_topics: Callable[[float], Iterable[str]] | None = None,
    ) -> None:
        """``list_topics(timeout)``: the names of the topics on the bus (raising when it cannot
        be reached); default: an admin client on ``client``."""
        self.client = dict(client)
        self.list_topics = list_topics
        self.required = tuple(required_topics)
        self.delivery = delivery
        self.grace_s = grace_s
        self.interval_s = interval_s
        self.on_change = on_change
        self._since: dict[str, float] = {}  # condition -> monotonic time first seen
        self._detail: dict[str, str] = {}
        self._failed_seen = 0
        self._failed_at: float | None = None
        self._failed_detail = ""
        self._problems: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._admin: AdminClient | None = None

    # -- observations -----------------------------------------------------------------------
    def _observe(
        self, cond: str, present: bool, detail: str = "", now: float = 0.0, exact: bool = False
    ) -> None:
        """Record whether ``cond`` holds; ``now`` is when it began (``exact``: the condition
        knows its own start, e.g. the last acknowledgement, so a new start replaces the old)."""
        if present and exact:
            self._since[cond] = now
            self._detail[cond] = detail
        elif present:
            self._since.setdefault(cond, now)
            self._detail[cond] = detail
        else:
            self._since.pop(cond, None)
            self._detail.pop(cond, None)

    def check(self) -> list[str]:
        """Observe once; returns the problems (conditions older than the grace)."""
        now = time.monotonic()
        try:
            timeout = max(0.5, min(5.0, self.grace_s / 2))
            if self.list_topics is not None:
                names = set(self.list_topics(timeout))
            else:
                if self._admin is None:
                    self._admin = AdminClient(with_kafka_logger(self.client))
                names = set(self._admin.list_topics(timeout=timeout).topics)
        except (KafkaException, TransportError) as exc:
            detail = str(exc.args[0]) if isinstance(exc, KafkaException) else str(exc)
            self._observe("broker unreachable", True, detail, now)
            self._observe("topics missing", False)
        else:
            self._observe("broker unreachable", False)
            missing = [t for t in self.required if t not in names]
            self._observe("topics missing", bool(missing), ", ".join(missing), now)
        st = self.delivery()
        if st is not None:
            stalled = st.stalled_s(now)
            self._observe(
                "delivery stalled",
                stalled > 0,
                f"{st.unacked} record(s) unacknowledged for {stalled:.0f} s",
                now - stalled,
                exact=True,  # acks progressing restart the clock, pending records or not
            )
            if st.failed != self._failed_seen:  # a problem at once, for a grace after
                self._failed_seen, self._failed_at = st.failed, now
                self._failed_detail = f"{st.failed} record(s) failed in all: {st.last_error}"
        problems = [
            f"{cond}: {self._detail.get(cond, '')}"
            for cond, since in sorted(self._since.items())
            if now - since > self.grace_s
        ]
        if self._failed_at is not None and now - self._failed_at <= self.grace_s:
            problems.append(f"deliveries failed: {self._failed_detail}")
        if problems != self._problems:
            if problems:
                log.error("worker.unhealthy", problems=problems,
                          hint="check the broker; create missing topics with "
                          "`finscore topics --create`")  # fmt: skip
            else:
                log.info("worker.healthy_again")
        self._problems = problems
        if self.on_change is not None:
            self.on_change(not problems, problems)
        return problems

    @property
    def problems(self) -> list[str]:
        """The problems found by the last check (empty = healthy)."""
        return list(self._problems)

    # -- thread -----------------------------------------------------------------------------
    def start(self) -> HealthMonitor:
        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                try:
                    self.check()
                except Exception as exc:  # noqa: BLE001 - the monitor must outlive any check
                    log.warning("health.check_failed", error=f"{type(exc).__name__}: {exc}")

        self._thread = threading.Thread(target=loop, daemon=True, name="health")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
