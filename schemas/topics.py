"""The topic catalog: every topic finscore reads or writes, declared once.

Pure data; creating topics on a cluster is ``finscore.streams.admin.ensure_topics``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, partitions, broker configs, record key and value schema."""

    name: str
    partitions: int
    schema: str
    key: str
    config: dict[str, str] = field(default_factory=dict)
    doc: str = ""


TRANSACTIONS = "transactions"
MARKET_TICKS = "market-ticks"
FRAUD_LABELS = "fraud-labels"
FRAUD_FLAGS = "fraud-flags"
PRICE_SIGNALS = "price-signals"
CASHFLOW_FORECASTS = "cashflow-forecasts"
MODEL_UPDATES = "model-updates"
SIDECAR_COMMANDS = "sidecar-commands"
INPUTS = (TRANSACTIONS, MARKET_TICKS, FRAUD_LABELS)


def dlq(topic: str) -> str:
    """Name of the dead-letter topic of an input topic."""
    return f"{topic}-dlq"


def shadow(topic: str) -> str:
    """Name of the shadow-output topic of an output topic (challenger models)."""
    return f"{topic}-shadow"


def changelog(group: str, store: str) -> str:
    """Name of the compacted changelog topic of a worker group's state store."""
    return f"{group}-{store}-changelog"


COMPACT = {"cleanup.policy": "compact"}
# Append-only state changelogs (fraud customer entries): deleted by age, 45 days > the 38 days
# (label delay + longest window + a day) any feature looks back.
APPEND_ONLY_STATE = {"cleanup.policy": "delete", "retention.ms": str(45 * 86_400_000)}


def catalog(partitions: int = 6, prefix: str = "") -> list[TopicSpec]:
    """All topics with their configs; ``prefix`` namespaces every name."""
    p = prefix
    specs = [
        TopicSpec(
            p + TRANSACTIONS, partitions, "transaction", "customer_id", doc="Card payments in."
        ),
        TopicSpec(
            p + MARKET_TICKS,
            partitions,
            "market_tick",
            "instrument",
            doc="L2 book snapshots and trades in.",
        ),
        TopicSpec(
            p + FRAUD_LABELS,
            partitions,
            "fraud_label",
            "customer_id",
            doc="Settled outcomes of transactions (delayed ground truth), keyed by card: a "
            "card's outcomes stay in order, which its habit flags need.",
        ),
        TopicSpec(
            p + FRAUD_FLAGS, partitions, "fraud_flag", "customer_id", doc="Fraud scores out."
        ),
        TopicSpec(
            p + PRICE_SIGNALS,
            partitions,
            "price_signal",
            "instrument",
            doc="Mid-price direction signals out.",
        ),
        TopicSpec(
            p + CASHFLOW_FORECASTS,
            partitions,
            "cashflow_forecast",
            "terminal_id",
            doc="Daily quantile forecasts of each terminal's takings out (the cashflow worker).",
        ),
        TopicSpec(
            p + shadow(FRAUD_FLAGS),
            partitions,
            "fraud_flag",
            "customer_id",
            doc="Challenger fraud scores (not acted on).",
        ),
        TopicSpec(
            p + shadow(CASHFLOW_FORECASTS),
            partitions,
            "cashflow_forecast",
            "terminal_id",
            doc="Challenger cash-flow forecasts (not acted on).",
        ),
        TopicSpec(
            p + shadow(PRICE_SIGNALS),
            partitions,
            "price_signal",
            "instrument",
            doc="Challenger price signals (not acted on).",
        ),
        TopicSpec(
            p + MODEL_UPDATES,
            1,
            "model_update",
            "model_name",
            dict(COMPACT),
            doc="Model announcements; latest per model name is in force.",
        ),
        TopicSpec(
            p + SIDECAR_COMMANDS,
            1,
            "json",
            "model_name",
            doc="Operator commands to the sidecar (e.g. recompress now).",
        ),
    ]
    specs += [
        TopicSpec(
            p + dlq(t),
            partitions,
            "dead_letter",
            "source key",
            doc=f"Records of {t} that could not be processed.",
        )
        for t in INPUTS
    ]
    specs.append(
        TopicSpec(
            p + dlq(SIDECAR_COMMANDS),
            1,
            "dead_letter",
            "source key",
            doc=f"Records of {SIDECAR_COMMANDS} the sidecar refused (not a valid command).",
        )
    )
    return specs
