"""Coverage-guided byte-level fuzzing of the pure parsers with atheris (libFuzzer).

Run one target (a seed corpus of valid encodings is written to a temporary folder first)::

    .venv/bin/python -m tests.fuzz.atheris_targets TARGET [-atheris_runs=N] [libFuzzer flags]

``TARGET`` is one of :data:`TARGETS`. Each target feeds the fuzzer's bytes to one parser and lets
through only that parser's documented, typed error; anything else is a crash, which libFuzzer
reports with the input (saved as ``crash-*``) and a non-zero exit. ``test_soak.py`` runs every
target for a bounded number of inputs (``slow`` mark).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["finscore"]):
    from finscore.exceptions import FinscoreError
    from finscore.features.fraud import FraudFeatures
    from finscore.features.market_windows import MarketWindows
    from finscore.schemas.codec import Codec
    from finscore.schemas.columnar.codec import ColumnarCodec
    from finscore.schemas.exceptions import DecodeError
    from finscore.streams import hot_swap as announcements

__all__ = ["TARGETS", "main"]

SEP = b"\x00|\x00"  # splits one fuzz input into the values of a batch


def _codec(schema: str) -> Callable[[bytes], None]:
    codec = Codec(schema)

    def target(data: bytes) -> None:
        with contextlib.suppress(DecodeError):
            codec.decode(data)

    return target


def _columnar(schema: str) -> Callable[[bytes], None]:
    columnar, codec = ColumnarCodec(schema), Codec(schema)

    def target(data: bytes) -> None:
        values = data.split(SEP)
        batch = columnar.decode(values)  # never raises
        assert sorted([*batch.ok.tolist(), *batch.rest]) == list(range(len(values)))
        for j, i in enumerate(batch.ok.tolist()):
            assert repr(batch.record(j)) == repr(codec.decode(values[i]))

    return target


def _announcement(data: bytes) -> None:
    with contextlib.suppress(DecodeError, FinscoreError):
        announcements.decode_announcement(data)


def _command(data: bytes) -> None:
    from finscore.app.sidecar.inputs import BadInput, parse_command

    with contextlib.suppress(BadInput):
        parse_command(data)


def _changelog(data: bytes) -> None:
    with contextlib.suppress(FinscoreError):
        FraudFeatures().add_changes([("p0", data)])


def _window(data: bytes) -> None:
    with contextlib.suppress(FinscoreError):
        MarketWindows(5).restore("X", data)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "codec-transaction": _codec("transaction"),
    "codec-label": _codec("fraud_label"),
    "codec-tick": _codec("market_tick"),
    "codec-model-update": _codec("model_update"),
    "columnar-transaction": _columnar("transaction"),
    "columnar-label": _columnar("fraud_label"),
    "columnar-tick": _columnar("market_tick"),
    "announcement": _announcement,
    "command": _command,
    "changelog": _changelog,
    "market-window": _window,
}


def _seeds(target: str) -> list[bytes]:
    """Valid encodings to start from (so mutations reach deep into each parser)."""
    from finscore.schemas import sample
    from tests.fuzz import strategies as S

    schema = {"transaction": "transaction", "label": "fraud_label", "tick": "market_tick",
              "model-update": "model_update"}.get(target.split("-", 1)[-1])  # fmt: skip
    if schema is not None:
        codec = Codec(schema)
        recs = {"transaction": S.sim_transactions()[:5], "fraud_label": S.sim_labels()[:5],
                "market_tick": S.sim_ticks()[:5]}.get(schema) or [sample(schema)]  # fmt: skip
        values = [codec.encode(r, e) for r in recs for e in ("avro", "json")]
        return [*values, SEP.join(values)]
    if target == "announcement":
        from tests.artifacts import artifact

        return [announcements.encode_announcement(artifact("fraud", "3"), "PROMOTE")[1]]
    if target == "command":
        return [b'{"model": "fraud"}', b'{"command": "recompress", "model": "market"}']
    if target == "changelog":
        from tests.fuzz.test_fraud import _changes_of

        return [v for _, v in _changes_of(list(S.sim_transactions(30)))]
    w = MarketWindows(5)
    w.push(list(S.sim_ticks(20)))
    return [w.snapshot(S.sim_ticks()[0]["instrument"])]


def main(argv: list[str]) -> None:
    """``argv``: [program, TARGET, libFuzzer flags...]."""
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: {argv[0]} TARGET [libFuzzer flags]; TARGET in {sorted(TARGETS)}")
    target = argv[1]
    corpus = Path(tempfile.mkdtemp(prefix=f"finscore-fuzz-{target}-"))
    for i, seed in enumerate(_seeds(target)):
        (corpus / f"seed-{i}").write_bytes(seed)
    flags = [a for a in argv[2:] if a.startswith("-")]
    atheris.Setup([argv[0], *flags, str(corpus)], TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
