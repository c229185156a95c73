"""The worker loop: transport + pure pipeline + state + hot-swappable model + metrics.

One iteration: pick up model announcements (swap only here, between batches), let the stream
read its side inputs (fraud, declared families: delayed labels), poll a batch, run the pure
pipeline, produce outputs + dead letters. Every ``commit_interval`` seconds (every batch in
exactly-once mode) the pipeline's changed state goes to its changelog and the batches since the
last commit are committed with it, as Kafka Streams does: offsets are never committed ahead of
the state that covers them, and after a crash the uncommitted tail is replayed onto the restored
state (updates are idempotent). Bad records never stop the loop; a failing transport does (the
supervisor restarts the process and at-least-once replays the batch).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import random
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from finscore.families.exceptions import FamilySpecError
from finscore.families.spec import FamilySpec, load_family
from finscore.logging import get_logger, with_kafka_logger
from finscore.models.registry import ArtifactError, Registry
from finscore.providers import resolve as resolve_providers
from finscore.providers import short as short_provider
from finscore.schemas import topics as T
from finscore.streams.admin import missing_topics_error
from finscore.streams.bounds import DEFAULT_BOUNDS, InputBounds
from finscore.streams.declared.stream import DeclaredStream
from finscore.streams.exceptions import ModelUnavailable
from finscore.streams.fraud.stream import FraudStream
from finscore.streams.health import HealthMonitor
from finscore.streams.hot_swap import (
    Announcement,
    ModelSlot,
    ModelWatcher,
    load_scorer,
    watcher_reader_options,
)
from finscore.streams.market.stream import MarketStream
from finscore.streams.metrics import MetricsServer, WorkerMetrics
from finscore.streams.pipeline import BatchResult, DeadLetterEncoder, now_ms
from finscore.streams.scoring import InputSpec, Scorer
from finscore.streams.stream import Stream, default_transports
from finscore.streams.transport import (
    Message,
    OutRecord,
    Transport,
    TransportFactory,
    TransportSpec,
    read_partitions,
)

log = get_logger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs, as plain values (built from Settings at the edge)."""

    stream: str  # "fraud" | "market" | "cashflow" | "family" (a declared family: family_path)
    client: Mapping[str, str | int]
    topic_prefix: str = ""
    group_id: str | None = None
    exactly_once: bool = False
    batch_size: int = 5000
    poll_timeout: float = 0.01
    session_timeout_ms: int = 6000
    verify_key: str | None = None
    allow_unsigned: bool = False  # development only: accept unsigned models (warned at start)
    registry_dir: Path | None = None
    json_topics: frozenset[str] = frozenset()
    threshold: float | None = None
    explain: int = 0  # fraud: top-k unusual features per flag (0 = off, fastest)
    metrics_port: int | None = 0  # None = no HTTP server
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 where Prometheus scrapes from elsewhere (containers)
    instance_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    transactional_id: str | None = None
    commit_interval: float = 1.0  # seconds between state flushes + commits (at-least-once)
    # /health and finscore_healthy turn unhealthy when outputs stay unacknowledged, or a
    # required topic is missing / the broker unreachable, for longer than this (seconds).
    health_grace_s: float = 10.0
    expected_partitions: int | None = None  # the catalog's count: a differing topic is warned
    bounds: InputBounds = DEFAULT_BOUNDS  # what an input record may hold (else a dead letter)
    # SchemaRegistryClient config ({"url": ..., "basic.auth.user.info": ...}): inputs in the
    # Confluent wire format are decoded with it (None: such records are dead letters).
    schema_registry: Mapping[str, str] | None = None
    # ONNX Runtime execution providers in order of preference (finscore.providers names, e.g.
    # ("CUDA", "CPU")); unavailable ones are dropped with one warning, CPU is always last.
    execution_providers: tuple[str, ...] = ("CPU",)
    # fraud: what the labels topic carries ("all_outcomes" | "fraud_reports", see
    # finscore.features.fraud.LABEL_CONTRACTS)
    label_contract: str = "all_outcomes"
    # fraud: "all" (one worker computes every feature), or one stage of the two-stage fleet
    # ("cards" | "terminals", see finscore.streams.fraud.stages; needs fraud_reports)
    fraud_stage: str = "all"
    # family: the TOML declaration of the family the worker scores (finscore.families; its
    # .avsc schemas are relative to its folder)
    family_path: Path | None = None

    def family_spec(self) -> FamilySpec:
        """The family ``family_path`` declares (read once); :class:`FamilySpecError` when
        there is none or it is invalid."""
        return self._family

    @cached_property
    def _family(self) -> FamilySpec:
        if self.family_path is None:
            raise FamilySpecError("the family stream needs a family declaration (family_path)")
        return load_family(self.family_path)

    @property
    def fleet_group(self) -> str:
        """The group of the whole stream (``--group``, else ``finscore-<stream>``; a declared
        family's: ``finscore-family-<name>``)."""
        if self.group_id:
            return self.group_id
        if self.stream == "family":
            return f"{self.topic_prefix}finscore-family-{self.family_spec().name}"
        return f"{self.topic_prefix}finscore-{self.stream}"

    @property
    def group(self) -> str:
        """This worker's consumer group: the fleet's, plus ``-<stage>`` for a fraud stage."""
        if self.stream == "fraud" and self.fraud_stage != "all":
            return f"{self.fleet_group}-{self.fraud_stage}"
        return self.fleet_group

    def topic(self, name: str) -> str:
        return self.topic_prefix + name


