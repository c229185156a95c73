"""finscore.streams: the Kafka-native workers (transport, worker loop, pipelines, hot swap).

The public surface is listed in ``__all__`` and resolved lazily (PEP 562), so importing one
module of the package (say :mod:`finscore.streams.kafka` for a producer config) does not load
the worker, ONNX Runtime and both streams.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Worker": "finscore.streams.worker",
    "WorkerConfig": "finscore.streams.worker",
    "Transport": "finscore.streams.transport",
    "TransportFactory": "finscore.streams.transport",
    "TransportSpec": "finscore.streams.transport",
    "TopicReader": "finscore.streams.transport",
    "Message": "finscore.streams.transport",
    "OutRecord": "finscore.streams.transport",
    "DeliveryStats": "finscore.streams.transport",
    "KafkaTransport": "finscore.streams.kafka",
    "KafkaTransportFactory": "finscore.streams.kafka",
    "InMemoryBus": "finscore.streams.testing",
    "InMemoryTransport": "finscore.streams.testing",
    "InMemoryTopicReader": "finscore.streams.testing",
    "ModelSlot": "finscore.streams.hot_swap",
    "ModelWatcher": "finscore.streams.hot_swap",
    "Scorer": "finscore.streams.scoring",
    "Stream": "finscore.streams.stream",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
