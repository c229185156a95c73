"""docker/ is checked, not run (no Docker engine here): the compose file against the Compose
Specification, every service command against the real CLI, the Dockerfiles against a small
linter, the worker image's dependency set, Prometheus and Grafana against our metric names."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import click
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())  # resolves YAML merge keys
METRICS = re.findall(r'"(finscore_[a-z0-9_]+)"', (ROOT / "streams" / "metrics.py").read_text())


def validate_compose(doc: dict) -> None:
    """Strict Compose Specification validation (the `compose-spec` crate's bindings)."""
    from compose_spec import PyCompose

    PyCompose.from_json(json.dumps(doc)).validate()


def test_compose_file_follows_the_compose_specification() -> None:
    validate_compose(COMPOSE)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["services"]["kafka1"].update(imagee="typo"),
        lambda d: d["services"]["fraud-worker"].update(deploy={"replicas": "two"}),
        lambda d: d["services"]["grafana"].update(depends_on=5),
    ],
    ids=["unknown-key", "bad-replicas", "bad-depends-on"],
)
def test_the_validator_rejects_broken_compose_files(mutate) -> None:  # noqa: ANN001
    broken = json.loads(json.dumps(COMPOSE))
    mutate(broken)
    with pytest.raises(ValueError):
        validate_compose(broken)


def test_the_deployment_has_what_the_issue_asks_for() -> None:
    s = COMPOSE["services"]
    kafka = [n for n, svc in s.items() if svc.get("image", "").startswith("apache/kafka")]
    assert len(kafka) == 3
    for n in kafka:
        env = s[n]["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@") == 3
    assert "schema-registry" in s and s["fraud-worker"]["deploy"]["replicas"] >= 2
    assert {"market-worker", "sidecar", "prometheus", "grafana"} <= set(s)


def _resolve(args: list[str]) -> click.Context:
    from finscore.cli import cli

    ctx = cli.make_context("finscore", list(args), resilient_parsing=False)
    cmd: click.Command = cli
    rest = list(args)
    while isinstance(cmd, click.Group) and rest:
        sub = cmd.get_command(ctx, rest[0])
        assert sub is not None, f"no such command: finscore {' '.join(args)}"
        ctx = sub.make_context(rest[0], rest[1:], parent=ctx)
        cmd, rest = sub, ctx.protected_args + ctx.args if isinstance(sub, click.Group) else []
    return ctx


@pytest.mark.parametrize(
    "service",
    [n for n, s in COMPOSE["services"].items() if str(s.get("image", "")).startswith("finscore")],
)
def test_every_service_command_exists_in_the_cli(service: str) -> None:
    command = COMPOSE["services"][service]["command"]
    _resolve(command)  # raises on unknown commands or options


def _stages(text: str) -> list[list[str]]:
    stages: list[list[str]] = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def lint_dockerfile(text: str) -> list[str]:
    """Problems in a Dockerfile (empty = clean)."""
    problems = []
    stages = _stages(text)
    for stage in stages:
        image = stage[0].split()[1]
        if ":" not in image or image.endswith(":latest"):
            problems.append(f"unpinned base image {image}")
    final = stages[-1]
    users = [ln.split()[1] for ln in final if ln.upper().startswith("USER ")]
    if not users or users[-1] in ("root", "0"):
        problems.append("final stage runs as root")
    for ln in (ln for st in stages for ln in st):
        if "apt-get install" in ln and (
            "--no-install-recommends" not in ln or "rm -rf /var/lib/apt/lists" not in ln
        ):
            problems.append("apt-get install without --no-install-recommends and list cleanup")
        if ln.upper().startswith("ENV ") and re.search(
            r"(PASSWORD|SECRET|SIGNING_KEY|TOKEN)=\S+", ln
        ):
            problems.append(f"secret baked into the image: {ln}")
        if ln.upper().startswith("ADD ") and "http" in ln:
            problems.append("ADD from a URL")
    for st in stages:
        copies = [
            i
            for i, ln in enumerate(st)
            if ln.upper().startswith("COPY ") and "pyproject.toml" in ln
        ]
        installs = [i for i, ln in enumerate(st) if "pip install" in ln or "pip wheel" in ln]
        if installs and copies and min(copies) > min(installs):
            problems.append("pip install before the project metadata is copied")
    return problems


@pytest.mark.parametrize("name", ["worker.Dockerfile", "sidecar.Dockerfile"])
def test_dockerfiles_pass_the_linter(name: str) -> None:
    assert lint_dockerfile((DOCKER / name).read_text()) == []


def test_the_linter_catches_bad_dockerfiles() -> None:
    bad = "FROM python:latest\nENV FINSCORE_SIGNING_KEY=abc\nRUN apt-get install -y curl\n"
    problems = lint_dockerfile(bad)
    assert len(problems) == 4, problems


def test_worker_image_dependencies_exclude_torch() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith(("torch", "onnx "))]
    assert any(d.startswith("torch") for d in project["optional-dependencies"]["compress"])
    worker = (DOCKER / "worker.Dockerfile").read_text()
    assert "[compress]" not in worker and "torch" not in worker.replace("no torch", "")
    assert "HEALTHCHECK" in worker and "/health" in worker


def test_prometheus_scrapes_every_worker_and_grafana_uses_real_metrics() -> None:
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    names = {
        n
        for job in prom["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for n in sd["names"]
    }
    assert names == {n for n in COMPOSE["services"] if n.endswith("-worker")}
    dash = json.loads((DOCKER / "grafana" / "dashboards" / "finscore.json").read_text())
    used = {
        m
        for p in dash["panels"]
        for t in p["targets"]
        for m in re.findall(r"finscore_[a-z0-9_]+", t["expr"])
    }
    known = set(METRICS)
    known |= {m + suffix for m in METRICS for suffix in ("_total", "_bucket", "_sum", "_count")}
    assert used and used <= known, used - known
