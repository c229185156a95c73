"""The market family, declared (issue 18): ``market.toml`` names the input, the smoothed-move
label at horizon k, the three classes and a ``sequence`` feature (the instrument's last
``events`` rows of a row ``layout``); the declaration compiles into the coded state
(:class:`MarketWindows`), whose windows equal the coded ones bit for bit, on simulated ticks
and on LOBSTER when the data is there; a declaration the window model cannot serve (an unknown
layout, a window it does not take, a label or output it does not give) is refused with a
sentence naming the entry."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import numpy as np
import pytest

from finscore.families import FamilySpec, FamilySpecError, builtin_family, load_family
from finscore.families.spec import SequenceFeature, family_file
from finscore.features.market import (
    BOOK_LAYOUT,
    LAYOUTS,
    MAX_WINDOW,
    MIN_WINDOW,
    PATH_LAYOUT,
    book_array,
    make_windows,
    rows_from_book_array,
)
from finscore.features.market_windows import MarketWindows, declared_windows
from finscore.sim.data import data_dir
from finscore.sim.market import MarketSimConfig, MarketSimulator

PACKAGE = Path(__file__).resolve().parents[2] / "finscore" / "families"


@pytest.fixture()
def tables() -> dict:
    """The market declaration's tables (a fresh copy to spoil)."""
    return copy.deepcopy(builtin_family("market").to_dict())


def sim_ticks(n: int, seed: int = 4) -> list[dict]:
    cfg = MarketSimConfig(seed=seed, instruments=("SIMA", "SIMB", "SIMC"))
    return list(itertools.islice(MarketSimulator(cfg).ticks(), n))


def with_sequence(tables: dict, **kw: object) -> dict:
    tables["features"][0].update(kw)
    return tables


# -- the declaration ----------------------------------------------------------------------------
def test_the_market_declaration_is_what_the_market_worker_reads_and_writes() -> None:
    spec = builtin_family("market")
    assert spec == load_family(PACKAGE / "market.toml") == load_family(family_file("market"))
    inp = spec.input
    assert (inp.topic, inp.schema.ref, inp.id, inp.key, inp.time) == (
        "market-ticks", "market_tick", "sequence", "instrument", "event_time"
    )  # fmt: skip
    assert spec.move is not None and (spec.move.kind, spec.move.horizon) == ("smoothed_move", 10)
    assert not spec.has_label and spec.label_fields == ()  # no label topic
    out = spec.output
    assert (out.topic, out.kind, out.schema) == ("price-signals", "classes", "price_signal")
    assert out.classes == ("DOWN", "FLAT", "UP")  # the price_signal Direction enum
    (book,) = spec.features
    assert isinstance(book, SequenceFeature)
    assert (book.key, book.events, book.layout, book.width) == ("instrument", 100, BOOK_LAYOUT, 40)
    assert spec.sequence == book and spec.feature_names == ("BOOK",)
    assert spec.input_fields == ("sequence", "event_time", "instrument", "bids", "asks")


def test_the_market_declaration_round_trips(tmp_path: Path) -> None:
    spec = builtin_family("market")
    assert FamilySpec.from_dict(spec.to_dict()) == spec
    path = tmp_path / "again.toml"
    path.write_text(spec.to_toml())
    assert load_family(path) == spec and load_family(path).to_toml() == spec.to_toml()


def test_a_tabular_family_has_no_sequence() -> None:
    assert builtin_family("fraud_handbook").sequence is None


# -- the windows: the coded state, bit for bit ---------------------------------------------------
def _push_all(
    windows: MarketWindows, records: list[dict], batch: int
) -> tuple[np.ndarray, list[str]]:
    """Every window the batches complete (in input order) and the instrument of each."""
    out, names = [], []
    for lo in range(0, len(records), batch):
        part = records[lo : lo + batch]
        rows = rows_from_book_array(book_array(part), windows.layout)
        seqs = np.array([r["sequence"] for r in part], dtype=np.int64)
        ready = windows.push_rows([r["instrument"] for r in part], seqs, rows)
        order = np.argsort(ready.index, kind="stable")
        out.append(ready.array()[order])
        names += [part[i]["instrument"] for i in ready.index[order].tolist()]
    return np.concatenate(out), names


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_declared_windows_are_the_coded_windows_bit_for_bit(tables: dict, layout: str) -> None:
    spec = FamilySpec.from_dict(with_sequence(tables, events=30, layout=layout))
    declared = declared_windows(spec)
    coded = MarketWindows(window=30, layout=layout)
    assert type(declared) is MarketWindows  # the coded state: no new hot path
    assert (declared.window, declared.layout, declared.width) == (30, layout, LAYOUTS[layout])
    records = sim_ticks(700)
    (got, names), (want, coded_names) = (
        _push_all(declared, records, 61),
        _push_all(coded, records, 61),
    )
    assert names == coded_names and len(got) > 0
    assert got.dtype == want.dtype == np.float32 and got.tobytes() == want.tobytes()
    for inst in ("SIMA", "SIMB", "SIMC"):
        assert declared.snapshot(inst) == coded.snapshot(inst)
        mine = [r for r in records if r["instrument"] == inst]
        offline, _ = make_windows(rows_from_book_array(book_array(mine), layout),
                                  np.zeros(len(mine), np.int8), window=30)  # fmt: skip
        assert got[[n == inst for n in names]].tobytes() == offline.tobytes()


