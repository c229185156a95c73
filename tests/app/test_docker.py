"""docker/ is checked, not run (no Docker engine here): the compose file against the Compose
Specification, every service command against the real CLI, the Dockerfiles against a small
linter, the worker image's dependency set, Prometheus and Grafana against our metric names."""

from __future__ import annotations

import base64
import json
import re
import tomllib
from pathlib import Path

import click
import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())  # resolves YAML merge keys
SPEC = json.loads((ROOT / "tests" / "fixtures" / "compose-spec.json").read_text())
METRICS = re.findall(r'"(finscore_[a-z0-9_]+)"', (ROOT / "streams" / "metrics.py").read_text())


def validate_compose(doc: dict) -> None:
    """Strict Compose Specification validation (the `compose-spec` crate's bindings)."""
    from compose_spec import PyCompose

    PyCompose.from_json(json.dumps(doc)).validate()


def spec_errors(doc: dict) -> list[str]:
    """Violations of the Compose Specification's own JSON schema (vendored, see fixtures/)."""
    validator = jsonschema.Draft7Validator(SPEC)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_file_follows_the_compose_specification() -> None:
    validate_compose(COMPOSE)
    assert spec_errors(COMPOSE) == []


def test_the_vendored_schema_is_the_compose_specification() -> None:
    jsonschema.Draft7Validator.check_schema(SPEC)
    assert SPEC["title"] == "Compose Specification"
    assert {"services", "volumes", "name"} <= set(SPEC["properties"])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["services"]["kafka1"].update(imagee="typo"),
        lambda d: d["services"]["fraud-worker-1"].update(deploy={"replicas": "two"}),
        lambda d: d["services"]["grafana"].update(depends_on=5),
    ],
    ids=["unknown-key", "bad-replicas", "bad-depends-on"],
)
def test_the_validator_rejects_broken_compose_files(mutate) -> None:  # noqa: ANN001
    broken = json.loads(json.dumps(COMPOSE))
    mutate(broken)
    with pytest.raises(ValueError):
        validate_compose(broken)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["services"]["kafka1"].update(imagee="typo"),
        lambda d: d["services"]["grafana"].update(depends_on=5),
        lambda d: d["services"]["topics"]["depends_on"]["kafka1"].update(condition="ready"),
        lambda d: d.update(service={}),
    ],
    ids=["unknown-key", "bad-depends-on", "bad-condition", "unknown-top-level"],
)
def test_the_spec_schema_rejects_broken_compose_files(mutate) -> None:  # noqa: ANN001
    broken = json.loads(json.dumps(COMPOSE))
    mutate(broken)
    assert spec_errors(broken)


def test_the_deployment_has_what_the_issue_asks_for() -> None:
    s = COMPOSE["services"]
    kafka = [n for n, svc in s.items() if svc.get("image", "").startswith("apache/kafka")]
    assert len(kafka) == 3
    for n in kafka:
        env = s[n]["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@") == 3
    fraud = [n for n, svc in s.items() if svc.get("command", [])[:2] == ["worker", "fraud"]]
    assert "schema-registry" in s and len(fraud) >= 2
    assert {"market-worker", "sidecar", "prometheus", "grafana", "dashboard"} <= set(s)


