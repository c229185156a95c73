"""finscore: a Kafka-native streaming scorer for finance.

The distribution maps four folders into one import package (rooms and rules in
docs/ARCHITECTURE.md; tests/app/test_dependencies.py enforces the rules):

- ``finscore``             the ground: exceptions, logging, settings, providers, ``sim``,
                           ``features``, ``models`` (torch-free, Kafka-free; imports no room
                           below it); and ``finscore.app``, everything that runs (CLI, sidecar,
                           console, dashboard, bench, demo).
- ``finscore.schemas``     the event contract: Avro schemas, codec, topic catalog.
- ``finscore.streams``     the workers (ONNX Runtime only; never imports torch or faust).
- ``finscore.compression`` training and compression (torch; the ``compress`` extra).

Importing ``finscore`` imports none of them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
