"""Start-up cost of the real services the harness runs (anvil, PostgreSQL, Kafka)."""

from __future__ import annotations

import json
import time

from fedrelay.adapters.devnet.services import Anvil, Kafka, Postgres, Service


def _seconds(service: Service) -> dict[str, float]:
    started = time.perf_counter()
    with service:
        ready = time.perf_counter() - started
    return {"start_s": round(ready, 3), "start_stop_s": round(time.perf_counter() - started, 3)}


def run() -> None:
    figures = {
        "benchmark": "services",
        "anvil": _seconds(Anvil(chain_id=31337)),
        "postgres": _seconds(Postgres()),
        "kafka": _seconds(Kafka()),
    }
    print(json.dumps(figures))
