"""Names given to the registry are validated, and model keys are created once per machine
(issue 14, observations 5 and 7). No broker: the refusals come before any Kafka call."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from finscore.models.registry import ArtifactError, Registry
from tests.artifacts import artifact

ROOT = Path(__file__).resolve().parents[2]


def _evil_registry(tmp_path: Path) -> tuple[Path, Path]:
    """A registry with fraud v1, and an artifact folder beside it at ../evil/1."""
    reg = Registry(tmp_path / "registry")
    reg.publish(artifact("fraud", version=""))
    evil = tmp_path / "evil"
    shutil.copytree(reg.root / "fraud" / "1", evil / "1")
    return reg.root, evil


@pytest.mark.parametrize(
    ("name", "version"),
    [("../evil", "1"), ("fraud/../../evil", "1"), (".hidden", "1"), ("Fraud", "1"),
     ("fraud", "../1"), ("fraud", "1/.."), ("", "1"), ("a" * 65, "1")],
)  # fmt: skip
def test_the_registry_refuses_names_outside_its_pattern(
    tmp_path: Path, name: str, version: str
) -> None:
    root, evil = _evil_registry(tmp_path)
    reg = Registry(root)
    calls = [lambda: reg.get(name, version), lambda: reg.promote(name, version)]
    if name != "fraud":
        calls += [lambda: reg.champion(name), lambda: reg.rollback(name), lambda: reg.list(name)]
    for call in calls:
        with pytest.raises(ArtifactError) as exc:
            call()
        assert exc.value.reason == "invalid_name"
    assert not (evil / "CHAMPION").exists()


def test_publish_refuses_an_invalid_model_name(tmp_path: Path) -> None:
    a = artifact("fraud", version="")
    import dataclasses

    bad = dataclasses.replace(a, manifest=dataclasses.replace(a.manifest, name="../evil"))
    with pytest.raises(ArtifactError) as exc:
        Registry(tmp_path / "registry").publish(bad)
    assert exc.value.reason == "invalid_name"
    assert not (tmp_path / "evil").exists()


def test_models_promote_refuses_a_path_outside_the_registry(tmp_path: Path) -> None:
    root, evil = _evil_registry(tmp_path)
    env = {
        **os.environ,
        "FINSCORE_REGISTRY_DIR": str(root),
        "FINSCORE_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # nothing may be announced anyway
        "FINSCORE_LOG_FORMAT": "console",
    }
    r = subprocess.run(
        [sys.executable, "-m", "finscore.app.cli", "models", "promote", "../evil", "1"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode != 0
    assert not (evil / "CHAMPION").exists()
    assert "Traceback" not in r.stderr


def test_a_local_key_pair_is_created_once_private_and_reused(tmp_path: Path) -> None:
    from finscore.models.keys import resolve_keys

    keys = resolve_keys(None, None, tmp_path / "keys")
    assert keys.signing_key and keys.verify_key and keys.source == "created"
    private = tmp_path / "keys" / "signing.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    again = resolve_keys(None, None, tmp_path / "keys")
    assert (again.signing_key, again.verify_key) == (keys.signing_key, keys.verify_key)
    assert again.source == "local"
    signed = artifact("fraud").sign(keys.signing_key)
    signed.verify(again.verify_key, require_signature=True)
    assert keys.signing_key not in repr(keys)


def test_explicit_keys_win_and_a_verify_key_follows_from_a_signing_key(tmp_path: Path) -> None:
    from finscore.models.keys import resolve_keys
    from finscore.models.registry import generate_keypair

    private, public = generate_keypair()
    k = resolve_keys(private, None, tmp_path / "keys")
    assert (k.signing_key, k.verify_key, k.source) == (private, public, "settings")
    assert not (tmp_path / "keys").exists()
    w = resolve_keys(None, public, tmp_path / "keys", create=False)
    assert (w.signing_key, w.verify_key) == (None, public)
    assert resolve_keys(None, None, tmp_path / "none", create=False).verify_key is None


def test_the_demo_uses_the_machine_key_pair_and_adopts_an_older_demo_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from finscore.app.demo import ensure_keys
    from finscore.models.registry import generate_keypair
    from finscore.settings import Settings

    for key in ("FINSCORE_SIGNING_KEY", "FINSCORE_VERIFY_KEY", "FINSCORE_KEY_DIR"):
        monkeypatch.delenv(key, raising=False)
    s = Settings(registry_dir=tmp_path / "a" / "registry")
    env = ensure_keys(s, tmp_path / "a" / "demo")
    assert env == {"FINSCORE_KEY_DIR": str(tmp_path / "a" / "keys")}
    assert all(len(v) < 200 for v in env.values())  # a folder, never a key
    private, public = generate_keypair()
    old = tmp_path / "b" / "demo"
    old.mkdir(parents=True)
    (old / "keys.json").write_text(
        json.dumps({"FINSCORE_SIGNING_KEY": private, "FINSCORE_VERIFY_KEY": public})
    )
    s = Settings(registry_dir=tmp_path / "b" / "registry")
    ensure_keys(s, old)
    keys = s.model_keys(create=False)
    assert (keys.signing_key, keys.verify_key) == (private, public)


def test_promote_and_rollback_leave_the_registry_alone_when_the_announcement_fails(
    tmp_path: Path,
) -> None:
    """Issue 16, atomic operations: `models promote fraud 2` against an unreachable broker used
    to fail but still move the champion while the workers stayed on v1."""
    from tests.artifacts import TEST_SIGNING_KEY, signed

    reg = Registry(tmp_path / "registry")
    for seed in (1, 2, 3):
        reg.publish(signed(artifact("fraud", version="", seed=seed)), TEST_SIGNING_KEY)
    reg.promote("fraud", "1")
    reg.promote("fraud", "2")
    env = {
        **os.environ,
        "FINSCORE_REGISTRY_DIR": str(reg.root),
        "FINSCORE_SIGNING_KEY": TEST_SIGNING_KEY,
        "FINSCORE_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # nothing listens there
        "FINSCORE_LOG_FORMAT": "console",
    }
    for args in (["promote", "fraud", "3"], ["rollback", "fraud"]):
        r = subprocess.run(
            [sys.executable, "-m", "finscore.app.cli", "models", *args],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode != 0, r.stdout
        assert "Traceback" not in r.stderr
        champion = reg.champion("fraud")
        assert champion is not None and champion.manifest.version == "2", args
    assert reg.previous("fraud").version == "1"
