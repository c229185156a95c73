"""Teachers trained elsewhere: an ONNX model or a TorchScript file, distilled into a family's
student (``finscore compress FAMILY.toml --teacher PATH``).

The teacher reads the family's feature matrix: float32 ``[n, F]``, the columns of
:attr:`FamilySpec.feature_names <finscore.families.spec.FamilySpec.feature_names>` in order
(what :class:`~finscore.compression.declared.DeclaredFamily` gives as ``TrainData.x_*``). It
gives the positive class's probability, read from its output by these rules:

- **ONNX** (``.onnx``, or any file that is not a zip archive): one input (float, or double
  which is fed the same values); its output is the first of its float tensor or
  sequence-of-map outputs whose name contains ``prob`` (skl2onnx, onnxmltools:
  ``probabilities`` / ``output_probability``), else its first float output (a label output,
  int64, is never taken). A sequence of maps (skl2onnx's default ZipMap) gives the value of
  the class ``1`` (also ``"1"``, ``"true"``); a map of two other classes gives the second in
  sorted order (scikit-learn's ``classes_``). A tensor is read as below.
- **TorchScript** (``.pt``/``.pth``/``.ts``/``.jit``, or any zip archive):
  ``torch.jit.load`` on CPU, called on the float32 matrix; the output is the tensor returned
  (or the first of a tuple), read as below.
- A tensor ``[n, 2]`` is the two classes' probabilities (column 1) when every row lies in
  [0, 1] and sums to 1 (within 1e-3), else the two classes' logits (softmax, column 1). A
  tensor ``[n]`` or ``[n, 1]`` is the probability when every value lies in [0, 1], else a
  logit (sigmoid). These range rules are settled once, on the first rows scored (the training
  frame in ``finscore compress``), and kept; ``output="probability"`` or ``"logit"`` forces
  them.

Soft targets for distillation are the probabilities' logits (clipped to [1e-6, 1 − 1e-6]).
A teacher that does not read ``F`` features raises :class:`TeacherWidthError`; one that cannot
be read, or whose output fits none of the rules, :class:`TeacherError`.

In a plan (:func:`with_external_teacher`), the teacher's row of the run is the file itself:
its sha256 (the manifest's ``teacher_sha256``), its size, its metrics on the same splits and
its latency (batch 1, this process), measured by its own runtime instead of an export.
"""

from __future__ import annotations

import hashlib
import time
import zipfile
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from finscore.compression.exceptions import CompressionError
from finscore.compression.family import Family, TrainData
from finscore.compression.plan import Candidate, Plan

__all__ = [
    "OUTPUT_RULES",
    "TEACHER_KINDS",
    "ExternalTeacher",
    "ExternalTeacherPlan",
    "TeacherError",
    "TeacherWidthError",
    "load_teacher",
    "with_external_teacher",
]

TEACHER_KINDS = ("onnx", "torchscript")
OUTPUT_RULES = ("auto", "probability", "logit")
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript")
_EPS = 1e-6
_POSITIVE = (1, "1", "true", "True", "yes", True)


class TeacherError(CompressionError):
    """A teacher file cannot be read or scored, or its output fits no rule."""

    hint = (
        "give an ONNX or TorchScript model that reads the family's float32 feature matrix "
        "[n, F] and outputs probabilities or logits (see finscore/compression/teacher.py)"
    )


class TeacherWidthError(TeacherError):
    """The teacher reads another number of features than the family has."""

    hint = (
        "train the teacher on the family's feature matrix (FamilySpec.feature_names, in order; "
        "DeclaredFamily.load_data(...).x_train), then export it again"
    )


def _kind_of(path: Path) -> str:
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if path.suffix.lower() in TORCHSCRIPT_SUFFIXES or zipfile.is_zipfile(path):
        return "torchscript"
    return "onnx"


