"""The one path a model takes to the workers: recompress → gate → register (signed) → announce →
promote.

Every publisher goes through here, so none can skip a step or do them in another order:

- both halves of the sidecar (:mod:`~finscore.app.sidecar.fraud`,
  :mod:`~finscore.app.sidecar.market`) run :func:`recompress_and_publish`: the plan, the gate
  against a teacher trained on the same recent data, the gate against the live champion, the
  run's report, the size/latency budget, then :func:`publish`;
- ``finscore compress`` registers its deployed candidate with :func:`register` (signed in the
  same atomic step as the version is written);
- ``finscore models promote|rollback|shadow|canary`` take a registered version through
  :func:`trusted` (checked; signed when it is not, **and the signature kept in the registry**)
  and :func:`promote`, :func:`rollback` or :func:`challenge`.

Atomicity: the registry's champion pointer moves only after the broker acknowledged the
announcement (:meth:`Announcer.announce` raises otherwise), so a failed announcement leaves the
registry where the workers are.

torch-free at import (``finscore models`` must not load torch): the compression package is
imported inside the functions that train.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from finscore.app.sidecar.config import SidecarConfig
from finscore.logging import get_logger
from finscore.models.registry import Artifact, ArtifactError, Registry

if TYPE_CHECKING:
    from finscore.compression.family import Family, TrainData
    from finscore.compression.plan import Candidate, Plan, RunResult

__all__ = [
    "Announcer",
    "Recompression",
    "challenge",
    "gated_candidate",
    "over_budget",
    "promote",
    "publish",
    "recompress_and_publish",
    "register",
    "require_key",
    "rollback",
    "trusted",
]

log = get_logger("sidecar.gate")


@dataclass(frozen=True)
class Announcer:
    """Where model announcements go (``client``, the full ``model-updates`` topic name) and the
    key their envelopes are signed with (None: unsigned, development only)."""

    client: Mapping[str, Any]
    topic: str
    signing_key: str | None = None

    def announce(
        self,
        artifact: Artifact | None,
        action: str,
        *,
        model_name: str | None = None,
        canary_share: float = 0.0,
    ) -> None:
        """Publish one announcement and wait for the broker's acknowledgement (raises when it
        is not delivered)."""
        from finscore.streams.hot_swap import announce

        announce(self.client, self.topic, artifact, action, model_name=model_name,
                 canary_share=canary_share, signing_key=self.signing_key)  # fmt: skip


def require_key(name: str, signing_key: str | None, allow_unsigned: bool) -> None:
    """Raise :class:`ArtifactError` (``no_key``) when there is no signing key and unsigned
    models are not allowed (``allow_unsigned`` is for development only)."""
    if not signing_key and not allow_unsigned:
        raise ArtifactError(
            f"{name}: no signing key, the candidate is not published",
            reason="no_key",
            hint="set FINSCORE_SIGNING_KEY (or keep the local pair in FINSCORE_KEY_DIR)",
        )


def register(
    reg: Registry,
    result: RunResult,
    candidate: Candidate,
    family: Family,
    data: TrainData,
    signing_key: str | None,
) -> Artifact:
    """Write ``candidate`` as the next version of its family; signed with ``signing_key`` in
    the same atomic step (the signature covers the version). Returns the registered artifact."""
    from finscore.compression.plan import to_artifact

    return reg.publish(to_artifact(result, candidate, family, data), signing_key or None)


def trusted(
    reg: Registry, artifact: Artifact, *, signing_key: str | None, verify_key: str | None
) -> Artifact:
    """``artifact`` (a registered version) checked — hash, size, smoke test, and its signature
    against ``verify_key`` when it has one — and, when it is unsigned and a ``signing_key`` is
    given, signed **with the signature saved beside it in the registry** (a version announced
    signed stays signed on disk, so a worker starting from the registry accepts it too).
    Raises :class:`ArtifactError` when it cannot be trusted."""
    artifact.verify(verify_key, require_signature=artifact.signature is not None)
    if artifact.signature is None and signing_key:
        artifact = artifact.sign(signing_key)
        reg.save_signature(artifact)
    return artifact


def promote(reg: Registry, announcer: Announcer, artifact: Artifact) -> None:
    """Announce ``artifact`` as its model's champion, then (acknowledged) move the registry's
    champion pointer to it."""
    announcer.announce(artifact, "PROMOTE")
    reg.promote(artifact.manifest.name, artifact.manifest.version)


def rollback(reg: Registry, announcer: Announcer, artifact: Artifact) -> None:
    """Announce ``artifact`` — the previous champion, :meth:`Registry.previous` — as a
    rollback, then (acknowledged) roll the registry back to it."""
    m = artifact.manifest
    if reg.previous(m.name).version != m.version:
        raise ArtifactError(f"{m.name} v{m.version} is not the previous champion", reason="invalid")
    announcer.announce(artifact, "ROLLBACK")
    reg.rollback(m.name)


def challenge(
    announcer: Announcer,
    name: str,
    artifact: Artifact | None,
    mode: Literal["SHADOW", "CANARY"],
    share: float = 0.0,
) -> None:
    """Announce ``artifact`` as ``name``'s challenger: ``SHADOW`` (scored beside the live model)
    or ``CANARY`` (scores ``share`` of the keys). ``artifact=None`` with ``SHADOW`` removes the
    challenger. The registry does not record challengers."""
    if artifact is None:
        if mode != "SHADOW":
            raise ValueError("only SHADOW may clear the challenger")
        announcer.announce(None, mode, model_name=name)
        return
    if artifact.manifest.name != name:
        raise ArtifactError(
            f"{name}: the artifact is a {artifact.manifest.name} model", reason="invalid"
        )
    announcer.announce(artifact, mode, canary_share=share)


def publish(
    reg: Registry,
    announcer: Announcer,
    result: RunResult,
    candidate: Candidate,
    family: Family,
    data: TrainData,
    *,
    allow_unsigned: bool = False,
) -> Artifact:
    """Register ``candidate`` signed with the announcer's key, announce it, promote it. Without
    a key nothing is written (:class:`ArtifactError`, ``no_key``) unless ``allow_unsigned``."""
    require_key(family.name, announcer.signing_key, allow_unsigned)
    art = register(reg, result, candidate, family, data, announcer.signing_key)
    promote(reg, announcer, art)
    return art


def gated_candidate(
    plan: Plan, family: Family, data: TrainData, tolerance: float
) -> tuple[RunResult, Candidate]:
    """Run ``plan`` (its gate: ``family.metric`` within ``tolerance`` of the run's teacher,
    trained on the same recent data, on the validation split) and choose what to promote:

    1. the smallest compressed candidate that passed the gate and is also within
       ``tolerance`` of the teacher on the hold-out (a candidate chosen on validation alone
       was seen 0.03 AP short of its teacher on the hold-out: small recent windows make both
       estimates noisy, and the sidecar promotes only what holds on both);
    2. else the plan's deployed candidate (it passed on validation);
    3. else, when the gate passed none, the best compressed one on validation.

    The hold-out is also where the champion is compared, so in the sidecar its figures
    confirm a choice rather than estimate it without bias. Re-raises GateFailed when the run
    produced no compressed candidate at all."""
    from finscore.compression.exceptions import GateFailed
    from finscore.compression.plan import Gate, RunResult

    metric = family.metric
    try:
        result = plan.run(family, data, Gate(metric, tolerance))
    except GateFailed as exc:
        failed = exc.result
        if not isinstance(failed, RunResult) or len(failed.candidates) < 2:
            raise
        return failed, max(failed.candidates[1:], key=lambda c: c.val_metrics[metric])
    if result.deployed is None:  # Plan.run raises instead; kept for the type
        raise ValueError(f"{family.name}: the run deployed no candidate")
    floor = result.teacher.metrics[metric] - tolerance
    holding = [c for c in result.candidates[1:] if c.passes_gate and c.metrics[metric] >= floor]
    if holding:
        return result, min(holding, key=lambda c: c.size_bytes)
    return result, result.deployed


def over_budget(candidate: Candidate, champion: Artifact | None, max_bytes: int) -> bool:
    """Bigger than ``max_bytes``, or more than twice the champion's batch-1 p50."""
    if candidate.size_bytes > max_bytes:
        return True
    if champion is None:
        return False
    champion_p50 = max(float(champion.manifest.latency.get("p50_ms", 1.0)), 0.05)
    return bool(candidate.latency["p50_ms"] > 2 * champion_p50)


