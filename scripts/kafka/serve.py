"""Run Apache Kafka 4.4 (KRaft) in the foreground until Ctrl-C: `make kafka`.

One combined broker+controller on ``$FINSCORE_BROKER_PORT`` (default 9092), or with
``--nodes 3`` a 3-node cluster (replication factor 3, min.insync.replicas 2) on free ports.
Data lives in a temporary directory and is removed on exit. Runs from the jars `make setup`
fetched into .cache/kafka/lib; nothing is downloaded here.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from finscore.app.broker import (
    ApacheKafkaBroker,
    BrokerError,
    KafkaCluster,
    free_ports,
    kafka_unavailable,
)


def main(argv: list[str] | None = None) -> int:
    """Start the broker(s), print the bootstrap servers, wait for SIGINT/SIGTERM, stop."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1, help="1 broker, or a cluster of N nodes")
    ap.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("FINSCORE_BROKER_PORT", "9092")),
        help="client port of the single broker (a cluster takes free ports)",
    )
    ap.add_argument("--log-dir", type=Path, default=None, help="write the broker logs here")
    args = ap.parse_args(argv)
    reason = kafka_unavailable()
    if reason is not None:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    if args.log_dir:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    server: ApacheKafkaBroker | KafkaCluster
    if args.nodes == 1:
        log = args.log_dir / "kafka.log" if args.log_dir else None
        server = ApacheKafkaBroker(port=args.port, log_path=log)
    else:
        server = KafkaCluster(args.nodes, log_dir=args.log_dir, ports=free_ports(args.nodes))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        server.start()
    except BrokerError as exc:
        print(f"error: {exc}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 1
    print(f"Apache Kafka ready at {server.bootstrap} (temporary data; Ctrl-C stops it)", flush=True)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print("Apache Kafka stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
