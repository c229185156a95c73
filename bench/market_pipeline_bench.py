"""Pure market pipeline throughput (no broker): ticks/s of ``MarketPipeline.process``.

    FINSCORE_REGISTRY_DIR=var/registry .venv/bin/python bench/market_pipeline_bench.py \\
        [--ticks 50000] [--batch 5000] [--repeat 3] [--baseline REV]

Simulated ticks (three instruments) are encoded once as single-object Avro messages; each run
feeds them in batches of ``--batch`` to a fresh pipeline with the registry's market champion
(changelog snapshots on, as in the worker) and reports the best of ``--repeat`` runs.
``--baseline REV`` also runs the market pipeline of git revision ``REV`` (with that revision's own
code, whatever its layout: ``bench/revision.py``) on the same messages in the same process, side
by side, and checks that both emit the same signals.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import types
from pathlib import Path

import numpy as np

from finscore.models.registry import Registry
from finscore.schemas.codec import Codec
from finscore.settings import Settings
from finscore.sim.market import MarketSimConfig, MarketSimulator
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.scoring import Scorer
from finscore.streams.transport import Message

sys.path.insert(0, str(Path(__file__).resolve().parent))
from revision import import_from  # noqa: E402  (bench/ is a folder of scripts)

# Where the pipeline and the windows live: their own modules now, before the redesign (2151666)
# streams/market.py and finscore/features/market.py.
PIPELINE_MODULES = ("finscore.streams.market.pipeline", "finscore.streams.market")
WINDOWS_MODULES = ("finscore.features.market_windows", "finscore.features.market")


def messages(n: int) -> list[Message]:
    codec = Codec("market_tick")
    ticks = itertools.islice(MarketSimulator(MarketSimConfig(seed=3)).ticks(), n)
    parts: dict[str, int] = {}
    out = []
    for off, rec in enumerate(ticks):
        p = parts.setdefault(rec["instrument"], len(parts))
        out.append(Message("market-ticks", p, off, rec["instrument"].encode(), codec.encode(rec)))
    return out


def load_revision(rev: str) -> types.ModuleType:
    """The market pipeline of git revision ``rev`` with that revision's own code (features,
    columns, codecs), whatever its layout (see ``bench/revision.py``)."""
    pipeline = import_from(rev, PIPELINE_MODULES, "MarketPipeline")
    windows = import_from(rev, WINDOWS_MODULES, "MarketWindows")
    mod = types.ModuleType(f"market_pipeline_{rev}")
    mod.__dict__.update(pipeline.__dict__)
    mod.MarketWindows = windows.MarketWindows  # type: ignore[attr-defined]
    return mod


def run(module: types.ModuleType, msgs: list[Message], scorer: Scorer, batch: int) -> tuple:
    window = int((scorer.manifest.params or {}).get("window", 100))
    pipe = module.MarketPipeline(
        module.MarketWindows(window=window),
        ModelSlot(scorer),
        "price-signals",
        changelog_topic="windows-changelog",
        clock=lambda: 1.9e9,
    )
    outputs = []
    t0 = time.perf_counter()
    for i in range(0, len(msgs), batch):
        outputs += pipe.process(msgs[i : i + batch]).outputs
    return time.perf_counter() - t0, outputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", help="git revision to run side by side")
    args = ap.parse_args()
    artifact = Registry(Settings().registry_dir).champion("market")
    if artifact is None:
        sys.exit("no market champion: run `finscore compress market --promote` first")
    scorer = Scorer(artifact)
    msgs = messages(args.ticks)
    import finscore.streams.market.pipeline as current

    contenders = {"this working tree": current}
    if args.baseline:
        contenders = {f"baseline {args.baseline}": load_revision(args.baseline), **contenders}
    best: dict[str, float] = {}
    outs: dict[str, list] = {}
    for _ in range(args.repeat):  # interleaved, so both see the same machine load
        for name, mod in contenders.items():
            seconds, outs[name] = run(mod, msgs, scorer, args.batch)
            best[name] = min(best.get(name, float("inf")), seconds)
    window = (scorer.manifest.params or {}).get("window")
    print(
        f"model {artifact.manifest.version} (window {window}), {len(msgs)} ticks, batch {args.batch}"
    )
    for name, seconds in best.items():
        print(f"{name:<24} {len(msgs) / seconds:>10,.0f} ticks/s  ({len(outs[name])} signals)")
    if len(outs) == 2:
        compare(*outs.values())


def compare(a: list, b: list) -> None:
    """Say whether two runs emitted the same signals. Probabilities may differ in the last bits:
    ONNX Runtime's results depend on the batch a window is scored in (int8 models quantise
    activations per batch), and the contenders batch differently."""
    codec = Codec("price_signal")
    print("identical outputs (topic, key, bytes):",
          [(x.topic, x.key, x.value) for x in a] == [(y.topic, y.key, y.value) for y in b])  # fmt: skip
    if len(a) != len(b) or [(x.topic, x.key) for x in a] != [(y.topic, y.key) for y in b]:
        print("different topics/keys/counts")
        return
    da, db = [codec.decode(x.value) for x in a], [codec.decode(y.value) for y in b]
    probs = ("prob_down", "prob_flat", "prob_up", "signal")
    rest = all(
        {k: v for k, v in x.items() if k not in probs} == {k: v for k, v in y.items() if k not in probs}
        for x, y in zip(da, db, strict=True)
    )  # fmt: skip
    pa = np.array([[x[k] for k in probs[:3]] for x in da])
    pb = np.array([[y[k] for k in probs[:3]] for y in db])
    agree = np.mean([x["signal"] == y["signal"] for x, y in zip(da, db, strict=True)])
    print(f"same fields but probabilities: {rest}; max |dprob| {np.abs(pa - pb).max():.2e}; "
          f"same direction {agree:.4%}")  # fmt: skip


if __name__ == "__main__":
    main()
