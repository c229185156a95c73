"""The cash-flow stream: transactions → cashflow-forecasts (issue 18).

What it reads, computes and writes is declared (``finscore/families/cashflow.toml``, or the
declaration ``family_path`` names in the worker's config: ``finscore worker cashflow --family
F``; one the stream cannot compute is refused,
:func:`~finscore.streams.cashflow.pipeline.declared_series`: it needs the ``transaction``
schema and a series keyed by ``terminal_id``): it reads the declaration's input topic
(``transactions``) in its own consumer group (``finscore-cashflow``), keeps each terminal's
daily takings and, at each new UTC day of the stream's event time, forecasts every
recently active terminal's next days of takings with the live ``cashflow`` model onto the
declaration's output topic (``cashflow-forecasts``, schema ``cashflow_forecast``; see
:mod:`finscore.streams.cashflow.pipeline`). The window length is the first model's
(``lookback_days`` in its manifest's params, else the declaration's ``days``; a later model
must read the same, see :meth:`CashflowStream.input_spec`).

**Run one cashflow worker.** Transactions are keyed by card, so a worker sees only the
terminals' transactions of its own partitions: two workers would each forecast every terminal
from part of its takings. One worker reads every partition (or point it at a topic keyed by
terminal). **No changelog yet**: the takings are rebuilt from what the worker reads, so after a
restart forecasts resume once a whole window has been read again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from finscore.families import FamilySpec, builtin_family, load_family
from finscore.schemas.codec import Codec
from finscore.streams.cashflow.pipeline import CashflowPipeline, declared_series
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
        family = cfg.family_path
        self.family: FamilySpec = load_family(family) if family else builtin_family("cashflow")
        series = declared_series(self.family)  # refuses a declaration it cannot compute
        out = self.family.output
        super().__init__(cfg, slot, transports, input_topic=self.family.input.topic,
                         output_topic=out.topic, output_schema=out.schema or "cashflow_forecast")  # fmt: skip
        self.default_lookback = series.lookback
        self.lookback: int | None = None  # fixed by the first model (start)
        self.pipeline: CashflowPipeline

    def input_spec(self) -> InputSpec:
        """Rows of the declared features (``lookback + 8`` of them for the built-in
        declaration; the lookback in force once started)."""
        if self.lookback is None:
            return InputSpec.cashflow(None)
        width = len(declared_series(self.family, self.lookback).feature_names)
        return InputSpec("cashflow", width, self.lookback)

    def start(self) -> None:
        live = self.slot.live
        params = (live.manifest.params or {}) if live else {}
        self.lookback = int(params.get("lookback_days", self.default_lookback))
        registry = registry_client(self.cfg)
        out_encoding = output_encoding(self.cfg, self.output_topic, registry)
        self.pipeline = CashflowPipeline(
            self.slot,
            self.output_topic,
            family=self.family,
            lookback=self.lookback,
            output_encoding=out_encoding,
            in_codec=Codec("transaction", registry=registry),
            out_codec=output_codec(self.output_schema, self.output_topic, registry, out_encoding),
            bounds=self.cfg.bounds,
        )

    def on_assign(self, tps: list[TP]) -> None:
        """No state to restore (no changelog)."""
