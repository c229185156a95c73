"""The market stream: market-ticks → price-signals, per-instrument windows in a compacted
changelog.

With a market declaration (``cfg.family_path``, ``finscore worker market --family market``:
a ``sequence`` feature, :mod:`finscore.families.spec`) the windows are the declaration's,
compiled before any model is loaded (:func:`declared_windows`), and its topics are the
stream's: a model of another window or layout is refused. A declaration the stream cannot
compute (another input or output schema, a key other than ``instrument``, an id other than
``sequence``, a time other than ``event_time``) is refused first
(:func:`~finscore.streams.market.pipeline.declared_sequence`). Without one, the window length
and row layout are the first model's, the built-in declaration's (``market.toml``) when no
model is live."""

from __future__ import annotations

from typing import TYPE_CHECKING

from finscore.families.spec import FamilySpec, builtin_family
from finscore.features.exceptions import FeatureStateError
from finscore.features.market import BOOK_LAYOUT
from finscore.features.market_windows import MarketWindows, declared_windows
from finscore.logging import get_logger
from finscore.schemas import topics as T
from finscore.schemas.codec import Codec
from finscore.streams.changelog import read_changelog
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.market.pipeline import MarketPipeline, declared_sequence
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
    """market-ticks → price-signals, per-instrument windows in a changelog (see the module
    docstring: the declaration's windows, else the first model's)."""

    def __init__(
        self, cfg: WorkerConfig, slot: ModelSlot, transports: TransportFactory | None = None
    ) -> None:
        self.family: FamilySpec | None = cfg.family_spec() if cfg.family_path else None
        spec = self.family
        if spec is not None:  # refuses what the pipeline cannot compute (a FamilySpecError)
            declared_sequence(spec)
        super().__init__(
            cfg, slot, transports,
            input_topic=spec.input.topic if spec else T.MARKET_TICKS,
            output_topic=spec.output.topic if spec else T.PRICE_SIGNALS,
            output_schema=(spec.output.schema if spec else None) or "price_signal",
        )  # fmt: skip
        self.windows: MarketWindows
        if spec is not None:  # fixed now: the worker admits models of these windows only
            self.windows = declared_windows(spec)
        self.pipeline: MarketPipeline

    def start(self) -> None:
        if self.family is None:
            live = self.slot.live
            default = declared_windows(builtin_family("market"))
            if live is None:
                self.windows = default
            else:  # a manifest without a layout reads book40 rows
                params = live.manifest.params or {}
                window = int(params.get("window", default.window))
                layout = str(params.get("layout", BOOK_LAYOUT))
                self.windows = MarketWindows(window=window, layout=layout)
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
