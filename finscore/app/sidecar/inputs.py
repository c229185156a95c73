"""Validation of everything the sidecar reads: every input is untrusted.

Pure functions (no broker): each either returns the checked value or raises :class:`BadInput`
with an ``error_type`` and a one-line ``reason``. The sidecar logs, counts and dead-letters
what they refuse (see :mod:`finscore.app.sidecar.loop`); nothing here can stop the sidecar.

Bounds (documented in docs/RELIABILITY.md):

- **commands** (``sidecar-commands``): at most :data:`MAX_COMMAND_BYTES` of UTF-8 JSON, an
  object; ``command`` absent or ``"recompress"``; ``model`` absent (= ``fraud``) or one of
  :data:`MODELS`. Anything else is refused.
- **labels** (``fraud-labels``): ids non-empty and at most :data:`MAX_ID_CHARS` characters;
  amount finite and within ``[0, max_amount]``; ``tx_time`` after :data:`MIN_TIME_MS`
  (2000-01-01), at most ``max_future_ms`` past the wall clock, and at most ``max_skew_ms``
  ahead of the newest label already buffered (a label further ahead would evict the whole
  training buffer).
- **flags** (``fraud-flags``): ids and version non-empty and bounded; score finite in [0, 1].
- **ticks** (``market-ticks``): instrument non-empty and bounded; sequence non-negative and at
  most ``max_sequence_gap`` ahead of the instrument's last one; at least one level a side,
  prices finite and positive, sizes non-negative.
- **signals** (``price-signals``): instrument and version non-empty and bounded.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_COMMAND_BYTES",
    "MAX_ID_CHARS",
    "MIN_TIME_MS",
    "MODELS",
    "BadInput",
    "Command",
    "check_flag",
    "check_label",
    "check_signal",
    "check_tick",
    "parse_command",
]

MAX_COMMAND_BYTES = 4096
MAX_ID_CHARS = 256
MIN_TIME_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MODELS = ("fraud", "market")
DAY_MS = 86_400_000


class BadInput(ValueError):
    """A record the sidecar refuses; ``error_type`` names the kind, the message says why."""

    def __init__(self, error_type: str, reason: str) -> None:
        super().__init__(reason)
        self.error_type = error_type
        self.reason = reason


@dataclass(frozen=True)
class Command:
    """A validated operator command: recompress ``model`` now (subject to the cooldown)."""

    model: str
    command: str = "recompress"


def parse_command(value: bytes | None) -> Command:
    """The command a ``sidecar-commands`` record holds; :class:`BadInput` for anything else."""
    if value is None:
        raise BadInput("EmptyValue", "command record has no value")
    if len(value) > MAX_COMMAND_BYTES:
        raise BadInput("TooLarge", f"command of {len(value)} bytes > {MAX_COMMAND_BYTES}")
    try:
        obj: Any = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadInput("DecodeError", f"command is not UTF-8 JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise BadInput("InvalidCommand", f"command must be a JSON object, not {type(obj).__name__}")
    command = obj.get("command", "recompress")
    if command != "recompress":
        raise BadInput("InvalidCommand", f"unknown command {str(command)[:40]!r}")
    model = obj.get("model", "fraud")
    if model not in MODELS:
        raise BadInput("InvalidCommand", f"unknown model {str(model)[:40]!r}: expected {MODELS}")
    return Command(model=model, command=command)


def _id(rec: dict, key: str) -> str:
    v = rec.get(key)
    if not isinstance(v, str) or not v or len(v) > MAX_ID_CHARS:
        raise BadInput("InvalidField", f"{key} must be 1..{MAX_ID_CHARS} characters")
    return v


def _finite(rec: dict, key: str, lo: float, hi: float) -> float:
    try:
        v = float(rec[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput("InvalidField", f"{key} is not a number") from exc
    if not math.isfinite(v) or not lo <= v <= hi:
        raise BadInput("OutOfRange", f"{key} {v!r} outside [{lo}, {hi}]")
    return v


def check_label(
    label: dict,
    newest_ms: int | None,
    *,
    max_amount: float = 1_000_000.0,
    max_future_ms: int = DAY_MS,
    max_skew_ms: int = 40 * DAY_MS,
    now_ms: int | None = None,
) -> dict:
    """``label`` if it is within the bounds in the module docstring; ``newest_ms`` is the
    newest ``tx_time`` already buffered (None when empty)."""
    for key in ("transaction_id", "customer_id", "terminal_id"):
        _id(label, key)
    _finite(label, "amount", 0.0, max_amount)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    t = int(_finite(label, "tx_time", MIN_TIME_MS, now + max_future_ms))
    if newest_ms is not None and t > newest_ms + max_skew_ms:
        raise BadInput(
            "OutOfRange",
            f"tx_time {t} is {(t - newest_ms) / DAY_MS:.0f} days ahead of the newest label",
        )
    return label


def check_flag(flag: dict) -> dict:
    """``flag`` if its ids, version and score are sane."""
    for key in ("transaction_id", "model_version"):
        _id(flag, key)
    _finite(flag, "score", 0.0, 1.0)
    return flag


def check_tick(tick: dict, last_sequence: int | None, *, max_sequence_gap: int = 1_000_000) -> dict:
    """``tick`` if it is a usable book; ``last_sequence`` is its instrument's last one."""
    _id(tick, "instrument")
    seq = tick.get("sequence")
    if not isinstance(seq, int) or seq < 0:
        raise BadInput("InvalidField", "sequence must be a non-negative integer")
    if last_sequence is not None and seq > last_sequence + max_sequence_gap:
        raise BadInput(
            "OutOfRange", f"sequence {seq} jumps > {max_sequence_gap} past {last_sequence}"
        )
    for side in ("bids", "asks"):
        levels = tick.get(side)
        if not isinstance(levels, list) or not levels:
            raise BadInput("InvalidField", f"{side} must hold at least one level")
        for lv in levels:
            _finite(lv, "price", 1e-12, 1e12)
            _finite(lv, "size", 0.0, 1e15)
    return tick


def check_signal(signal: dict) -> dict:
    """``signal`` if its instrument and version are sane."""
    _id(signal, "instrument")
    _id(signal, "model_version")
    if not isinstance(signal.get("sequence"), int):
        raise BadInput("InvalidField", "sequence must be an integer")
    return signal