def test_the_built_in_declaration_gives_the_worker_s_default_windows() -> None:
    windows = declared_windows(builtin_family("market"))
    assert (windows.window, windows.layout) == (100, BOOK_LAYOUT)


LOBSTER = data_dir() / "lobster_sample_2012-06-21"


@pytest.mark.skipif(not LOBSTER.exists(), reason="LOBSTER absent (FINSCORE_DATA_DIR)")
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_declared_windows_on_lobster_are_the_coded_ones(tables: dict, layout: str) -> None:
    """GOOG's first 3,000 events: the declared windows equal the coded state's and the offline
    windows (``make_windows``) bit for bit."""
    from finscore.sim.lobster import load_lobster

    book = load_lobster("GOOG", 10).book[:3000]
    rows = rows_from_book_array(book, layout)
    spec = FamilySpec.from_dict(with_sequence(tables, layout=layout))
    declared, coded = declared_windows(spec), MarketWindows(100, layout)
    seqs = np.arange(len(book), dtype=np.int64)
    got, want = [], []
    for lo in range(0, len(book), 500):
        for windows, out in ((declared, got), (coded, want)):
            ready = windows.push_rows(["GOOG"] * len(seqs[lo : lo + 500]), seqs[lo : lo + 500],
                                      rows[lo : lo + 500])  # fmt: skip
            out.append(ready.array())
    offline, _ = make_windows(rows, np.zeros(len(rows), np.int8), window=100)
    assert np.concatenate(got).tobytes() == np.concatenate(want).tobytes() == offline.tobytes()


# -- refused -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"layout": "book40+vol"}, "unknown layout 'book40\\+vol'.*book40, book40\\+mid"),
        ({"layout": 40}, "unknown layout 40"),
        (
            {"events": MIN_WINDOW - 1},
            f"events: the window model takes {MIN_WINDOW} to "
            f"{MAX_WINDOW} events, not {MIN_WINDOW - 1}",
        ),
        ({"events": MAX_WINDOW + 1}, f"takes {MIN_WINDOW} to {MAX_WINDOW} events"),
        ({"events": 50.5}, "events: a whole number of events is needed, not 50.5"),
        ({"events": True}, "a whole number of events"),
        (
            {"key": "sequence"},
            "key: a sequence is kept per partition key: 'sequence' is not "
            "\\[input\\] key 'instrument'",
        ),
        ({"key": "nothing"}, "no field 'nothing'"),
    ],
)
def test_a_sequence_the_model_cannot_take_is_refused(tables: dict, change: dict,
                                                     message: str) -> None:  # fmt: skip
    with pytest.raises(FamilySpecError, match=r"features\[0\] 'BOOK'.*" + message):
        FamilySpec.from_dict(with_sequence(tables, **change))


def test_a_refusal_names_the_file(tmp_path: Path, tables: dict) -> None:
    path = tmp_path / "m.toml"
    spec = FamilySpec.from_dict(tables)
    path.write_text(spec.to_toml().replace("events = 100", "events = 5"))
    with pytest.raises(FamilySpecError, match=f"{path}: features\\[0\\] 'BOOK' events: the "
                                              "window model takes 10 to"):  # fmt: skip
        load_family(path)


