"""finscore: a Kafka-native streaming scorer for finance.

The distribution maps four folders into one import package:

- ``finscore``            the app shell: CLI, settings, logging, embedded broker,
                          simulators and the shared (torch-free, Kafka-free) features.
- ``finscore.schemas``    the event contract: Avro schemas, codec, topic catalog, manifests.
- ``finscore.streams``    the workers (ONNX Runtime only; never imports torch).
- ``finscore.compression`` training and compression (torch; the ``compress`` extra).
"""

__version__ = "0.1.0"
