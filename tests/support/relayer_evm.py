"""Helpers of the relayer's tests on anvil, Kafka and PostgreSQL: VAAs for the worker chain's
hub, the ledger's view of a delivery, and waiting for the chain and the ledger to agree."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import support.wormhole as wormhole_testing
from fedrelay.adapters.evm import Signer, address_to_bytes32
from fedrelay.adapters.evm.relay import EvmDestination
from fedrelay.adapters.evm.testing import COORDINATOR_CHAIN, WORKER_CHAIN, EvmDeployment
from fedrelay.adapters.ledger.models import (
    AttemptOutcome,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
)
from fedrelay.ports.relay import TxState, TxStatus
from fedrelay.protocol.wormhole import Task, TaskAssigned, Vaa, VaaBody, sign_vaa

GUARDIANS = 3


async def eventually(check: Callable[[], Awaitable[bool]], what: str, limit_s: float = 60) -> None:
    try:
        async with asyncio.timeout(limit_s):
            while not await check():  # noqa: ASYNC110 - chains and the ledger have no events
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def mined(destination: EvmDestination, tx_id: str) -> TxStatus:
    """The transaction's status once it is mined (anvil mines each at once, receipts follow)."""
    async with asyncio.timeout(10):
        waiting = (TxState.PENDING, TxState.UNKNOWN)
        while (status := await destination.status(tx_id)).state in waiting:  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # a receipt has no event to wait on
    return status


def on_chain(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """A blocking chain check as an awaitable one (run in a thread)."""
    return lambda: asyncio.to_thread(check)


def register_task_worker(evm: EvmDeployment) -> None:
    """Stake and register the worker `task_assigned_vaa` names (WorkerHub assigns only those)."""
    signer = Signer(evm.workers.private_keys[9])
    if not evm.hub.staker(signer.address).registered:
        evm.hub.stake(signer, 2 * 10**18)
        evm.hub.register(signer, address_to_bytes32(signer.address), 1)


def task_assigned_vaa(
    evm: EvmDeployment, job_id: int, sequence: int, signers: list[Any] | None = None
) -> Vaa:
    """A TASK_ASSIGNED from the market to the hub, signed by the devnet guardians (or `signers`)."""
    worker = address_to_bytes32(evm.workers.addresses[9])
    deadline = int(evm.worker_chain.w3.eth.get_block("latest")["timestamp"]) + 3600
    payload = TaskAssigned(
        target_chain=WORKER_CHAIN, target_address=address_to_bytes32(evm.hub.address),
        job_id=job_id, round=0, deadline=deadline, model_hash=bytes(32), config_hash=bytes(32),
        min_stake=0, stake_lock=0, release_at=deadline + 86_400, tasks=(Task(worker, 0),),
    )  # fmt: skip
    body = VaaBody(
        timestamp=deadline, nonce=0, emitter_chain=COORDINATOR_CHAIN,
        emitter_address=address_to_bytes32(evm.market.address), sequence=sequence,
        consistency_level=1, payload=payload.to_bytes(),
    )  # fmt: skip
    guardians = signers or wormhole_testing.guardian_signers(GUARDIANS)
    return sign_vaa(body, 0, list(enumerate(guardians)))


async def delivery_of(
    sessions: async_sessionmaker[AsyncSession], digest: bytes
) -> tuple[Delivery | None, list[DeliveryAttempt]]:
    async with sessions() as session:
        delivery = await session.scalar(select(Delivery).where(Delivery.digest == digest))
        attempts = []
        if delivery is not None:
            attempts = list(
                await session.scalars(
                    select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery.id)
                )
            )
    return delivery, attempts


async def delivered_once(
    evm: EvmDeployment, sessions: async_sessionmaker[AsyncSession], vaas: list[Vaa]
) -> None:
    """Each VAA applied on chain exactly once, and done in the ledger.

    A ledger that lost its last commits in a crash may not know its own transaction landed:
    it then records ALREADY_DELIVERED, which is right (the effect happened once).
    """

    async def all_done() -> bool:
        with contextlib.suppress(DBAPIError):  # the database may be restarting
            return await done(sessions, vaas)
        return False

    await eventually(all_done, "every delivery to be done", limit_s=90)
    consumed = [
        e.args["digest"] for e in evm.hub.events(0, evm.worker_chain.w3.eth.block_number)
        if e.name == "MessageConsumed"
    ]  # fmt: skip
    for vaa in vaas:
        assert consumed.count(vaa.digest) == 1
        _, attempts = await delivery_of(sessions, vaa.digest)
        assert [a.outcome for a in attempts].count(AttemptOutcome.CONFIRMED) <= 1


async def done(sessions: async_sessionmaker[AsyncSession], vaas: list[Vaa]) -> bool:
    async with sessions() as session:
        done = await session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(
                Delivery.digest.in_([v.digest for v in vaas]),
                Delivery.status.in_([DeliveryStatus.CONFIRMED, DeliveryStatus.ALREADY_DELIVERED]),
            )
        )
    return done == len(vaas)