def test_a_sequence_over_another_key_or_an_unordered_id_is_refused(tables: dict) -> None:
    tables["input"]["schema"] = "transaction"
    tables["input"].update(id="transaction_id", key="customer_id", time="event_time")
    tables["features"][0]["key"] = "customer_id"
    with pytest.raises(FamilySpecError, match="reads the book: no field 'bids' in schema"):
        FamilySpec.from_dict(tables)
    t = copy.deepcopy(builtin_family("market").to_dict())
    t["input"]["id"] = "instrument"
    with pytest.raises(
        FamilySpecError,
        match=r"\[input\] id: a sequence keeps each key's rows "
        "in the order of the id: 'instrument' is string",
    ):
        FamilySpec.from_dict(t)


def test_a_sequence_is_the_family_s_only_feature(tables: dict) -> None:
    tables["features"].append({"name": "MID", "kind": "raw", "field": "sequence"})
    with pytest.raises(FamilySpecError, match="a sequence feature is the family's only feature"):
        FamilySpec.from_dict(tables)


@pytest.mark.parametrize(
    ("section", "change", "message"),
    [
        ("label", {"horizon": 0}, r"\[label\] horizon: a positive whole number of events"),
        ("label", {"horizon": 2.5}, r"\[label\] horizon: a positive whole number"),
        ("label", {"kind": "big_move"}, r"\[label\] kind: 'big_move' is not one of"),
        ("label", {"topic": "x"}, r"\[label\]: unknown key 'topic' \(known: kind, horizon\)"),
        ("output", {"classes": ["DOWN", "DOWN", "UP"]}, r"\[output\] classes: repeated class"),
        (
            "output",
            {"classes": ["DOWN", "FLAT", "RISE"]},
            r"\[output\] classes: .*enum 'signal' of schema 'price_signal' has DOWN, FLAT, UP",
        ),
        (
            "output",
            {"kind": "probability"},
            r"\[output\] kind: a smoothed_move label gives "
            "classes",
        ),
    ],
)
def test_a_label_or_output_the_window_model_does_not_give_is_refused(
    tables: dict, section: str, change: dict, message: str
) -> None:
    tables[section].update(change)
    if change.get("kind") == "probability":
        del tables["output"]["classes"]
    with pytest.raises(FamilySpecError, match=message):
        FamilySpec.from_dict(tables)


def test_a_smoothed_move_gives_three_classes(tables: dict) -> None:
    del tables["output"]["schema"]
    tables["output"]["classes"] = ["DOWN", "UP"]
    with pytest.raises(
        FamilySpecError,
        match=r"\[output\] classes: a smoothed_move label "
        r"gives 3 classes \(down, flat, up, in this "
        r"order\), not 2",
    ):
        FamilySpec.from_dict(tables)


def test_classes_belong_to_a_classes_output(tables: dict) -> None:
    t = copy.deepcopy(builtin_family("fraud_handbook").to_dict())
    t["output"]["classes"] = ["A", "B"]
    with pytest.raises(FamilySpecError, match=r"\[output\] classes: only for kind = 'classes'"):
        FamilySpec.from_dict(t)
    del tables["output"]["classes"]
    with pytest.raises(FamilySpecError, match=r"\[output\] kind 'classes' needs 'classes'"):
        FamilySpec.from_dict(tables)


def test_a_smoothed_move_needs_a_book_sequence(tables: dict) -> None:
    t = copy.deepcopy(builtin_family("fraud_handbook").to_dict())
    t["label"] = dict(tables["label"])
    with pytest.raises(
        FamilySpecError,
        match=r"\[label\] kind 'smoothed_move' reads the mid "
        "price of a sequence feature's book",
    ):
        FamilySpec.from_dict(t)
    tables["label"] = copy.deepcopy(builtin_family("fraud_handbook").to_dict())["label"]
    with pytest.raises(
        FamilySpecError, match="a sequence feature is labelled by its own later events"
    ):
        FamilySpec.from_dict(tables)


# -- the market path reads the declaration -------------------------------------------------------
def _declaration(tmp_path: Path, events: int = 30, layout: str = PATH_LAYOUT,
                 horizon: int = 5) -> Path:  # fmt: skip
    tables = builtin_family("market").to_dict()
    tables["features"][0].update(events=events, layout=layout)
    tables["label"]["horizon"] = horizon
    path = tmp_path / "market30.toml"
    path.write_text(FamilySpec.from_dict(tables).to_toml())
    return path


