"""publish_commitments: a job round's held commitments go out together in one UPDATE_COMMITTED.

commit_update keeps a commitment in its task account; anyone publishes the pending ones of a job
round, up to 32 per message (as many as a transaction's accounts allow), and a published task is
never published again. Also the worker chain's ``publish_commitments`` and
``commitment_published`` on top of it, a concurrent publisher included.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Sequence

import pytest
import support.wormhole as wormhole_testing
from solders.account import Account
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID

from fedrelay.adapters.solana import instructions as ix
from fedrelay.adapters.solana import pda
from fedrelay.adapters.solana.errors import TransactionFailed
from fedrelay.adapters.solana.layout import (
    MAX_COMMITMENTS,
    TASK_ACCOUNT_LEN,
    ProgramError,
    TaskAccount,
)
from fedrelay.adapters.solana.layout import (
    Instruction as Tag,
)
from fedrelay.adapters.solana.testing import (
    COORDINATOR_CHAIN,
    COORDINATOR_EMITTER,
    LAMPORTS_PER_SOL,
    Deployment,
    task_assigned,
)
from fedrelay.adapters.solana.worker_chain import SolanaWorkerChain
from fedrelay.ports.worker_chain import TaskKey

pytestmark = pytest.mark.integration

JOB, ROUND = 7, 1


async def rejection(call: Awaitable[object]) -> ProgramError:
    """Await a call that must fail and return the worker program's error."""
    with pytest.raises(TransactionFailed) as failure:
        await call
    assert failure.value.program_error is not None, str(failure.value)
    return ProgramError(failure.value.program_error)


async def registered(d: Deployment, count: int) -> list[Keypair]:
    crew = []
    for _ in range(count):
        worker = await d.funded_keypair()
        await d.client.register(
            worker, stake_lamports=LAMPORTS_PER_SOL, payout=bytes(32), capabilities=0
        )
        crew.append(worker)
    return crew


async def assign(
    d: Deployment, crew: Sequence[Keypair], job_id: int = JOB, round_number: int = ROUND
) -> None:
    deadline = d.devnet.chain.unix_time() + 600
    payload = task_assigned(
        d.program_id,
        [bytes(k.pubkey()) for k in crew],
        job_id=job_id,
        round_number=round_number,
        deadline=deadline,
    )
    await d.client.receive_vaa(d.admin, d.sign(payload).to_bytes())


def commitment_of(worker: Keypair, job_id: int = JOB, round_number: int = ROUND) -> ix.Commitment:
    name = str(worker.pubkey())
    return ix.Commitment(
        job_id,
        round_number,
        wormhole_testing.filler(f"update {name}"),
        wormhole_testing.filler(f"transcript {name}"),
        wormhole_testing.filler(f"data {name}"),
        num_samples=100 + bytes(worker.pubkey())[0],
        train_loss=400_000 + bytes(worker.pubkey())[1],
    )


async def committed(d: Deployment, count: int) -> list[Keypair]:
    """`count` workers assigned to (JOB, ROUND), each with its commitment held."""
    crew = await registered(d, count)
    await assign(d, crew)
    for worker in crew:
        await d.client.commit_update(worker, commitment_of(worker))
    return crew


def expected_payload(
    job_id: int, round_number: int, entries: Sequence[tuple[bytes, ix.Commitment]]
) -> bytes:
    """UPDATE_COMMITTED, protocol version 4, built from the documented layout."""
    head = struct.pack(">BBH32sQIB", 3, 4, COORDINATOR_CHAIN, COORDINATOR_EMITTER, job_id,
                       round_number, len(entries))  # fmt: skip
    body = b"".join(
        key + c.update_hash + c.transcript_root + c.data_root
        + struct.pack(">II", c.num_samples, c.train_loss)
        for key, c in entries
    )  # fmt: skip
    return head + body