def test_the_kafka_nodes_would_start_and_keep_their_data() -> None:
    s = COMPOSE["services"]
    kafka = sorted(n for n, svc in s.items() if svc.get("image", "").startswith("apache/kafka"))
    host_ports = set()
    for n in kafka:
        env = s[n]["environment"]
        # `kafka-storage format` accepts only a base64url-encoded 16-byte UUID as cluster id.
        cluster_id = env["CLUSTER_ID"]
        assert len(base64.urlsafe_b64decode(cluster_id + "=" * (-len(cluster_id) % 4))) == 16
        # Env-var config replaces the image defaults: log.dirs must point into the volume.
        mount = next(v.split(":")[1] for v in s[n]["volumes"] if v.startswith(n + ":"))
        assert env["KAFKA_LOG_DIRS"] == mount
        listeners = dict(x.split("://") for x in env["KAFKA_LISTENERS"].split(","))
        advertised = dict(x.split("://") for x in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
        protocols = dict(
            x.split(":") for x in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
        )
        assert set(listeners) <= set(protocols) and set(advertised) <= set(listeners)
        assert advertised["INTERNAL"] == f"{n}:9092"  # what the other services bootstrap from
        host_port = advertised["EXTERNAL"].rsplit(":", 1)[1]  # clients on the host
        container_port = listeners["EXTERNAL"].rsplit(":", 1)[1]
        assert f"{host_port}:{container_port}" in s[n]["ports"]
        host_ports.add(host_port)
        assert "healthcheck" in s[n]
    assert len(host_ports) == 3
    for dependent in ("topics", "schema-registry"):
        deps = s[dependent]["depends_on"]
        assert {deps[n]["condition"] for n in kafka} == {"service_healthy"}
    bootstrap = COMPOSE["x-finscore-env"]["FINSCORE_BOOTSTRAP_SERVERS"].split(",")
    assert sorted(bootstrap) == [f"{n}:9092" for n in kafka]


def _resolve(args: list[str]) -> click.Context:
    from finscore.app.cli.group import cli

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
        sources = [
            i
            for i, ln in enumerate(st)
            if ln.upper().startswith("COPY ")
            and "--from" not in ln
            and re.search(r"\b(finscore|streams|schemas|compression)\b", ln)
        ]
        if sources and (not installs or min(installs) > min(sources)):
            problems.append("source copied before the dependencies are installed")
        if sources and any("--no-deps" not in st[i] for i in installs if i > min(sources)):
            problems.append("the source layer reinstalls dependencies (no --no-deps)")
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
    workers = {
        alias
        for n, svc in COMPOSE["services"].items()
        if svc.get("command", [None])[0] == "worker"
        for alias in svc.get("networks", {}).get("default", {}).get("aliases", [n])
    }
    assert names == workers
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


def _finscore_env_names() -> dict[str, str]:
    """Every FINSCORE_* variable set by compose.yaml or a Dockerfile ENV, with its value."""
    found: dict[str, str] = {}
    for svc in COMPOSE["services"].values():
        env = svc.get("environment", {})
        found.update({k: str(v) for k, v in env.items() if k.startswith("FINSCORE_")})
    for name in ("worker.Dockerfile", "sidecar.Dockerfile"):
        text = re.sub(r"\\\n", " ", (DOCKER / name).read_text())
        for line in text.splitlines():
            if line.strip().upper().startswith("ENV "):
                found.update(re.findall(r"(FINSCORE_[A-Z0-9_]+)=(\S+)", line))
    return found


def test_every_finscore_variable_in_the_deployment_is_a_real_setting() -> None:
    from finscore.settings import Settings

    fields = set(Settings.model_fields)
    names = _finscore_env_names()
    unknown = {n for n in names if n.removeprefix("FINSCORE_").lower() not in fields}
    assert names and not unknown, unknown


def test_worker_metrics_listen_where_prometheus_can_reach_them() -> None:
    """In a container, 127.0.0.1 is unreachable from Prometheus: the image and compose set
    FINSCORE_METRICS_HOST=0.0.0.0, and it reaches the worker's metrics server."""
    import urllib.request

    from finscore.app.cli.worker import worker_config
    from finscore.settings import Settings
    from finscore.streams.metrics import MetricsServer, WorkerMetrics

    assert _finscore_env_names()["FINSCORE_METRICS_HOST"] == "0.0.0.0"
    assert "FINSCORE_METRICS_HOST=0.0.0.0" in (DOCKER / "worker.Dockerfile").read_text()
    cfg = worker_config(Settings(metrics_host="0.0.0.0"), "fraud")
    assert cfg.metrics_host == "0.0.0.0"
    server = MetricsServer(WorkerMetrics("fraud"), lambda: {"status": "ok"}, 0, cfg.metrics_host)
    server.start()
    try:
        assert server.httpd.server_address[0] == "0.0.0.0"
        with urllib.request.urlopen(server.url + "/metrics", timeout=5) as r:  # noqa: S310
            assert b"finscore_events_in_total" in r.read()
    finally:
        server.stop()


def test_the_deployment_environment_is_valid_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What each finscore container sees (its environment plus the env files that
    `finscore models keygen --out docker` writes) loads cleanly: every worker verifies models
    with the verify key (never "anyone may deploy a model"), only the sidecar and the model
    jobs hold the signing key, and nobody opts out of signatures."""
    from click.testing import CliRunner

    from finscore.app.cli.group import cli
    from finscore.settings import Settings

    r = CliRunner().invoke(cli, ["models", "keygen", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "signing.env").stat().st_mode & 0o077 == 0
    env_files = {
        f: dict(line.split("=", 1) for line in (tmp_path / f).read_text().split())
        for f in ("signing.env", "verify.env")
    }
    for name, svc in COMPOSE["services"].items():
        if not str(svc.get("image", "")).startswith("finscore"):
            continue
        for key in ("FINSCORE_SIGNING_KEY", "FINSCORE_VERIFY_KEY", "FINSCORE_KEY_DIR"):
            monkeypatch.delenv(key, raising=False)
        files = svc.get("env_file", [])
        for f in files:
            for key, value in env_files[f].items():
                monkeypatch.setenv(key, value)
        for key, value in svc.get("environment", {}).items():
            monkeypatch.setenv(key, re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value)))
        s = Settings(key_dir=tmp_path / "no-local-keys")
        assert s.bootstrap == "kafka1:9092,kafka2:9092,kafka3:9092", name
        assert not s.allow_unsigned_models, name
        keys = s.model_keys(create=False)
        if svc["command"][0] == "worker":
            assert keys.verify_key == env_files["verify.env"]["FINSCORE_VERIFY_KEY"], name
            assert "signing.env" not in files, f"{name} must not hold the private key"
        if svc["command"][0] in ("sidecar", "compress"):
            assert keys.signing_key == env_files["signing.env"]["FINSCORE_SIGNING_KEY"], name
            assert keys.verify_key == env_files["verify.env"]["FINSCORE_VERIFY_KEY"], name
        if "signing.env" not in files:
            assert keys.signing_key is None, name
    assert not (tmp_path / "no-local-keys").exists()


IMAGES = {"finscore-worker": "worker.Dockerfile", "finscore-sidecar": "sidecar.Dockerfile"}


def test_writable_volumes_are_owned_by_the_image_user() -> None:
    """A fresh named volume takes the owner of its mount point in the image: every volume a
    finscore container writes must be created and chowned to the non-root user there."""
    for name, svc in COMPOSE["services"].items():
        image = str(svc.get("image", ""))
        if image not in IMAGES:
            continue
        text = re.sub(r"\\\n", " ", (DOCKER / IMAGES[image]).read_text())
        chowned = {p for m in re.findall(r"chown \S+ ([^&\n]+)", text) for p in m.split()}
        made = {p for m in re.findall(r"mkdir -p ([^&\n]+)", text) for p in m.split()}
        for mount in svc.get("volumes", []):
            source, target, *mode = mount.split(":")
            if source in COMPOSE["volumes"] and "ro" not in mode:
                assert target in made and target in chowned, f"{name}: {target}"
    assert IMAGES[COMPOSE["services"]["sidecar"]["image"]] == "sidecar.Dockerfile"


# -- issue 16: a deployment that would run ------------------------------------------------------
JOB_PROFILES = {"models", "traffic"}


def _is_job(name: str, svc: dict) -> bool:
    """One-off services: the model/traffic profiles and the `topics` job others wait for."""
    waited = any(
        isinstance(d := s.get("depends_on"), dict)
        and d.get(name, {}).get("condition") == "service_completed_successfully"
        for s in COMPOSE["services"].values()
    )
    return waited or bool(JOB_PROFILES & set(svc.get("profiles", [])))


def _image_healthcheck(svc: dict) -> str | None:
    dockerfile = IMAGES.get(str(svc.get("image", "")))
    if dockerfile is None:
        return None
    text = re.sub(r"\\\n", " ", (DOCKER / dockerfile).read_text())
    found = re.search(r"^HEALTHCHECK .*$", text, re.M)
    return found.group(0) if found else None


def _healthcheck(svc: dict) -> str | None:
    """The command a service's health is checked with (compose overrides the image)."""
    hc = svc.get("healthcheck")
    if hc is not None:
        if hc.get("disable"):
            return None
        test = hc["test"]
        return " ".join(test[1:]) if isinstance(test, list) else str(test)
    return _image_healthcheck(svc)


def _option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def test_every_long_running_service_has_a_healthcheck_its_command_serves() -> None:
    """The dashboard container's HEALTHCHECK polled a /health on the worker port it never
    served: each check must hit the port and path the service's own command listens on, and
    one-off jobs must not inherit an image check they cannot pass."""
    s = COMPOSE["services"]
    for name, svc in s.items():
        check = _healthcheck(svc)
        if _is_job(name, svc):
            assert check is None, f"{name} is a job but inherits the check {check!r}"
            continue
        assert check, f"{name} has no healthcheck"
        if not str(svc.get("image", "")).startswith("finscore"):
            continue
        url = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/\S*?)['\")]", check)
        assert url, f"{name}: no local URL in {check!r}"
        port, path = url.group(1), url.group(2)
        assert path == "/health", name
        command = svc["command"]
        env = {**COMPOSE["x-finscore-env"], **svc.get("environment", {})}
        if command[0] == "worker":
            served = _option(command, "--metrics-port") or env.get("FINSCORE_METRICS_PORT")
        elif command[0] == "dashboard":
            served = _option(command, "--port")
        elif command[0] == "sidecar":
            served = _option(command, "--metrics-port")
        else:
            raise AssertionError(f"{name}: no known health endpoint for {command}")
        assert served == port, f"{name} checks :{port} but serves :{served}"


def test_the_dashboard_serves_the_health_its_container_checks() -> None:
    import urllib.request

    from finscore.app.dashboard.server import Dashboard
    from finscore.app.dashboard.state import DashboardState

    dash = Dashboard(DashboardState({"bootstrap.servers": "127.0.0.1:9"}), port=0)
    dash._thread.start()  # the HTTP server only: no broker here
    try:
        with urllib.request.urlopen(dash.url + "health", timeout=5) as r:  # noqa: S310
            assert r.status == 200 and json.loads(r.read())["status"] == "ok"
    finally:
        dash.httpd.shutdown()
        dash.httpd.server_close()


def test_the_sidecar_serves_the_health_its_container_checks() -> None:
    import urllib.request

    from finscore.app.sidecar.status import StatusServer

    server = StatusServer(lambda: {"state": "waiting", "last_error": None}, 0).start()
    try:
        with urllib.request.urlopen(server.url + "/health", timeout=5) as r:  # noqa: S310
            doc = json.loads(r.read())
        assert r.status == 200 and doc["status"] == "ok" and doc["state"] == "waiting"
    finally:
        server.stop()


def test_the_schema_registry_is_healthy_and_the_workers_use_it(monkeypatch) -> None:  # noqa: ANN001
    from finscore.app.cli.worker import worker_config
    from finscore.settings import Settings

    s = COMPOSE["services"]
    registry = s["schema-registry"]
    assert "8081" in _healthcheck(registry)
    url = COMPOSE["x-finscore-env"]["FINSCORE_SCHEMA_REGISTRY_URL"]
    workers = [n for n, svc in s.items() if svc.get("command", [None])[0] == "worker"]
    assert workers
    for name in workers:
        env = s[name]["environment"]
        monkeypatch.setenv("FINSCORE_SCHEMA_REGISTRY_URL", env["FINSCORE_SCHEMA_REGISTRY_URL"])
        cfg = worker_config(Settings(allow_unsigned_models=True), s[name]["command"][1])
        assert cfg.schema_registry == {"url": url}, name
        assert s[name]["depends_on"]["schema-registry"]["condition"] == "service_healthy", name


def test_outputs_are_written_as_json_standard_kafka_uis_can_read(monkeypatch) -> None:  # noqa: ANN001
    from finscore.app.cli.worker import worker_config
    from finscore.schemas import topics as T
    from finscore.settings import Settings

    env = COMPOSE["x-finscore-env"]
    monkeypatch.setenv("FINSCORE_JSON_TOPICS", str(env.get("FINSCORE_JSON_TOPICS", "")))
    cfg = worker_config(Settings(allow_unsigned_models=True), "fraud")
    outputs = {T.FRAUD_FLAGS, T.PRICE_SIGNALS, T.shadow(T.FRAUD_FLAGS), T.shadow(T.PRICE_SIGNALS)}
    assert outputs <= cfg.json_topics


def test_the_kafka_nodes_run_a_current_apache_kafka() -> None:
    images = {svc["image"] for svc in COMPOSE["services"].values()
              if str(svc.get("image", "")).startswith("apache/kafka")}  # fmt: skip
    assert len(images) == 1
    major = int(images.pop().split(":")[1].split(".")[0])
    assert major >= 4


def test_secrets_come_from_git_ignored_env_files_with_committed_examples() -> None:
    import subprocess

    s = COMPOSE["services"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in s["grafana"].get("environment", {})
    assert "grafana.env" in s["grafana"].get("env_file", [])
    files = {f for svc in s.values() for f in svc.get("env_file", [])}
    for f in sorted(files):
        ignored = subprocess.run(["git", "check-ignore", "-q", f"docker/{f}"], cwd=ROOT)
        assert ignored.returncode == 0, f"docker/{f} is not git-ignored"
        example = DOCKER / f"{f}.example"
        assert example.exists(), f"no committed docker/{f}.example"
        kept = subprocess.run(["git", "check-ignore", "-q", f"docker/{f}.example"], cwd=ROOT)
        assert kept.returncode == 1, f"docker/{f}.example is git-ignored"
    grafana = dict(
        line.split("=", 1)
        for line in (DOCKER / "grafana.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] not in ("", "admin")


def test_exactly_once_replicas_have_stable_distinct_transactional_ids() -> None:
    """A replica of a scaled service gets a random id on each start, so a restarted worker
    cannot fence its own zombie: every exactly-once worker is its own service with an explicit
    --instance-id, and still answers to the shared name Prometheus and the dashboard use."""
    from finscore.app.cli.worker import worker_config
    from finscore.settings import Settings

    s = COMPOSE["services"]
    eos = {n: svc for n, svc in s.items() if "--exactly-once" in svc.get("command", [])}
    assert len(eos) >= 2
    tids = set()
    for name, svc in eos.items():
        assert svc.get("deploy", {}).get("replicas", 1) == 1, name
        command = svc["command"]
        instance = _option(command, "--instance-id")
        assert instance, f"{name} has no --instance-id"
        cfg = worker_config(Settings(allow_unsigned_models=True), command[1], True,
                            instance_id=instance)  # fmt: skip
        assert cfg.transactional_id and cfg.transactional_id.endswith(instance)
        tids.add(cfg.transactional_id)
    assert len(tids) == len(eos)
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    scraped = {n for job in prom["scrape_configs"] for sd in job["dns_sd_configs"]
               for n in sd["names"]}  # fmt: skip
    for name, svc in eos.items():
        aliases = set(svc.get("networks", {}).get("default", {}).get("aliases", []))
        assert aliases & scraped, f"{name} answers to none of {scraped}"


def test_the_model_jobs_run_the_readme_command() -> None:
    readme = (ROOT / "README.md").read_text()
    command = COMPOSE["services"]["fraud-model"]["command"]
    base = [a for a in command if a != "--promote"]
    assert "finscore " + " ".join(base) in readme
    assert "--tolerance" not in command  # the default gate, like the README


@pytest.mark.parametrize("name", ["worker.Dockerfile", "sidecar.Dockerfile"])
def test_dockerfiles_install_dependencies_before_copying_the_source(name: str) -> None:
    """A code change must not reinstall every dependency: the dependency layer is built from
    pyproject.toml alone, the source is copied after it and installed without dependencies."""
    problems = [p for p in lint_dockerfile((DOCKER / name).read_text()) if "source" in p]
    assert problems == []


def test_the_linter_catches_a_source_copy_before_the_dependency_layer() -> None:
    bad = (
        "FROM python:3.11-slim\nCOPY pyproject.toml ./\nCOPY finscore ./finscore\n"
        "RUN pip install .\nUSER app\n"
    )
    assert any("source" in p for p in lint_dockerfile(bad))
