"""The console's Kafka helpers, shared by ``finscore bus``, the demo and the dashboard: produce
events (simulated, from files), tail a topic, and observe workers (their /health and /metrics).
"""

from finscore.app.console.observe import (
    OutputTail,
    WorkerSample,
    health,
    histogram_quantile,
    scrape,
)
from finscore.app.console.produce import (
    ProduceStats,
    file_events,
    produce,
    tick_events,
    transaction_events,
)
from finscore.app.console.tail import Start, follow, parse_start

__all__ = [
    "OutputTail",
    "ProduceStats",
    "Start",
    "WorkerSample",
    "file_events",
    "follow",
    "health",
    "histogram_quantile",
    "parse_start",
    "produce",
    "scrape",
    "tick_events",
    "transaction_events",
]
