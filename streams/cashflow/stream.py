"""The cash-flow stream: transactions → cashflow-forecasts (issue 18).

Reads ``transactions`` in its own consumer group (``finscore-cashflow``), keeps each terminal's
daily takings and, at each new UTC day of the stream's event time, forecasts every recently
active terminal's next days of takings with the live ``cashflow`` model (see
:mod:`finscore.streams.cashflow.pipeline`). The window length is the first model's
(``lookback_days`` in its manifest's params; a later model must read the same, see
:meth:`CashflowStream.input_spec`).

**Run one cashflow worker.** Transactions are keyed by card, so a worker sees only the
terminals' transactions of its own partitions: two workers would each forecast every terminal
from part of its takings. One worker reads every partition (or point it at a topic keyed by
terminal). **No changelog yet**: the takings are rebuilt from what the worker reads, so after a
restart forecasts resume once a whole window has been read again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from finscore.features.cashflow import LOOKBACK
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.streams.cashflow.pipeline import CashflowPipeline
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.scoring import InputSpec
from finscore.streams.stream import StreamBase, output_codec, output_encoding, registry_client
from finscore.streams.transport import TopicPartition as TP
from finscore.streams.transport import TransportFactory

if TYPE_CHECKING:
    from finscore.streams.worker import WorkerConfig

__all__ = ["MODEL_NAME", "CashflowStream"]

MODEL_NAME = "cashflow"


class CashflowStream(StreamBase):
    """transactions → cashflow-forecasts, takings in memory (no changelog)."""

    model_name = MODEL_NAME

    def __init__(
        self, cfg: WorkerConfig, slot: ModelSlot, transports: TransportFactory | None = None
    ) -> None:
        super().__init__(cfg, slot, transports, input_topic=T.TRANSACTIONS,
                         output_topic=T.CASHFLOW_FORECASTS, output_schema="cashflow_forecast")  # fmt: skip
        self.lookback: int | None = None  # fixed by the first model (start)
        self.pipeline: CashflowPipeline

    def input_spec(self) -> InputSpec:
        """Rows of ``lookback + 8`` cash-flow features (the lookback in force once started)."""
        return InputSpec.cashflow(self.lookback)

    def start(self) -> None:
        live = self.slot.live
        params = (live.manifest.params or {}) if live else {}
        self.lookback = int(params.get("lookback_days", LOOKBACK))
        registry = registry_client(self.cfg)
        out_encoding = output_encoding(self.cfg, self.output_topic, registry)
        self.pipeline = CashflowPipeline(
            self.slot,
            self.output_topic,
            lookback=self.lookback,
            output_encoding=out_encoding,
            in_codec=Codec("transaction", registry=registry),
            out_codec=output_codec(self.output_schema, self.output_topic, registry, out_encoding),
            bounds=self.cfg.bounds,
        )

    def on_assign(self, tps: list[TP]) -> None:
        """No state to restore (no changelog)."""