def raw_publish(
    d: Deployment, payer: Pubkey, tasks: Sequence[Pubkey], sequence: int
) -> Instruction:
    """publish_commitments with any account list (the builder refuses 0 and above 32)."""
    accounts = [
        AccountMeta(payer, True, True),
        AccountMeta(pda.config_address(d.program_id), False, True),
        AccountMeta(pda.message_address(d.program_id, sequence), False, True),
        AccountMeta(SYSTEM_PROGRAM_ID, False, False),
        *(AccountMeta(task, False, True) for task in tasks),
    ]
    data = struct.pack("<BQII", Tag.PUBLISH_COMMITMENTS, JOB, ROUND, 0)
    return Instruction(d.program_id, data, accounts)


def task_of(d: Deployment, worker: Keypair, job_id: int = JOB, round_number: int = ROUND) -> Pubkey:
    return pda.task_address(d.program_id, job_id, round_number, bytes(worker.pubkey()))


def install_committed_task(d: Deployment, key: bytes, seed: int) -> ix.Commitment:
    """A committed task for `key` in (JOB, ROUND), written straight into the devnet."""
    address, bump = Pubkey.find_program_address(
        [b"task", struct.pack(">QI", JOB, ROUND), key], d.program_id
    )
    commitment = ix.Commitment(
        JOB, ROUND, bytes([seed]) * 32, bytes([seed ^ 0x55]) * 32, bytes([seed ^ 0xAA]) * 32,
        seed, 1_000 + seed,
    )  # fmt: skip
    task = TaskAccount(
        key, bytes(32), bytes(32), JOB, 2**40, 0, 2**41, ROUND, seed, True, False, 0, bump,
        update_hash=commitment.update_hash, transcript_root=commitment.transcript_root,
        data_root=commitment.data_root, num_samples=commitment.num_samples,
        train_loss=commitment.train_loss,
    )  # fmt: skip
    lamports = d.devnet.chain.svm.minimum_balance_for_rent_exemption(TASK_ACCOUNT_LEN)
    d.devnet.chain.set_account(address, Account(lamports, task.to_bytes(), d.program_id, False, 0))
    return commitment


async def test_several_commitments_go_out_in_one_message_in_the_order_given(
    deployment: Deployment,
) -> None:
    d = deployment
    crew = await committed(d, 3)
    keys = [bytes(w.pubkey()) for w in crew]
    pending = await d.client.pending_commitments(JOB, ROUND)
    assert [t.worker_key for t in pending] == sorted(keys)
    assert await d.client.pending_commitments(JOB, ROUND + 1) == []

    sequence = await d.client.next_sequence()
    order = [crew[2], crew[0], crew[1]]
    payer = await d.funded_keypair()  # anyone may publish
    receipt = await d.client.publish_commitments(
        payer, JOB, ROUND, [bytes(w.pubkey()) for w in order], nonce=9
    )
    print(f"publish_commitments of 3: {receipt.compute_units} compute units")

    message = await d.client.fetch_message(sequence)
    assert message.nonce == 9
    expected = expected_payload(JOB, ROUND, [(bytes(w.pubkey()), commitment_of(w)) for w in order])
    assert len(expected) == 49 + 136 * 3
    assert message.payload == expected
    assert await d.client.next_sequence() == sequence + 1
    for worker in crew:
        task = await d.client.fetch_task(JOB, ROUND, bytes(worker.pubkey()))
        assert (task.committed, task.published) == (True, True)
    assert await d.client.pending_commitments(JOB, ROUND) == []


async def test_a_commitment_after_a_publication_goes_out_alone(deployment: Deployment) -> None:
    d = deployment
    crew = await registered(d, 3)
    await assign(d, crew)
    for worker in crew[:2]:
        await d.client.commit_update(worker, commitment_of(worker))
    await d.client.publish_commitments(d.admin, JOB, ROUND, [bytes(w.pubkey()) for w in crew[:2]])

    commit = await d.client.commit_update(crew[2], commitment_of(crew[2]))
    pending = await d.client.pending_commitments(JOB, ROUND)
    assert [t.worker_key for t in pending] == [bytes(crew[2].pubkey())]
    sequence = await d.client.next_sequence()
    receipt = await d.client.publish_commitments(d.admin, JOB, ROUND, [bytes(crew[2].pubkey())])
    print(
        f"commit_update: {commit.compute_units}, publish_commitments of 1: "
        f"{receipt.compute_units} compute units"
    )
    message = await d.client.fetch_message(sequence)
    assert message.payload == expected_payload(
        JOB, ROUND, [(bytes(crew[2].pubkey()), commitment_of(crew[2]))]
    )
    assert await d.client.pending_commitments(JOB, ROUND) == []


