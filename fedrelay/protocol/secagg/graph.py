"""Who masks with whom: the complete graph, or a SecAgg+-style sparse graph.

The sparse graph is a Harary graph (each client linked to ``degree / 2`` clients on each side of
a ring) over an order of the clients fixed by a public seed, so every party derives the same
graph and no client chooses its neighbours.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from fedrelay.protocol.secagg.errors import SecureAggregationError

Graph = dict[str, frozenset[str]]


def complete_graph(client_ids: Sequence[str]) -> Graph:
    """Every client is a neighbour of every other client."""
    ids = _checked(client_ids)
    return {c: frozenset(ids) - {c} for c in ids}


def harary_graph(client_ids: Sequence[str], degree: int, seed: bytes) -> Graph:
    """A ``degree``-regular ring graph over a seed-determined order of the clients.

    Args:
        client_ids: The participants.
        degree: Neighbours per client: even, at least 2, less than the number of clients.
        seed: Public randomness (for example the round's opening block hash).

    Raises:
        SecureAggregationError: An odd or out-of-range degree, or duplicate ids.
    """
    ids = _checked(client_ids)
    if degree % 2 or not 2 <= degree < len(ids):
        raise SecureAggregationError(
            f"sparse graph degree must be even and in 2..{len(ids) - 1}, got {degree}"
        )
    ring = sorted(ids, key=lambda c: hashlib.sha256(seed + c.encode()).digest())
    graph: dict[str, set[str]] = {c: set() for c in ids}
    for position, client in enumerate(ring):
        for step in range(1, degree // 2 + 1):
            other = ring[(position + step) % len(ring)]
            graph[client].add(other)
            graph[other].add(client)
    return {c: frozenset(n) for c, n in graph.items()}


def _checked(client_ids: Sequence[str]) -> list[str]:
    ids = sorted(client_ids)
    if len(set(ids)) != len(ids):
        raise SecureAggregationError("client ids must be distinct")
    if len(ids) < 2:
        raise SecureAggregationError("secure aggregation needs at least two clients")
    return ids
