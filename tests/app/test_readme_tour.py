"""The README's tour, hot-swap and "your own events" commands, run verbatim as a new user would
(issue 16: the docs cannot rot). The commands are read from README.md itself; only the
environment a user's shell would have is set: `finscore` on PATH (the venv's bin), the embedded
broker's port (a free one, so parallel runs never collide) and a fresh working folder (so the
registry, the key pair and the reports are made from nothing).

Commands that run until stopped (`finscore broker`, `finscore worker ...`, a following
`finscore tail ...`) start in the background, as in the README's separate terminals; every other
command must exit 0. The test also checks what the tour promises: flags come out, the hot swap
and the rollback reach the running worker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from finscore.app.broker import free_port
from tests.signals import interruptible

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
METRICS = "http://127.0.0.1:9100"  # the port the README's worker command names

pytestmark = pytest.mark.broker


def bash_blocks(after: str) -> list[list[str]]:
    """The commands of every ```bash block in the README section that starts with ``after``
    (up to the next heading of the same or a higher level), comments dropped, continuation
    lines joined."""
    text = README.read_text()
    start = text.index(after)
    level = after.split(" ")[0]
    nxt = re.search(rf"^{level} ", text[start + len(after) :], re.MULTILINE)
    section = text[start : start + len(after) + (nxt.start() if nxt else len(text))]
    blocks = []
    for body in re.findall(r"```bash\n(.*?)```", section, re.DOTALL):
        joined = body.replace("\\\n", " ")
        cmds = []
        for line in joined.splitlines():
            line = re.split(r"\s{2,}#", line)[0].strip()
            if line and not line.startswith("#"):
                cmds.append(line)
        blocks.append(cmds)
    return blocks


def test_the_tour_is_read_from_the_readme() -> None:
    tour, swap = bash_blocks("## A 5-minute tour")[:2]
    assert tour[0] == "finscore broker"
    assert any(c.startswith("finscore compress fraud") for c in tour)
    assert any(c.startswith("finscore models promote fraud 2") for c in swap)
    family = bash_blocks("### Your own family")[0]
    assert any(c.startswith("finscore worker family --family credit") for c in family)


def _wait(what: str, check, timeout: float) -> object:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout:.0f} s: {what} (last: {last!r})")


def _health() -> dict:
    with urllib.request.urlopen(f"{METRICS}/health", timeout=2) as r:  # noqa: S310 - loopback
        return json.loads(r.read())


class Shell:
    """Runs README lines in a user's shell: `finscore` on PATH, in a fresh folder."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd, self.env = cwd, env
        self.background: list[subprocess.Popen] = []

    def run(self, cmd: str, timeout: float = 300) -> subprocess.CompletedProcess:
        r = subprocess.run(
            ["bash", "-o", "pipefail", "-c", cmd],
            cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        assert r.returncode == 0, (
            f"`{cmd}` exited {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        )
        return r

    def start(self, cmd: str, log: Path) -> subprocess.Popen:
        p = subprocess.Popen(
            ["bash", "-c", f"exec {cmd}"], cwd=self.cwd, env=self.env,
            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=interruptible,  # stopped with Ctrl-C, as a user would
        )  # fmt: skip
        self.background.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.background):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(10)


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINSCORE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["FINSCORE_BROKER_PORT"] = str(free_port())
    env["FINSCORE_LOG_LEVEL"] = "WARNING"
    sh = Shell(tmp_path, env)
    try:
        yield sh
    finally:
        sh.stop_all()


def _follows(cmd: str) -> bool:
    """A `finscore tail` without `-e` follows like `tail -f`: a terminal of its own."""
    return cmd.startswith("finscore tail") and " -e" not in cmd.split("|")[0]


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq missing (make setup installs it)")
def test_the_readme_tour_hot_swap_and_own_events_run_verbatim(shell: Shell, tmp_path: Path) -> None:
    tour, swap = bash_blocks("## A 5-minute tour")[:2]
    own = bash_blocks("### Your own events")[0]
    family = bash_blocks("### Your own family")[0]
    port = int(shell.env["FINSCORE_BROKER_PORT"])
    logs = tmp_path / "logs"
    logs.mkdir()
    followers: list[tuple[subprocess.Popen, Path]] = []

    def stop_followers() -> str:
        out = ""
        for p, log in followers:
            os.killpg(p.pid, signal.SIGINT)
            assert p.wait(30) in (0, 130), log.read_text()[-2000:]
            out += log.read_text()
        followers.clear()
        return out

    for i, cmd in enumerate(tour):
        if cmd == "finscore broker":
            shell.start(cmd, logs / "broker.log")
            _wait("the broker's port", lambda: _port_open(port), 60)
        elif cmd.startswith("finscore worker"):
            shell.start(cmd, logs / "worker.log")
            _wait("worker healthy", lambda: _health().get("status") == "ok", 120)
        elif _follows(cmd):
            log = logs / f"tour-{i}.log"
            followers.append((shell.start(cmd, log), log))
            time.sleep(2)  # the follower is assigned before the events it should see
        else:
            shell.run(cmd)
    flags = [json.loads(line) for line in stop_followers().splitlines() if line.startswith("{")]
    assert flags and all("score" in f and f["model_version"] == "1" for f in flags)

    versions_seen = []
    for cmd in swap:
        out = shell.run(cmd).stdout
        if cmd.startswith("finscore models list"):
            assert re.search(r"\b2\b", out), out
        if cmd.startswith("finscore models promote fraud 2"):
            _wait("worker on v2", lambda: (_health().get("model") or {}).get("version") == "2", 60)
            versions_seen.append("2")
        if cmd.startswith("finscore models rollback"):
            _wait("worker back on v1", lambda: _health()["model"]["version"] == "1", 60)
            versions_seen.append("1")
    assert versions_seen == ["2", "1"]

    for i, cmd in enumerate(own):
        if _follows(cmd):
            log = logs / f"own-{i}.log"
            followers.append((shell.start(cmd, log), log))
            time.sleep(3)
            stop_followers()
        elif "fraud-flags -o beginning -e" in cmd:  # the worker flags them within seconds

            def both_flagged(cmd: str = cmd) -> bool:
                out = shell.run(cmd).stdout
                return {"t-1", "t-2"} <= {json.loads(x)["transaction_id"] for x in out.split()}

            _wait("flags for t-1 and t-2", both_flagged, 60)
        else:
            shell.run(cmd)

    for cmd in family:  # the credit family, next to the fraud worker
        if cmd.startswith("finscore worker family"):
            port = re.search(r"--metrics-port (\d+)", cmd)
            assert port, cmd
            shell.start(cmd, logs / "family-worker.log")
            url = f"http://127.0.0.1:{port.group(1)}/health"

            def family_ok(url: str = url) -> bool:
                with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback
                    return json.loads(r.read()).get("status") == "ok"

            _wait("the family worker healthy", family_ok, 120)
        elif cmd.startswith("finscore tail credit-scores"):

            def all_scored(cmd: str = cmd) -> list[dict]:
                rows = [json.loads(x) for x in shell.run(cmd).stdout.splitlines() if x]
                return rows if len(rows) >= 200 else []

            rows = _wait("200 credit scores", all_scored, 90)
            assert isinstance(rows, list) and len({r["id"] for r in rows}) == 200
            assert all(0 <= r["score"] <= 1 and r["why"] for r in rows)
        else:
            shell.run(cmd)


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
