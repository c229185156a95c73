"""Settings, read only at the edge (CLI, workers' entry points) from ``FINSCORE_*`` env vars.

Core classes never read the environment: they take the explicit value objects built here
(e.g. :meth:`Settings.kafka_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from finscore.models.keys import ModelKeys

EMBEDDED_HOST = "127.0.0.1"


class Settings(BaseSettings):
    """Everything an operator can set; each field is ``FINSCORE_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="FINSCORE_", env_file=".env", extra="ignore")

    # Kafka connection. Unset bootstrap servers means "the embedded broker on broker_port".
    bootstrap_servers: str | None = Field(
        None, description="Kafka bootstrap servers; unset = embedded Tansu on 127.0.0.1."
    )
    broker_port: int = Field(9092, description="Port of the embedded broker.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = Field(None, description="e.g. PLAIN, SCRAM-SHA-512.")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    session_timeout_ms: int = Field(
        6000, description="Consumer-group session timeout; a join takes about half of it."
    )

    # Schema registry (Confluent wire format). Unset = Avro single-object encoding.
    schema_registry_url: str | None = None
    schema_registry_user_info: SecretStr | None = Field(
        None, description="user:password for the schema registry."
    )

    # Topics.
    topic_prefix: str = Field("", description="Prefix for every finscore topic name.")
    partitions: int = Field(6, description="Partitions of input/output topics.")
    replication_factor: int = Field(1, description="Replication factor of created topics.")
    json_topics: str = Field(
        "", description="Comma-separated output topics written as JSON instead of Avro."
    )

    # Models and data.
    registry_dir: Path = Field(Path("var/registry"), description="Local model registry.")
    data_dir: Path | None = Field(None, description="Real data for benchmarks (optional).")
    signing_key: SecretStr | None = Field(
        None, description="Ed25519 private key (hex); unset = the local pair in key_dir."
    )
    verify_key: str | None = Field(
        None, description="Ed25519 public key (hex) for workers; unset = the local pair."
    )
    key_dir: Path | None = Field(
        None, description="Local model key pair (created once); unset = <registry_dir>/../keys."
    )
    allow_unsigned_models: bool = Field(
        False, description="Development only: accept unsigned models (logged loudly at start)."
    )
    execution_providers: str = Field(
        "CPU",
        description="ONNX Runtime execution providers in order of preference, comma-separated "
        "(CPU, CUDA, TensorRT, OpenVINO, ROCm, DirectML, CoreML, DNNL or full "
        "...ExecutionProvider names), e.g. CUDA,CPU. Unavailable ones are dropped with one "
        "warning; CPU is always last. GPU providers need finscore[gpu].",
    )
    gpu_min_batch: int = Field(
        1024,
        ge=1,
        description="Smallest worker batch on a GPU provider (GPUs want large batches).",
    )

    @field_validator("execution_providers")
    @classmethod
    def _known_providers(cls, value: str) -> str:
        from finscore.providers import parse

        parse(value)  # ValueError (reported by pydantic) for an unknown name
        return value

    def provider_list(self) -> tuple[str, ...]:
        """The requested execution providers as onnxruntime names (a plain tuple for cores)."""
        from finscore.providers import parse

        return parse(self.execution_providers)

    # Operations.
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    metrics_port: int = Field(0, description="Port of /metrics and /health; 0 = pick a free one.")
    metrics_host: str = Field(
        "127.0.0.1", description="Address /metrics and /health listen on (0.0.0.0 in containers)."
    )
    label_contract: Literal["all_outcomes", "fraud_reports"] = Field(
        "all_outcomes",
        description="What fraud-labels carries: every settled outcome (all_outcomes) or fraud "
        "reports only (fraud_reports: an unreported transaction is genuine; the terminal counts "
        "come from the transactions, which fraud workers exchange; see docs/ARCHITECTURE.md).",
    )
    fraud_stage: Literal["all", "cards", "terminals"] = Field(
        "all",
        description="Which part of the fraud stream a worker runs: all of it, or one stage of "
        "the two-stage fleet (cards: customer state, rows repartitioned by terminal; terminals: "
        "terminal state, model, flags). The stages need label_contract=fraud_reports.",
    )
    health_grace_s: float = Field(
        10.0,
        gt=0,
        description="Seconds outputs may stay unacknowledged, or a required topic missing, "
        "before a worker's /health and finscore_healthy turn unhealthy.",
    )

    # Input bounds (issue 14): a record outside them is a dead letter with a reason.
    max_future_skew_s: float = Field(
        3600, ge=0, description="Event times may be at most this far ahead of the wall clock."
    )
    min_event_time: str = Field(
        "2000-01-01T00:00:00Z",
        description="No event time before this (ISO 8601); also the feature stores' origin.",
    )
    max_event_age_days: float | None = Field(
        None,
        gt=0,
        description="Event times at most this many days before the wall clock; unset = no "
        "limit (replays of history, e.g. the simulator's 2018 data). Set it in production.",
    )
    min_amount: float = Field(0.0, ge=0, description="Smallest accepted amount.")
    max_amount: float = Field(1_000_000.0, gt=0, description="Largest accepted amount.")
    max_id_length: int = Field(
        128, ge=1, description="Longest accepted id (transaction, customer, terminal, instrument)."
    )

    def input_bounds_values(self) -> dict[str, int | None]:
        """The input bounds as plain values, the keyword arguments of
        :class:`finscore.streams.bounds.InputBounds` (the worker's entry point builds it: the
        settings are ground and never import the workers). Raises ValueError for a
        ``FINSCORE_MIN_EVENT_TIME`` without a time zone."""
        from datetime import datetime

        start = datetime.fromisoformat(self.min_event_time.replace("Z", "+00:00"))
        if start.tzinfo is None:
            raise ValueError("FINSCORE_MIN_EVENT_TIME needs a time zone (e.g. Z)")
        age = self.max_event_age_days
        return {
            "max_future_ms": int(self.max_future_skew_s * 1000),
            "min_event_time_ms": int(start.timestamp() * 1000),
            "max_event_age_ms": None if age is None else int(age * 86_400_000),
            "min_amount_cents": round(self.min_amount * 100),
            "max_amount_cents": round(self.max_amount * 100),
            "max_id_length": self.max_id_length,
        }

    @property
    def embedded(self) -> bool:
        """True when no bootstrap servers are set: finscore runs its own broker."""
        return not self.bootstrap_servers

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers clients should use."""
        return self.bootstrap_servers or f"{EMBEDDED_HOST}:{self.broker_port}"

    def kafka_config(self) -> dict[str, str | int]:
        """librdkafka client settings (connection and security only; no secrets logged)."""
        conf: dict[str, str | int] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol,
        }
        optional: dict[str, str | None] = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": (
                self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
            ),
        }
        conf.update({k: v for k, v in optional.items() if v})
        return conf

    def schema_registry_config(self) -> dict[str, str] | None:
        """Schema-registry client settings (``url`` and ``basic.auth.user.info`` when set); None
        when no registry is configured. What every reader and writer of the Confluent wire
        format is given (workers, sidecar, dashboard, ``models compare``, ``tail``)."""
        if not self.schema_registry_url:
            return None
        conf = {"url": self.schema_registry_url}
        if self.schema_registry_user_info is not None:
            conf["basic.auth.user.info"] = self.schema_registry_user_info.get_secret_value()
        return conf

    @property
    def model_key_dir(self) -> Path:
        """Folder of the local model key pair: ``key_dir``, else ``keys`` beside the registry."""
        return self.key_dir or self.registry_dir.parent / "keys"

    def model_keys(self, *, create: bool = True) -> ModelKeys:
        """Signing and verify keys: the explicit ones, else the local pair (created when
        missing and ``create``); see :mod:`finscore.models.keys`."""
        from finscore.models.keys import resolve_keys

        signing = self.signing_key.get_secret_value() if self.signing_key else None
        return resolve_keys(signing, self.verify_key, self.model_key_dir, create=create)

    def json_topic_set(self) -> frozenset[str]:
        """Output topics to write as JSON."""
        return frozenset(t.strip() for t in self.json_topics.split(",") if t.strip())


def redact(conf: dict[str, str | int]) -> dict[str, str | int]:
    """A copy of a librdkafka config safe to log: passwords and secrets masked."""
    return {
        k: ("***" if any(s in k for s in ("password", "secret", "token")) else v)
        for k, v in conf.items()
    }
