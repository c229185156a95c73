"""The sidecar's settings: one typed record read by the loop and by both halves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finscore.schemas import topics as T

__all__ = ["SidecarConfig"]


@dataclass(frozen=True)
class SidecarConfig:
    """Everything ``finscore sidecar`` is told: where the bus and the registry are, how models
    are signed, when to recompress, and what a candidate must achieve to be published."""

    client: dict[str, Any]
    topic_prefix: str = ""
    registry_dir: Path = Path("var/registry")
    signing_key: str | None = None
    allow_unsigned: bool = False  # development only: publish unsigned models without a key
    interval_s: float = 0.0
    min_outcomes: int = 5000
    min_labelled: int = 5000  # labelled transactions before any fraud recompression
    min_split_rows: int = 500  # rows each train/val/hold-out window needs
    ap_drop: float = 0.10
    psi_threshold: float = 0.25
    tolerance: float = 0.02
    max_bytes: int = 1_000_000
    history_days: int = 40
    holdout_days: int = 4
    epochs: int = 20  # small recent windows need many epochs (4 left students 0.2 AP short)
    cooldown_s: float = 60.0
    reports_dir: Path = Path("reports/sidecar")  # every run's report (timestamped folders)
    # Root of the reports kept with registered versions: <root>/<family>/v<N>/ (as `finscore
    # compress` writes them; the dashboard's compression panel reads them from there).
    version_reports_dir: Path = Path("reports")
    markets: bool = True  # also watch and recompress the market model
    market_min_outcomes: int = 2000
    market_f1_drop: float = 0.10
    market_epochs: int = 4
    max_amount: float = 1_000_000.0  # labels with a larger amount are refused
    # Schema-registry client config ({"url": ...}): workers with a registry write their flags and
    # signals in the Confluent wire format, which the quality join reads with it.
    schema_registry: Mapping[str, str] | None = None

    @property
    def model_updates(self) -> str:
        """The full name of the topic models are announced on."""
        return self.topic_prefix + T.MODEL_UPDATES
