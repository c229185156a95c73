"""ONNX Runtime execution providers as a setting (``FINSCORE_EXECUTION_PROVIDERS``).

An operator asks for providers by short name, in order of preference: ``CUDA,CPU``,
``TensorRT,CUDA,CPU``, ``OpenVINO,CPU``... (full names such as ``CUDAExecutionProvider`` work
too; case does not matter). :func:`resolve` keeps the requested providers this onnxruntime
build has (``onnxruntime.get_available_providers()``), in the requested order, and always ends
with ``CPUExecutionProvider``. When a requested provider is missing it logs one warning per
process and per request::

    providers.fallback requested=CUDA,CPU using=CPU
        reason="CUDAExecutionProvider not available in this onnxruntime build (install finscore[gpu])"

:func:`create_session` builds an ``InferenceSession`` with the resolved list and checks what
the session really runs on (a GPU build without a usable driver silently falls back to CPU at
session creation): that case is reported the same way, once.

Settings stay at the edge: the CLI / worker entry points turn the setting into a tuple of names
(:func:`parse`) and pass it down; :func:`configure` sets the process default that code paths
without an explicit list use (the compression toolkit's latency measurements, the sidecar's
evaluation, the registry's smoke test). This module imports neither torch nor the app.

Batch sizing: GPUs pay a fixed launch + transfer cost per run, so they want large batches;
:func:`batch_size_for` raises a worker's batch size to :data:`GPU_MIN_BATCH` (1024) when the
primary provider is a GPU one. Where the GPU starts to win over the CPU is measured by
``bench/gpu_providers.py`` (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from finscore.logging import get_logger

log = get_logger(__name__)

__all__ = [
    "ALIASES",
    "CPU",
    "GPU_MIN_BATCH",
    "GPU_PROVIDERS",
    "Resolution",
    "available",
    "batch_size_for",
    "configure",
    "create_session",
    "default",
    "parse",
    "reset_warnings",
    "resolve",
    "short",
]

CPU = "CPUExecutionProvider"
#: Short names an operator may use (matched case-insensitively) → onnxruntime provider names.
ALIASES: dict[str, str] = {
    "cpu": CPU,
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "directml": "DmlExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dnnl": "DnnlExecutionProvider",
}
#: Providers that run on a GPU (they want large batches, see :func:`batch_size_for`).
GPU_PROVIDERS = frozenset(
    {
        "CUDAExecutionProvider",
        "TensorrtExecutionProvider",
        "ROCMExecutionProvider",
        "MIGraphXExecutionProvider",
        "DmlExecutionProvider",
    }
)
#: Smallest batch a worker uses on a GPU provider (a documented default; measured crossover in
#: docs/BENCHMARKS.md, "GPU providers").
GPU_MIN_BATCH = 1024

_SHORT = {
    CPU: "CPU",
    "CUDAExecutionProvider": "CUDA",
    "TensorrtExecutionProvider": "TensorRT",
    "OpenVINOExecutionProvider": "OpenVINO",
    "ROCMExecutionProvider": "ROCm",
    "MIGraphXExecutionProvider": "MIGraphX",
    "DmlExecutionProvider": "DirectML",
    "CoreMLExecutionProvider": "CoreML",
    "DnnlExecutionProvider": "DNNL",
}
_INSTALL_HINT = {
    "CUDAExecutionProvider": "install finscore[gpu]",
    "TensorrtExecutionProvider": "install finscore[gpu] and TensorRT",
    "OpenVINOExecutionProvider": "install onnxruntime-openvino",
    "DmlExecutionProvider": "install onnxruntime-directml",
    "ROCMExecutionProvider": "install onnxruntime-rocm",
}

_lock = threading.Lock()
_warned: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
_default: tuple[str, ...] = (CPU,)


def short(provider: str) -> str:
    """``CUDAExecutionProvider`` → ``CUDA`` (what logs and metric labels show)."""
    return _SHORT.get(provider, provider.removesuffix("ExecutionProvider"))


def parse(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    """Provider names from a setting (``"CUDA,CPU"``) or a sequence, as onnxruntime names, in
    order, without duplicates; empty or None means ``(CPU,)``. Raises ``ValueError`` for a name
    that is neither a known short name nor ``...ExecutionProvider``."""
    items = spec.split(",") if isinstance(spec, str) else list(spec or ())
    out: list[str] = []
    for raw in items:
        name = raw.strip()
        if not name:
            continue
        full = ALIASES.get(name.lower())
        if full is None:
            if not name.endswith("ExecutionProvider"):
                known = ", ".join(sorted({short(v) for v in ALIASES.values()}))
                raise ValueError(f"unknown execution provider {name!r} (known: {known})")
            full = name
        if full not in out:
            out.append(full)
    return tuple(out) or (CPU,)


def available() -> tuple[str, ...]:
    """The providers this onnxruntime build offers."""
    import onnxruntime as ort

    return tuple(ort.get_available_providers())


@dataclass(frozen=True)
class Resolution:
    """What was asked for, what will be used (CPU last, always) and why anything was dropped."""

    requested: tuple[str, ...]
    using: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def primary(self) -> str:
        """The provider that runs the model when it supports every node."""
        return self.using[0]

    @property
    def reason(self) -> str:
        return "; ".join(
            f"{p} not available in this onnxruntime build"
            + (f" ({_INSTALL_HINT[p]})" if p in _INSTALL_HINT else "")
            for p in self.missing
        )


def resolve(
    requested: str | Iterable[str] | None = None,
    available_providers: Sequence[str] | None = None,
    *,
    warn: bool = True,
) -> Resolution:
    """The requested providers (default: the process default, see :func:`configure`) that are
    available, in order, with ``CPUExecutionProvider`` last. A missing one is logged once per
    process (per request and outcome) as ``providers.fallback`` at warning level."""
    want = parse(requested) if requested is not None else _default
    have = set(available() if available_providers is None else available_providers)
    missing = tuple(p for p in want if p not in have and p != CPU)
    using = tuple(p for p in want if p in have and p != CPU) + (CPU,)
    res = Resolution(want, using, missing)
    if missing and warn:
        _warn_once(res.requested, res.using, res.reason)
    return res


def _warn_once(requested: tuple[str, ...], using: tuple[str, ...], reason: str) -> None:
    key = (requested, using)
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(
        "providers.fallback",
        requested=",".join(short(p) for p in requested),
        using=",".join(short(p) for p in using),
        reason=reason,
    )


def configure(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    """Set the process default (called at the edge, from the setting); returns it parsed."""
    global _default
    _default = parse(spec)
    return _default


def default() -> tuple[str, ...]:
    """The process default requested providers (``(CPU,)`` unless :func:`configure` was called)."""
    return _default


def create_session(
    model: bytes | str,
    sess_options: Any = None,
    providers: str | Iterable[str] | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` on the resolved providers (see :func:`resolve`).

    When the session does not run on the provider it was resolved to (a GPU build whose driver
    or device is missing falls back inside onnxruntime), that is logged once like a missing
    provider. The providers the session really uses are ``session.get_providers()``."""
    import onnxruntime as ort

    res = resolve(providers)
    s = ort.InferenceSession(model, sess_options=sess_options, providers=list(res.using))
    got = tuple(s.get_providers())
    if res.primary != CPU and res.primary not in got:
        _warn_once(
            res.requested,
            got,
            f"{res.primary} is in this onnxruntime build but could not start "
            "(no usable device or driver)",
        )
    return s


def batch_size_for(provider: str, configured: int, gpu_min: int = GPU_MIN_BATCH) -> int:
    """A worker's batch size on ``provider``: at least ``gpu_min`` on a GPU provider (GPUs pay
    a fixed launch and copy cost per run), ``configured`` otherwise."""
    return max(configured, gpu_min) if provider in GPU_PROVIDERS else configured


def reset_warnings() -> None:
    """Forget which fallbacks were logged (tests)."""
    with _lock:
        _warned.clear()