def build_stream(
    cfg: WorkerConfig, slot: ModelSlot, transports: TransportFactory | None = None
) -> Stream:
    """The stream ``cfg.stream`` names, opening what it reads through ``transports``."""
    if cfg.stream == "fraud" and cfg.fraud_stage != "all":
        from finscore.streams.fraud.stages import CardsStream, TerminalsStream

        if cfg.fraud_stage == "cards":
            return CardsStream(cfg, slot, transports)
        if cfg.fraud_stage == "terminals":
            return TerminalsStream(cfg, slot, transports)
        raise ValueError(
            f"unknown fraud stage {cfg.fraud_stage!r}: expected all, cards or terminals"
        )
    if cfg.stream == "fraud":
        return FraudStream(cfg, slot, transports)
    if cfg.stream == "market":
        return MarketStream(cfg, slot, transports)
    if cfg.stream == "family":
        return DeclaredStream(cfg, slot, transports)
    if cfg.stream == "cashflow":
        from finscore.streams.cashflow.stream import CashflowStream

        return CashflowStream(cfg, slot, transports)
    raise ValueError(f"unknown stream {cfg.stream!r}: expected fraud, market, cashflow or family")


class Worker:
    """Runs one stream until :meth:`stop`; see the module docstring.

    ``transports`` opens everything the worker uses on the bus (its group transport, the
    readers of side inputs, changelogs and announcements); default: Kafka at ``cfg.client``.
    Tests inject :class:`finscore.streams.testing.InMemoryBus`.
    """

    def __init__(self, cfg: WorkerConfig, transports: TransportFactory | None = None) -> None:
        # Every Kafka client of the worker logs through structlog, never raw to stderr.
        cfg = dataclasses.replace(cfg, client=with_kafka_logger(cfg.client))
        self.cfg = cfg
        self.transports = transports or default_transports(cfg)
        self.metrics = WorkerMetrics(cfg.stream)
        self.slot = ModelSlot()
        self.stream = build_stream(cfg, self.slot, self.transports)
        # the models announced under this name (a declared family's: the family's name)
        self.model_name: str = getattr(self.stream, "model_name", cfg.stream)
        self._stop = threading.Event()
        self._status = "starting"
        self.batches = 0
        self.server: MetricsServer | None = None
        self.dlq = DeadLetterEncoder(
            f"{cfg.stream}@{cfg.instance_id}",
            json_topics=cfg.json_topics,
            topic_prefix=cfg.topic_prefix,
        )
        self.watcher = ModelWatcher(
            cfg.client,
            cfg.topic(T.MODEL_UPDATES),
            self.model_name,
            verify_key=cfg.verify_key,
            on_loaded=self._on_loaded,
            on_rejected=self._on_rejected,
            allow_unsigned=cfg.allow_unsigned,
            input_spec=self._input_spec,
            providers=cfg.execution_providers,
            reader=self.transports.reader(
                cfg.topic(T.MODEL_UPDATES), **watcher_reader_options(self.model_name)
            ),
        )
        self._start_window: int | None = None  # market: the window of the model started on
        self.transport: Transport | None = None
        self.monitor: HealthMonitor | None = None
        self._counted_topics: tuple[str, ...] = ()
        self._reported: dict[str, int] = {}
        self._reported_failed = 0
        # Since the last commit, the last message read per partition (what a commit needs).
        self._uncommitted: dict[tuple[str, int], Message] = {}
        self._carried_state: list[OutRecord] = []  # see _absorb_skipped
        self._last_commit = time.monotonic()

    # -- models ---------------------------------------------------------------------------------
    def _on_loaded(self, a: Announcement, scorer: Scorer | None) -> None:
        if a.is_live and scorer is not None:
            self.slot.stage(scorer)
        else:
            self.slot.stage_challenger(self.watcher.challenger_of(a, scorer))

    def _on_rejected(self, a: Announcement | None, reason: str) -> None:
        self.metrics.rejected(reason)

    def _input_spec(self) -> InputSpec:
        """What this worker's stream feeds a model (market: the window in force, once fixed;
        a declared family: its features, by name; cashflow: the lookback in force)."""
        own = getattr(self.stream, "input_spec", None)  # declared family, cashflow
        if own is not None:
            return own()
        if self.cfg.stream != "market":
            return InputSpec.fraud()
        windows = getattr(self.stream, "windows", None)
        if windows is not None:
            return InputSpec.market(windows.window, windows.layout)
        return InputSpec.market(self._start_window)

    def _registry_champion(self) -> Scorer | None:
        """The local registry's champion when it passes every check; else None (counted)."""
        if not self.cfg.registry_dir:
            return None
        try:
            art = Registry(self.cfg.registry_dir).champion(self.model_name)
            if art is None:
                return None
            scorer = load_scorer(art, verify_key=self.cfg.verify_key,
                                 allow_unsigned=self.cfg.allow_unsigned, spec=self._input_spec(),
                                 providers=self.cfg.execution_providers)  # fmt: skip
        except (ArtifactError, ValueError, OSError) as exc:
            self.metrics.rejected("registry_champion_refused")
            log.warning("model.refused", source="registry", reason=str(exc))
            return None
        return scorer

    def load_initial_model(self) -> None:
        """The newest announcement that passes every check (an earlier one when the newest is
        refused); else the local registry's champion; else :class:`ModelUnavailable`. Then the
        newest acceptable challenger, if any."""
        if self.cfg.allow_unsigned:
            log.warning(
                "security.unsigned_models_allowed",
                stream=self.cfg.stream,
                message="FINSCORE_ALLOW_UNSIGNED_MODELS is set: this worker accepts UNSIGNED "
                "models, anyone who can write to model-updates can replace its model. "
                "Development only.",
            )
        elif not self.cfg.verify_key:
            log.warning(
                "security.no_verify_key",
                stream=self.cfg.stream,
                message="no verify key: every model will be refused",
            )
        live, challengers = self.watcher.read_to_end()
        scorer = None
        for a in live:
            if a.artifact is not None and (scorer := self.watcher.load_now(a)) is not None:
                break
        if scorer is None:
            scorer = self._registry_champion()
        if scorer is None:
            refused = f" ({len(live)} refused)" if live else ""
            raise ModelUnavailable(
                f"no usable {self.model_name} model: none acceptable announced on "
                f"{self.cfg.topic(T.MODEL_UPDATES)}{refused} and none in the registry",
                hint=f"run `finscore compress {self.model_name}` then "
                f"`finscore models promote {self.model_name}` with the signing key matching "
                "this worker's verify key (see docs/OPERATIONS.md, trust)",
            )
        self.watcher.settle(live)
        if self.cfg.stream == "market":
            self._start_window = int((scorer.manifest.params or {}).get("window", 0)) or None
        self.slot.stage(scorer)
        for c in challengers:  # newest first; an accepted removal means "no challenger"
            ok, ch = self.watcher.accept(c)
            if ok:
                if ch is not None:
                    self.slot.stage_challenger(self.watcher.challenger_of(c, ch))
                break
        self.watcher.settle(challengers)
        self._apply_swap()

    def _apply_swap(self) -> None:
        before = self.slot.challenger
        swapped = self.slot.swap_if_staged()
        if swapped is not None:
            self.metrics.model_loaded(swapped.name, swapped.version, "live")
            self.metrics.execution_provider(swapped.provider)
            self.metrics.swapped(swapped.name)
        ch = self.slot.challenger
        if ch is not before:
            if ch is None:
                self.metrics.model_unloaded(self.model_name, "shadow")
            else:
                self.metrics.model_loaded(ch.scorer.name, ch.scorer.version, "shadow")

    # -- lifecycle ------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """What /health serves: ``status`` is "ok" only while the worker runs and its health
        monitor has no problem (outputs acknowledged, required topics present; see
        :mod:`finscore.streams.health`); otherwise "unhealthy" with the ``problems``."""
        live = self.slot.live
        problems = self.monitor.problems if self.monitor is not None else []
        status = "unhealthy" if self._status == "ok" and problems else self._status
        delivery = self.transport.delivery if self.transport is not None else None
        return {
            "status": status,
            "problems": problems,
            "unacknowledged": delivery.unacked if delivery is not None else 0,
            "delivery_failures": delivery.failed if delivery is not None else 0,
            "stream": self.cfg.stream,
            "instance": self.cfg.instance_id,
            "model": {"name": live.name, "version": live.version} if live else None,
            "challenger": (
                {"version": self.slot.challenger.scorer.version, "mode": self.slot.challenger.mode}
                if self.slot.challenger
                else None
            ),
            "assigned_partitions": [
                p for _, p in (self.transport.assignment() if self.transport else [])
            ],
            "batches": self.batches,
            "swaps": [{"at": t, "from": a, "to": b} for t, a, b in self.slot.swaps],
        }

    def start_metrics(self) -> str | None:
        if self.cfg.metrics_port is None:
            return None
        self.server = MetricsServer(
            self.metrics, self.health, self.cfg.metrics_port, self.cfg.metrics_host
        ).start()
        log.info("worker.metrics", url=self.server.url)
        return self.server.url

    def stop(self) -> None:
        """Ask the loop to finish its current batch and exit."""
        self._stop.set()

    def required_topics(self) -> list[str]:
        """Topics this worker reads or writes; it refuses to start without them."""
        cfg = self.cfg
        names = [self.stream.input_topic, self.stream.output_topic,
                 T.dlq(self.stream.input_topic), cfg.topic(T.MODEL_UPDATES)]  # fmt: skip
        # the two-stage fleet's repartition topic (and its dead letters): its stream creates it
        internal = self.internal_topics()
        names = [n for n in names if n not in internal]
        if cfg.stream == "fraud":
            names += [cfg.topic(T.FRAUD_LABELS), T.dlq(cfg.topic(T.FRAUD_LABELS))]
        if isinstance(self.stream, DeclaredStream):
            names += self.stream.side_topics
        return names

    def internal_topics(self) -> set[str]:
        """Topics the stream creates itself in ``start()`` (and their dead-letter topics)."""
        own = getattr(self.stream, "internal_topics", ())
        return {*own, *(T.dlq(t) for t in own)}

    @property
    def scores(self) -> bool:
        """Whether this worker's stream runs a model (the cards stage does not)."""
        return bool(getattr(self.stream, "scores", True))

    def _preflight(self) -> None:
        """Refuse to start (TopicMissing: one sentence and a hint, exit code 2 from the CLI)
        when a required topic does not exist; warn about catalog topics whose partition count
        differs from ``expected_partitions`` (they work, but not as the catalog declares)."""
        cfg = self.cfg
        required = self.required_topics()
        counts = self.transports.topic_partitions()
        missing = missing_topics_error(counts, required)
        if missing is not None:
            raise missing
        if cfg.expected_partitions is None:
            return
        fixed = {cfg.topic(T.MODEL_UPDATES): 1}
        for name in required:
            want = fixed.get(name, cfg.expected_partitions)
            if counts.get(name, want) != want:
                log.warning("worker.topic_partitions_differ", topic=name, partitions=counts[name],
                            catalog=want, hint="recreate it with the catalog's count, or set "
                            "FINSCORE_PARTITIONS to match")  # fmt: skip

    def _sync_delivery(self) -> None:
        """Metrics from the transport's acknowledgements: events_out counts delivered
        records only (outputs and dead letters), never merely queued ones."""
        if self.transport is None:
            return
        st, m = self.transport.delivery, self.metrics
        for topic in self._counted_topics:
            n = st.acked.get(topic, 0)
            d = n - self._reported.get(topic, 0)
            if d:
                m.events_out(topic, d)
                self._reported[topic] = n
        if st.failed != self._reported_failed:
            m.delivery_failures.inc(st.failed - self._reported_failed)
            self._reported_failed = st.failed
        m.unacked.set(st.unacked)

    def _start_monitor(self) -> None:
        def changed(healthy: bool, problems: list[str]) -> None:
            self.metrics.healthy.set(1 if healthy and self._status == "ok" else 0)

        changelog = getattr(self.stream, "changelog_topic", "")  # created by stream.start()
        self.monitor = HealthMonitor(
            self.cfg.client,
            [*self.required_topics(), *self.internal_topics(), *([changelog] if changelog else [])],
            lambda: self.transport.delivery if self.transport is not None else None,
            grace_s=self.cfg.health_grace_s,
            interval_s=max(0.2, min(2.0, self.cfg.health_grace_s / 5)),
            on_change=changed,
            list_topics=lambda timeout: self.transports.topic_partitions(timeout),
        ).start()

    def run(self) -> None:
        """Start, loop until :meth:`stop`, shut down cleanly (drain, commit, leave the group)."""
        cfg = self.cfg
        log.info("worker.starting", stream=cfg.stream, group=cfg.group, eos=cfg.exactly_once)
        placement = resolve_providers(cfg.execution_providers)
        log.info(
            "worker.execution_provider",
            stream=cfg.stream,
            provider=short_provider(placement.primary),
            requested=",".join(short_provider(p) for p in placement.requested),
            using=",".join(short_provider(p) for p in placement.using),
        )
        self.metrics.execution_provider(short_provider(placement.primary))
        self.start_metrics()
        try:
            self._preflight()
            if self.scores:
                self.load_initial_model()
            self.stream.start()
            self.transport = self.transports.transport(
                TransportSpec(
                    group_id=cfg.group,
                    topics=(self.stream.input_topic,),
                    exactly_once=cfg.exactly_once,
                    session_timeout_ms=cfg.session_timeout_ms,
                    transactional_id=cfg.transactional_id,
                    resume_from=(
                        (self.stream.output_topic, self.stream.output_schema)
                        if self.stream.output_schema
                        else None
                    ),
                    schema_registry=cfg.schema_registry,
                ),
                on_assign=self.stream.on_assign,
                on_revoke=self.stream.on_revoke,
            )
            self.transport.on_refused = self._on_refused
            self.transport.on_skipped = self._absorb_skipped
            # Start-up objects (libraries, model, restored state) never become garbage: keep
            # the collector off them, and collect the young generation less often (a batch
            # allocates thousands of short-lived objects).
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
            self._counted_topics = (self.stream.output_topic, T.dlq(self.stream.input_topic))
            self._status = "ok"
            self.metrics.healthy.set(1)
            self._start_monitor()
            live = self.slot.live
            log.info("worker.running", stream=cfg.stream, stage=cfg.fraud_stage,
                     model_version=live.version if live is not None else None)  # fmt: skip
            last_lag = 0.0
            while not self._stop.is_set():
                self._sync_delivery()
                if self.scores:
                    self.watcher.poll()
                    self._apply_swap()
                self.stream.before_batch()
                batch = self.transport.poll_batch(cfg.batch_size, cfg.poll_timeout)
                if not batch:
                    self._side_dead_letters()
                    if self._uncommitted and self._commit_due():
                        self._commit()
                    continue
                self._handle(batch)
                if time.monotonic() - last_lag > 2:
                    last_lag = time.monotonic()
                    self._report_lag()
            self._commit()
        finally:
            self._status = "stopping"
            self.metrics.healthy.set(0)
            if self.monitor is not None:
                self.monitor.stop()
            if self.transport is not None:
                self.transport.close()
                self._sync_delivery()
            self.stream.close()
            self.watcher.close()
            if self.server:
                self.server.stop()
            log.info("worker.stopped", stream=cfg.stream, batches=self.batches)

    def _side_dead_letters(self) -> None:
        """Dead letters of side inputs (fraud labels) read in this iteration while no input
        batch came, produced at once; in exactly-once mode in a transaction of their own."""
        dead = self.stream.take_dead_letters()
        if not dead:
            return
        assert self.transport is not None
        now = now_ms()
        records = [self.dlq.encode(d, now) for d in dead]
        for d in dead:
            self.metrics.dead_letter(d.error_type)
        self.transport.produce_alone(records)

    def _on_refused(self, record: OutRecord, error: str) -> None:
        """A record the producer refused (e.g. too large): counted, the loop goes on."""
        self.metrics.produce_refused.labels(self.cfg.stream, error).inc()

    def _absorb_skipped(self, topic: str, ranges: dict[int, tuple[int | None, int]]) -> None:
        """Run the inputs the exactly-once recovery guard skipped (``{partition: (committed
        offset or None, first offset to poll)}``) through the pipeline for their state only:
        their outputs are on the output topic already, but the state they built may not be on
        the changelog. (The embedded broker shows a crashed worker's aborted outputs to
        ``read_committed`` readers, and a transaction writes its changelog records last.)
        Features are idempotent per event, so inputs whose state was restored change nothing.
        Outputs and dead letters are dropped; state records go out with the next batch. Read
        with :func:`~finscore.streams.transport.read_partitions` (``state.read_incomplete``
        when it could not read them all within a minute)."""
        reader = self.transports.reader(topic, group=f"{self.cfg.group}-skipped",
                                        read_committed=True)  # fmt: skip
        msgs: list[Message] = []
        try:
            read_partitions(reader, {p: start for p, (start, _) in ranges.items()}, msgs.append,
                            ends={p: end for p, (_, end) in ranges.items()}, timeout=60)  # fmt: skip
        finally:
            reader.close()
        step = self.cfg.batch_size
        for lo in range(0, len(msgs), step):
            self._carried_state += self.stream.pipeline.process(msgs[lo : lo + step]).state
        log.warning("worker.skipped_inputs_absorbed", topic=topic, records=len(msgs),
                    ranges={p: list(r) for p, r in ranges.items()})  # fmt: skip

    def _handle(self, batch: list) -> None:
        assert self.transport is not None
        result: BatchResult = self.stream.pipeline.process(batch)
        now = now_ms()
        records: list[OutRecord] = list(result.outputs)
        for dead in result.dead_letters + self.stream.take_dead_letters():
            records.append(self.dlq.encode(dead, now))
            self.metrics.dead_letter(dead.error_type)
        if self._carried_state:
            records += self._carried_state
            self._carried_state = []
        records += result.state
        pending = self._uncommitted
        for m in batch:  # in offset order per partition
            pending[(m.topic, m.partition)] = m
        due = self.cfg.exactly_once or self._commit_due()
        if due:
            records += self._flush_state()
        self.transport.produce_batch(records)
        if due:
            self._commit(produced=True)
        self.batches += 1
        m = self.metrics
        m.events_in.inc(len(batch))
        m.batch_size.observe(len(batch))
        # events_out: counted when the broker acknowledges them (_sync_delivery)
        if result.scored:
            m.inference_latency.observe(result.inference_seconds)
        done = time.time()
        for msg in random.sample(batch, min(len(batch), 50)):
            if msg.timestamp_ms > 0:
                m.e2e_latency.observe(max(0.0, done - msg.timestamp_ms / 1000))

    def _flush_state(self) -> list[OutRecord]:
        """The pipeline's changelog records at a commit, when its declared flush policy is
        ``at_commit`` (an ``every_batch`` pipeline's state came with each batch's result)."""
        pipeline = self.stream.pipeline
        return pipeline.flush_state() if pipeline.flush == "at_commit" else []

    def _commit_due(self) -> bool:
        return time.monotonic() - self._last_commit >= self.cfg.commit_interval

    def _commit(self, produced: bool = False) -> None:
        """Produce the pending state (unless already done) and commit every batch since the
        last commit; the transport commits the offsets once all of it is acknowledged."""
        assert self.transport is not None
        if self.cfg.exactly_once and not self._uncommitted:
            return  # outside a transaction nothing may be produced; each batch committed itself
        if not produced:
            state = self._flush_state()
            if state:
                self.transport.produce_batch(state)
        if self._uncommitted:
            self.transport.commit(list(self._uncommitted.values()))
            self._uncommitted = {}
        self._last_commit = time.monotonic()

    def _report_lag(self) -> None:
        assert self.transport is not None
        for (_, partition), behind in self.transport.lag().items():
            self.metrics.lag(partition, behind)