def test_compress_takes_window_horizon_and_layout_from_the_declaration(tmp_path: Path) -> None:
    """``declared_market`` (what ``finscore compress market`` builds, on every plan): the
    declaration's window, horizon and layout, ``--layout`` overriding; its training windows
    are the coded family's bit for bit."""
    from finscore.compression.market import MarketFamily, declared_market

    built_in = declared_market(builtin_family("market"))
    assert (built_in.window, built_in.horizon, built_in.layout) == (100, 10, BOOK_LAYOUT)
    spec = load_family(_declaration(tmp_path))
    fam = declared_market(spec)
    assert (fam.window, fam.horizon, fam.layout) == (30, 5, PATH_LAYOUT)
    assert declared_market(spec, layout=BOOK_LAYOUT).layout == BOOK_LAYOUT
    coded = MarketFamily(window=30, horizon=5, layout=PATH_LAYOUT)
    a = fam.load_data("sim", n=2500, seed=6, max_train=300)
    b = coded.load_data("sim", n=2500, seed=6, max_train=300)
    assert a.x_train.shape[1:] == (30, 41) and a.x_train.tobytes() == b.x_train.tobytes()
    assert a.y_test.tobytes() == b.y_test.tobytes()
    assert fam.params(a) == coded.params(b)  # the manifest's window, horizon, alpha, layout
    with pytest.raises(ValueError, match="'fraud_handbook' is not a window model's"):
        declared_market(builtin_family("fraud_handbook"))


def test_the_compress_command_names_the_declaration() -> None:
    from click.testing import CliRunner

    from finscore.app.cli.compress import compress, load

    out = CliRunner().invoke(compress, ["market", "--help"], terminal_width=100).output
    assert "--family" in out and "--layout" in out and "[default: book40]" not in out
    import click

    with pytest.raises(
        click.UsageError, match="fraud_handbook: family 'fraud_handbook' is not a window model's"
    ):
        load("market", "sim", None, 0, True, declaration="fraud_handbook")
    r = CliRunner().invoke(compress, [str(family_file("market")), "--data", __file__])
    assert r.exit_code == 2 and "run `finscore compress market --family" in r.output


def test_a_declared_market_stream_keeps_the_declaration_s_windows(tmp_path: Path) -> None:
    """``finscore worker market --family F``: the windows are the declaration's before any
    model loads, so the worker admits models of that window and layout only."""
    from types import SimpleNamespace

    from finscore.streams.hot_swap import ModelSlot
    from finscore.streams.scoring import InputSpec
    from finscore.streams.worker import Worker, WorkerConfig, build_stream

    cfg = WorkerConfig(stream="market", client={}, topic_prefix="x-",
                       family_path=_declaration(tmp_path))  # fmt: skip
    stream = build_stream(cfg, ModelSlot())
    assert (stream.windows.window, stream.windows.layout) == (30, PATH_LAYOUT)
    assert (stream.input_topic, stream.output_topic) == ("x-market-ticks", "x-price-signals")
    fake = SimpleNamespace(stream=stream, cfg=cfg, _start_window=None)
    assert Worker._input_spec(fake) == InputSpec.market(30, PATH_LAYOUT)  # type: ignore[arg-type]
    plain = build_stream(WorkerConfig(stream="market", client={}), ModelSlot())
    assert getattr(plain, "windows", None) is None  # the first model's, at start
    with pytest.raises(ValueError, match="declares no sequence"):
        build_stream(WorkerConfig(stream="market", client={},
                                  family_path=family_file("fraud_handbook")), ModelSlot())  # fmt: skip


