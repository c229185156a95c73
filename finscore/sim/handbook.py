"""Loader of the fraud handbook's simulated dataset (``fraud_handbook_sim/transactions.csv.xz``).

1.75M rows; parsed with numpy once and cached as ``.npz`` (keyed by file size and mtime).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finscore.sim.data import cache_dir, data_dir, open_text, require
from finscore.sim.frame import TransactionFrame

START_MS = 1522540800000  # 2018-04-01T00:00:00Z, TX_TIME_SECONDS counts from here
COLUMNS = "TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS"


def handbook_path(root: Path | None = None) -> Path:
    """The handbook's transactions file under ``root`` (default: the data folder setting)."""
    return (root or data_dir()) / "fraud_handbook_sim" / "transactions.csv.xz"


def load_handbook_frame(path: Path | None = None) -> TransactionFrame:
    """The handbook's transactions as a :class:`TransactionFrame` (event time from TX_TIME_SECONDS)."""
    path = require(path or handbook_path())
    st = path.stat()
    cached = cache_dir() / f"handbook-{st.st_size}-{int(st.st_mtime)}.npz"
    if cached.exists():
        z = np.load(cached)
        return TransactionFrame(**{k: z[k] for k in z.files})
    with open_text(path) as f:
        header = f.readline().strip()
        if not header.startswith(COLUMNS):
            raise ValueError(f"unexpected header in {path}: {header[:80]}")
        arr = np.loadtxt(f, delimiter=",", usecols=(0, 2, 3, 4, 5, 7, 8), dtype=np.float64)
    order = np.argsort(arr[:, 4], kind="stable")
    arr = arr[order]
    frame = TransactionFrame(
        transaction_id=arr[:, 0].astype(np.int64),
        event_time=START_MS + (arr[:, 4] * 1000).astype(np.int64),
        customer_id=arr[:, 1].astype(np.int64),
        terminal_id=arr[:, 2].astype(np.int64),
        amount=np.round(arr[:, 3], 2),
        is_fraud=arr[:, 5].astype(np.int8),
        scenario=arr[:, 6].astype(np.int8),
    )
    np.savez(cached, **{k: getattr(frame, k) for k in frame.__dataclass_fields__})
    return frame