class ExternalTeacher(nn.Module):
    """A teacher trained elsewhere, as a module: ``forward`` gives its logits (computed by its
    own runtime, not differentiable: teachers are only read). Build it with
    :func:`load_teacher`."""

    def __init__(
        self,
        kind: str,
        path: Path,
        blob: bytes,
        raw: Callable[[np.ndarray], np.ndarray],
        n_features: int,
        *,
        output: str = "auto",
        fixed_rule: str | None = None,
        n_params: int = 0,
        module: nn.Module | None = None,
    ) -> None:
        """``raw``: float32 ``[n, F]`` → the output as read (probabilities ``[n]`` already, when
        ``fixed_rule == "map"``, else a tensor the range rules read)."""
        super().__init__()
        self.kind, self.path, self.blob, self.n_features = kind, path, blob, n_features
        self._raw = raw
        self.output = output
        self.rule: str | None = fixed_rule or (None if output == "auto" else output)
        self.n_params = n_params
        self.module = module  # a TorchScript teacher's module (its parameters are counted)
        self.width_checked = False  # the file declares its input width (and it fits)

    @property
    def sha256(self) -> str:
        """sha256 of the teacher file's bytes."""
        return hashlib.sha256(self.blob).hexdigest()

    def describe(self) -> dict[str, Any]:
        """What the manifest and the report record of the teacher."""
        return {"kind": self.kind, "file": self.path.name, "sha256": self.sha256,
                "size_bytes": len(self.blob), "output": self.rule or self.output}  # fmt: skip

    # -- scores -------------------------------------------------------------------------------
    def probabilities(self, x: np.ndarray, batch: int = 8192) -> np.ndarray:
        """The positive class's probability of each row (float64 ``[n]``)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise TeacherWidthError(
                f"{self.path.name}: scored with {x.shape[-1]} features, it reads {self.n_features}"
            )
        outs = [self._probability(self._raw(x[i : i + batch])) for i in range(0, len(x), batch)]
        p = np.concatenate(outs) if outs else np.zeros(0)
        if not np.all(np.isfinite(p)):
            raise TeacherError(f"{self.path.name}: the teacher's output holds NaN or inf")
        return p

    def settle(self, x: np.ndarray) -> str:
        """Settle the output rule on rows ``x`` (the training frame) when it is not yet, and
        return it (``map``: a ZipMap of class probabilities; ``probability``; ``logit``)."""
        if self.rule is None:
            self.probabilities(x)
        return str(self.rule)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The probabilities' logits (float32; clipped to [1e-6, 1 − 1e-6] first): soft
        targets for distillation."""
        p = np.clip(self.probabilities(x), _EPS, 1 - _EPS)
        return np.log(p / (1 - p)).astype(np.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.logits(x.detach().cpu().numpy()))

    def _probability(self, out: np.ndarray) -> np.ndarray:
        out = np.asarray(out, dtype=np.float64)
        if self.rule == "map":
            return out.reshape(-1)
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim == 1:
            if self.rule is None:
                self.rule = "probability" if np.all((out >= 0) & (out <= 1)) else "logit"
            return out if self.rule == "probability" else 1 / (1 + np.exp(-out))
        if out.ndim == 2 and out.shape[1] == 2:
            if self.rule is None:
                inside = np.all((out >= 0) & (out <= 1))
                self.rule = (
                    "probability" if inside and np.allclose(out.sum(1), 1, atol=1e-3) else "logit"
                )
            if self.rule == "probability":
                return out[:, 1]
            return 1 / (1 + np.exp(out[:, 0] - out[:, 1]))
        raise TeacherError(
            f"{self.path.name}: output of shape {list(out.shape)}: [n], [n, 1] or [n, 2] is needed"
        )

    # -- in a plan ----------------------------------------------------------------------------
    def latency(self, row: np.ndarray, repeats: int = 200, big: int = 1024) -> dict[str, float]:
        """Batch-1 p50/p99 (ms) over ``repeats`` runs after 10 warm-ups, and batch-``big``
        rows/s (at least 0.3 s), in this process's runtime (as ``measure_latency`` reports)."""
        one = np.ascontiguousarray(row[None, ...], dtype=np.float32)
        for _ in range(10):
            self._raw(one)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            self._raw(one)
            times.append(time.perf_counter() - t0)
        many = np.repeat(one, big, axis=0)
        runs, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.3 or runs < 2:
            self._raw(many)
            runs += 1
        return {
            "p50_ms": float(np.percentile(times, 50) * 1000),
            "p99_ms": float(np.percentile(times, 99) * 1000),
            "throughput_per_s": float(runs * big / (time.perf_counter() - t0)),
        }

    def candidate(self, family: Family, data: TrainData, name: str = "teacher") -> Candidate:
        """The teacher's row of a run: the file's bytes (sha256, size), its metrics on the test
        split, its validation outputs (the gate's reference), its latency."""
        test = self.probabilities(data.x_test)
        val = self.probabilities(data.x_val)
        return Candidate(
            name, self.blob, [{"step": "teacher", "params": self.describe()}],
            family.evaluate(test, data), self.n_params, self.latency(data.x_test[0]), 0.0,
            self, val,
        )  # fmt: skip


