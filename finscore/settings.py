"""Settings, read only at the edge (CLI, workers' entry points) from ``FINSCORE_*`` env vars.

Core classes never read the environment: they take the explicit value objects built here
(e.g. :meth:`Settings.kafka_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    signing_key: SecretStr | None = Field(None, description="Ed25519 private key (hex).")
    verify_key: str | None = Field(None, description="Ed25519 public key (hex) for workers.")

    # Operations.
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    metrics_port: int = Field(0, description="Port of /metrics and /health; 0 = pick a free one.")
    metrics_host: str = Field(
        "127.0.0.1", description="Address /metrics and /health listen on (0.0.0.0 in containers)."
    )

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

    def json_topic_set(self) -> frozenset[str]:
        """Output topics to write as JSON."""
        return frozenset(t.strip() for t in self.json_topics.split(",") if t.strip())


def redact(conf: dict[str, str | int]) -> dict[str, str | int]:
    """A copy of a librdkafka config safe to log: passwords and secrets masked."""
    return {
        k: ("***" if any(s in k for s in ("password", "secret", "token")) else v)
        for k, v in conf.items()
    }
