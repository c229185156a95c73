"""The sidecar's loop: read every input, feed the two halves, decide when to recompress.

The orchestrator (:class:`Sidecar`) owns no model knowledge: it reads the topics it follows with
one consumer, checks every record (:mod:`finscore.app.sidecar.inputs`), gives it to its half —
:class:`~finscore.app.sidecar.fraud.FraudSidecar` (``fraud-labels``, ``fraud-flags``) or
:class:`~finscore.app.sidecar.market.MarketSidecar` (``market-ticks``, ``price-signals``) — and
starts a recompression in a background thread when a trigger fires:

- **command**: ``finscore models recompress fraud|market`` (a record on ``sidecar-commands``);
- **schedule**: fraud every ``interval_s`` seconds (0 = never) once ``min_outcomes`` labels are in;
- **drift**: each half's own trigger (fraud first, then market).

One recompression at a time, then a ``cooldown_s`` pause. A command obeys the same cooldown: one
that arrives while a run is going on or within ``cooldown_s`` of the last one is **refused**
(logged as ``sidecar.command_refused`` with the reason, kept in ``state.refused``), not queued;
send it again later.

Every input is untrusted: a record that does not decode or is out of bounds is logged
(``sidecar.bad_record``), counted (``state.bad_records``, by topic and error type) and
dead-lettered to its topic's dead-letter topic where the catalog has one
(``sidecar-commands-dlq``, ``fraud-labels-dlq``, ``market-ticks-dlq``); bad records on the
workers' outputs (``fraud-flags``, ``price-signals``) have none and are logged and counted only.
No record stops the sidecar.

:meth:`Sidecar.status` says what the sidecar is doing (``waiting for labelled data (N of M)``,
``watching``, ``recompressing``, ``cooling down``) and its last outcome and error;
``finscore sidecar --metrics-port P`` serves it on ``/health``
(:mod:`finscore.app.sidecar.status`) for the demo, the dashboard and Docker.

Its consumer and dead-letter producer are injectable (``consumer=``, ``producer=``: anything
with the few confluent-kafka methods of :class:`InputConsumer` / :class:`DeadLetterProducer`),
so the loop runs without a broker in tests; by default it builds Kafka clients from
``cfg.client``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from finscore.app.sidecar.config import SidecarConfig
from finscore.app.sidecar.fraud import FraudSidecar, OutcomeBuffer
from finscore.app.sidecar.inputs import (
    BadInput,
    Command,
    check_flag,
    check_label,
    check_signal,
    parse_command,
)
from finscore.app.sidecar.market import MarketSidecar
from finscore.app.sidecar.quality import QualityMonitor
from finscore.logging import get_logger, with_kafka_logger
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec, registry_client
from finscore.schemas.exceptions import DecodeError
from finscore.streams.exceptions import TopicMissing
from finscore.streams.pipeline import DeadLetter, DeadLetterEncoder
from finscore.streams.transport import Message, TopicReader, TransportFactory

__all__ = [
    "DeadLetterProducer",
    "InputConsumer",
    "KafkaInputs",
    "ReaderInputs",
    "Sidecar",
    "SidecarConfig",
    "SidecarState",
]

log = get_logger("sidecar")


class InputConsumer(Protocol):
    """What the loop needs of its consumer (:class:`KafkaInputs` on a broker; an in-memory one
    in tests): the topics that exist, an assignment from the beginning, batches, close."""

    def topics(self) -> dict[str, list[int]]:
        """Every existing topic and its partitions (never creates one)."""
        ...

    def assign_from_beginning(self, partitions: list[tuple[str, int]]) -> None: ...

    def consume(self, max_messages: int, timeout: float) -> list[Message]: ...

    def close(self) -> None: ...


class DeadLetterProducer(Protocol):
    """What the loop needs to dead-letter a record (a confluent-kafka ``Producer`` fits)."""

    def produce(
        self, topic: str, value: bytes, key: bytes | None, *, on_delivery: Callable[..., None]
    ) -> None: ...

    def poll(self, timeout: float) -> int: ...

    def flush(self, timeout: float) -> int: ...


class KafkaInputs:
    """:class:`InputConsumer` on a broker: one confluent-kafka consumer, manually assigned (no
    group rebalancing, nothing committed), never auto-creating a topic."""

    def __init__(self, client: Mapping[str, Any], group_id: str) -> None:
        from confluent_kafka import Consumer

        self.consumer = Consumer({**client, "group.id": group_id, "enable.auto.commit": False,
                                  "fetch.wait.max.ms": 50, "allow.auto.create.topics": False})  # fmt: skip

    def topics(self) -> dict[str, list[int]]:
        md = self.consumer.list_topics(timeout=10)  # full listing: never creates a topic
        return {name: sorted(t.partitions) for name, t in md.topics.items()}

    def assign_from_beginning(self, partitions: list[tuple[str, int]]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        self.consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in partitions])

    def consume(self, max_messages: int, timeout: float) -> list[Message]:
        return [
            Message(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1])
            for m in self.consumer.consume(max_messages, timeout)
            if m.error() is None
        ]

    def close(self) -> None:
        self.consumer.close()


class ReaderInputs:
    """:class:`InputConsumer` over any :class:`~finscore.streams.transport.TransportFactory`
    (e.g. :class:`finscore.streams.testing.InMemoryBus`): one topic reader per followed topic,
    read in turn."""

    def __init__(self, factory: TransportFactory, group_id: str) -> None:
        self.factory = factory
        self.group_id = group_id
        self._readers: list[TopicReader] = []

    def topics(self) -> dict[str, list[int]]:
        return {t: list(range(n)) for t, n in self.factory.topic_partitions().items()}

    def assign_from_beginning(self, partitions: list[tuple[str, int]]) -> None:
        by_topic: dict[str, dict[int, int | None]] = {}
        for topic, p in partitions:
            by_topic.setdefault(topic, {})[p] = None
        for topic, starts in by_topic.items():
            reader = self.factory.reader(topic, group=self.group_id)
            reader.assign(starts)
            self._readers.append(reader)

    def consume(self, max_messages: int, timeout: float) -> list[Message]:
        out: list[Message] = []
        for reader in self._readers:
            out += reader.read(max_messages - len(out), 0)
            if len(out) >= max_messages:
                break
        if not out and timeout > 0:
            time.sleep(min(timeout, 0.05))
        return out

    def close(self) -> None:
        for reader in self._readers:
            reader.close()


def _kafka_producer(client: Mapping[str, Any]) -> DeadLetterProducer:
    from confluent_kafka import Producer

    producer: DeadLetterProducer = Producer(
        {**client, "linger.ms": 20, "allow.auto.create.topics": False}
    )
    return producer


def _dead_letter_ack(err: Any, msg: Any) -> None:
    if err is not None:  # the refused record was logged and counted already
        log.warning("sidecar.dead_letter_failed", topic=msg.topic(), error=str(err))


@dataclass
class SidecarState:
    """What the loop has done: every recompression's record, whether one is running, when the
    last ended, the bad records (``"topic:error_type"`` → count), the last 100 refused
    commands."""

    recompressions: list[dict] = field(default_factory=list)
    running: bool = False
    last_run: float = 0.0
    bad_records: Counter[str] = field(default_factory=Counter)
    refused: list[dict] = field(default_factory=list)


class Sidecar:
    """Runs the monitor and recompression loop; see the module docstring.

    ``consumer`` and ``producer`` replace the Kafka clients built from ``cfg.client`` (tests);
    raises :class:`~finscore.streams.exceptions.TopicMissing` when an input topic is missing.
    """

    def __init__(
        self,
        cfg: SidecarConfig,
        *,
        consumer: InputConsumer | None = None,
        producer: DeadLetterProducer | None = None,
    ) -> None:
        # Its Kafka clients log through structlog, never raw ``%3|...`` lines to stderr.
        cfg = dataclasses.replace(cfg, client=with_kafka_logger(cfg.client))
        self.cfg = cfg
        self.state = SidecarState()
        self._stop = threading.Event()
        reg = registry_client(cfg.schema_registry)
        self._labels = Codec("fraud_label", registry=reg)
        self._flags = Codec("fraud_flag", registry=reg)
        self._ticks = Codec("market_tick", registry=reg)
        self._signals = Codec("price_signal", registry=reg)
        self.fraud = FraudSidecar(cfg)
        self.market = MarketSidecar(cfg)
        self._thread: threading.Thread | None = None
        p = cfg.topic_prefix
        self.consumer = consumer or KafkaInputs(cfg.client, f"{p}finscore-sidecar")
        existing = self.consumer.topics()
        followed = [p + T.FRAUD_LABELS, p + T.FRAUD_FLAGS]
        if cfg.markets:
            followed += [p + T.MARKET_TICKS, p + T.PRICE_SIGNALS]
        missing = [t for t in followed if t not in existing]
        if missing:
            self.consumer.close()
            raise TopicMissing(
                f"the sidecar's input topics do not exist: {', '.join(missing)}",
                hint="create the catalog with `finscore topics --create`",
            )
        assigned = [(t, q) for t in followed for q in existing[t]]
        cmd = p + T.SIDECAR_COMMANDS
        if cmd in existing:
            assigned.append((cmd, 0))
        self.consumer.assign_from_beginning(assigned)
        self._started_ms = int(time.time() * 1000)
        # Dead letters go to an input's dead-letter topic only where it exists (never created).
        self._dlq_topics = {t for t in existing if t.endswith("-dlq")}
        self._dead = DeadLetterEncoder("sidecar")
        self._dlq_producer = producer or _kafka_producer(cfg.client)

    # The fraud half's state, as the loop's callers (status, tests) have always read it.
    @property
    def buffer(self) -> OutcomeBuffer:
        """The fraud half's labelled transactions."""
        return self.fraud.buffer

    @property
    def monitor(self) -> QualityMonitor:
        """The fraud half's quality view (AP and score PSI per live version)."""
        return self.fraud.monitor

    @property
    def live_version(self) -> str | None:
        """The fraud model version of the newest flag seen."""
        return self.fraud.live_version

    def stop(self) -> None:
        self._stop.set()

    def status(self) -> dict[str, Any]:
        """What the sidecar is doing now, its last recompression's outcome and last error."""
        st, cfg = self.state, self.cfg
        runs = st.recompressions
        errors = [r for r in runs if r.get("outcome") == "error"]
        labelled = len(self.buffer)
        left = cfg.cooldown_s - (time.time() - st.last_run)
        if st.running:
            state = "recompressing"
        elif labelled < cfg.min_labelled:
            state = f"waiting for labelled data ({labelled:,} of {cfg.min_labelled:,})"
        elif runs and runs[-1].get("outcome") == "waiting":
            state = "waiting for labelled data (" + str(runs[-1].get("why", "")) + ")"
        elif left > 0 and runs:
            state = f"cooling down ({left:.0f} s left)"
        else:
            state = "watching"
        return {
            "state": state,
            "labelled": labelled,
            "min_labelled": cfg.min_labelled,
            "live_version": self.live_version,
            "recompressions": len(runs),
            "last_outcome": runs[-1].get("outcome") if runs else None,
            "last_reason": runs[-1].get("reason") if runs else None,
            "last_error": errors[-1].get("why") if errors else None,
            "bad_records": sum(st.bad_records.values()),
            "refused_commands": len(st.refused),
        }

    # -- inputs -------------------------------------------------------------------------------
    def poll(self, timeout: float = 0.5) -> list[Command]:
        """Consume what is there; returns the valid commands sent since the sidecar started.

        Each record is decoded and checked (:mod:`finscore.app.sidecar.inputs`) and given to
        its half; a bad one is logged, counted and dead-lettered (:meth:`_refuse`) and the rest
        of the batch goes on.
        """
        commands: list[Command] = []
        p = self.cfg.topic_prefix
        ticks: list[dict] = []
        signals: list[dict] = []
        for m in self.consumer.consume(5000, timeout):  # small polls: triggers see the trend
            topic = m.topic
            try:
                if m.value is None:
                    raise BadInput("EmptyValue", "record has no value (tombstone)")
                if topic == p + T.FRAUD_LABELS:
                    self.fraud.add_label(check_label(self._labels.decode(m.value),
                                                     self.buffer.newest_ms,
                                                     max_amount=self.cfg.max_amount))  # fmt: skip
                elif topic == p + T.FRAUD_FLAGS:
                    self.fraud.add_flag(check_flag(self._flags.decode(m.value)))
                elif topic == p + T.MARKET_TICKS:
                    ticks.append(self.market.check_tick(self._ticks.decode(m.value)))
                elif topic == p + T.PRICE_SIGNALS:
                    signals.append(check_signal(self._signals.decode(m.value)))
                elif topic == p + T.SIDECAR_COMMANDS:
                    command = parse_command(m.value)
                    if m.timestamp_ms >= self._started_ms:  # commands sent while we run
                        commands.append(command)
            except BadInput as exc:
                self._refuse(m, exc.error_type, exc.reason)
            except DecodeError as exc:
                self._refuse(m, "DecodeError", str(exc))
            except (ValueError, KeyError, TypeError) as exc:  # a decoded record of odd shape
                self._refuse(m, "InvalidRecord", f"{type(exc).__name__}: {exc}")
        self.market.add_ticks(ticks)
        self.market.add_signals(signals)
        self._dlq_producer.poll(0)
        return commands

    def _refuse(self, m: Message, error_type: str, reason: str) -> None:
        """Log, count and dead-letter (where the topic has a dead-letter topic) one record."""
        from confluent_kafka import KafkaException

        topic = m.topic
        self.state.bad_records[f"{topic}:{error_type}"] += 1
        log.warning("sidecar.bad_record", topic=topic, partition=m.partition,
                    offset=m.offset, error_type=error_type, reason=reason[:300])  # fmt: skip
        if T.dlq(topic) not in self._dlq_topics:
            return
        rec = self._dead.encode(DeadLetter(m, error_type, reason), int(time.time() * 1000))
        try:
            self._dlq_producer.produce(rec.topic, rec.value, rec.key, on_delivery=_dead_letter_ack)
        except (BufferError, KafkaException) as exc:  # counted above; the record is logged
            log.warning("sidecar.dead_letter_failed", topic=topic, error=str(exc))

    # -- dispatch -----------------------------------------------------------------------------
    def _busy(self) -> str | None:
        """Why no recompression may start now (running, or inside the cooldown), or None."""
        if self.state.running:
            return "a recompression is running"
        left = self.cfg.cooldown_s - (time.time() - self.state.last_run)
        if left > 0:
            return f"inside the cooldown ({left:.0f} s of {self.cfg.cooldown_s:.0f} s left)"
        return None

    def _refuse_command(self, command: Command, why: str) -> None:
        self.state.refused = [*self.state.refused[-99:], {"model": command.model, "why": why,
                              "at": datetime.now(UTC).isoformat(timespec="seconds")}]  # fmt: skip
        log.warning("sidecar.command_refused", model=command.model, why=why,
                    hint="send the command again after the cooldown")  # fmt: skip

    def trigger(self) -> tuple[str, str] | None:
        """(model, reason) to recompress now, or None: never while busy; else the schedule
        (fraud), the fraud half's drift, the market half's drift, in that order."""
        cfg, st = self.cfg, self.state
        if self._busy() is not None:
            return None
        if (
            cfg.interval_s
            and time.time() - st.last_run >= cfg.interval_s
            and len(self.buffer) >= cfg.min_outcomes
        ):
            return "fraud", "schedule"
        reason = self.fraud.trigger()
        if reason is not None:
            return "fraud", reason
        if cfg.markets:
            reason = self.market.trigger()
            if reason is not None:
                return "market", reason
        return None

    def recompress(self, reason: str, model: str = "fraud") -> dict[str, Any]:
        """Run one recompression of ``model`` now, in this thread; returns its record (what
        the background run appends to ``state.recompressions``)."""
        half = self.market if model == "market" else self.fraud
        return half.recompress(reason, seed=len(self.state.recompressions))

    def _recompress_async(self, reason: str, model: str = "fraud") -> None:
        self.state.running = True

        def run() -> None:
            try:
                done = self.recompress(reason, model)
                self.state.recompressions.append(done)
            except Exception as exc:  # noqa: BLE001 - the sidecar must survive a failed run
                log.exception("sidecar.recompression_failed", error=str(exc))
                self.state.recompressions.append(
                    {"model": model, "reason": reason, "outcome": "error", "why": str(exc)}
                )
            finally:
                self.state.running = False
                self.state.last_run = time.time()

        self._thread = threading.Thread(target=run, daemon=True, name="recompress")
        self._thread.start()

    def step(self, timeout: float = 0.5) -> tuple[str, str] | None:
        """One turn of the loop: poll, then start at most one recompression (a command first,
        else a trigger); returns the (model, reason) started, or None."""
        started: tuple[str, str] | None = None
        for command in self.poll(timeout):  # commands obey the cooldown like any trigger
            why = "another command just started a recompression" if started else self._busy()
            if why is not None:
                self._refuse_command(command, why)
                continue
            started = command.model, f"command: {command.model}"
        if started is None:
            started = self.trigger()
        if started is not None:
            model, reason = started
            log.info("sidecar.recompressing", model=model, reason=reason)
            self._recompress_async(reason, model)
        return started

    def run(self) -> None:
        """Loop until :meth:`stop`; then wait for a running recompression (up to 600 s) and
        close the clients."""
        log.info("sidecar.started", registry=str(self.cfg.registry_dir))
        self.state.last_run = time.time() - self.cfg.cooldown_s  # eligible at once
        try:
            while not self._stop.is_set():
                self.step()
        finally:
            if self._thread is not None:
                self._thread.join(600)
            self.consumer.close()
            self._dlq_producer.flush(10)
            log.info("sidecar.stopped", recompressions=len(self.state.recompressions))
