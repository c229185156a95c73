"""What a person sees when no broker answers (issue 16): one sentence naming the address and
where it came from, a hint that fits (check the setting when it is set, `finscore broker` when it
is not), and no raw librdkafka ``%3|...|FAIL|...`` lines, from the console or from a worker's own
Kafka clients. Subprocesses, as a person runs them; nothing listens on port 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import sys
from finscore.logging import configure_logging
from finscore.streams.worker import Worker, WorkerConfig
configure_logging("INFO", "json")
cfg = WorkerConfig(stream="fraud", client={"bootstrap.servers": "127.0.0.1:1"}, topic_prefix="x-")
try:
    Worker(cfg).run()
except Exception as exc:  # the one sentence the CLI would print
    print("worker stopped:", type(exc).__name__, exc, file=sys.stderr)
"""


def _run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FINSCORE_")}
    return subprocess.run(args, env={**base, **env}, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def _finscore(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "finscore.app.cli", *args], env)


def test_unreachable_set_bootstrap_servers_names_the_setting_and_says_check_it() -> None:
    r = _finscore("topics", env={"FINSCORE_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "no Kafka broker answers at 127.0.0.1:1 (FINSCORE_BOOTSTRAP_SERVERS)" in r.stderr
    hint = next(line for line in r.stderr.splitlines() if line.startswith("hint:"))
    assert "check FINSCORE_BOOTSTRAP_SERVERS" in hint, hint
    assert "set FINSCORE_BOOTSTRAP_SERVERS" not in hint and "finscore broker" not in hint, hint


def test_unreachable_bootstrap_option_names_the_option() -> None:
    r = _finscore("-b", "127.0.0.1:1", "topics", env={})
    assert r.returncode == 1, r.stderr
    assert "no Kafka broker answers at 127.0.0.1:1 (-b/--bootstrap-servers)" in r.stderr
    hint = next(line for line in r.stderr.splitlines() if line.startswith("hint:"))
    assert "check -b/--bootstrap-servers" in hint and "finscore broker" not in hint, hint


def test_unreachable_embedded_broker_suggests_finscore_broker() -> None:
    r = _finscore("topics", env={"FINSCORE_BROKER_PORT": "1"})  # unset servers: embedded
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "no Kafka broker answers at 127.0.0.1:1" in r.stderr, r.stderr
    assert "(FINSCORE_BOOTSTRAP_SERVERS)" not in r.stderr
    hint = next(line for line in r.stderr.splitlines() if line.startswith("hint:"))
    assert "finscore broker" in hint, hint


def test_a_worker_on_an_unreachable_broker_prints_no_raw_librdkafka_lines() -> None:
    r = _run([sys.executable, "-c", WORKER], env={})
    assert "worker stopped:" in r.stderr, r.stderr[-2000:]  # it did try, and gave up cleanly
    raw = [line for line in r.stderr.splitlines() if line.startswith("%")]
    assert not raw, raw[:3]  # was: %3|...|FAIL|rdkafka#consumer-1| ... Connection refused