async def test_tasks_of_another_job_or_round_are_refused(deployment: Deployment) -> None:
    d = deployment
    here, other_job, other_round = await registered(d, 3)
    await assign(d, [here])
    await assign(d, [other_job], job_id=JOB + 1)
    await assign(d, [other_round], round_number=ROUND + 1)
    await d.client.commit_update(here, commitment_of(here))
    await d.client.commit_update(other_job, commitment_of(other_job, job_id=JOB + 1))
    await d.client.commit_update(other_round, commitment_of(other_round, round_number=ROUND + 1))
    sequence = await d.client.next_sequence()
    for stranger in (
        task_of(d, other_job, job_id=JOB + 1),
        task_of(d, other_round, round_number=ROUND + 1),
    ):
        instruction = raw_publish(d, d.admin.pubkey(), [task_of(d, here), stranger], sequence)
        assert await rejection(d.client.send([instruction], d.admin)) == ProgramError.OTHER_ROUND
    # nothing of a refused transaction stays
    assert not (await d.client.fetch_task(JOB, ROUND, bytes(here.pubkey()))).published
    assert await d.client.next_sequence() == sequence


async def test_uncommitted_published_and_duplicate_tasks_are_refused(
    deployment: Deployment,
) -> None:
    d = deployment
    crew = await registered(d, 3)
    await assign(d, crew)
    first, second, idle = crew
    for worker in (first, second):
        await d.client.commit_update(worker, commitment_of(worker))

    def publish(*workers: Keypair) -> Awaitable[object]:
        return d.client.publish_commitments(
            d.admin, JOB, ROUND, [bytes(w.pubkey()) for w in workers]
        )

    assert await rejection(publish(first, idle)) == ProgramError.NOT_COMMITTED
    assert await rejection(publish(first, second, first)) == ProgramError.DUPLICATE_TASK
    await publish(first)
    assert await rejection(publish(second, first)) == ProgramError.ALREADY_PUBLISHED
    assert await rejection(publish(first)) == ProgramError.ALREADY_PUBLISHED
    pending = await d.client.pending_commitments(JOB, ROUND)
    assert [t.worker_key for t in pending] == [bytes(second.pubkey())]


async def test_accounts_that_are_not_this_programs_tasks_are_refused(
    deployment: Deployment,
) -> None:
    d = deployment
    (worker,) = await committed(d, 1)
    sequence = await d.client.next_sequence()
    outsider = Keypair()
    not_owned = [
        worker.pubkey(),  # a system account
        task_of(d, outsider),  # a task address never created
        pda.vault_address(d.program_id),  # the program's, but not a task
    ]
    errors = []
    for account in not_owned:
        instruction = raw_publish(d, d.admin.pubkey(), [task_of(d, worker), account], sequence)
        errors.append(await rejection(d.client.send([instruction], d.admin)))
    assert errors[:2] == [ProgramError.WRONG_OWNER, ProgramError.WRONG_OWNER]
    assert errors[2] == ProgramError.WRONG_ACCOUNT
    for other_kind in (
        pda.worker_address(d.program_id, worker.pubkey()),
        pda.config_address(d.program_id),
    ):
        instruction = raw_publish(d, d.admin.pubkey(), [other_kind], sequence)
        assert await rejection(d.client.send([instruction], d.admin)) == ProgramError.WRONG_ACCOUNT
    # a task passed read-only cannot be marked
    instruction = raw_publish(d, d.admin.pubkey(), [task_of(d, worker)], sequence)
    metas = list(instruction.accounts)
    metas[4] = AccountMeta(task_of(d, worker), False, False)
    read_only = Instruction(d.program_id, bytes(instruction.data), metas)
    assert await rejection(d.client.send([read_only], d.admin)) == ProgramError.NOT_WRITABLE
    # the message account must be the next sequence's
    stale = raw_publish(d, d.admin.pubkey(), [task_of(d, worker)], sequence + 1)
    assert await rejection(d.client.send([stale], d.admin)) == ProgramError.STALE_SEQUENCE
    assert (await d.client.pending_commitments(JOB, ROUND))[0].worker_key == bytes(worker.pubkey())