def load_teacher(
    path: str | Path, n_features: int, *, family: str = "the family", output: str = "auto"
) -> ExternalTeacher:
    """The teacher in ``path`` (ONNX or TorchScript, see the module docstring), checked to
    read ``n_features`` features (``family``: its name, for messages); ``output``: ``auto``
    (the range rules), or ``probability`` / ``logit`` to force them."""
    path = Path(path)
    if output not in OUTPUT_RULES:
        raise TeacherError(f"teacher output rule {output!r}: one of {', '.join(OUTPUT_RULES)}")
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise TeacherError(f"{path}: cannot read the teacher: {exc}") from exc
    kind = _kind_of(path)
    teacher = (_onnx_teacher if kind == "onnx" else _torchscript_teacher)(
        path, blob, n_features, family, output
    )
    try:  # a first run: the width where the file does not declare it (TorchScript, ONNX [n, ?])
        out = np.asarray(teacher._raw(np.zeros((2, n_features), dtype=np.float32)))
    except TeacherError:
        raise
    except Exception as exc:  # noqa: BLE001 - runtimes raise many types
        error = TeacherError if teacher.width_checked else TeacherWidthError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise error(
            f"{path.name}: the teacher fails on {family}'s feature matrix (float32 "
            f"[n, {n_features}]): {first}"
        ) from exc
    if out.ndim == 0 or out.shape[0] != 2:
        raise TeacherError(f"{path.name}: the output does not have one row per input row")
    return teacher


def _width_error(path: Path, width: int, n_features: int, family: str) -> TeacherWidthError:
    return TeacherWidthError(
        f"{path.name}: the teacher reads {width} features, {family} has {n_features}"
    )


