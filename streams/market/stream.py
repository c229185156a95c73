"""The market stream: market-ticks → price-signals, per-instrument windows in a compacted
changelog (the window length and row layout are the first model's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from finscore.features.exceptions import FeatureStateError
from finscore.features.market import BOOK_LAYOUT
from finscore.features.market_windows import MarketWindows
from finscore.logging import get_logger
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.streams.changelog import read_changelog
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.market.pipeline import MarketPipeline
from finscore.streams.stream import (
    StreamBase,
    ensure_changelog,
    output_codec,
    output_encoding,
    registry_client,
)
from finscore.streams.transport import TopicPartition as TP
from finscore.streams.transport import TransportFactory

if TYPE_CHECKING:
    from finscore.streams.worker import WorkerConfig

__all__ = ["MarketStream"]

log = get_logger(__name__)


class MarketStream(StreamBase):
    """market-ticks → price-signals, per-instrument windows in a changelog."""

    def __init__(
        self, cfg: WorkerConfig, slot: ModelSlot, transports: TransportFactory | None = None
    ) -> None:
        super().__init__(cfg, slot, transports, input_topic=T.MARKET_TICKS,
                         output_topic=T.PRICE_SIGNALS, output_schema="price_signal")  # fmt: skip
        self.windows: MarketWindows
        self.pipeline: MarketPipeline

    def start(self) -> None:
        live = self.slot.live
        params = (live.manifest.params or {}) if live else {}
        window = int(params.get("window", 100))
        self.windows = MarketWindows(window=window, layout=str(params.get("layout", BOOK_LAYOUT)))
        registry = registry_client(self.cfg)
        out_encoding = output_encoding(self.cfg, self.output_topic, registry)
        self.changelog_topic = ensure_changelog(
            self.cfg, self.transports, self.input_topic, "windows"
        )
        self.pipeline = MarketPipeline(
            self.windows,
            self.slot,
            self.output_topic,
            output_encoding=out_encoding,
            changelog_topic=self.changelog_topic,
            bounds=self.cfg.bounds,
            in_codec=Codec("market_tick", registry=registry),
            out_codec=output_codec(self.output_schema, self.output_topic, registry, out_encoding),
        )

    def on_assign(self, tps: list[TP]) -> None:
        parts = [p for t, p in tps if t == self.input_topic]
        state = read_changelog(
            self.transports, self.changelog_topic, parts, read_committed=self.cfg.exactly_once
        )
        for key, value in state.items():
            name = key.decode(errors="replace")
            try:
                self.windows.restore(name, value)
            except FeatureStateError as exc:  # rebuilt from the stream instead
                log.warning("state.record_skipped", key=name, reason=str(exc))
