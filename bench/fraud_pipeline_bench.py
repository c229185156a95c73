"""Pure fraud pipeline throughput (no broker): transactions/s of ``FraudPipeline.process``.

    FINSCORE_REGISTRY_DIR=var/registry .venv/bin/python bench/fraud_pipeline_bench.py \\
        [--transactions 100000] [--batch 5000] [--repeat 3] [--baseline REV] \\
        [--engines declared,hand]

Simulated transactions (5,000 customers, 10,000 terminals) and their delayed labels are encoded
once as single-object Avro messages. Each run warms a fresh pipeline (the registry's fraud
champion; changelog on) on the first half, labels applied as they become known, then times the
second half in batches of ``--batch`` — decode, validate, features, ONNX, encode and the
changelog flush a commit makes — and reports the best of ``--repeat`` runs.
``--baseline REV`` also runs the fraud pipeline of git revision ``REV`` (with that revision's own
code, whatever its layout: ``bench/revision.py``) on the same messages in the same process, side
by side, and checks that both score the same transactions alike. ``--engines`` names the feature
engines of this working tree to run: ``declared`` (the declaration ``fraud_declared.toml``, what
the fraud worker runs under ``all_outcomes`` in one stage: ``finscore/families/fraud.py``;
the default) and ``hand`` (the hand-coded ``FraudFeatures``, which the ``fraud_reports`` contract
and the two stages run); both: interleaved side by side, compared like a baseline.
"""

from __future__ import annotations

import argparse
import sys
import time
import types
import zlib
from pathlib import Path

import numpy as np

from finscore.app.console.produce import transaction_events
from finscore.models.registry import Registry
from finscore.schemas.codec import Codec
from finscore.settings import Settings
from finscore.streams.hot_swap import ModelSlot
from finscore.streams.scoring import Scorer
from finscore.streams.transport import Message

sys.path.insert(0, str(Path(__file__).resolve().parent))
from revision import import_from  # noqa: E402  (bench/ is a folder of scripts)

# Where the fraud pipeline lives: its own folder now, one module before the redesign (2151666).
PIPELINE_MODULES = ("finscore.streams.fraud.pipeline", "finscore.streams.fraud")


def messages(n: int) -> tuple[list[Message], list[Message], list[int]]:
    """(transactions, labels, number of labels known before each transaction index)."""
    tx_codec, lab_codec = Codec("transaction"), Codec("fraud_label")
    txs: list[Message] = []
    labels: list[Message] = []
    known_before: list[int] = []
    for _, key, schema, rec in transaction_events("", seed=7, days=120):
        if schema == "transaction":
            p = zlib.crc32(key.encode()) % 6
            txs.append(Message("transactions", p, len(txs), key.encode(), tx_codec.encode(rec), 1))
            known_before.append(len(labels))
            if len(txs) >= n:
                break
        else:
            labels.append(Message("fraud-labels", 0, len(labels), key.encode(),
                                  lab_codec.encode(rec), 1))  # fmt: skip
    return txs, labels, known_before


def load_revision(rev: str) -> types.ModuleType:
    """The fraud pipeline of git revision ``rev`` with that revision's own code (features,
    columns, codecs), whatever its layout (see ``bench/revision.py``)."""
    pipeline = import_from(rev, PIPELINE_MODULES, "FraudPipeline")
    features = import_from(rev, ("finscore.features.fraud",), "FraudFeatures")
    mod = types.ModuleType(f"fraud_pipeline_{rev}")
    mod.__dict__.update(pipeline.__dict__)
    mod.FraudFeatures = features.FraudFeatures  # type: ignore[attr-defined]
    return mod


def current(engine: str = "declared") -> types.ModuleType:
    """This working tree's fraud pipeline on feature engine ``engine``: ``"declared"`` or
    ``"hand"`` (see the module docstring)."""
    from finscore.families.fraud import DeclaredFraudFeatures
    from finscore.features.fraud import FraudFeatures
    from finscore.streams.fraud import pipeline

    engines = {"declared": DeclaredFraudFeatures, "hand": FraudFeatures}
    if engine not in engines:
        raise SystemExit(f"--engines: {engine!r} is not one of {', '.join(engines)}")
    mod = types.ModuleType(f"current_fraud_pipeline_{engine}")
    mod.__dict__.update(pipeline.__dict__)
    mod.FraudFeatures = engines[engine]  # type: ignore[attr-defined]
    return mod


def run(mod: types.ModuleType, champion, data, batch: int) -> tuple[float, dict[str, float]]:  # noqa: ANN001
    """(transactions/s on the timed half, transaction id -> score)."""
    txs, labels, known_before = data
    feats = mod.FraudFeatures()
    pipe = mod.FraudPipeline(feats, ModelSlot(Scorer(champion)), "fraud-flags",
                             changelog_topic="state")  # fmt: skip
    lab = mod.LabelsPipeline(feats)
    half = len(txs) // 2
    applied = 0

    def step(a: int, b: int) -> list:
        nonlocal applied
        if known_before[a] > applied:
            lab.process(labels[applied : known_before[a]])
            applied = known_before[a]
        return pipe.process(txs[a:b]).outputs

    for a in range(0, half, batch):
        step(a, min(half, a + batch))
    flush = getattr(pipe, "flush_state", lambda: [])
    flush()
    outputs = []
    t0 = time.perf_counter()
    for a in range(half, len(txs), batch):
        outputs += step(a, min(len(txs), a + batch))
    flush()  # what the worker's commit does (the old pipeline emitted state per batch)
    rate = (len(txs) - half) / (time.perf_counter() - t0)
    flag = Codec("fraud_flag")
    scores = {}
    for r in outputs:
        f = flag.decode(r.value)
        scores[f["transaction_id"]] = f["score"]
    return rate, scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transactions", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", help="git revision to run side by side")
    ap.add_argument(
        "--engines",
        default="declared",
        help="feature engines of this tree: declared, hand or declared,hand",
    )
    args = ap.parse_args()
    champion = Registry(Settings().registry_dir).champion("fraud")
    if champion is None:
        sys.exit("no fraud champion in the registry (finscore compress fraud --promote)")
    data = messages(args.transactions)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    contenders = {f"this working tree ({e})": current(e) for e in engines}
    if args.baseline:
        contenders = {f"revision {args.baseline}": load_revision(args.baseline),
                      **contenders}  # fmt: skip
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    scores: dict[str, dict[str, float]] = {}
    for _ in range(args.repeat):  # interleaved, so drifts in machine load hit both alike
        for name, mod in contenders.items():
            rate, scores[name] = run(mod, champion, data, args.batch)
            rates[name].append(rate)
    print(f"{len(data[0]) // 2:,} timed transactions, batches of {args.batch:,}, best of "
          f"{args.repeat}; model {champion.manifest.name} v{champion.manifest.version}")  # fmt: skip
    for name, rs in rates.items():
        print(f"  {name:34s} {max(rs):>10,.0f} tx/s   (runs: {', '.join(f'{r:,.0f}' for r in rs)})")
    if len(scores) >= 2:
        (first, a), *others = scores.items()
        for name, b in others:
            common = sorted(set(a) & set(b))
            diff = max((abs(a[k] - b[k]) for k in common), default=0.0)
            print(
                f"  {name} vs {first}: same transactions scored: "
                f"{len(common) == len(a) == len(b)}; max score difference {diff:.2e}"
            )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
