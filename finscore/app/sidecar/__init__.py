"""The sidecar: keeps the deployed models fresh, small and safe, without downtime.

- :mod:`~finscore.app.sidecar.loop`: the orchestrator (:class:`Sidecar`): reads the inputs,
  dispatches them to the halves, starts recompressions (commands, schedule, drift), cooldown,
  status;
- :mod:`~finscore.app.sidecar.fraud` / :mod:`~finscore.app.sidecar.market`: the two halves
  (:class:`FraudSidecar`, :class:`MarketSidecar`): their buffers, quality, drift triggers and
  data preparation;
- :mod:`~finscore.app.sidecar.gate`: the one recompress → gate → register → sign → announce →
  promote path (also used by ``finscore compress`` and ``finscore models``);
- :mod:`~finscore.app.sidecar.config` (:class:`SidecarConfig`), :mod:`~.inputs` (the bounds of
  every input), :mod:`~.quality` (rolling AP and PSI), :mod:`~.compare` (live vs challenger),
  :mod:`~.status` (``/health``).
"""

from finscore.app.sidecar.config import SidecarConfig
from finscore.app.sidecar.fraud import FraudSidecar, OutcomeBuffer
from finscore.app.sidecar.gate import Announcer, Recompression, recompress_and_publish
from finscore.app.sidecar.loop import (
    DeadLetterProducer,
    InputConsumer,
    KafkaInputs,
    ReaderInputs,
    Sidecar,
    SidecarState,
)
from finscore.app.sidecar.market import MarketSidecar

__all__ = [
    "Announcer",
    "DeadLetterProducer",
    "FraudSidecar",
    "InputConsumer",
    "KafkaInputs",
    "MarketSidecar",
    "OutcomeBuffer",
    "ReaderInputs",
    "Recompression",
    "Sidecar",
    "SidecarConfig",
    "SidecarState",
    "recompress_and_publish",
]
