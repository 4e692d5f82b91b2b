"""The stake rules of protocol v2 in the worker program, through the devnet RPC.

A task locks stake_lock of its worker's bonded stake until it is settled or released; a worker
that cannot back a task is skipped and reported (STAKE_CHANGED TASK_REFUSED) without failing the
batch; slashes are capped at the lock and the stake and their lamports leave the vault for the
job's recipient or the round's honest workers.
"""

from __future__ import annotations

from collections.abc import Awaitable

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from fedrelay.adapters.solana import instructions as ix
from fedrelay.adapters.solana import pda
from fedrelay.adapters.solana.errors import TransactionFailed
from fedrelay.adapters.solana.layout import (
    LAMPORTS_PER_STAKE_UNIT,
    RECIPIENT_ENTRY,
    SOLANA_CHAIN,
    ProgramError,
)
from fedrelay.adapters.solana.testing import (
    LAMPORTS_PER_SOL,
    SLASH_RECIPIENT,
    Deployment,
    round_settled,
    task_assigned,
)
from fedrelay.protocol.wormhole import (
    Outcome,
    SlashMode,
    StakeChanged,
    StakeReason,
    Vaa,
    decode_payload,
    task_id,
)

pytestmark = pytest.mark.integration

STAKE = 2 * LAMPORTS_PER_SOL
LOCK = LAMPORTS_PER_SOL // 2
LOCK_UNITS = LOCK // LAMPORTS_PER_STAKE_UNIT
MIN_UNITS = LAMPORTS_PER_SOL // LAMPORTS_PER_STAKE_UNIT


async def rejection(call: Awaitable[object]) -> ProgramError:
    """Await a call that must fail and return the worker program's error."""
    with pytest.raises(TransactionFailed) as failure:
        await call
    assert failure.value.program_error is not None, str(failure.value)
    return ProgramError(failure.value.program_error)


async def crew(deployment: Deployment, count: int) -> list[Keypair]:
    workers = []
    for _ in range(count):
        worker = await deployment.funded_keypair()
        await deployment.client.register(
            worker, stake_lamports=STAKE, payout=bytes(32), capabilities=0
        )
        workers.append(worker)
    return workers


def keys(workers: list[Keypair]) -> list[bytes]:
    return [bytes(w.pubkey()) for w in workers]


async def assign(deployment: Deployment, workers: list[Keypair], *, round_number: int = 1) -> Vaa:
    payload = task_assigned(
        deployment.program_id,
        keys(workers),
        round_number=round_number,
        deadline=deployment.devnet.chain.unix_time() + 600,
        min_stake=MIN_UNITS,
        stake_lock=LOCK_UNITS,
        release_after=3600,
    )
    vaa = deployment.sign(payload)
    await deployment.client.receive_vaa(deployment.admin, vaa.to_bytes())
    return vaa


async def settle(
    deployment: Deployment,
    outcomes: list[tuple[bytes, Outcome, int]],
    mode: SlashMode = SlashMode.TO_RECIPIENT,
    recipient: bytes = SLASH_RECIPIENT,
) -> Vaa:
    payload = round_settled(
        deployment.program_id, outcomes, slash_mode=mode, slash_recipient=recipient
    )
    vaa = deployment.sign(payload)
    await deployment.client.receive_vaa(deployment.admin, vaa.to_bytes())
    return vaa


async def stake_changes(deployment: Deployment, worker: Keypair) -> list[StakeChanged]:
    payloads = [decode_payload(m.payload) for m in await deployment.client.all_messages()]
    return [
        p
        for p in payloads
        if isinstance(p, StakeChanged) and p.worker_key == bytes(worker.pubkey())
    ]


def commitment(round_number: int = 1) -> ix.Commitment:
    return ix.Commitment(7, round_number, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, 10, 5)


async def withdraw_everything(deployment: Deployment, worker: Keypair) -> None:
    record = await deployment.client.fetch_worker(worker.pubkey())
    await deployment.client.begin_unstake(worker, record.stake - record.locked)
    deployment.devnet.advance_time(3601)
    await deployment.client.withdraw(worker)


async def test_a_worker_that_withdrew_is_skipped_reported_and_cannot_commit(
    deployment: Deployment,
) -> None:
    client = deployment.client
    first, quitter, last = await crew(deployment, 3)
    await withdraw_everything(deployment, quitter)

    vaa = await assign(deployment, [first, quitter, last])
    assert (await client.fetch_consumed(vaa.digest)).applied == 3
    for shard, worker in [(0, first), (2, last)]:
        task = await client.fetch_task(7, 1, bytes(worker.pubkey()))
        assert (task.shard, task.stake_lock) == (shard, LOCK)
        assert (await client.fetch_worker(worker.pubkey())).locked == LOCK
    gone = pda.task_address(client.program_id, 7, 1, bytes(quitter.pubkey()))
    assert deployment.devnet.chain.account(gone) is None
    refusal = (await stake_changes(deployment, quitter))[-1]
    key = bytes(quitter.pubkey())
    assert (refusal.stake, refusal.nonce, refusal.reason, refusal.task_id) == (
        0, 3, StakeReason.TASK_REFUSED, task_id(7, 1, SOLANA_CHAIN, key),
    )  # fmt: skip

    error = await rejection(client.commit_update(quitter, commitment()))
    assert error == ProgramError.NOT_ASSIGNED
    await client.commit_update(first, commitment())  # the others' tasks work


