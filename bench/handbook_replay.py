"""Replay the fraud handbook's transactions through a real fraud worker on a real broker, fed
labels in either contract, and score the protocol's test week from the worker's fraud-flags.

What runs (one fresh broker per contract: the embedded Tansu broker, or ``--backend kafka`` for
Apache Kafka 4.4 from ``.cache/kafka/lib``): the catalog's topics; one fraud worker, the
production ``finscore.streams.worker.Worker`` in this process, configured from
:class:`~finscore.settings.Settings` by the CLI's own ``worker_config`` with
``label_contract`` set (what ``FINSCORE_LABEL_CONTRACT`` sets for ``finscore worker fraud``),
loading the model from a registry as its champion, signed and verified (a fresh key pair);
a producer; and an observer reading ``fraud-flags``.

The feed, in event time, one chunk (``--chunk-hours``, default a day) at a time:

1. the labels *released* in the chunk (``label_time = tx_time + 7 days`` in
   ``[chunk start, chunk end)``): under ``all_outcomes`` every transaction's outcome, under
   ``fraud_reports`` the frauds only (an unreported transaction is genuine), each keyed by
   card as the topic catalog and ``finscore produce`` key them, so one card's labels share a
   partition and arrive in transaction order, which the habit flags of ``all_outcomes`` need
   (``--label-key terminal``: the earlier keying, under which a few scores can differ, see
   docs/BENCHMARKS.md);
2. a wait until the worker has applied all of them (its label pipeline is observed, never
   changed);
3. the chunk's transactions, keyed by customer, then a wait until the worker has scored them
   all (their flags arrived).

So the worker never scores a transaction before a label released before it was applied (the
one thing a replay that compresses months into minutes must guarantee; in real time the week
of delay guarantees it), and it never sees a label released after the chunk that its
transactions are in. A label only counts for a transaction from its label time on (see
docs/ARCHITECTURE.md), so labels released later in the same chunk change nothing; the test
compares against the offline replay to show it.

Offline: :func:`finscore.features.fraud.featurize_frame` over the same window (cached as the
compression benchmark caches it; the default window is exactly the rows the benchmark's
``split_frame`` featurises) and the same ONNX model through the worker's ``Scorer``.

Test week and metrics: the handbook's protocol as ``bench/compress_fraud.py`` applies it
(``finscore.compression.fraud``: test 2018-08-08 → 08-14 without cards already known as
compromised: 58,264 transactions, 385 frauds) and ``finscore.models.evaluation`` (AP, AUC,
card precision@100 per day).

Commands (data via ``--data-dir`` or ``FINSCORE_DATA_DIR``; the model from ``--registry``,
e.g. the one ``bench/compress_fraud.py --registry DIR --promote`` registered)::

    FINSCORE_DATA_DIR=/work/shared/data .venv/bin/python bench/handbook_replay.py \\
        --registry /tmp/hb/registry --json-out docs/benchmarks/handbook-replay/replay-tansu.json
    # the whole 183 days instead of the protocol's window (2018-06-10 → 08-14):
    ... bench/handbook_replay.py --registry /tmp/hb/registry --start 2018-04-01 --days 183
    # Apache Kafka 4.4 (jars fetched by `make setup`):
    ... bench/handbook_replay.py --registry /tmp/hb/registry --backend kafka
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import numpy as np

from finscore.features.fraud import FraudFeatureConfig, featurize_frame
from finscore.models.evaluation import average_precision, card_precision_at_k, roc_auc
from finscore.models.registry import Artifact, Registry, generate_keypair
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.schemas.columnar import ColumnarCodec, Unscaled
from finscore.sim.frame import TransactionFrame
from finscore.streams.kafka import producer_config

DAY_MS = 86_400_000
DELAY_MS = FraudFeatureConfig().label_delay_ms
CONTRACTS = ("all_outcomes", "fraud_reports")
# The rows the compression benchmark featurises for the protocol (split_frame: validation
# week start − (delay + 30 days) − 1 day → test week end): 2018-06-10 → 2018-08-14.
DEFAULT_START, DEFAULT_DAYS = "2018-06-10", 66

Event = tuple[str, str | None, str, bytes]


def day_ms(day: str) -> int:
    """Epoch milliseconds of 00:00 UTC of an ISO day."""
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


# -- the feed ------------------------------------------------------------------------------------
def window(frame: TransactionFrame, start_ms: int, days: int) -> TransactionFrame:
    """The transactions with ``start_ms <= event_time < start_ms + days``."""
    return frame.select(frame.between(start_ms, start_ms + days * DAY_MS))


def labelled(frame: TransactionFrame, contract: str) -> np.ndarray:
    """Rows that get a label: every one (``all_outcomes``) or the frauds (``fraud_reports``)."""
    if contract not in CONTRACTS:
        raise ValueError(f"contract must be one of {CONTRACTS}, not {contract!r}")
    if contract == "fraud_reports":
        return np.flatnonzero(frame.is_fraud != 0)
    return np.arange(len(frame))


def encode_transactions(frame: TransactionFrame, rows: np.ndarray) -> list[bytes]:
    """``transaction`` records of ``rows`` (byte-equal to ``Codec.encode`` of
    :func:`finscore.sim.transactions.transaction_record`), encoded column-wise."""
    cents = np.round(np.asarray(frame.amount[rows], np.float64) * 100).astype(np.int64)
    return _TX.encode(len(rows), {
        "transaction_id": frame.transaction_id[rows].astype(str).tolist(),
        "event_time": frame.event_time[rows].astype(np.int64),
        "customer_id": frame.customer_id[rows].astype(str).tolist(),
        "terminal_id": frame.terminal_id[rows].astype(str).tolist(),
        "amount": Unscaled(cents),
        "currency": "EUR",
    })  # fmt: skip


def encode_labels(frame: TransactionFrame, rows: np.ndarray, delay_ms: int) -> list[bytes]:
    """``fraud_label`` records of ``rows``, each known ``delay_ms`` after its transaction
    (byte-equal to ``Codec.encode`` of :func:`finscore.sim.transactions.label_record`)."""
    t = frame.event_time[rows].astype(np.int64)
    fraud = frame.is_fraud[rows] != 0
    cents = np.round(np.asarray(frame.amount[rows], np.float64) * 100).astype(np.int64)
    scenario = [int(s) if f else None for s, f in zip(frame.scenario[rows], fraud, strict=True)]
    return _LABEL.encode(len(rows), {
        "transaction_id": frame.transaction_id[rows].astype(str).tolist(),
        "customer_id": frame.customer_id[rows].astype(str).tolist(),
        "terminal_id": frame.terminal_id[rows].astype(str).tolist(),
        "tx_time": t,
        "label_time": t + delay_ms,
        "is_fraud": fraud,
        "amount": Unscaled(cents),
        "scenario": scenario,
    })  # fmt: skip


_TX = ColumnarCodec("transaction")
_LABEL = ColumnarCodec("fraud_label")


@dataclass(frozen=True)
class Chunk:
    """One step of the feed: the labels released in ``[start, end)`` (rows, in release order)
    and the transactions of ``[start, end)`` (rows, in event-time order)."""

    start: int
    end: int
    labels: np.ndarray
    transactions: np.ndarray


def chunks(
    frame: TransactionFrame, contract: str, chunk_ms: int = DAY_MS, delay_ms: int = DELAY_MS
) -> Iterator[Chunk]:
    """The feed of ``frame`` (in event-time order) cut at ``chunk_ms`` from its first day's
    midnight up to its last transaction; labels released after that are never sent."""
    if len(frame) == 0:
        return
    t = np.asarray(frame.event_time, np.int64)
    lab = labelled(frame, contract)
    release = t[lab] + delay_ms  # non-decreasing: one delay for every row
    start = int(t[0]) // DAY_MS * DAY_MS
    end = int(t[-1]) + 1
    for lo in range(start, end, chunk_ms):
        hi = min(lo + chunk_ms, end)
        a, b = np.searchsorted(release, [lo, hi])
        i, j = np.searchsorted(t, [lo, hi])
        yield Chunk(lo, hi, lab[a:b], np.arange(i, j))


LABEL_KEYS = ("terminal", "customer")


def chunk_events(
    frame: TransactionFrame, chunk: Chunk, prefix: str, label_key: str = "terminal"
) -> tuple[list[Event], list[Event]]:
    """(label events, transaction events) of one chunk, ready for :func:`send`. Labels are
    keyed by terminal as ``finscore produce`` keys them, or by card (``label_key="customer"``:
    one card's labels then share a partition, so they arrive in transaction order)."""
    if label_key not in LABEL_KEYS:
        raise ValueError(f"label_key must be one of {LABEL_KEYS}, not {label_key!r}")
    keys = frame.terminal_id if label_key == "terminal" else frame.customer_id
    labels: list[Event] = [(prefix + T.FRAUD_LABELS, str(k), "fraud_label", v) for k, v in zip(
        keys[chunk.labels], encode_labels(frame, chunk.labels, DELAY_MS),
        strict=True)]  # fmt: skip
    txs: list[Event] = [(prefix + T.TRANSACTIONS, str(k), "transaction", v) for k, v in zip(
        frame.customer_id[chunk.transactions], encode_transactions(frame, chunk.transactions),
        strict=True)]  # fmt: skip
    return labels, txs


def send(producer: Any, events: list[Event]) -> None:
    """Produce ``events`` in order (one idempotent producer: per partition in that order) and
    wait until the broker acknowledged every one."""
    failed: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failed.append(str(err))

    for topic, key, _schema, value in events:
        while True:
            try:
                producer.produce(topic, value, key.encode() if key is not None else None,
                                 on_delivery=delivered)  # fmt: skip
                break
            except BufferError:
                producer.poll(0.05)
    left = producer.flush(60)
    if left or failed:
        raise RuntimeError(f"{left + len(failed)} of {len(events)} records not delivered: "
                           f"{failed[:1]}")  # fmt: skip


# -- observing the worker ------------------------------------------------------------------------
class FlagObserver:
    """Reads every partition of ``fraud-flags`` from the start in a thread; keeps the latest
    score per transaction id (``read_committed`` under exactly-once)."""

    def __init__(self, client: Mapping[str, Any], topic: str, read_committed: bool) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        conf = {**client, "group.id": f"replay-observer-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False, "enable.partition.eof": False,
                "fetch.wait.max.ms": 10}  # fmt: skip
        if read_committed:
            conf["isolation.level"] = "read_committed"
        self._consumer = Consumer(conf)
        parts = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self._codec = ColumnarCodec("fraud_flag")
        self._slow = Codec("fraud_flag")
        self.scores: dict[str, float] = {}
        self.versions: set[str] = set()
        self.received = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="flag-observer")
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                msgs = [m for m in self._consumer.consume(20000, 0.05) if m.error() is None]
                if not msgs:
                    continue
                values = [m.value() for m in msgs]
                batch = self._codec.decode(values)
                tids = list(batch.columns["transaction_id"])
                scores = np.asarray(batch.columns["score"], np.float64).tolist()
                self.versions.update(batch.columns["model_version"])
                for i in batch.rest:  # not our fast path: the per-record codec
                    rec = self._slow.decode(values[i])
                    tids.append(rec["transaction_id"])
                    scores.append(float(rec["score"]))
                    self.versions.add(rec["model_version"])
                self.scores.update(zip(tids, scores, strict=True))
                self.received += len(values)
        except Exception as exc:  # noqa: BLE001 - reported by wait()
            self.errors.append(repr(exc))

    @property
    def scored(self) -> int:
        """Distinct transactions scored so far."""
        return len(self.scores)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


