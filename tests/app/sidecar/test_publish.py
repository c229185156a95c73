"""The one publish path (:mod:`finscore.app.sidecar.gate`): what `finscore models promote`
signs it also keeps, so the registry and the announcement agree on the artifact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from finscore.app.sidecar.gate import (
    Announcer,
    challenge,
    promote,
    require_key,
    rollback,
    trusted,
)
from finscore.models.registry import Artifact, ArtifactError, Registry, public_key_of
from tests.artifacts import TEST_SIGNING_KEY, artifact
from tests.streams.kit import make_topics


@pytest.mark.broker
def test_models_promote_keeps_the_signature_it_adds_to_an_unsigned_version(
    client: dict, prefix: str, tmp_path: Path
) -> None:
    """An unsigned registered version promoted with a key was announced signed but stayed
    unsigned on disk: a worker that starts from the registry (require_signature) refused the
    champion every running worker had loaded."""
    reg = Registry(tmp_path / "registry")
    reg.publish(artifact("fraud", version=""))  # registered without a key
    assert reg.get("fraud", "1").signature is None
    make_topics(client, prefix, partitions=1)
    env = {**os.environ, "FINSCORE_REGISTRY_DIR": str(reg.root),
           "FINSCORE_BOOTSTRAP_SERVERS": str(client["bootstrap.servers"]),
           "FINSCORE_TOPIC_PREFIX": prefix, "FINSCORE_SIGNING_KEY": TEST_SIGNING_KEY,
           "FINSCORE_LOG_FORMAT": "console"}  # fmt: skip
    env.pop("FINSCORE_VERIFY_KEY", None)
    r = subprocess.run(
        [sys.executable, "-m", "finscore.app.cli", "models", "promote", "fraud", "1"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    champion = reg.champion("fraud")
    assert champion is not None and champion.manifest.version == "1"
    assert champion.signature is not None, "signed for the announcement, not kept"
    champion.verify(public_key_of(TEST_SIGNING_KEY), require_signature=True)


class _Refused(Announcer):
    """An announcer whose broker never acknowledges."""

    def announce(self, *_a: Any, **_k: Any) -> None:
        raise RuntimeError("announcement not delivered")


class _Recorder(Announcer):
    """An announcer that records what it announced."""

    def __init__(self) -> None:
        super().__init__({}, "model-updates")
        object.__setattr__(self, "sent", [])

    def announce(self, artifact: Artifact | None, action: str, **kw: Any) -> None:
        self.sent.append((artifact.manifest.version if artifact else None, action, kw))  # type: ignore[attr-defined]


def test_trusted_signs_an_unsigned_version_and_keeps_the_signature(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry")
    reg.publish(artifact("fraud", version=""))
    signed = trusted(reg, reg.get("fraud", "1"), signing_key=TEST_SIGNING_KEY, verify_key=None)
    assert signed.signature is not None
    assert reg.get("fraud", "1").signature == signed.signature
    # a signed one is checked against the verify key, never re-signed
    again = trusted(reg, reg.get("fraud", "1"), signing_key=TEST_SIGNING_KEY,
                    verify_key=public_key_of(TEST_SIGNING_KEY))  # fmt: skip
    assert again.signature == signed.signature


def test_the_registry_moves_only_after_the_announcement(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry")
    for seed in (1, 2, 3):
        reg.publish(artifact("fraud", version="", seed=seed), TEST_SIGNING_KEY)
    reg.promote("fraud", "1")
    reg.promote("fraud", "2")
    refused = _Refused({}, "model-updates", TEST_SIGNING_KEY)
    with pytest.raises(RuntimeError):
        promote(reg, refused, reg.get("fraud", "3"))
    with pytest.raises(RuntimeError):
        rollback(reg, refused, reg.get("fraud", "1"))
    assert reg.champion("fraud").manifest.version == "2"  # type: ignore[union-attr]
    sent = _Recorder()
    promote(reg, sent, reg.get("fraud", "3"))
    rollback(reg, sent, reg.get("fraud", "2"))
    assert [(v, a) for v, a, _ in sent.sent] == [("3", "PROMOTE"), ("2", "ROLLBACK")]  # type: ignore[attr-defined]
    assert reg.champion("fraud").manifest.version == "2"  # type: ignore[union-attr]
    with pytest.raises(ArtifactError):  # only the previous champion is a rollback
        rollback(reg, sent, reg.get("fraud", "3"))


def test_challengers_keep_their_mode_and_name(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry")
    reg.publish(artifact("market", version=""))
    sent = _Recorder()
    challenge(sent, "market", reg.get("market", "1"), "CANARY", 0.2)
    challenge(sent, "market", None, "SHADOW")
    assert sent.sent == [("1", "CANARY", {"canary_share": 0.2}),  # type: ignore[attr-defined]
                         (None, "SHADOW", {"model_name": "market"})]  # fmt: skip
    with pytest.raises(ArtifactError):
        challenge(sent, "fraud", reg.get("market", "1"), "SHADOW")
    with pytest.raises(ValueError, match="SHADOW"):
        challenge(sent, "market", None, "CANARY")


def test_publishing_without_a_key_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError) as exc:
        require_key("fraud", None, allow_unsigned=False)
    assert exc.value.reason == "no_key"
    require_key("fraud", None, allow_unsigned=True)  # development only