@dataclass
class Recompression:
    """One recompression run as a half of the sidecar prepared it.

    ``record`` starts with what the half knows (reason, model, data sizes) and collects the
    outcome; ``run_dir`` receives the run's report (every run that got a candidate);
    ``title`` names the run in its reports."""

    family: Family
    data: TrainData
    plan: Plan
    champion: Artifact | None
    champion_metric: float | None
    record: dict[str, Any]
    run_dir: Path
    title: str
    started: float


def recompress_and_publish(run: Recompression, reg: Registry, cfg: SidecarConfig) -> dict[str, Any]:
    """The sequence both halves run, in this order; returns ``run.record`` with its outcome
    (``tolerance``, ``max_bytes``, the signing key, where reports go: from ``cfg``):

    1. :func:`gated_candidate` (a run with no compressed candidate: ``rejected``);
    2. the candidate against the live champion on the same hold-out: more than ``tolerance``
       worse is ``rejected``;
    3. the run's report in ``run.run_dir``;
    4. the budget, :func:`over_budget` (``rejected`` over it);
    5. :func:`publish` (register signed, announce, promote), and the version's report in
       ``version_reports_dir/<family>/v<N>/`` (what the dashboard shows): ``promoted``.

    The record names metrics ``candidate_<metric>``, ``new_regime_teacher_<metric>`` (the run's
    own teacher) and ``champion_<metric>``."""
    from finscore.compression.exceptions import GateFailed
    from finscore.compression.report import write_report, write_version_report

    fam, record = run.family, run.record
    tolerance = cfg.tolerance
    announcer = Announcer(cfg.client, cfg.model_updates, cfg.signing_key)
    metric = fam.metric
    record[f"champion_{metric}"] = run.champion_metric

    def rejected(why: str, **extra: Any) -> dict[str, Any]:
        record.update(outcome="rejected", why=why, **extra,
                      seconds=round(time.time() - run.started, 1))  # fmt: skip
        log.warning("sidecar.candidate_rejected", **record)
        return record

    try:
        result, cand = gated_candidate(run.plan, fam, run.data, tolerance)
    except GateFailed as exc:
        return rejected(str(exc))
    record[f"candidate_{metric}"] = cand.metrics[metric]
    record[f"new_regime_teacher_{metric}"] = result.teacher.metrics[metric]
    if run.champion_metric is not None and cand.metrics[metric] < run.champion_metric - tolerance:
        return rejected("candidate is worse than the champion on the recent hold-out")
    report = write_report(result, run.run_dir, run.title)
    if over_budget(cand, run.champion, cfg.max_bytes):
        return rejected("size or latency over budget", report=str(report))
    art = publish(reg, announcer, result, cand, fam, run.data, allow_unsigned=cfg.allow_unsigned)
    report = write_version_report(result, cfg.version_reports_dir / fam.name, fam.name,
                                  art.manifest.version, run.title)  # fmt: skip
    record.update(outcome="promoted", version=art.manifest.version, bytes=cand.size_bytes,
                  report=str(report), seconds=round(time.time() - run.started, 1))  # fmt: skip
    log.info("sidecar.promoted", **record)
    return record