def _onnx_teacher(
    path: Path, blob: bytes, n_features: int, family: str, output: str
) -> ExternalTeacher:
    import onnx
    import onnxruntime as ort

    try:
        proto = onnx.load_from_string(blob)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        sess = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - protobuf and onnxruntime raise many types
        raise TeacherError(f"{path.name}: not a readable ONNX model: {exc}") from exc
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise TeacherError(
            f"{path.name}: the teacher has {len(inputs)} inputs ({names}); finscore feeds one "
            f"float matrix [n, {n_features}]"
        )
    inp = inputs[0]
    if inp.type not in ("tensor(float)", "tensor(double)"):
        raise TeacherError(
            f"{path.name}: input {inp.name!r} is {inp.type}, a float tensor is needed"
        )
    shape = list(inp.shape)
    if len(shape) != 2:
        raise TeacherError(f"{path.name}: input {inp.name!r} has shape {shape}, [n, F] is needed")
    if isinstance(shape[1], int) and shape[1] != n_features:
        raise _width_error(path, shape[1], n_features, family)
    dtype = np.float64 if inp.type == "tensor(double)" else np.float32
    usable = [o for o in sess.get_outputs()
              if o.type in ("tensor(float)", "tensor(double)") or o.type.startswith("seq(map(")]  # fmt: skip
    if not usable:
        kinds = ", ".join(f"{o.name}: {o.type}" for o in sess.get_outputs())
        raise TeacherError(f"{path.name}: no float or probability-map output ({kinds})")
    chosen = next((o for o in usable if "prob" in o.name.lower()), usable[0])
    zipmap = chosen.type.startswith("seq(map(")
    name = inp.name

    def raw(x: np.ndarray) -> np.ndarray:
        out = sess.run([chosen.name], {name: x.astype(dtype, copy=False)})[0]
        return _positive_of_maps(out, path) if zipmap else np.asarray(out)

    n_params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    n_params += sum(len(a.ints) for node in proto.graph.node for a in node.attribute
                    if a.name == "nodes_nodeids")  # fmt: skip  # tree ensembles: their nodes
    teacher = ExternalTeacher("onnx", path, blob, raw, n_features, output=output,
                              fixed_rule="map" if zipmap else None, n_params=n_params)  # fmt: skip
    teacher.width_checked = isinstance(shape[1], int)
    return teacher


def _positive_of_maps(out: Any, path: Path) -> np.ndarray:
    """The positive class's probability from a ZipMap output (a list of {class: p})."""
    rows = list(out)
    if not rows:
        return np.zeros(0)
    keys = list(rows[0])
    key = next((k for k in keys if k in _POSITIVE), None)
    if key is None:
        if len(keys) != 2:
            raise TeacherError(
                f"{path.name}: classes {keys}: a binary teacher (class 1, or two classes) is needed"
            )
        key = sorted(keys)[1]
    return np.fromiter((r[key] for r in rows), np.float64, len(rows))


def _torchscript_teacher(
    path: Path, blob: bytes, n_features: int, family: str, output: str
) -> ExternalTeacher:
    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError and others
        raise TeacherError(f"{path.name}: not a readable TorchScript file: {exc}") from exc

    @torch.no_grad()
    def raw(x: np.ndarray) -> np.ndarray:
        out = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        if isinstance(out, tuple | list):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise TeacherError(
                f"{path.name}: the teacher returns {type(out).__name__}, not a tensor"
            )
        return out.detach().float().cpu().numpy()

    n_params = sum(p.numel() for p in module.parameters())
    return ExternalTeacher("torchscript", path, blob, raw, n_features, output=output,
                           n_params=n_params, module=module)  # fmt: skip


# -- plans ---------------------------------------------------------------------------------------
class ExternalTeacherPlan(Plan):
    """A :class:`Plan` whose teacher may be an :class:`ExternalTeacher`: its row of the run is
    the teacher file measured in its own runtime (:meth:`ExternalTeacher.candidate`), not an
    ONNX export of it; every other candidate is measured as :class:`Plan` does."""

    def _measure(
        self, name: str, model: nn.Module, family: Family, data: TrainData, steps: list[dict],
        measure: bool = True,
    ) -> Candidate:  # fmt: skip
        if isinstance(model, ExternalTeacher):
            if not measure:  # an ONNX-stage step straight on the teacher
                raise CompressionError(
                    "an external teacher cannot be quantised as it is",
                    hint="start the plan with a distillation step (every named plan does)",
                )
            return model.candidate(family, data, name)
        return super()._measure(name, model, family, data, steps, measure)


def with_external_teacher(plan: Plan) -> ExternalTeacherPlan:
    """``plan`` (its steps and settings) as an :class:`ExternalTeacherPlan`."""
    return ExternalTeacherPlan(**{f.name: getattr(plan, f.name) for f in fields(plan)})
