"""Registering: stake on the worker's chain and announce what the node's device can do.

Registration is idempotent: a node already registered with at least the wanted stake does not
send a transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedrelay.ports.worker_chain import CAPABILITY_CPU_REPLAY, CAPABILITY_CUDA, StakeStatus

if TYPE_CHECKING:
    from fedrelay.worker.sdk.node import WorkerNode


def capabilities(device: str) -> int:
    """WORKER_REGISTERED capability bits of ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``)."""
    return CAPABILITY_CUDA if device.startswith("cuda") else CAPABILITY_CPU_REPLAY


async def register(node: WorkerNode, stake: int, payout: bytes) -> StakeStatus:
    """Stake up to ``stake`` and register ``node`` with ``payout`` (bytes32, coordinator chain)."""
    status = await node.chain.stake_status()
    if not status.registered or status.staked < stake:
        await node.chain.stake_and_register(stake, payout, node.capabilities)
        status = await node.chain.stake_status()
        node.progress.note(f"registered on chain {node.chain.wormhole_chain} with {stake}")
    return status