def test_the_worker_command_sends_each_declaration_to_its_worker(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from finscore.app.cli.group import cli

    runner = CliRunner()
    r = runner.invoke(cli, ["worker", "market", "--family", "fraud_handbook"])
    assert r.exit_code == 2 and "declares no sequence feature: not a market family" in r.output
    r = runner.invoke(cli, ["worker", "family", "--family", "market"])
    assert r.exit_code == 2 and "run `finscore worker market --family`" in r.output
    r = runner.invoke(cli, ["worker", "fraud", "--family", "market"])
    assert (
        r.exit_code == 2
        and "--family is for `finscore worker family`, market or cashflow" in r.output
    )


# -- what the market stream computes -------------------------------------------------------------
def _renamed_schema(tmp_path: Path, name: str, record: str) -> str:
    """A copy of built-in schema ``name`` under another record name, as a ``.avsc`` file (the
    same fields: it passes the declaration's checks, but it is not the stream's schema)."""
    import json

    import finscore.schemas

    folder = Path(finscore.schemas.__file__).parent
    schema = json.loads((folder / f"{name}.avsc").read_text())
    schema["name"] = record
    path = tmp_path / f"{record}.avsc"
    path.write_text(json.dumps(schema))
    return str(path)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("schema", "[input] schema: the market stream decodes 'market_tick' ticks"),
        ("id", "[input] id: the market stream orders each instrument's ticks by 'sequence', "
               "not 'event_time'"),
        ("key", "[input] key: the market stream keeps a window per 'instrument', not "
                "'sequence'"),
        ("time", "[input] time: the market stream reads a tick's 'event_time', not "
                 "'sequence'"),
        ("output", "[output] schema: the market stream writes 'price_signal' signals"),
    ],
)  # fmt: skip
def test_the_market_stream_refuses_a_sequence_it_cannot_compute(
    tmp_path: Path, tables: dict, entry: str, message: str
) -> None:
    """A declaration ``_check_sequence`` accepts but the market stream cannot compute (it
    decodes ``market_tick`` ticks by instrument and sequence and writes ``price_signal``s) is
    refused before the worker starts, in one sentence naming the entry."""
    from finscore.streams.hot_swap import ModelSlot
    from finscore.streams.market.pipeline import declared_sequence
    from finscore.streams.worker import WorkerConfig, build_stream

    inp = tables["input"]
    if entry == "schema":
        inp["schema"] = _renamed_schema(tmp_path, "market_tick", "MyTick")
    elif entry == "id":
        inp["id"] = "event_time"
    elif entry == "key":
        inp["key"] = tables["features"][0]["key"] = "sequence"
    elif entry == "time":
        inp["time"] = "sequence"
    else:
        tables["output"]["schema"] = _renamed_schema(tmp_path, "price_signal", "MySignal")
    spec = FamilySpec.from_dict(tables)  # a valid declaration
    with pytest.raises(FamilySpecError) as err:
        declared_sequence(spec)
    assert message in str(err.value) and f"family {spec.name!r}" in str(err.value)
    path = tmp_path / "market.toml"
    path.write_text(spec.to_toml())
    with pytest.raises(FamilySpecError, match=message.replace("[", "\\[").replace("]", "\\]")):
        build_stream(WorkerConfig(stream="market", client={}, family_path=path), ModelSlot())
    assert declared_sequence(builtin_family("market")) == builtin_family("market").sequence
    from click.testing import CliRunner

    from finscore.app.cli.group import cli

    r = CliRunner().invoke(cli, ["worker", "market", "--family", str(path)])
    assert r.exit_code == 2 and message in " ".join(r.output.split())


def test_the_documented_market_commands_work_together() -> None:
    """docs/FAMILIES.md's pair, ``finscore compress market`` (its default plan, quick) then
    ``finscore worker market --family market``: the model compress builds reads the windows
    the declared worker provides, so the worker admits it (the window and layout checks of
    :func:`~finscore.streams.scoring.admit`, on a stub scorer with the model's params)."""
    from types import SimpleNamespace

    from click.testing import CliRunner

    from finscore.app.cli.compress import compress, load
    from finscore.app.cli.context import family_files
    from finscore.streams.hot_swap import ModelSlot
    from finscore.streams.scoring import admit
    from finscore.streams.worker import Worker, WorkerConfig, build_stream

    out = CliRunner().invoke(compress, ["market", "--help"], terminal_width=100).output
    assert "--plan [" in out and "[default: quick]" in out and "[default: market]" in out
    fam, data = load("market", "sim", None, 0, True)  # the defaults: the quick plan
    params = fam.params(data)
    path = family_files(None, None, "market")  # type: ignore[arg-type]  # as --family reads it
    cfg = WorkerConfig(stream="market", client={}, family_path=path)
    stream = build_stream(cfg, ModelSlot())
    fake = SimpleNamespace(stream=stream, cfg=cfg, _start_window=None)
    spec = Worker._input_spec(fake)  # type: ignore[arg-type]
    manifest = SimpleNamespace(name="market", version="1", family="market", params=params,
                               reference_inputs=[[0.0]], reference_outputs=[[0.0]])  # fmt: skip
    shapes: list[tuple[int, ...]] = []

    def score_batch(x: np.ndarray) -> np.ndarray:
        shapes.append(x.shape)
        return np.zeros((len(x), 3), dtype=np.float32)

    scorer = SimpleNamespace(manifest=manifest, score_batch=score_batch, smoke_test=lambda: None)
    admit(scorer, spec)  # type: ignore[arg-type]
    assert shapes == [(2, 100, 40)] and params["window"] == 100