async def test_unlocked_stake_below_the_lock_is_refused(deployment: Deployment) -> None:
    client = deployment.client
    (worker,) = await crew(deployment, 1)
    await client.begin_unstake(worker, 6 * LAMPORTS_PER_SOL // 10)  # 1.4 SOL stay bonded
    await assign(deployment, [worker])  # locks 0.5
    await assign(deployment, [worker], round_number=2)  # locks 0.5: 0.4 unlocked
    await assign(deployment, [worker], round_number=3)  # above the minimum, not the lock
    assert (await client.fetch_worker(worker.pubkey())).locked == 2 * LOCK
    reasons = [c.reason for c in await stake_changes(deployment, worker)]
    assert reasons == [StakeReason.UNBONDING, StakeReason.TASK_REFUSED]
    assert (await stake_changes(deployment, worker))[-1].task_id == task_id(
        7, 3, SOLANA_CHAIN, bytes(worker.pubkey())
    )


async def test_a_slash_after_a_withdrawal_takes_the_lock(deployment: Deployment) -> None:
    client = deployment.client
    (worker,) = await crew(deployment, 1)
    await assign(deployment, [worker])
    assert await rejection(client.begin_unstake(worker, STAKE)) == ProgramError.STAKE_LOCKED
    await withdraw_everything(deployment, worker)  # all but the lock
    assert (await client.fetch_worker(worker.pubkey())).stake == LOCK

    huge = 10**15
    await settle(deployment, [(bytes(worker.pubkey()), Outcome.SLASHED, huge)])
    record = await client.fetch_worker(worker.pubkey())
    assert (record.stake, record.locked, record.assigned) == (0, 0, 0)
    slashed = (await stake_changes(deployment, worker))[-1]
    assert (slashed.reason, slashed.stake, slashed.nonce) == (StakeReason.SLASHED, 0, 3)


async def test_a_slash_is_capped_at_the_lock(deployment: Deployment) -> None:
    client = deployment.client
    (worker,) = await crew(deployment, 1)
    await assign(deployment, [worker])
    await settle(deployment, [(bytes(worker.pubkey()), Outcome.SLASHED, 10 * LOCK_UNITS)])
    assert (await client.fetch_worker(worker.pubkey())).stake == STAKE - LOCK


async def test_release_after_release_at_only_by_the_worker(deployment: Deployment) -> None:
    client = deployment.client
    worker, other = await crew(deployment, 2)
    await assign(deployment, [worker])
    error = await rejection(client.release_expired_task(worker, 7, 1))
    assert error == ProgramError.RELEASE_NOT_DUE
    deployment.devnet.advance_time(600 + 3601)
    error = await rejection(client.release_expired_task(other, 7, 1))
    assert error == ProgramError.NOT_ASSIGNED

    await client.release_expired_task(worker, 7, 1)
    record = await client.fetch_worker(worker.pubkey())
    assert (record.locked, record.assigned) == (0, 0)
    assert (await client.fetch_task(7, 1, bytes(worker.pubkey()))).released
    released = (await stake_changes(deployment, worker))[-1]
    key = bytes(worker.pubkey())
    assert (released.reason, released.task_id, released.stake) == (
        StakeReason.TASK_RELEASED, task_id(7, 1, SOLANA_CHAIN, key), STAKE // 10,
    )  # fmt: skip
    error = await rejection(client.release_expired_task(worker, 7, 1))
    assert error == ProgramError.TASK_RELEASED
    assert await rejection(client.commit_update(worker, commitment())) == ProgramError.TASK_RELEASED

    vaa = await settle(deployment, [(key, Outcome.SLASHED, LOCK_UNITS)])  # skipped
    assert (await client.fetch_worker(worker.pubkey())).stake == STAKE
    assert (await client.fetch_consumed(vaa.digest)).slashed == 0


async def test_settlement_entries_for_unknown_tasks_are_skipped(deployment: Deployment) -> None:
    client = deployment.client
    assigned, unassigned = await crew(deployment, 2)
    await assign(deployment, [assigned])
    stranger = bytes(Keypair().pubkey())
    outcomes = [
        (stranger, Outcome.SLASHED, LOCK_UNITS),
        (bytes(unassigned.pubkey()), Outcome.SLASHED, LOCK_UNITS),
        (bytes(assigned.pubkey()), Outcome.ACCEPTED, 0),
    ]
    vaa = await settle(deployment, outcomes)
    assert (await client.fetch_consumed(vaa.digest)).applied == 3
    assert (await client.fetch_task(7, 1, bytes(assigned.pubkey()))).settled
    assert (await client.fetch_worker(unassigned.pubkey())).stake == STAKE


async def test_slashed_lamports_go_to_the_recipient(deployment: Deployment) -> None:
    client = deployment.client
    honest, cheat = await crew(deployment, 2)
    await assign(deployment, [honest, cheat])
    recipient = await deployment.funded_keypair(sol=1)
    vault = pda.vault_address(client.program_id)
    vault_before = await client.balance(vault)
    outcomes = [
        (bytes(honest.pubkey()), Outcome.ACCEPTED, 0),
        (bytes(cheat.pubkey()), Outcome.SLASHED, LOCK_UNITS),
    ]
    vaa = await settle(deployment, outcomes, recipient=bytes(recipient.pubkey()))
    assert vault_before - await client.balance(vault) == LOCK

    payer = deployment.admin
    error = await rejection(client.claim_slashed(payer, vaa.digest, honest.pubkey(), 0))
    assert error == ProgramError.NOTHING_TO_CLAIM  # TO_RECIPIENT: no shares
    error = await rejection(client.claim_slashed(payer, vaa.digest, payer.pubkey()))
    assert error == ProgramError.WRONG_ACCOUNT  # nobody else, the admin included
    before = await client.balance(recipient.pubkey())
    await client.claim_slashed(payer, vaa.digest, recipient.pubkey())
    assert await client.balance(recipient.pubkey()) - before == LOCK
    error = await rejection(client.claim_slashed(payer, vaa.digest, recipient.pubkey()))
    assert error == ProgramError.NOTHING_TO_CLAIM


async def test_slashed_lamports_are_shared_by_the_honest_workers(deployment: Deployment) -> None:
    client = deployment.client
    workers = await crew(deployment, 4)
    await assign(deployment, workers)
    recipient = await deployment.funded_keypair(sol=1)
    slash_units = (LOCK_UNITS // 3) * 3 + 1  # leaves a remainder of 1 lamport... times 10
    outcomes = [
        (bytes(workers[0].pubkey()), Outcome.ACCEPTED, 0),
        (bytes(workers[1].pubkey()), Outcome.SLASHED, slash_units),
        (bytes(workers[2].pubkey()), Outcome.ACCEPTED, 0),
        (bytes(workers[3].pubkey()), Outcome.ACCEPTED, 0),
    ]
    vaa = await settle(deployment, outcomes, SlashMode.TO_HONEST, bytes(recipient.pubkey()))
    total = slash_units * LAMPORTS_PER_STAKE_UNIT
    share = total // 3
    payer = deployment.admin
    for entry in (0, 2, 3):
        destination = workers[entry].pubkey()
        before = await client.balance(destination)
        await client.claim_slashed(payer, vaa.digest, destination, entry)
        assert await client.balance(destination) - before == share
    error = await rejection(client.claim_slashed(payer, vaa.digest, workers[1].pubkey(), 1))
    assert error == ProgramError.NOTHING_TO_CLAIM  # the slashed worker has no share
    error = await rejection(client.claim_slashed(payer, vaa.digest, workers[0].pubkey(), 0))
    assert error == ProgramError.NOTHING_TO_CLAIM  # paid once
    before = await client.balance(recipient.pubkey())
    await client.claim_slashed(payer, vaa.digest, recipient.pubkey(), RECIPIENT_ENTRY)
    assert await client.balance(recipient.pubkey()) - before == total - 3 * share
    record = await client.fetch_consumed(vaa.digest)
    consumed = deployment.devnet.chain.account(pda.consumed_address(client.program_id, vaa.digest))
    assert consumed is not None
    rent = deployment.devnet.chain.svm.minimum_balance_for_rent_exemption(len(consumed.data))
    assert (record.slashed, consumed.lamports) == (total, rent)  # every slashed lamport left


async def test_claims_wait_for_the_whole_batch(deployment: Deployment) -> None:
    client = deployment.client
    workers = await crew(deployment, 3)
    await assign(deployment, workers)
    payload = round_settled(
        deployment.program_id,
        [
            (bytes(workers[0].pubkey()), Outcome.SLASHED, LOCK_UNITS),
            (bytes(workers[1].pubkey()), Outcome.ACCEPTED, 0),
            (bytes(workers[2].pubkey()), Outcome.ACCEPTED, 0),
        ],
        slash_mode=SlashMode.TO_HONEST,
    )
    vaa = deployment.sign(payload)
    planned = await client.plan_delivery(vaa)
    first = planned.part(0, 1, await client.next_sequence())
    instruction = ix.receive_message(
        client.program_id, deployment.admin.pubkey(), vaa.to_bytes(), first
    )
    await client.send([instruction], deployment.admin, compute_units=400_000)
    error = await rejection(
        client.claim_slashed(deployment.admin, vaa.digest, Pubkey(SLASH_RECIPIENT))
    )
    assert error == ProgramError.BATCH_INCOMPLETE
    await client.complete_delivery(deployment.admin, vaa.to_bytes())
    before = await client.balance(workers[1].pubkey())
    await client.claim_slashed(deployment.admin, vaa.digest, workers[1].pubkey(), 1)
    assert await client.balance(workers[1].pubkey()) - before == LOCK // 2
