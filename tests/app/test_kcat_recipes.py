"""The README's kcat recipes ("The same with kcat (real Kafka clusters)"), run against Apache
Kafka with a real fraud worker writing JSON flags (issue 17, deliverable 4).

The commands are read from README.md, so the docs cannot rot; only what a reader substitutes
is substituted: the session broker's address for ``kafka1:9092``, and this test's topic prefix
on every topic name (the session broker is shared). The ``export`` line gives the worker its
JSON topics. Debian's kcat 1.7.1 (librdkafka 2.0.2) talks to Apache Kafka 4.4; it cannot talk
to the embedded Tansu broker (the README says so), so the Tansu run is skipped, and so is the
whole test where kcat is not installed (``make setup`` installs it where it may).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from finscore.schemas import topics as T
from tests.app.test_readme_tour import bash_blocks
from tests.artifacts import artifact
from tests.streams.kit import make_topics, publish, running, worker_config

pytestmark = pytest.mark.broker

SECTION = "### The same with kcat (real Kafka clusters)"
PLACEHOLDER = "kafka1:9092"


def recipe() -> tuple[dict[str, str], list[str]]:
    """The section's ``export`` variables and its kcat commands, as written."""
    [block] = bash_blocks(SECTION)
    env: dict[str, str] = {}
    cmds = []
    for cmd in block:
        if cmd.startswith("export "):
            env.update(kv.split("=", 1) for kv in shlex.split(cmd)[1:])
        else:
            cmds.append(cmd)
    return env, cmds


def localise(cmd: str, bootstrap: str, prefix: str) -> str:
    """What a reader types on their cluster: its address, and (here) the prefixed topics."""
    cmd = cmd.replace(PLACEHOLDER, bootstrap)
    cmd = re.sub(r"-t (\S+)", lambda m: f"-t {prefix}{m.group(1)}", cmd)
    return re.sub(r'topic "([^"]+)"', lambda m: f'topic "{prefix}{m.group(1)}"', cmd)


def bash(cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True,
                         timeout=timeout, check=False)  # fmt: skip
    assert out.returncode == 0, f"{cmd!r} exited {out.returncode}: {out.stderr.decode()[-800:]}"
    return out


class Follower:
    """A command that runs until stopped (``kcat -C ... -o end``), its output lines queued."""

    def __init__(self, cmd: str) -> None:
        self.proc = subprocess.Popen(["bash", "-c", f"exec {cmd}"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
        self.out: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        threading.Thread(
            target=self._pump, args=(self.proc.stdout, self.out.put), daemon=True
        ).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.err.append), daemon=True).start()  # fmt: skip

    @staticmethod
    def _pump(stream, put) -> None:  # noqa: ANN001
        for line in stream:
            put(line.decode(errors="replace").rstrip("\n"))

    def wait_stderr(self, pattern: str, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(bool(re.search(pattern, e)) for e in list(self.err)) >= count:
                return
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.err[-5:]}"
            time.sleep(0.05)
        raise AssertionError(f"no {count}x {pattern!r} on stderr within {timeout} s: {self.err}")

    def lines(self, timeout: float) -> Iterator[str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                yield self.out.get(timeout=left)
            except queue.Empty:
                return

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(10)


def test_the_kcat_section_is_read_from_the_readme() -> None:
    env, cmds = recipe()
    assert env["FINSCORE_BOOTSTRAP_SERVERS"] == PLACEHOLDER
    assert "fraud-flags" in env["FINSCORE_JSON_TOPICS"].split(",")
    assert len(cmds) == 4 and all("kcat" in c and PLACEHOLDER in c for c in cmds)


def test_the_readmes_kcat_recipes_work_on_apache_kafka(backend, client, prefix) -> None:  # noqa: ANN001
    if backend != "kafka":
        pytest.skip("Debian's kcat 1.7 cannot talk to the embedded Tansu broker (see README)")
    if shutil.which("kcat") is None:
        pytest.skip("kcat is not installed (make setup installs it with apt-get when root)")
    env, cmds = recipe()
    produce_cmd, follow_cmd, dlq_cmd, list_cmd = (localise(c, client["bootstrap.servers"], prefix)
                                                  for c in cmds)  # fmt: skip
    assert " -P " in produce_cmd and "-o end" in follow_cmd and "-dlq" in dlq_cmd
    assert " -L " in list_cmd
    make_topics(client, prefix, partitions=3)
    publish(client, prefix, artifact("fraud", "1"))
    json_topics = frozenset(prefix + t for t in env["FINSCORE_JSON_TOPICS"].split(","))
    flags = prefix + T.FRAUD_FLAGS
    with running(worker_config(client, prefix, json_topics=json_topics)):
        # "JSON flags as they come": the follower is at the end of every partition first
        follower = Follower(follow_cmd)
        try:
            follower.wait_stderr(rf"Reached end of topic {re.escape(flags)} \[\d\]", 3, 30)
            bash(produce_cmd)  # the README's hand-typed transaction
            got = next(([json.loads(x)] for x in follower.lines(30) if x.startswith("{")), [])
        finally:
            follower.stop()
        assert got, f"no JSON flag from {follow_cmd!r}: {follower.err[-5:]}"
        [flag] = got
        assert flag["transaction_id"] == "t-1" and flag["model_version"] == "1"
        assert 0.0 <= flag["score"] <= 1.0

        # "what was rejected, and why": a value that is no transaction goes to the DLQ
        bash(f"echo 'c42|not a transaction' | kcat -P -b {client['bootstrap.servers']} "
             f"-t {prefix}{T.TRANSACTIONS} -K'|'")  # fmt: skip

        def rejected() -> list[dict]:
            """The DLQ's JSON dead letters (listed in the README's FINSCORE_JSON_TOPICS)."""
            docs = [json.loads(x) for x in bash(dlq_cmd).stdout.splitlines() if x.startswith(b"{")]
            return [d for d in docs if base64.b64decode(d["value"]) == b"not a transaction"]

        deadline = time.monotonic() + 30
        while not (dead := rejected()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert dead, "the rejected value is not on the DLQ as JSON"
        assert dead[0]["source_topic"] == prefix + T.TRANSACTIONS and dead[0]["reason"]

    listing = bash(list_cmd).stdout.decode()
    assert f'topic "{prefix}{T.TRANSACTIONS}" with 3 partitions' in listing, listing
    assert len(re.findall(r"partition \d, leader", listing)) == 3, listing  # only that topic
