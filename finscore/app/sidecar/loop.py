"""`finscore sidecar`: keep the deployed fraud model fresh, small and safe, without downtime.

Loop: read the delayed ``fraud-labels`` (every transaction's outcome, with its features' raw
inputs) and the live ``fraud-flags``; join them by transaction id into a rolling quality view
(:class:`~finscore.app.sidecar.quality.QualityMonitor`: AP of each live version, PSI of its scores); keep a
buffer of recent labelled transactions. Recompress when a trigger fires:

- **drift**: the live version's rolling AP falls ``ap_drop`` below the best it has shown, or its
  score PSI exceeds ``psi_threshold``;
- **schedule**: every ``interval_s`` seconds (0 = never);
- **command**: ``finscore models recompress fraud`` (a record on ``sidecar-commands``). A
  command obeys the same cooldown as the other triggers: one that arrives while a run is going
  on or within ``cooldown_s`` of the last one is **refused** (logged as
  ``sidecar.command_refused`` with the reason, kept in ``state.refused``), not queued; send it
  again later.

Every input is untrusted (:mod:`finscore.app.sidecar.inputs` has the bounds): a record that does not
decode or is out of bounds is logged (``sidecar.bad_record``), counted (``state.bad_records``,
by topic and error type) and dead-lettered to its topic's dead-letter topic where the catalog
has one (``sidecar-commands-dlq``, ``fraud-labels-dlq``, ``market-ticks-dlq``); bad records on
the workers' outputs (``fraud-flags``, ``price-signals``) have none and are logged and counted
only. No record stops the sidecar.

**Enough labelled data first**: a fraud recompression (whatever its trigger) waits until the
buffer holds ``min_labelled`` labelled transactions (default 5,000) and each of its
train/validation/hold-out windows at least ``min_split_rows`` (default 500) with at least one
fraud in training; until then it ends with outcome ``waiting`` (no training; a run on a few
hundred rows used to die in ``np.quantile``). :meth:`Sidecar.status` says what the sidecar is
doing (``waiting for labelled data (N of M)``, ``watching``, ``recompressing fraud``,
``cooling down``) and its last outcome and error; ``finscore sidecar --metrics-port P`` serves
it on ``/health`` (:mod:`finscore.app.sidecar.status`) for the demo, the dashboard and Docker.

Recompression = the compression issue's plan on the recent labelled window (teacher → distil →
prune → share → quantise), then a gate **against the live champion** on a held-out recent
window: the candidate's AP must be at least the champion's minus ``tolerance`` on the same
transactions, and its size and latency within budget. Only a passing candidate is registered,
signed, promoted and announced on ``model-updates``; workers hot-swap it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from finscore.app.sidecar.gate import gated_candidate, over_budget, publish_and_announce
from finscore.app.sidecar.inputs import (
    BadInput,
    Command,
    check_flag,
    check_label,
    check_signal,
    check_tick,
    parse_command,
)
from finscore.app.sidecar.market import MarketCare
from finscore.app.sidecar.quality import QualityMonitor, psi_against_quantiles
from finscore.logging import get_logger, with_kafka_logger
from finscore.models.registry import Registry
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec, registry_client
from finscore.schemas.exceptions import DecodeError
from finscore.sim.frame import TransactionFrame
from finscore.streams.exceptions import TopicMissing
from finscore.streams.pipeline import DeadLetter, DeadLetterEncoder
from finscore.streams.transport import Message

log = get_logger("sidecar")
DAY_MS = 86_400_000


def _dead_letter_ack(err: Any, msg: Any) -> None:
    if err is not None:  # the refused record was logged and counted already
        log.warning("sidecar.dead_letter_failed", topic=msg.topic(), error=str(err))


@dataclass(frozen=True)
class SidecarConfig:
    client: dict
    topic_prefix: str = ""
    registry_dir: Path = Path("var/registry")
    signing_key: str | None = None
    allow_unsigned: bool = False  # development only: publish unsigned models without a key
    interval_s: float = 0.0
    min_outcomes: int = 5000
    min_labelled: int = 5000  # labelled transactions before any fraud recompression
    min_split_rows: int = 500  # rows each train/val/hold-out window needs
    ap_drop: float = 0.10
    psi_threshold: float = 0.25
    tolerance: float = 0.02
    max_bytes: int = 1_000_000
    history_days: int = 40
    holdout_days: int = 4
    epochs: int = 20  # small recent windows need many epochs (4 left students 0.2 AP short)
    cooldown_s: float = 60.0
    reports_dir: Path = Path("reports/sidecar")  # every run's report (timestamped folders)
    # Root of the reports kept with registered versions: <root>/<family>/v<N>/ (as `finscore
    # compress` writes them; the dashboard's compression panel reads them from there).
    version_reports_dir: Path = Path("reports")
    markets: bool = True  # also watch and recompress the market model
    market_min_outcomes: int = 2000
    market_f1_drop: float = 0.10
    market_epochs: int = 4
    max_amount: float = 1_000_000.0  # labels with a larger amount are refused
    # Schema-registry client config ({"url": ...}): workers with a registry write their flags and
    # signals in the Confluent wire format, which the quality join reads with it.
    schema_registry: Mapping[str, str] | None = None


class OutcomeBuffer:
    """Recent labelled transactions (from fraud-label records), as columns.

    Thread-safe: the consumer adds while a recompression thread takes a :meth:`frame`."""

    def __init__(self, history_days: int) -> None:
        self.history_ms = history_days * DAY_MS
        self._rows: list[tuple] = []
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self.newest_ms: int | None = None  # newest tx_time added (validation's reference)

    def add(self, label: dict) -> None:
        tid = label["transaction_id"]
        row = (tid, int(label["tx_time"]), label["customer_id"], label["terminal_id"],
               float(label["amount"]), 1 if label["is_fraud"] else 0)  # fmt: skip
        with self._lock:
            if tid in self._seen:
                return
            self._seen.add(tid)
            self._rows.append(row)
            if self.newest_ms is None or row[1] > self.newest_ms:
                self.newest_ms = row[1]

    def __len__(self) -> int:
        return len(self._rows)

    def recent_amounts(self, n: int) -> np.ndarray:
        """Amounts of the last ``n`` labelled transactions received."""
        with self._lock:
            recent = self._rows[-n:]
        return np.asarray([r[4] for r in recent], dtype=np.float64)

    def frame(self) -> TransactionFrame:
        """The last ``history_days`` of labelled transactions, time-ordered, ids as ints (a
        snapshot: labels added meanwhile wait for the next frame)."""
        with self._lock:
            rows = sorted(self._rows, key=lambda r: r[1])
            if rows:
                newest = rows[-1][1]
                rows = [r for r in rows if r[1] > newest - self.history_ms]
            self._rows = list(rows)
            self._seen = {r[0] for r in rows}

        def ints(values: list) -> np.ndarray:
            return np.unique(np.asarray(values, dtype=str), return_inverse=True)[1].astype(np.int64)

        n = len(rows)
        return TransactionFrame(
            transaction_id=ints([r[0] for r in rows]) if n else np.zeros(0, np.int64),
            event_time=np.asarray([r[1] for r in rows], dtype=np.int64),
            customer_id=ints([r[2] for r in rows]) if n else np.zeros(0, np.int64),
            terminal_id=ints([r[3] for r in rows]) if n else np.zeros(0, np.int64),
            amount=np.asarray([r[4] for r in rows], dtype=np.float64),
            is_fraud=np.asarray([r[5] for r in rows], dtype=np.int8),
            scenario=np.zeros(n, dtype=np.int8),
        )


@dataclass
class SidecarState:
    recompressions: list[dict] = field(default_factory=list)
    best_ap: dict[str, float] = field(default_factory=dict)
    running: bool = False
    last_run: float = 0.0
    bad_records: Counter[str] = field(default_factory=Counter)  # "topic:error_type" -> count
    refused: list[dict] = field(default_factory=list)  # commands refused (the last 100)


class Sidecar:
    """Runs the monitor and recompression loop; see the module docstring."""

    def __init__(self, cfg: SidecarConfig) -> None:
        # Its Kafka clients log through structlog, never raw ``%3|...`` lines to stderr.
        cfg = dataclasses.replace(cfg, client=with_kafka_logger(cfg.client))
        self.cfg = cfg
        self.monitor = QualityMonitor(window=20_000)
        self.buffer = OutcomeBuffer(cfg.history_days)
        self.state = SidecarState()
        self._stop = threading.Event()
        reg = registry_client(cfg.schema_registry)
        self._labels = Codec("fraud_label", registry=reg)
        self._flags = Codec("fraud_flag", registry=reg)
        self._ticks = Codec("market_tick", registry=reg)
        self._signals = Codec("price_signal", registry=reg)
        self.market = MarketCare(cfg)
        self._thread: threading.Thread | None = None
        self.live_version: str | None = None
        p = cfg.topic_prefix
        self.consumer = Consumer({**cfg.client, "group.id": f"{p}finscore-sidecar", "enable.auto.commit": False,
                                  "fetch.wait.max.ms": 50, "allow.auto.create.topics": False})  # fmt: skip
        md = self.consumer.list_topics(timeout=10)  # full listing: never creates a topic
        tps = []
        followed = [p + T.FRAUD_LABELS, p + T.FRAUD_FLAGS]
        if cfg.markets:
            followed += [p + T.MARKET_TICKS, p + T.PRICE_SIGNALS]
        missing = [t for t in followed if t not in md.topics]
        if missing:
            self.consumer.close()
            raise TopicMissing(
                f"the sidecar's input topics do not exist: {', '.join(missing)}",
                hint="create the catalog with `finscore topics --create`",
            )
        for t in followed:
            tps += [TopicPartition(t, q, OFFSET_BEGINNING) for q in md.topics[t].partitions]
        cmd = p + T.SIDECAR_COMMANDS
        if cmd in md.topics:
            tps.append(TopicPartition(cmd, 0, OFFSET_BEGINNING))
        self.consumer.assign(tps)
        self._started_ms = int(time.time() * 1000)
        # Dead letters go to an input's dead-letter topic only where it exists (never created).
        self._dlq_topics = {t for t in md.topics if t.endswith("-dlq")}
        self._dead = DeadLetterEncoder("sidecar")
        self._dlq_producer = Producer({**cfg.client, "linger.ms": 20,
                                       "allow.auto.create.topics": False})  # fmt: skip
        self._last_seq: dict[str, int] = {}

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

        Each record is decoded and checked (:mod:`finscore.app.sidecar.inputs`); a bad one is
        logged, counted and dead-lettered (:meth:`_refuse`) and the rest of the batch goes on.
        """
        commands: list[Command] = []
        p = self.cfg.topic_prefix
        ticks: list[dict] = []
        signals: list[dict] = []
        for m in self.consumer.consume(5000, timeout):  # small polls: triggers see the trend
            if m.error() is not None:
                continue
            topic = m.topic()
            try:
                if m.value() is None:
                    raise BadInput("EmptyValue", "record has no value (tombstone)")
                if topic == p + T.FRAUD_LABELS:
                    lab = check_label(self._labels.decode(m.value()), self.buffer.newest_ms,
                                      max_amount=self.cfg.max_amount)  # fmt: skip
                    self.buffer.add(lab)
                    self.monitor.add_label(lab["transaction_id"], lab["is_fraud"])
                elif topic == p + T.FRAUD_FLAGS:
                    flag = check_flag(self._flags.decode(m.value()))
                    self.monitor.add_flag(
                        flag["transaction_id"], flag["score"], flag["model_version"]
                    )
                    self.live_version = flag["model_version"]
                elif topic == p + T.MARKET_TICKS:
                    tick = self._ticks.decode(m.value())
                    check_tick(tick, self._last_seq.get(tick.get("instrument", "")))
                    self._last_seq[tick["instrument"]] = max(
                        tick["sequence"], self._last_seq.get(tick["instrument"], -1)
                    )
                    ticks.append(tick)
                elif topic == p + T.PRICE_SIGNALS:
                    signals.append(check_signal(self._signals.decode(m.value())))
                elif topic == p + T.SIDECAR_COMMANDS:
                    command = parse_command(m.value())
                    if m.timestamp()[1] >= self._started_ms:  # commands sent while we run
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

    def _refuse(self, m: Any, error_type: str, reason: str) -> None:
        """Log, count and dead-letter (where the topic has a dead-letter topic) one record."""
        topic = m.topic()
        self.state.bad_records[f"{topic}:{error_type}"] += 1
        log.warning("sidecar.bad_record", topic=topic, partition=m.partition(),
                    offset=m.offset(), error_type=error_type, reason=reason[:300])  # fmt: skip
        if T.dlq(topic) not in self._dlq_topics:
            return
        msg = Message(topic, m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1])
        rec = self._dead.encode(DeadLetter(msg, error_type, reason), int(time.time() * 1000))
        try:
            self._dlq_producer.produce(rec.topic, rec.value, rec.key, on_delivery=_dead_letter_ack)
        except (BufferError, KafkaException) as exc:  # counted above; the record is logged
            log.warning("sidecar.dead_letter_failed", topic=topic, error=str(exc))

    def _may_run(self) -> bool:
        return self._busy() is None

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

    def trigger(self) -> str | None:
        """The reason to recompress now, or None."""
        cfg, st = self.cfg, self.state
        if st.running or time.time() - st.last_run < cfg.cooldown_s:
            return None
        if (
            cfg.interval_s
            and time.time() - st.last_run >= cfg.interval_s
            and len(self.buffer) >= cfg.min_outcomes
        ):
            return "schedule"
        champion = Registry(cfg.registry_dir).champion("fraud")
        v = champion.manifest.version if champion is not None else self.live_version
        if v is None:
            return None
        q = self.monitor.report(v)
        if q.outcomes < cfg.min_outcomes or q.average_precision is None:
            return None
        best = max(st.best_ap.get(v, 0.0), q.average_precision)
        st.best_ap[v] = best
        if q.average_precision < best - cfg.ap_drop:
            return f"drift: rolling AP of v{v} fell from {best:.3f} to {q.average_precision:.3f}"
        if q.score_psi > cfg.psi_threshold:
            return f"drift: score PSI of v{v} is {q.score_psi:.2f}"
        params = champion.manifest.params if champion is not None else {}
        recent = self.monitor.recent_scores(v)
        if params.get("score_quantiles") and len(recent) >= cfg.min_outcomes:
            drift = psi_against_quantiles(params["score_quantiles"], recent)
            if drift > cfg.psi_threshold:
                return f"drift: score PSI of v{v} against its training data is {drift:.2f}"
        amounts = self.buffer.recent_amounts(cfg.min_outcomes)
        if params.get("feature_quantiles") and len(amounts) >= cfg.min_outcomes:
            drift = psi_against_quantiles(params["feature_quantiles"][0], amounts)  # TX_AMOUNT
            if drift > cfg.psi_threshold:
                return f"drift: amount PSI against the training data is {drift:.2f}"
        return None

    # -- recompression ----------------------------------------------------------------------------
    def recompress(self, reason: str) -> dict[str, Any]:
        """Train, compress and gate a candidate against the champion; publish if it passes."""
        from finscore.compression.export import run_onnx
        from finscore.compression.fraud import FraudFamily, FraudSplits, split_frame
        from finscore.compression.plan import Plan
        from finscore.compression.report import write_report, write_version_report
        from finscore.compression.steps import (
            Distill,
            PruneStructured,
            QuantizeDynamic,
            WeightShare,
        )
        from finscore.features.fraud import feature_columns

        cfg = self.cfg
        t0 = time.time()
        frame = self.buffer.frame()
        if len(frame) < cfg.min_labelled:
            why = f"{len(frame):,} labelled transactions, at least {cfg.min_labelled:,} needed"
            log.info("sidecar.waiting_for_labels", reason=reason, why=why)
            return {"reason": reason, "outcome": "waiting", "why": why}
        end = int(frame.event_time[-1]) // DAY_MS * DAY_MS + DAY_MS
        h = cfg.holdout_days * DAY_MS

        def day(ms: int) -> str:
            return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()

        splits = FraudSplits(train=(day(end - 4 * h - 14 * DAY_MS), day(end - 2 * h)),
                             val=(day(end - 2 * h), day(end - h)), test=(day(end - h), day(end)))  # fmt: skip
        fam = FraudFamily(teacher_hidden=(128, 64))
        data = split_frame(frame, splits, exclude_known_compromised=False)
        sizes = {"train": len(data.y_train), "validation": len(data.y_val),
                 "hold-out": len(data.y_test)}  # fmt: skip
        short = {k: n for k, n in sizes.items() if n < cfg.min_split_rows}
        if short or not np.any(data.y_train):
            why = ", ".join(f"{k} window {n:,} rows" for k, n in short.items()) or "no fraud"
            why += f" (each window needs {cfg.min_split_rows:,} rows and training a fraud)"
            log.info("sidecar.waiting_for_labels", reason=reason, why=why)
            return {"reason": reason, "outcome": "waiting", "why": why}
        reg = Registry(cfg.registry_dir)
        champion = reg.champion("fraud")
        champ_ap = None
        if champion is not None:
            cols = feature_columns(champion.manifest.feature_names or [])
            x = data.x_test if cols is None else data.x_test[:, cols]
            champ_ap = fam.evaluate(run_onnx(champion.onnx, x), data)["ap"]
        plan = Plan(
            [Distill(64), PruneStructured(0.25, 4), WeightShare(16, 3), QuantizeDynamic()],
            teacher_epochs=cfg.epochs,
            epochs=cfg.epochs,
            seed=len(self.state.recompressions),
        )
        record: dict[str, Any] = {"reason": reason, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                                  "rows": len(frame), "champion_ap": champ_ap}  # fmt: skip
        from finscore.compression.exceptions import GateFailed

        # Gate 1: the smallest candidate within `tolerance` of a teacher trained on the new regime
        # (the same run, same hold-out). If no compressed candidate gets that close, the best one.
        try:
            result, cand = gated_candidate(plan, fam, data, "ap", cfg.tolerance)
        except GateFailed as exc:
            record.update(outcome="rejected", why=str(exc), seconds=round(time.time() - t0, 1))
            log.warning("sidecar.candidate_rejected", **record)
            return record
        assert cand is not None
        # Gate 2: never worse than the live champion on the same hold-out transactions.
        if champ_ap is not None and cand.metrics["ap"] < champ_ap - cfg.tolerance:
            record.update(outcome="rejected", candidate_ap=cand.metrics["ap"],
                          why="candidate is worse than the champion on the recent hold-out",
                          seconds=round(time.time() - t0, 1))  # fmt: skip
            log.warning("sidecar.candidate_rejected", **record)
            return record
        report = write_report(result, cfg.reports_dir / datetime.now(UTC).strftime("%Y%m%dT%H%M%S"),
                              f"sidecar recompression ({reason})")  # fmt: skip
        if over_budget(cand, champion, cfg.max_bytes):
            record.update(outcome="rejected", why="size or latency over budget", report=str(report))
            log.warning("sidecar.candidate_rejected", **record)
            return record
        art = publish_and_announce(cfg, reg, result, cand, fam, data)
        report = write_version_report(result, cfg.version_reports_dir / fam.name, fam.name,
                                      art.manifest.version, f"sidecar recompression ({reason})")  # fmt: skip
        record.update(outcome="promoted", version=art.manifest.version, candidate_ap=cand.metrics["ap"],
                      new_regime_teacher_ap=result.teacher.metrics["ap"],
                      bytes=cand.size_bytes, report=str(report), seconds=round(time.time() - t0, 1))  # fmt: skip
        log.info("sidecar.promoted", **record)
        return record

    def _recompress_async(self, reason: str, model: str = "fraud") -> None:
        self.state.running = True

        def run() -> None:
            try:
                if model == "market":
                    done = self.market.recompress(reason, seed=len(self.state.recompressions))
                else:
                    done = self.recompress(reason)
                self.state.recompressions.append(done)
            except Exception as exc:  # noqa: BLE001 - the sidecar must survive a failed run
                log.exception("sidecar.recompression_failed", error=str(exc))
                self.state.recompressions.append(
                    {"reason": reason, "outcome": "error", "why": str(exc)}
                )
            finally:
                self.state.running = False
                self.state.last_run = time.time()

        self._thread = threading.Thread(target=run, daemon=True, name="recompress")
        self._thread.start()

    def run(self) -> None:
        log.info("sidecar.started", registry=str(self.cfg.registry_dir))
        self.state.last_run = time.time() - self.cfg.cooldown_s  # eligible at once
        try:
            while not self._stop.is_set():
                commands = self.poll()
                model, reason = "fraud", None
                for command in commands:  # commands obey the cooldown like any trigger
                    why = "another command just started a recompression" if reason else self._busy()
                    if why is not None:
                        self._refuse_command(command, why)
                        continue
                    model, reason = command.model, f"command: {command.model}"
                if reason is None:
                    reason = self.trigger()
                    if reason is None and self.cfg.markets and self._may_run():
                        model, reason = (
                            "market",
                            self.market.trigger(
                                self.cfg.market_min_outcomes, self.cfg.market_f1_drop
                            ),
                        )
                if reason:
                    log.info("sidecar.recompressing", model=model, reason=reason)
                    self._recompress_async(reason, model)
        finally:
            if self._thread is not None:
                self._thread.join(600)
            self.consumer.close()
            self._dlq_producer.flush(10)
            log.info("sidecar.stopped", recompressions=len(self.state.recompressions))
