"""Building blocks: standardisation baked into the graph, MLPs, weight-shared layers, training.

Everything a :class:`~finscore.compression.steps.CompressionStep` manipulates is a plain
``nn.Module``; :class:`MLP` is a ``Standardize`` followed by ``Linear``/activation pairs, so
structured pruning can rebuild it smaller and weight sharing can swap its layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


class Standardize(nn.Module):
    """(x − mean) / std with the training statistics as buffers: the graph's first op."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.maximum(std, 1e-6), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SharedLinear(nn.Module):
    """A Linear layer whose weights are ``codebook[index]`` (Deep Compression weight sharing).

    ``index`` is a uint8 buffer (one byte per weight in the ONNX file instead of four);
    gradients flow to the codebook entries, i.e. each centroid is updated with the sum of the
    gradients of its weights. Centroid 0 is pinned to 0.0 so pruned weights stay pruned.
    """

    index: torch.Tensor
    pin: torch.Tensor

    def __init__(self, codebook: torch.Tensor, index: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.codebook = nn.Parameter(codebook.clone().float())
        self.register_buffer("index", index.to(torch.uint8))
        self.register_buffer("pin", (torch.arange(len(codebook)) != 0).float())
        self.bias = nn.Parameter(bias.clone().float())

    @property
    def weight(self) -> torch.Tensor:
        # Training: the pin keeps centroid 0 at exactly 0 (its gradient is 0). In eval/export
        # the codebook is used as it is (entry 0 never moved), so the graph is just
        # Cast + Gather of the uint8 index.
        codebook = self.codebook * self.pin if self.training else self.codebook
        return codebook[self.index.long()]

    @property
    def out_features(self) -> int:
        return int(self.index.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.index.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class MLP(nn.Module):
    """Standardize → [Linear → ReLU (→ Dropout)]* → Linear(→ 1 logit or k logits)."""

    body: nn.Sequential

    def __init__(
        self,
        n_in: int,
        hidden: list[int],
        n_out: int = 1,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.scale = Standardize(
            mean if mean is not None else np.zeros(n_in), std if std is not None else np.ones(n_in)
        )
        layers: list[nn.Module] = []
        prev = n_in
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            prev = h
        layers.append(nn.Linear(prev, n_out))
        self.body = nn.Sequential(*layers)
        self.n_out = n_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(self.scale(x))
        return out.squeeze(-1) if self.n_out == 1 else out

    def linears(self) -> list[nn.Linear | SharedLinear]:
        return [m for m in self.body if isinstance(m, nn.Linear | SharedLinear)]

    @property
    def hidden(self) -> list[int]:
        return [m.out_features for m in self.linears()[:-1]]


def window_summary(x: torch.Tensor, spans: Sequence[int]) -> torch.Tensor:
    """[N, T, W] → [N, (1 + len(spans))·W]: the window's last row, then for every span ``s``
    the mean of its last ``s`` rows (``s = 0``, or ``s >= T``: the whole window). Spans
    ``(10, 0)`` give the market students' summary (last row, mean of the last 10, mean of the
    window)."""
    parts = [x[:, -1]] + [(x if s <= 0 else x[:, -int(s) :]).mean(1) for s in spans]
    return torch.cat(parts, dim=1)


class SummaryMLP(MLP):
    """An :class:`MLP` over :func:`window_summary` of a window ``[N, T, W]`` with searchable
    ``spans`` (e.g. the architecture search's market students).

    ``transform`` (a function ``[N, T, W] → [N, T, W]``, e.g. the market's
    ``relative_path``) runs before the summary; ``mean``/``std`` standardise the summary
    (``(1 + len(spans))·row_width`` values). With ``spans=(10, 0)`` and the market's
    ``relative_path`` it computes what the market family's ``WindowMLP`` computes; an MLP
    subclass, so structured pruning, weight sharing and QAT apply."""

    def __init__(
        self,
        row_width: int,
        hidden: list[int],
        n_out: int,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        spans: Sequence[int] = (10, 0),
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__((1 + len(spans)) * row_width, hidden, n_out, mean, std, dropout)
        self.spans = tuple(int(s) for s in spans)
        self.transform = transform

    def summary(self, x: torch.Tensor) -> torch.Tensor:
        """What the MLP reads: :func:`window_summary` of ``transform(x)``."""
        return window_summary(self.transform(x) if self.transform is not None else x, self.spans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.summary(x))


def count_params(model: nn.Module) -> int:
    """Non-zero trainable-equivalent parameters (weight-shared layers count their weights)."""
    n = 0
    for m in model.modules():
        if isinstance(m, SharedLinear):
            n += int((m.weight != 0).sum()) + m.bias.numel()
        elif isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.LSTM | nn.GRU):
            n += sum(int((p != 0).sum()) for p in m.parameters(recurse=False))
    return n


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def fit(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    loss: LossFn,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    targets: np.ndarray | None = None,
    weight_decay: float = 0.0,
    after_step: Callable[[], None] | None = None,
    schedule: str = "constant",
) -> nn.Module:
    """Minibatch Adam. ``loss(logits, y, targets)`` (``targets``: e.g. teacher soft labels).

    ``schedule``: ``"constant"`` learning rate, or ``"cosine"`` (decays to 0 over all steps;
    on the handbook data it makes single models less sensitive to where training stops).
    """
    seed_everything(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y)
    tt = torch.as_tensor(targets, dtype=torch.float32) if targets is not None else None
    opt = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay
    )
    g = torch.Generator().manual_seed(seed)
    total, step = max(1, epochs * ((len(xt) + batch_size - 1) // batch_size)), 0
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), batch_size):
            if schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            step += 1
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            out = model(xt[idx])
            value = loss(out, yt[idx], tt[idx] if tt is not None else None)
            value.backward()
            opt.step()
            if after_step is not None:
                after_step()
    model.eval()
    return model


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Raw outputs (logits) in eval mode, as numpy."""
    model.eval()
    outs = [
        model(torch.as_tensor(x[i : i + batch_size], dtype=torch.float32))
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(outs).numpy() if outs else np.zeros((0,))


class Ensemble(nn.Module):
    """A teacher made of several independently seeded members; its logit is their mean."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)
