"""A plain MLP baseline on the fraud handbook's protocol, and what the extra features add.

Protocol (the handbook's): features from :func:`finscore.features.fraud.featurize_frame` over
the history (windows warm), train 2018-07-25 → 07-31, one-week label delay, test 2018-08-08 →
08-14 without the cards already known as compromised (58,264 rows, 385 frauds); the week
before training (07-18 → 07-24) picks the epoch. Standardisation from the training week.

For each feature set (the handbook's 15, and all of ``FRAUD_FEATURE_NAMES``) and each seed it
trains a feed-forward net (torch, 1 thread) and prints AUC ROC / AP / Card Precision@100 on the
test week next to the handbook's published numbers::

    .venv/bin/python bench/fraud_baseline.py [--seeds 3] [--epochs 20] [--json-out F]

``--folds 4`` averages over the handbook's own test estimator instead of the one test week:
the four prequential folds of its model-selection chapter (the protocol's split, then the same
split moved 1, 2 and 3 weeks later), which is what its published table reports.
``--sets handbook,all`` runs only those feature sets; ``without:NAME`` is every feature but
``NAME`` (an ablation).
"""

from __future__ import annotations

import json
import time

import click
import numpy as np
import torch
from torch import nn

from finscore.compression.fraud import FraudSplits, split_frame
from finscore.features.fraud import FRAUD_FEATURE_NAMES, HANDBOOK_FEATURES
from finscore.models.evaluation import average_precision, card_precision_at_k, roc_auc
from finscore.sim.handbook import load_handbook_frame

HANDBOOK = {  # test-week results published by the handbook (AUC ROC, AP, CP@100)
    "logistic regression": (0.868, 0.623, 0.297),
    "XGBoost": (0.869, 0.687, 0.303),
    "feed-forward NN": (0.876, 0.675, 0.303),
}


def train_mlp(
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    hidden: int,
    epochs: int,
    seed: int,
) -> nn.Module:
    """Adam + BCE, batch 64, dropout 0.2; keeps the epoch with the best validation AP."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = nn.Sequential(
        nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, 1)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    xv = torch.from_numpy(x_val)
    best_ap, best_state = -1.0, None
    for _ in range(epochs):
        model.train()
        for idx in np.array_split(rng.permutation(len(x)), max(len(x) // 64, 1)):
            i = torch.from_numpy(idx)
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(model(xt[i])[:, 0], yt[i])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            ap = average_precision(y_val, model(xv)[:, 0].numpy())
        if ap > best_ap:
            best_ap = ap
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
    assert best_state is not None
    model.load_state_dict(best_state)
    return model.eval()


@click.command()
@click.option("--seeds", default=3, show_default=True)
@click.option("--epochs", default=20, show_default=True)
@click.option("--hidden", default=500, show_default=True, help="hidden units (one layer)")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None)
@click.option("--folds", default=1, show_default=True,
              help="Prequential test folds (the handbook's table: 4).")  # fmt: skip
@click.option("--sets", default="", help="Comma-separated feature sets (handbook, all, "
              "an extra feature's name, or without:NAME for all but one); default: every set "
              "except the without: ones.")  # fmt: skip
def main(seeds: int, epochs: int, hidden: int, json_out: str | None, folds: int, sets: str) -> None:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    frame = load_handbook_frame()
    fold_data = [split_frame(frame, FraudSplits().shifted(7 * k), cache=True) for k in range(folds)]
    for k, data in enumerate(fold_data):
        print(
            f"fold {k}: features ready in {time.perf_counter() - t0:.1f} s: train "
            f"{len(data.y_train):,} ({int(data.y_train.sum())} frauds), test "
            f"{len(data.y_test):,} ({int(data.y_test.sum())} frauds)"
        )
    feature_sets = {
        "handbook": list(HANDBOOK_FEATURES),
        "all": list(FRAUD_FEATURE_NAMES),
        **{n: [*HANDBOOK_FEATURES, n] for n in FRAUD_FEATURE_NAMES[len(HANDBOOK_FEATURES) :]},
    }
    wanted = [s.strip() for s in sets.split(",") if s.strip()]
    for w in wanted:  # an ablation: every feature but one
        if w.startswith("without:"):
            if w[8:] not in FRAUD_FEATURE_NAMES:
                raise click.BadParameter(f"unknown feature {w[8:]!r}", param_hint="--sets")
            feature_sets[w] = [n for n in FRAUD_FEATURE_NAMES if n != w[8:]]
    if wanted:
        feature_sets = {k: feature_sets[k] for k in wanted}
    results = []
    for key, names in feature_sets.items():
        label = (
            f"{key} ({len(names)})"
            if key in ("handbook", "all") or key.startswith("without:")
            else f"handbook + {key}"
        )
        cols = [FRAUD_FEATURE_NAMES.index(n) for n in names]
        runs = []
        for data in fold_data:
            runs += _runs(data, cols, seeds, hidden, epochs)
        mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        std = {k: float(np.std([r[k] for r in runs])) for k in ("auc", "ap", "cp100")}
        results.append({"features": label, "mean": mean, "std": std, "runs": runs})
        print(
            f"{label:48s} AUC {mean['auc']:.3f}  AP {mean['ap']:.3f} ± {std['ap']:.3f}  "
            f"CP@100 {mean['cp100']:.3f} ± {std['cp100']:.3f}  ({mean['train_s']:.0f} s/run)",
            flush=True,
        )
    for model_name, (auc, ap, cp) in HANDBOOK.items():
        print(f"{'handbook ' + model_name:48s} AUC {auc:.3f}  AP {ap:.3f}          CP@100 {cp:.3f}")
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"seeds": seeds, "epochs": epochs, "hidden": hidden, "folds": folds,
                       "results": results}, f, indent=2)  # fmt: skip


def _runs(data, cols: list[int], seeds: int, hidden: int, epochs: int) -> list[dict]:  # noqa: ANN001
    """Train ``seeds`` MLPs on one split's columns ``cols``; their test-week metrics."""
    mu = data.x_train[:, cols].mean(0)
    sd = data.x_train[:, cols].std(0) + 1e-6

    def prep(a: np.ndarray) -> np.ndarray:
        return ((a[:, cols] - mu) / sd).astype(np.float32)

    runs = []
    for seed in range(seeds):
        t1 = time.perf_counter()
        model = train_mlp(
            prep(data.x_train), data.y_train, prep(data.x_val), data.y_val,
            hidden=hidden, epochs=epochs, seed=seed,
        )  # fmt: skip
        with torch.no_grad():
            score = torch.sigmoid(model(torch.from_numpy(prep(data.x_test)))[:, 0]).numpy()
        runs.append(
            {
                "auc": roc_auc(data.y_test, score),
                "ap": average_precision(data.y_test, score),
                "cp100": card_precision_at_k(
                    data.meta["test_day"], data.meta["test_customer"], data.y_test, score, 100
                ),
                "train_s": time.perf_counter() - t1,
            }
        )
    return runs


if __name__ == "__main__":
    main()
