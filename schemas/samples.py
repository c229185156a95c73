"""A valid example record of every schema, deterministic in ``i`` (for tests and docs)."""

from __future__ import annotations

from decimal import Decimal

BASE_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def sample(name: str, i: int = 0) -> dict:
    """Example record ``i`` of schema ``name``."""
    t = BASE_MS + i * 1000
    if name == "transaction":
        return {
            "transaction_id": f"tx-{i}",
            "event_time": t,
            "customer_id": f"c{i % 50}",
            "terminal_id": f"t{i % 80}",
            "amount": Decimal(f"{10 + (i * 7919) % 20000 / 100:.2f}"),
            "currency": "EUR",
        }
    if name == "fraud_label":
        return {
            "transaction_id": f"tx-{i}",
            "customer_id": f"c{i % 50}",
            "terminal_id": f"t{i % 80}",
            "tx_time": t,
            "label_time": t + 7 * 86_400_000,
            "is_fraud": i % 13 == 0,
            "amount": Decimal("42.10"),
            "scenario": 2 if i % 13 == 0 else None,
        }
    if name == "market_tick":
        mid = 100.0 + (i % 17) * 0.01
        return {
            "instrument": "SIMA",
            "event_time": t * 1000 + i,
            "sequence": i,
            "bids": [
                {"price": round(mid - 0.005 - k * 0.01, 3), "size": 100 + k} for k in range(10)
            ],
            "asks": [
                {"price": round(mid + 0.005 + k * 0.01, 3), "size": 90 + k} for k in range(10)
            ],
            "trades": [{"price": round(mid + 0.005, 3), "size": 5, "side": "BUY"}]
            if i % 3 == 0
            else [],
        }
    if name == "fraud_flag":
        return {
            "transaction_id": f"tx-{i}",
            "customer_id": f"c{i % 50}",
            "terminal_id": f"t{i % 80}",
            "score": 0.25,
            "flagged": False,
            "threshold": 0.5,
            "model_name": "fraud",
            "model_version": "1",
            "event_time": t,
            "processing_time": t + 20,
            "source_topic": "transactions",
            "source_partition": i % 6,
            "source_offset": i,
            "top_features": [{"feature": "TX_AMOUNT", "value": 12.5, "contribution": 1.5}],
        }
    if name == "family_score":
        return {
            "id": f"ev-{i}",
            "key": f"c{i % 50}",
            "score": 0.75,
            "flagged": True,
            "threshold": 0.5,
            "model_name": "credit",
            "model_version": "1",
            "family": "credit",
            "event_time": t,
            "processing_time": t + 20,
            "source_topic": "applications",
            "source_partition": i % 6,
            "source_offset": i,
            "top_features": [{"feature": "AMOUNT", "value": 12.5, "contribution": 1.5}]
            if i % 2
            else [],
        }
    if name == "cashflow_forecast":
        origin = BASE_MS + (i % 30) * 86_400_000
        return {
            "terminal_id": f"t{i % 80}",
            "origin": origin,
            "days": [origin + h * 86_400_000 for h in range(7)],
            "levels": [0.1, 0.5, 0.9],
            "quantiles": [[80.0 + h, 100.0 + h, 130.0 + h] for h in range(7)],
            "scale": 100.0,
            "model_name": "cashflow",
            "model_version": "1",
            "processing_time": origin + 20,
        }
    if name == "price_signal":
        return {
            "instrument": "SIMA",
            "sequence": i,
            "horizon": 10,
            "prob_down": 0.2,
            "prob_flat": 0.5,
            "prob_up": 0.3,
            "signal": "FLAT",
            "mid_price": 100.0,
            "model_name": "market",
            "model_version": "1",
            "event_time": t * 1000,
            "processing_time": t + 5,
            "source_topic": "market-ticks",
            "source_partition": 0,
            "source_offset": i,
        }
    if name == "model_update":
        return {
            "model_name": "fraud",
            "version": str(i + 1),
            "action": "PROMOTE",
            "manifest_json": "{}",
            "artifact": b"\x08\x01onnx",
            "signature": None,
            "canary_share": 0.0,
            "announced_at": t,
            "envelope_signature": None if i % 2 else bytes(range(64)),
        }
    if name == "dead_letter":
        return {
            "source_topic": "transactions",
            "source_partition": 1,
            "source_offset": i,
            "key": b"c1",
            "value": b"\x00garbage",
            "error_type": "DecodeError",
            "reason": "not Avro single-object, Confluent wire format or JSON",
            "worker": "fraud@test",
            "failed_at": t,
            "value_size": None,
            "value_sha256": None,
            "key_size": None,
            "key_sha256": None,
        }
    raise KeyError(name)