class LabelCounter:
    """Counts the labels the worker's label pipeline has taken (applied or dead-lettered);
    wraps the pipeline's ``process`` on the instance and changes nothing else."""

    def __init__(self, labels_pipeline: Any) -> None:
        self.applied = 0
        self.dead = 0
        inner = labels_pipeline.process

        def process(msgs: list) -> Any:
            result = inner(msgs)
            self.applied += result.scored
            self.dead += len(result.dead_letters)
            return result

        labels_pipeline.process = process

    @property
    def taken(self) -> int:
        return self.applied + self.dead


def _at_least(count: Callable[[], int], n: int) -> Callable[[], bool]:
    return lambda: count() >= n


def wait_for(
    what: str, done: Callable[[], bool], progress: Callable[[], int], failed: Callable[[], str],
    stall_s: float = 120.0,
) -> float:  # fmt: skip
    """Wait until ``done()``; raise when ``failed()`` says why or nothing moved for ``stall_s``.
    Returns the seconds waited."""
    t0 = last_move = time.monotonic()
    seen = progress()
    while not done():
        why = failed()
        if why:
            raise RuntimeError(f"waiting for {what}: {why}")
        now = time.monotonic()
        p = progress()
        if p != seen:
            seen, last_move = p, now
        elif now - last_move > stall_s:
            raise RuntimeError(f"waiting for {what}: no progress for {stall_s:.0f} s (at {p})")
        time.sleep(0.005)
    return time.monotonic() - t0