async def test_no_task_or_more_than_thirty_two_is_refused(deployment: Deployment) -> None:
    d = deployment
    (worker,) = await committed(d, 1)
    sequence = await d.client.next_sequence()
    empty = raw_publish(d, d.admin.pubkey(), [], sequence)
    assert await rejection(d.client.send([empty], d.admin)) == ProgramError.COMMITMENT_COUNT
    # 33 entries fit a transaction only as one account listed again and again: the count is
    # checked before any entry
    many = raw_publish(d, d.admin.pubkey(), [task_of(d, worker)] * (MAX_COMMITMENTS + 1), sequence)
    assert await rejection(d.client.send([many], d.admin)) == ProgramError.COMMITMENT_COUNT
    wrong_data = Instruction(d.program_id, bytes(empty.data) + b"\0", list(empty.accounts))
    assert await rejection(d.client.send([wrong_data], d.admin)) == ProgramError.INVALID_INSTRUCTION


async def test_a_full_transaction_of_commitments(deployment: Deployment) -> None:
    """As many tasks as a transaction holds go in one message; the rest in the next."""
    d = deployment
    keys = [bytes([i + 1]) * 32 for i in range(MAX_COMMITMENTS)]
    commitments = {key: install_committed_task(d, key, i + 1) for i, key in enumerate(keys)}
    most = d.client.commitments_per_transaction()
    assert 1 < most <= MAX_COMMITMENTS
    sequence = await d.client.next_sequence()
    receipt = await d.client.publish_commitments(d.admin, JOB, ROUND, keys[:most])
    print(f"publish_commitments of {most} (a full transaction): {receipt.compute_units} units")
    message = await d.client.fetch_message(sequence)
    assert message.payload == expected_payload(
        JOB, ROUND, [(k, commitments[k]) for k in keys[:most]]
    )
    rest = await d.client.pending_commitments(JOB, ROUND)
    assert [t.worker_key for t in rest] == keys[most:]


async def test_the_worker_chain_publishes_every_pending_commitment(deployment: Deployment) -> None:
    d = deployment
    crew = await committed(d, 3)
    chains = [SolanaWorkerChain(d.client.rpc, d.program_id, w) for w in crew]
    key = TaskKey(JOB, ROUND)
    assert not await chains[0].commitment_published(key)
    assert not await chains[0].commitment_published(TaskKey(JOB, ROUND + 5))  # no such task

    assert await chains[1].publish_commitments(key) == 3
    assert [await c.commitment_published(key) for c in chains] == [True] * 3
    assert await chains[0].publish_commitments(key) == 0


async def test_concurrent_publishers_publish_each_commitment_once(deployment: Deployment) -> None:
    d = deployment
    keys = [bytes([0x80 + i]) * 32 for i in range(40)]
    for i, key in enumerate(keys):
        install_committed_task(d, key, i + 1)
    publishers = [await d.funded_keypair() for _ in range(3)]
    chains = [SolanaWorkerChain(d.client.rpc, d.program_id, p) for p in publishers]
    sequence = await d.client.next_sequence()

    counts = await asyncio.gather(*(c.publish_commitments(TaskKey(JOB, ROUND)) for c in chains))

    assert sum(counts) == len(keys)
    published = []
    for message in await d.client.messages_from(sequence):
        payload = message.payload
        assert payload[:2] == b"\x03\x04"
        count = payload[48]
        assert len(payload) == 49 + 136 * count
        published += [payload[49 + 136 * i : 81 + 136 * i] for i in range(count)]
    assert sorted(published) == sorted(keys)
    assert await d.client.pending_commitments(JOB, ROUND) == []
