"""Simulators and data loaders that feed the streams and training: transactions with fraud
labels (:mod:`~finscore.sim.transactions`, or the handbook's data set,
:mod:`~finscore.sim.handbook`), order-book ticks (:mod:`~finscore.sim.market`, or LOBSTER
sample days, :mod:`~finscore.sim.lobster`). numpy + stdlib only."""

from finscore.sim.frame import TransactionFrame
from finscore.sim.handbook import load_handbook_frame
from finscore.sim.lobster import LobsterDay, load_lobster, lobster_ticks, replay_ticks
from finscore.sim.market import MarketSimConfig, MarketSimulator, book_record, simulate_book
from finscore.sim.transactions import (
    TransactionSimulator,
    TxSimConfig,
    label_record,
    merged_events,
    simulate_frame,
    transaction_record,
)

__all__ = [
    "LobsterDay",
    "MarketSimConfig",
    "MarketSimulator",
    "TransactionFrame",
    "TransactionSimulator",
    "TxSimConfig",
    "book_record",
    "label_record",
    "load_handbook_frame",
    "load_lobster",
    "lobster_ticks",
    "merged_events",
    "replay_ticks",
    "simulate_book",
    "simulate_frame",
    "transaction_record",
]
