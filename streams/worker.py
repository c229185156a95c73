"""The worker loop: transport + pure pipeline + state + hot-swappable model + metrics.

One iteration: pick up model announcements (swap only here, between batches), let the stream
read its side inputs (fraud: delayed labels), poll a batch, run the pure pipeline, produce
outputs + dead letters. Every ``commit_interval`` seconds (every batch in exactly-once mode) the
pipeline's changed state goes to its changelog and the batches since the last commit are
committed with it, as Kafka Streams does: offsets are never committed ahead of the state that
covers them, and after a crash the uncommitted tail is replayed onto the restored state (updates
are idempotent). Bad records never stop the loop; a failing transport does (the supervisor
restarts the process and at-least-once replays the batch).
"""

from __future__ import annotations

import gc
import os
import random
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finscore.logging import get_logger
from finscore.registry import ArtifactError, Registry
from finscore.schemas import topics as T
from finscore.streams.announcements import Announcement, ModelWatcher
from finscore.streams.exceptions import ModelUnavailable
from finscore.streams.kafka import KafkaOptions, KafkaTransport
from finscore.streams.metrics import MetricsServer, WorkerMetrics
from finscore.streams.pipeline import BatchResult, DeadLetterEncoder, now_ms
from finscore.streams.scoring import ModelSlot, Scorer
from finscore.streams.streams import FraudStream, MarketStream, Stream
from finscore.streams.transport import Message, OutRecord