# -- one replay ----------------------------------------------------------------------------------
@dataclass
class StreamRun:
    """What one replay through a worker gave."""

    contract: str
    scores: np.ndarray  # per row of the window (NaN: never scored)
    transactions: int = 0
    labels: int = 0
    labels_dead: int = 0
    flags_received: int = 0
    model_versions: list[str] = field(default_factory=list)
    seconds: float = 0.0  # first produce → last flag
    start_seconds: float = 0.0  # worker start-up (topics, model, catch-up)
    wait_labels_s: float = 0.0
    wait_flags_s: float = 0.0


def signed_registry(artifact: Artifact, root: Path) -> str:
    """Publish ``artifact`` as the fraud champion of a registry at ``root``, signed with a
    fresh key pair; returns the verify key (what an operator's worker is given)."""
    signing, verify = generate_keypair()
    reg = Registry(root)
    out = reg.publish(dataclasses.replace(artifact, signature=None), signing)
    reg.promote(out.manifest.name, out.manifest.version)
    return verify


def replay_through_worker(
    client: Mapping[str, Any],
    frame: TransactionFrame,
    contract: str,
    artifact: Artifact,
    *,
    prefix: str | None = None,
    partitions: int = 6,
    chunk_ms: int = DAY_MS,
    exactly_once: bool = False,
    batch_size: int = 5000,
    label_key: str = "terminal",
    on_chunk: Callable[[Chunk, StreamRun], None] | None = None,
    stages: int = 0,
) -> StreamRun:
    """Replay ``frame`` through one fraud worker fed ``contract`` (see the module doc) on the
    broker at ``client``; topics get ``prefix`` (default: a fresh one); labels keyed by
    ``label_key`` (see :func:`chunk_events`). ``stages`` > 0: through the two-stage fleet
    instead, that many cards workers and as many terminals workers (``fraud_reports`` only)."""
    from confluent_kafka import Producer

    from finscore.app.cli.worker import worker_config
    from finscore.settings import Settings
    from finscore.streams.admin import ensure_topics, offsets
    from finscore.streams.worker import Worker

    prefix = prefix if prefix is not None else f"replay-{uuid.uuid4().hex[:8]}-"
    catalog = T.catalog(partitions, prefix)
    ensure_topics(client, catalog)
    offsets(client, [t.name for t in catalog], timeout=30)  # leaders elected (Apache Kafka)
    run = StreamRun(contract, np.full(len(frame), np.nan))
    with tempfile.TemporaryDirectory(prefix="finscore-replay-") as tmp:
        verify = signed_registry(artifact, Path(tmp) / "registry")
        settings = Settings(
            bootstrap_servers=str(client["bootstrap.servers"]),
            topic_prefix=prefix,
            partitions=partitions,
            registry_dir=Path(tmp) / "registry",
            key_dir=Path(tmp) / "keys",
            verify_key=verify,
            label_contract=contract,  # what FINSCORE_LABEL_CONTRACT sets
            log_level="WARNING",
        )
        cfg = worker_config(settings, "fraud", exactly_once, None, batch_size)
        cfg = dataclasses.replace(cfg, client={**cfg.client, **client}, metrics_port=None,
                                  instance_id=f"replay-{contract}")  # fmt: skip
        roles = [("all", 0)] if not stages else [
            (stage, i) for stage in ("cards", "terminals") for i in range(stages)
        ]  # fmt: skip
        t0 = time.monotonic()
        workers = [
            Worker(dataclasses.replace(cfg, fraud_stage=stage, instance_id=f"replay-{contract}-"
                                       f"{stage}{i}", transactional_id=None))
            for stage, i in roles
        ]  # fmt: skip
        counters = [LabelCounter(w.stream.labels) for w in workers]  # type: ignore[attr-defined]
        errors: list[BaseException] = []

        def work(worker: Worker) -> None:
            try:
                worker.run()
            except BaseException as exc:  # noqa: BLE001 - reported by the waits
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,), daemon=True,
                                    name=f"worker-{contract}-{stage}{i}")
                   for w, (stage, i) in zip(workers, roles, strict=True)]  # fmt: skip
        for thread in threads:
            thread.start()
        observer = FlagObserver(client, prefix + T.FRAUD_FLAGS, exactly_once)
        producer = Producer(producer_config(client))

        def failed() -> str:
            if errors:
                return f"the worker stopped: {errors[0]!r}"
            return "; ".join(observer.errors)

        try:
            wait_for("the workers to start", lambda: all(
                w.health()["status"] == "ok" and bool(w.health()["assigned_partitions"])
                for w in workers), lambda: 0, failed, 90)  # fmt: skip
            run.start_seconds = time.monotonic() - t0
            t_feed = time.monotonic()
            for c in chunks(frame, contract, chunk_ms):
                labels, txs = chunk_events(frame, c, prefix, label_key)
                if labels:
                    send(producer, labels)
                    run.labels += len(labels)
                    run.wait_labels_s += wait_for(
                        "labels", _at_least(lambda: min(c.taken for c in counters), run.labels),
                        lambda: min(c.taken for c in counters), failed,
                    )  # fmt: skip
                if txs:
                    send(producer, txs)
                    run.transactions += len(txs)
                    run.wait_flags_s += wait_for(
                        "flags", _at_least(lambda: observer.scored, run.transactions),
                        lambda: observer.scored, failed,
                    )  # fmt: skip
                if on_chunk is not None:
                    on_chunk(c, run)
            run.seconds = time.monotonic() - t_feed
        finally:
            for w in workers:
                w.stop()
            for thread in threads:
                thread.join(60)
            observer.close()
        if errors:
            raise RuntimeError(f"the worker failed: {errors[0]!r}") from errors[0]
    ids = frame.transaction_id.astype(str)
    run.scores = np.array([observer.scores.get(i, np.nan) for i in ids.tolist()])
    run.labels_dead = counters[0].dead  # label dead letters: the first (cards) worker's
    run.flags_received = observer.received
    run.model_versions = sorted(observer.versions)
    return run


