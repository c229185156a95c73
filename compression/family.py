"""A model family: its data, its teacher and students, its loss, metric and ONNX head.

Steps and plans only talk to this interface, so fraud (tabular, binary) and market (sequence,
3 classes) share every compression step, the export, the gate and the report.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn


@dataclass
class TrainData:
    """Train/validation/test arrays (time-ordered splits, no overlap) and what metrics need."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """sha256 over the arrays' bytes (what the manifest records as data_fingerprint)."""
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def calibration(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` training rows for static-quantisation calibration."""
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(self.x_train), size=min(n, len(self.x_train)), replace=False)
        return self.x_train[np.sort(idx)]


class Family(Protocol):
    """What a model family provides to the compression toolkit."""

    name: str
    metric: str  # the gated metric: higher is better
    input_name: str
    output_name: str

    def teacher(self, data: TrainData) -> nn.Module: ...
    def student(self, data: TrainData, width: int) -> nn.Module: ...
    def train(
        self, model: nn.Module, data: TrainData, *, epochs: int, seed: int,
        soft: np.ndarray | None = None, temperature: float = 1.0, alpha: float = 0.0,
        lr: float = 1e-3,
    ) -> nn.Module: ...  # fmt: skip
    def logits(self, model: nn.Module, x: np.ndarray) -> np.ndarray: ...
    def head(self, model: nn.Module) -> nn.Module: ...  # logits → exported output
    def evaluate(self, outputs: np.ndarray, data: TrainData, split: str = "test") -> dict: ...
    def params(self, data: TrainData) -> dict: ...
    def threshold(self, outputs_val: np.ndarray, data: TrainData) -> float | None: ...


class Sigmoid(nn.Module):
    """Exported fraud head: logits → probability, shape [N]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x))


class Softmax(nn.Module):
    """Exported market head: logits → class probabilities [N, 3]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=-1)