log = get_logger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs, as plain values (built from Settings at the edge)."""

    stream: str  # "fraud" | "market"
    client: Mapping[str, str | int]
    topic_prefix: str = ""
    group_id: str | None = None
    exactly_once: bool = False
    batch_size: int = 5000
    poll_timeout: float = 0.01
    session_timeout_ms: int = 6000
    verify_key: str | None = None
    registry_dir: Path | None = None
    json_topics: frozenset[str] = frozenset()
    threshold: float | None = None
    explain: int = 0  # fraud: top-k unusual features per flag (0 = off, fastest)
    metrics_port: int | None = 0  # None = no HTTP server
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 where Prometheus scrapes from elsewhere (containers)
    instance_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    transactional_id: str | None = None
    commit_interval: float = 1.0  # seconds between state flushes + commits (at-least-once)

    @property
    def group(self) -> str:
        return self.group_id or f"{self.topic_prefix}finscore-{self.stream}"

    def topic(self, name: str) -> str:
        return self.topic_prefix + name


def build_stream(cfg: WorkerConfig, slot: ModelSlot) -> Stream:
    if cfg.stream == "fraud":
        return FraudStream(cfg, slot)
    if cfg.stream == "market":
        return MarketStream(cfg, slot)
    raise ValueError(f"unknown stream {cfg.stream!r}: expected fraud or market")


class Worker:
    """Runs one stream until :meth:`stop`; see the module docstring."""

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.metrics = WorkerMetrics(cfg.stream)
        self.slot = ModelSlot()
        self.stream = build_stream(cfg, self.slot)
        self.model_name = cfg.stream
        self._stop = threading.Event()
        self._status = "starting"
        self.batches = 0
        self.server: MetricsServer | None = None
        self.dlq = DeadLetterEncoder(f"{cfg.stream}@{cfg.instance_id}")
        self.watcher = ModelWatcher(
            cfg.client,
            cfg.topic(T.MODEL_UPDATES),
            self.model_name,
            verify_key=cfg.verify_key,
            on_loaded=self._on_loaded,
            on_rejected=self._on_rejected,
        )
        self.transport: KafkaTransport | None = None
        # Since the last commit, the last message read per partition (what a commit needs).
        self._uncommitted: dict[tuple[str, int], Message] = {}
        self._last_commit = time.monotonic()

    # -- models ---------------------------------------------------------------------------------
    def _on_loaded(self, a: Announcement, scorer: Scorer | None) -> None:
        if a.is_live and scorer is not None:
            self.slot.stage(scorer)
        else:
            self.slot.stage_challenger(self.watcher.challenger_of(a, scorer))

    def _on_rejected(self, a: Announcement | None, reason: str) -> None:
        self.metrics.rejected(reason)

    def load_initial_model(self) -> None:
        """Latest announced version first; else the local registry's champion; else fail."""
        live, challenger = self.watcher.read_to_end()
        scorer = self.watcher.load_now(live) if live else None
        if scorer is None and self.cfg.registry_dir:
            try:
                art = Registry(self.cfg.registry_dir).champion(self.model_name)
            except ArtifactError as exc:
                log.warning("model.registry_unreadable", error=str(exc))
                art = None
            if art is not None:
                try:
                    art.verify(self.cfg.verify_key, require_signature=bool(self.cfg.verify_key))
                    scorer = Scorer(art)
                    scorer.smoke_test()
                except (ArtifactError, ValueError) as exc:
                    self.metrics.rejected("registry_champion_refused")
                    log.warning("model.refused", source="registry", reason=str(exc))
                    scorer = None
        if scorer is None:
            raise ModelUnavailable(
                f"no usable {self.model_name} model: none announced on "
                f"{self.cfg.topic(T.MODEL_UPDATES)} and none in the registry",
                hint=f"run `finscore compress {self.model_name}` then "
                f"`finscore models promote {self.model_name}`",
            )
        self.slot.stage(scorer)
        if challenger is not None and challenger.artifact is not None:
            ch = self.watcher.load_now(challenger)
            self.slot.stage_challenger(self.watcher.challenger_of(challenger, ch))
        self._apply_swap()

    def _apply_swap(self) -> None:
        before = self.slot.challenger
        swapped = self.slot.swap_if_staged()
        if swapped is not None:
            self.metrics.model_loaded(swapped.name, swapped.version, "live")
            self.metrics.swapped(swapped.name)
        ch = self.slot.challenger
        if ch is not before:
            if ch is None:
                self.metrics.model_unloaded(self.model_name, "shadow")
            else:
                self.metrics.model_loaded(ch.scorer.name, ch.scorer.version, "shadow")

    # -- lifecycle ------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        live = self.slot.live
        return {
            "status": self._status,
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

    def run(self) -> None:
        """Start, loop until :meth:`stop`, shut down cleanly (drain, commit, leave the group)."""
        cfg = self.cfg
        log.info("worker.starting", stream=cfg.stream, group=cfg.group, eos=cfg.exactly_once)
        self.start_metrics()
        try:
            self.load_initial_model()
            self.stream.start()
            self.transport = KafkaTransport(
                KafkaOptions(
                    client=cfg.client,
                    group_id=cfg.group,
                    topics=(self.stream.input_topic,),
                    exactly_once=cfg.exactly_once,
                    session_timeout_ms=cfg.session_timeout_ms,
                    transactional_id=cfg.transactional_id,
                    resume_from=(self.stream.output_topic, self.stream.output_schema),
                ),
                on_assign=self.stream.on_assign,
                on_revoke=self.stream.on_revoke,
            )
            # Start-up objects (libraries, model, restored state) never become garbage: keep
            # the collector off them, and collect the young generation less often (a batch
            # allocates thousands of short-lived objects).
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
            self._status = "ok"
            log.info("worker.running", stream=cfg.stream, model_version=self.slot.live.version)
            last_lag = 0.0
            while not self._stop.is_set():
                self.watcher.poll()
                self._apply_swap()
                self.stream.before_batch()
                batch = self.transport.poll_batch(cfg.batch_size, cfg.poll_timeout)
                if not batch:
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
            if self.transport is not None:
                self.transport.close()
            self.stream.close()
            self.watcher.close()
            if self.server:
                self.server.stop()
            log.info("worker.stopped", stream=cfg.stream, batches=self.batches)

    def _handle(self, batch: list) -> None:
        assert self.transport is not None
        result: BatchResult = self.stream.pipeline.process(batch)
        now = now_ms()
        records: list[OutRecord] = list(result.outputs)
        for dead in result.dead_letters + self.stream.take_dead_letters():
            records.append(self.dlq.encode(dead, now))
            self.metrics.dead_letter(dead.error_type)
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
        m.events_out(self.stream.output_topic, result.scored)  # one output per scored input
        if result.dead_letters:
            m.events_out(T.dlq(self.stream.input_topic), len(result.dead_letters))
        if result.scored:
            m.inference_latency.observe(result.inference_seconds)
        done = time.time()
        for msg in random.sample(batch, min(len(batch), 50)):
            if msg.timestamp_ms > 0:
                m.e2e_latency.observe(max(0.0, done - msg.timestamp_ms / 1000))

    def _flush_state(self) -> list[OutRecord]:
        flush = getattr(self.stream.pipeline, "flush_state", None)
        return flush() if flush is not None else []

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
        from confluent_kafka import TopicPartition

        c = self.transport.consumer
        try:
            tps = [TopicPartition(t, p) for t, p in self.transport.assignment()]
            for tp in c.position(tps):
                _, high = c.get_watermark_offsets(tp, cached=True)
                if high >= 0 and tp.offset >= 0:
                    self.metrics.lag(tp.partition, max(0, high - tp.offset))
        except Exception as exc:  # noqa: BLE001 - lag is best effort
            log.debug("worker.lag_unavailable", error=str(exc))