# -- offline and the protocol --------------------------------------------------------------------
def offline_features(frame: TransactionFrame, cache: bool = False) -> np.ndarray:
    """:func:`featurize_frame` of ``frame`` (every outcome); ``cache``: the compression
    benchmark's on-disk cache (same key: the frame's bytes and the feature config)."""
    if cache:
        from finscore.compression.fraud import cached_features

        return cached_features(frame, FraudFeatureConfig())
    return featurize_frame(frame, FraudFeatureConfig())


def offline_scores(x: np.ndarray, artifact: Artifact) -> np.ndarray:
    """The model's scores of feature rows ``x`` through the worker's ``Scorer``."""
    from finscore.streams.scoring import Scorer

    scorer = Scorer(artifact)
    out = [scorer.score_batch(scorer.select(x[i : i + 65536])) for i in range(0, len(x), 65536)]
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def protocol_test_rows(frame: TransactionFrame) -> np.ndarray:
    """Rows of ``frame`` (the whole handbook) in the protocol's test set: the test week without
    the cards already known as compromised (``finscore.compression.fraud``'s filter)."""
    from finscore.compression.fraud import FraudSplits, known_compromised_filter

    s = FraudSplits()
    train = frame.between(day_ms(s.train[0]), day_ms(s.train[1]))
    days = (day_ms(s.test[1]) - day_ms(s.test[0])) // DAY_MS
    return np.flatnonzero(
        known_compromised_filter(frame, train, day_ms(s.test[0]), days, DELAY_MS // DAY_MS)
    )


def metrics(frame: TransactionFrame, rows: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """AP, AUC ROC and card precision@100 (per day, the handbook's) of ``scores`` (per row of
    ``frame``) over ``rows``; ``missing`` counts rows with no score (then no metric)."""
    s = scores[rows]
    y = frame.is_fraud[rows].astype(np.int64)
    out: dict[str, Any] = {
        "n": len(rows),
        "frauds": int(y.sum()),
        "missing": int(np.isnan(s).sum()),
    }
    if out["missing"] or not len(rows):
        return out | {"ap": None, "auc": None, "cp100": None}
    day = frame.event_time[rows] // DAY_MS
    return out | {
        "ap": average_precision(y, s),
        "auc": roc_auc(y, s),
        "cp100": card_precision_at_k(day, frame.customer_id[rows], y, s, 100),
    }


def score_diff(a: np.ndarray, b: np.ndarray, atol: float = 1e-6) -> dict[str, Any]:
    """How two score vectors differ: the largest gap and how many rows differ by over
    ``atol`` (NaN on either side counts as differing)."""
    both = ~(np.isnan(a) | np.isnan(b))
    gap = np.abs(a[both] - b[both])
    return {
        "max_abs": float(gap.max()) if len(gap) else 0.0,
        "rows_over_atol": int((gap > atol).sum() + (~both).sum()),
        "atol": atol,
    }


# -- the command ---------------------------------------------------------------------------------
def _model(registry: Path, version: str | None) -> Artifact:
    art = Registry(registry).get("fraud", version)
    if art.manifest.family != "fraud":
        raise click.ClickException(
            f"{registry}: fraud v{art.manifest.version} is not a fraud model"
        )
    return art


def _fmt(v: Any, nd: int = 4) -> str:
    return "–" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else f"{v:,}"


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Folder holding fraud_handbook_sim/ (default: Settings.data_dir, i.e. "
              "FINSCORE_DATA_DIR).")  # fmt: skip
@click.option("--registry", type=click.Path(path_type=Path), default=None,
              help="Registry holding the handbook-trained fraud model (default: "
              "Settings.registry_dir).")  # fmt: skip
@click.option("--version", default=None, help="Model version (default: the champion).")
@click.option("--start", default=DEFAULT_START, show_default=True,
              help="First day replayed. Default: the rows bench/compress_fraud.py featurises "
              "(the test week's features need delay + 30 days of history).")  # fmt: skip
@click.option("--days", type=int, default=DEFAULT_DAYS, show_default=True,
              help="Days replayed from --start (the protocol's test week must be inside).")  # fmt: skip
@click.option("--contracts", default=",".join(CONTRACTS), show_default=True)
@click.option("--backend", type=click.Choice(["tansu", "kafka"]), default="tansu",
              show_default=True)  # fmt: skip
@click.option("--partitions", type=int, default=6, show_default=True)
@click.option("--chunk-hours", type=float, default=24.0, show_default=True,
              help="Feed step: labels released in a step are applied before its transactions.")  # fmt: skip
@click.option("--label-key", type=click.Choice(LABEL_KEYS), default="customer", show_default=True,
              help="Key of the labels: customer (as the catalog and `finscore produce`: a card's "
              "labels in one partition, hence in transaction order), or terminal (the earlier "
              "keying).")  # fmt: skip
@click.option("--exactly-once", is_flag=True, help="Run the worker with Kafka transactions.")
@click.option("--batch-size", type=int, default=5000, show_default=True)
@click.option("--stages", type=int, default=0, show_default=True,
              help="N > 0: replay through the two-stage fleet (N cards + N terminals workers) "
              "instead of one worker; fraud_reports only.")  # fmt: skip
@click.option("--json-out", type=click.Path(path_type=Path), default=None)
def main(data_dir, registry, version, start, days, contracts, backend, partitions, chunk_hours,
         label_key, exactly_once, batch_size, stages, json_out) -> None:  # noqa: ANN001  # fmt: skip
    """Replay the handbook through a fraud worker per label contract; compare with offline."""
    from finscore.app.broker import ApacheKafkaBroker, EmbeddedBroker, free_port
    from finscore.logging import configure_logging
    from finscore.settings import Settings
    from finscore.sim.handbook import handbook_path, load_handbook_frame

    configure_logging("WARNING")
    t_all = time.monotonic()
    s = Settings()
    data_dir = data_dir or s.data_dir
    registry = registry or s.registry_dir
    path = handbook_path(data_dir)
    art = _model(registry, version)
    m = art.manifest
    click.echo(f"model: {registry} fraud v{m.version} sha256 {m.sha256[:12]} "
               f"({m.size_bytes:,} bytes, {len(m.feature_names or [])} features); at training: "
               f"test AP {_fmt((m.metrics or {}).get('ap'))}, CP@100 "
               f"{_fmt((m.metrics or {}).get('cp100'))}")  # fmt: skip
    full = load_handbook_frame(path)
    test_rows = protocol_test_rows(full)
    start_ms = day_ms(start)
    win_mask = full.between(start_ms, start_ms + days * DAY_MS)
    win = full.select(win_mask)
    if not win_mask[test_rows].all():
        raise click.ClickException("the window does not cover the protocol's test week")
    # test rows as rows of the window
    pos = np.cumsum(win_mask) - 1
    test_in_win = pos[test_rows]
    click.echo(f"window {start} + {days} days: {len(win):,} transactions "
               f"({int(win.is_fraud.sum()):,} frauds); test week {len(test_rows):,} rows, "
               f"{int(full.is_fraud[test_rows].sum())} frauds")  # fmt: skip

    t0 = time.monotonic()
    x = offline_features(win, cache=True)
    offline = offline_scores(x, art)
    offline_s = time.monotonic() - t0
    results: dict[str, Any] = {
        "offline": {"metrics": metrics(win, test_in_win, offline), "seconds": offline_s,
                    "transactions": len(win)},
    }  # fmt: skip
    click.echo(f"offline: {offline_s:.1f} s; {results['offline']['metrics']}")
    runs: dict[str, StreamRun] = {}
    for contract in [c.strip() for c in contracts.split(",") if c.strip()]:
        broker = (ApacheKafkaBroker(port=free_port()) if backend == "kafka"
                  else EmbeddedBroker(port=free_port()))  # fmt: skip
        t_b = time.monotonic()
        with broker:
            broker_s = time.monotonic() - t_b
            last = [time.monotonic()]

            def progress(
                c: Chunk, r: StreamRun, contract: str = contract, last: list[float] = last
            ) -> None:
                if time.monotonic() - last[0] >= 15:
                    last[0] = time.monotonic()
                    click.echo(f"  {contract}: {datetime.fromtimestamp(c.end / 1000, UTC):%m-%d}"
                               f" {r.transactions:,} tx, {r.labels:,} labels", err=True)  # fmt: skip

            run = replay_through_worker(
                {"bootstrap.servers": broker.bootstrap}, win, contract, art,
                partitions=partitions, chunk_ms=int(chunk_hours * 3_600_000),
                exactly_once=exactly_once, batch_size=batch_size, label_key=label_key,
                on_chunk=progress, stages=stages,
            )  # fmt: skip
        runs[contract] = run
        results[contract] = {
            "metrics": metrics(win, test_in_win, run.scores),
            "vs_offline": score_diff(run.scores, offline),
            "vs_offline_test_week": score_diff(run.scores[test_in_win], offline[test_in_win]),
            "transactions": run.transactions,
            "labels": run.labels,
            "labels_dead": run.labels_dead,
            "flags_received": run.flags_received,
            "model_versions": run.model_versions,
            "seconds": run.seconds,
            "worker_start_s": run.start_seconds,
            "broker_start_s": broker_s,
            "wait_labels_s": run.wait_labels_s,
            "wait_flags_s": run.wait_flags_s,
            "tx_per_s": run.transactions / run.seconds if run.seconds else None,
        }
        click.echo(f"{contract}: {run.seconds:.1f} s; {results[contract]['metrics']}; "
                   f"vs offline {results[contract]['vs_offline']}")  # fmt: skip
    if "all_outcomes" in runs and "fraud_reports" in runs:
        results["fraud_reports_vs_all_outcomes"] = score_diff(
            runs["fraud_reports"].scores, runs["all_outcomes"].scores
        )
    rows = [("offline (featurize_frame + Scorer)", results["offline"], "–")] + [
        (f"stream, {c}", results[c], f"{results[c]['vs_offline']['max_abs']:.1e} "
         f"({results[c]['vs_offline']['rows_over_atol']})")
        for c in runs
    ]  # fmt: skip
    click.echo(
        "\n| feed | AP | CP@100 | AUC | test rows (frauds) | transactions | labels "
        "| max abs score diff vs offline (rows > 1e-6) | seconds |"
    )
    click.echo("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for name, r, diff in rows:
        mm = r["metrics"]
        click.echo(f"| {name} | {_fmt(mm['ap'])} | {_fmt(mm['cp100'])} | {_fmt(mm['auc'])} | "
                   f"{mm['n']:,} ({mm['frauds']}) | {r['transactions']:,} | "
                   f"{_fmt(r.get('labels'))} | {diff} | {r['seconds']:.1f} |")  # fmt: skip
    total = time.monotonic() - t_all
    click.echo(
        f"\ntotal {total:.0f} s ({backend}, {partitions} partitions, chunks of "
        f"{chunk_hours:g} h, labels keyed by {label_key}, "
        f"{'exactly-once' if exactly_once else 'at-least-once'}"
        f"{f', two-stage fleet {stages}+{stages}' if stages else ''})"
    )
    if json_out is not None:
        doc = {
            "command": " ".join(sys.argv),
            "model": {"registry": str(registry), "version": m.version, "sha256": m.sha256,
                      "bytes": m.size_bytes, "training_metrics": m.metrics},
            "window": {"start": start, "days": days, "transactions": len(win)},
            "backend": backend, "partitions": partitions, "chunk_hours": chunk_hours,
            "label_key": label_key, "stages": stages,
            "exactly_once": exactly_once, "results": results, "total_seconds": total,
            "env": {"python": platform.python_version(), "machine": platform.machine()},
        }  # fmt: skip
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(doc, indent=2, default=str))
        click.echo(f"wrote {json_out}")


if __name__ == "__main__":
    main()
