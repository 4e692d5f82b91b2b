"""FedAvg throughput against a numpy reduction, and what secure aggregation costs on top.

Plain FedAvg: ``clients`` updates of ``parameters`` float32 each, rows of one array as the streamed
aggregation reads them, through ``fedavg().aggregate_fit`` (float32 accumulation in client-id
order, one pass over the bytes). Reference: numpy's own float32 reduction over the same bytes,
measured in the same run, the two timed in turns. Throughput counts the update bytes read;
``fedavg_over_numpy`` is numpy's time over FedAvg's (1.0: as fast as numpy's sum).

Secure aggregation: the same updates through the four phases, clients' work and the server's
work timed apart; the server's cost is compared with plain FedAvg's.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable

import numpy as np

from fedrelay.coordinator.aggregation import ClientUpdate, ServerState, fedavg
from fedrelay.protocol.secagg import FixedPoint, Participant, SecAggConfig, unmask_sum


def _best_interleaved(actions: list[Callable[[], object]], repeats: int) -> list[float]:
    """The best seconds of each action, run in turns so that all see the same machine load."""
    best = [math.inf] * len(actions)
    for _ in range(repeats):
        for index, action in enumerate(actions):
            started = time.perf_counter()
            action()
            best[index] = min(best[index], time.perf_counter() - started)
    return best


def _secure_round(
    updates: list[ClientUpdate], degree: int | None, dropout: float
) -> tuple[dict[str, object], float, float]:
    """Run one secure round; return its figures, the server's seconds and a client's mean."""
    count = len(updates)
    neighbours = count - 1 if degree is None else degree
    config = SecAggConfig(
        round_id=b"bench",
        threshold=max(2, neighbours // 2 + 1),
        fixed_point=FixedPoint(clip=8.0, fractional_bits=24),
        degree=degree,
    )
    started = time.perf_counter()
    parties = [Participant(u.client_id, config) for u in updates]
    adverts = [p.advertise() for p in parties]
    sealed = [s for p in parties for s in p.share_keys(adverts)]
    for party in parties:
        party.receive_shares([s for s in sealed if s.recipient == party.client_id])
    setup_s = time.perf_counter() - started
    dropped = {u.client_id for u in updates[: int(count * dropout)]}
    started = time.perf_counter()
    masked = [
        party.mask(update.delta, update.num_examples)
        for party, update in zip(parties, updates, strict=True)
        if update.client_id not in dropped
    ]
    mask_s = time.perf_counter() - started
    survivors = [m.client_id for m in masked]
    responses = [p.unmask(survivors) for p in parties if p.client_id in set(survivors)]
    started = time.perf_counter()
    secure = unmask_sum(config, adverts, [p.client_id for p in parties], masked, responses, sealed)
    weighted = secure.decode(config.fixed_point)
    fedavg().aggregate_sum(
        np.zeros_like(updates[0].delta), weighted, secure.total_weight, ServerState()
    )
    server_s = time.perf_counter() - started
    figures: dict[str, object] = {
        "graph": "complete" if degree is None else f"secagg+ harary degree {degree}",
        "threshold": config.threshold,
        "dropped_before_input": len(dropped),
        "client_key_setup_s_total": round(setup_s, 4),
        "client_mask_s_mean": round(mask_s / len(masked), 4),
        "server_unmask_and_aggregate_s": round(server_s, 4),
    }
    return figures, server_s, mask_s / len(masked)


def run(
    clients: int = 100,
    parameters: int = 1_000_000,
    repeats: int = 5,
    degree: int | None = 14,
    dropout: float = 0.1,
) -> None:
    """Measure and print one JSON line."""
    rng = np.random.default_rng(0)
    stacked = rng.standard_normal((clients, parameters), dtype=np.float32)
    updates = [
        ClientUpdate(f"client-{i:03d}", stacked[i], int(rng.integers(10, 1000)))
        for i in range(clients)
    ]
    params = np.zeros(parameters, dtype=np.float32)
    strategy = fedavg()
    gigabytes = stacked.nbytes / 1e9

    fedavg_s, numpy_s = _best_interleaved(
        [
            lambda: strategy.aggregate_fit(params, updates, ServerState()),
            lambda: np.add.reduce(stacked, axis=0),
        ],
        repeats,
    )
    secure, server_s, client_s = _secure_round(updates, degree, dropout)
    figures = {
        "benchmark": "aggregate",
        "clients": clients,
        "parameters": parameters,
        "update_bytes": stacked.nbytes,
        "fedavg_s": round(fedavg_s, 4),
        "fedavg_gbps": round(gigabytes / fedavg_s, 3),
        "numpy_reference": "np.add.reduce(float32 (clients, parameters), axis=0), same bytes",
        "numpy_reference_gbps": round(gigabytes / numpy_s, 3),
        "fedavg_over_numpy": round(numpy_s / fedavg_s, 3),
        "secagg": {
            **secure,
            "server_cost_x_fedavg": round(server_s / fedavg_s, 2),
            "client_mask_cost_x_fedavg_per_client": round(client_s / (fedavg_s / clients), 2),
        },
    }
    print(json.dumps(figures))
