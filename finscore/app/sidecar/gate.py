"""What both halves of the sidecar do with a recompression run: pick the candidate, check the
budget, publish + sign + announce + promote. One place, so fraud and market cannot drift apart."""

from __future__ import annotations

from typing import Any

from finscore.models.registry import Artifact, ArtifactError, Registry
from finscore.schemas import topics as T


def gated_candidate(
    plan: Any, family: Any, data: Any, metric: str, tolerance: float
) -> tuple[Any, Any]:
    """Run ``plan``; the smallest candidate within ``tolerance`` of the run's teacher (trained on
    the same recent data), or — when none gets that close — the best compressed one (both
    judged on the validation days; the hold-out days stay for the champion comparison).
    Re-raises GateFailed when the run produced no compressed candidate at all."""
    from finscore.compression.exceptions import GateFailed
    from finscore.compression.plan import Gate

    try:
        result = plan.run(family, data, Gate(metric, tolerance))
        return result, result.deployed
    except GateFailed as exc:
        result = exc.result
        if result is None or len(result.candidates) < 2:
            raise
        return result, max(result.candidates[1:], key=lambda c: c.val_metrics[metric])


def over_budget(cand: Any, champion: Artifact | None, max_bytes: int) -> bool:
    """Bigger than ``max_bytes``, or more than twice the champion's batch-1 p50."""
    if cand.size_bytes > max_bytes:
        return True
    if champion is None:
        return False
    return bool(
        cand.latency["p50_ms"] > 2 * max(champion.manifest.latency.get("p50_ms", 1.0), 0.05)
    )


def publish_and_announce(
    cfg: Any, reg: Registry, result: Any, cand: Any, family: Any, data: Any
) -> Artifact:
    """Register the candidate signed with ``cfg.signing_key``, promote it, announce it to
    workers (the envelope signed too). Without a signing key nothing is published
    (:class:`ArtifactError`, ``no_key``) unless ``cfg.allow_unsigned`` (development only)."""
    from finscore.compression.plan import to_artifact
    from finscore.streams.hot_swap import announce

    key = cfg.signing_key
    if not key and not getattr(cfg, "allow_unsigned", False):
        raise ArtifactError(
            f"{family.name}: no signing key, the candidate is not published",
            reason="no_key",
            hint="set FINSCORE_SIGNING_KEY (or keep the local pair in FINSCORE_KEY_DIR)",
        )
    art = reg.publish(to_artifact(result, cand, family, data), key or None)
    announce(cfg.client, cfg.topic_prefix + T.MODEL_UPDATES, art, "PROMOTE", signing_key=key)
    reg.promote(family.name, art.manifest.version)  # after the broker acknowledged it
    return art
