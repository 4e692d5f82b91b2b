"""Parallel delivery into the worker program on a devnet whose slots follow wall time.

Independent TASK_ASSIGNED VAAs are signed as one group, broadcast together without waiting for
one another, and confirmed apart: several land in the same slot, each is applied once, sending
the group again applies nothing, and the VAAs that depend on the group (a worker in common, a
repeated digest) are deferred and delivered afterwards. A VAA left out of a group (deferred, or
alone: too many entries for one transaction) holds back the later ones that depend on it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
from solana.rpc.async_api import AsyncClient
from solders.pubkey import Pubkey
from solders.signature import Signature

from fedrelay.adapters.devnet.solana_rpc import SolanaDevnet, serve_devnet
from fedrelay.adapters.solana.client import WorkerProgramClient
from fedrelay.adapters.solana.relay import SolanaDestination
from fedrelay.adapters.solana.testing import LAMPORTS_PER_SOL, Deployment, deploy, task_assigned
from fedrelay.ports.relay import FailureKind, SignedDelivery, TxState

pytestmark = pytest.mark.integration

SLOT_MS = 1_000  # long enough for a group's sends to share slots; a real cluster's is 400 ms
WORKERS = 8


@pytest.fixture(scope="module")
def timed_devnet() -> Iterator[SolanaDevnet]:
    with serve_devnet(slot_ms=SLOT_MS) as devnet:
        yield devnet


@pytest.fixture
async def timed(timed_devnet: SolanaDevnet, worker_program_elf: bytes) -> AsyncIterator[Deployment]:
    async with AsyncClient(timed_devnet.url) as rpc:
        client = WorkerProgramClient(rpc, Pubkey.new_unique())
        yield await deploy(timed_devnet, client, worker_program_elf)


async def confirmed(destination: SolanaDestination, deliveries: list[SignedDelivery]) -> list[int]:
    """Wait until every delivery is confirmed; the slot each landed in."""
    ids = [d.tx_id for d in deliveries]
    async with asyncio.timeout(20):
        while any(s.state is not TxState.CONFIRMED for s in await destination.statuses(ids)):
            failed = [s for s in await destination.statuses(ids) if s.state is TxState.FAILED]
            assert not failed, failed
            await asyncio.sleep(0.05)  # polling the chain: a confirmation has no event to wait on
    statuses = await destination.client.rpc.get_signature_statuses(
        [Signature.from_string(i) for i in ids]
    )
    return [s.slot for s in statuses.value if s is not None]


async def test_independent_deliveries_land_several_per_slot_each_once(timed: Deployment) -> None:
    d = timed
    crew = []
    for _ in range(WORKERS):
        worker = await d.funded_keypair()
        await d.client.register(
            worker, stake_lamports=LAMPORTS_PER_SOL, payout=bytes(32), capabilities=1
        )
        crew.append(bytes(worker.pubkey()))
    deadline = d.devnet.chain.unix_time() + 3600
    vaas = [
        d.sign(task_assigned(d.program_id, [key], job_id=100 + i, deadline=deadline)).to_bytes()
        for i, key in enumerate(crew)
    ]
    overlapping = d.sign(task_assigned(d.program_id, crew[:2], job_id=200, deadline=deadline))
    queue = [*vaas, overlapping.to_bytes(), vaas[3]]  # a worker in common; a repeated digest
    destination = SolanaDestination(d.client, await d.funded_keypair())

    group = await destination.prepare_parallel(queue)
    assert [i for i, _ in group.signed] == list(range(WORKERS))
    assert group.deferred == (WORKERS, WORKERS + 1)
    assert group.consumed == ()
    deliveries = [delivery for _, delivery in group.signed]
    assert await destination.broadcast_many(deliveries) == [None] * WORKERS

    slots = await confirmed(destination, deliveries)
    assert max(Counter(slots).values()) >= 2, f"one delivery per slot: {slots}"
    for vaa in vaas:
        assert await destination.is_consumed(vaa)
    tasks = [await d.client.fetch_task(100 + i, 1, key) for i, key in enumerate(crew)]
    assert len(tasks) == WORKERS

    # The same signed bytes again are refused (processed before: to be signed anew), and signed
    # anew they are all found consumed: nothing is sent, nothing applied twice.
    again = await destination.broadcast_many(deliveries)
    assert all(e is not None for e in again)
    assert {destination.classify(e).kind for e in again if e is not None} == {FailureKind.EXPIRED}
    anew = await destination.prepare_parallel(vaas)
    assert anew.consumed == tuple(range(WORKERS))
    assert anew.signed == ()
    after = [await d.client.fetch_task(100 + i, 1, key) for i, key in enumerate(crew)]
    assert after == tasks

    # What was deferred goes next: the repeat is found consumed, the other is signed.
    rest = [queue[i] for i in group.deferred]
    later = await destination.prepare_parallel(rest)
    assert later.consumed == (1,)
    assert [i for i, _ in later.signed] == [0]
    assert await destination.broadcast_many([later.signed[0][1]]) == [None]
    await confirmed(destination, [later.signed[0][1]])
    assert await destination.is_consumed(overlapping.to_bytes())


async def test_a_second_publisher_is_deferred(timed: Deployment) -> None:
    """Entries that publish (refused tasks) need the next message accounts: one per group."""
    d = timed
    strangers = [bytes(Pubkey.new_unique()) for _ in range(2)]  # unregistered: refused
    deadline = d.devnet.chain.unix_time() + 3600
    vaas = [
        d.sign(task_assigned(d.program_id, [key], job_id=300 + i, deadline=deadline)).to_bytes()
        for i, key in enumerate(strangers)
    ]
    destination = SolanaDestination(d.client, await d.funded_keypair())
    group = await destination.prepare_parallel(vaas)
    assert [i for i, _ in group.signed] == [0]
    assert group.deferred == (1,)
    assert await destination.broadcast_many([group.signed[0][1]]) == [None]
    await confirmed(destination, [group.signed[0][1]])
    later = await destination.prepare_parallel(vaas)
    assert later.consumed == (0,)
    assert [i for i, _ in later.signed] == [1]
    assert await destination.broadcast_many([later.signed[0][1]]) == [None]
    await confirmed(destination, [later.signed[0][1]])
    messages = await d.client.all_messages()
    assert len(messages) == 2, "one STAKE_CHANGED per refusal, each in its own message account"


async def test_a_vaa_left_out_holds_back_the_later_ones_that_depend_on_it(
    timed: Deployment,
) -> None:
    """Nothing overtakes an earlier VAA it depends on: one deferred (a worker in common with the
    group) or one that goes alone (too many entries for one transaction) holds back the later
    VAAs that share a worker with it; independent ones still join the group."""
    d = timed
    crew = []
    for _ in range(3):
        worker = await d.funded_keypair()
        await d.client.register(
            worker, stake_lamports=LAMPORTS_PER_SOL, payout=bytes(32), capabilities=1
        )
        crew.append(bytes(worker.pubkey()))
    strangers = [bytes(Pubkey.new_unique()) for _ in range(20)]
    deadline = d.devnet.chain.unix_time() + 3600

    def vaa(keys: list[bytes], job_id: int) -> bytes:
        return d.sign(
            task_assigned(d.program_id, keys, job_id=job_id, deadline=deadline)
        ).to_bytes()

    queue = [
        vaa([crew[0]], 500),  # in the group
        vaa([crew[0], crew[1]], 501),  # deferred: crew[0] is in the group
        vaa([crew[1]], 502),  # deferred: it would overtake 501
        vaa(strangers, 503),  # alone: twenty entries do not fit one transaction
        vaa([strangers[0]], 504),  # deferred: it would overtake 503
        vaa([crew[2]], 505),  # independent of all before it: in the group
        b"not a VAA",  # alone: the one-at-a-time path says what is wrong with it
    ]
    destination = SolanaDestination(d.client, await d.funded_keypair())
    group = await destination.prepare_parallel(queue)
    assert [i for i, _ in group.signed] == [0, 5]
    assert group.deferred == (1, 2, 4)
    assert group.alone == (3, 6)
    assert group.consumed == ()
