"""commit_update and the buffer path for VAAs too large for one transaction (publishing the
commitments: test_solana_publish_commitments.py)."""

from __future__ import annotations

import base64
import struct
from collections.abc import Awaitable

import pytest
import support.wormhole as wormhole_testing
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair

from fedrelay.adapters.solana import instructions as ix
from fedrelay.adapters.solana import pda
from fedrelay.adapters.solana.client import PACKET_DATA_SIZE
from fedrelay.adapters.solana.errors import TransactionFailed
from fedrelay.adapters.solana.layout import ProgramError
from fedrelay.adapters.solana.testing import (
    LAMPORTS_PER_SOL,
    Deployment,
    task_assigned,
)

pytestmark = pytest.mark.integration


async def rejection(call: Awaitable[object]) -> ProgramError:
    """Await a call that must fail and return the worker program's error."""
    with pytest.raises(TransactionFailed) as failure:
        await call
    assert failure.value.program_error is not None, str(failure.value)
    return ProgramError(failure.value.program_error)


async def assigned_workers(
    deployment: Deployment, count: int, deadline_in: int = 600
) -> list[Keypair]:
    crew = []
    for _ in range(count):
        worker = await deployment.funded_keypair()
        await deployment.client.register(
            worker, stake_lamports=LAMPORTS_PER_SOL, payout=bytes(32), capabilities=0
        )
        crew.append(worker)
    deadline = deployment.devnet.chain.unix_time() + deadline_in
    payload = task_assigned(
        deployment.program_id, [bytes(k.pubkey()) for k in crew], deadline=deadline
    )
    await deployment.client.receive_vaa(deployment.admin, deployment.sign(payload).to_bytes())
    return crew


COMMITMENT = ix.Commitment(
    job_id=7,
    round=1,
    update_hash=wormhole_testing.filler("update"),
    transcript_root=wormhole_testing.filler("transcript"),
    data_root=wormhole_testing.filler("data"),
    num_samples=600,
    train_loss=412_345,
)


async def test_commit_update_keeps_the_commitment_in_the_task(deployment: Deployment) -> None:
    """Nothing is published: the task holds the commitment until publish_commitments, and the
    transaction logs it (job_id | round, then the UPDATE_COMMITTED entry)."""
    (worker,) = await assigned_workers(deployment, 1)
    sequence = (await deployment.client.fetch_config()).next_sequence
    receipt = await deployment.client.commit_update(worker, COMMITMENT)

    task = await deployment.client.fetch_task(7, 1, bytes(worker.pubkey()))
    assert (task.committed, task.published, task.pending) == (True, False, True)
    assert (task.update_hash, task.transcript_root, task.data_root) == (
        COMMITMENT.update_hash,
        COMMITMENT.transcript_root,
        COMMITMENT.data_root,
    )
    assert (task.num_samples, task.train_loss) == (600, 412_345)
    assert (await deployment.client.fetch_config()).next_sequence == sequence
    [line] = [line for line in receipt.logs if line.startswith("Program data: ")]
    where, entry = (base64.b64decode(f) for f in line.removeprefix("Program data: ").split())
    assert where == struct.pack(">QI", 7, 1)
    assert entry == (
        bytes(worker.pubkey()) + COMMITMENT.update_hash + COMMITMENT.transcript_root
        + COMMITMENT.data_root + struct.pack(">II", 600, 412_345)
    )  # fmt: skip


async def test_a_commitment_of_another_layout_is_refused(deployment: Deployment) -> None:
    """The protocol v2 instruction (no data root) and the v3 one (a message nonce at the end)
    are not commitments any more."""
    (worker,) = await assigned_workers(deployment, 1)
    instruction = ix.commit_update(deployment.program_id, worker.pubkey(), COMMITMENT)
    data = bytes(instruction.data)
    assert len(data) == 117
    for old_layout in (data[:77] + data[109:], data + bytes(4)):
        legacy = Instruction(deployment.program_id, old_layout, list(instruction.accounts))
        error = await rejection(deployment.client.send([legacy], worker))
        assert error == ProgramError.INVALID_INSTRUCTION
    assert not (await deployment.client.fetch_task(7, 1, bytes(worker.pubkey()))).committed


async def test_double_commit_is_rejected(deployment: Deployment) -> None:
    (worker,) = await assigned_workers(deployment, 1)
    await deployment.client.commit_update(worker, COMMITMENT)
    error = await rejection(deployment.client.commit_update(worker, COMMITMENT))
    assert error == ProgramError.ALREADY_COMMITTED


async def test_commit_by_a_worker_not_assigned_is_rejected(deployment: Deployment) -> None:
    (assigned,) = await assigned_workers(deployment, 1)
    outsider = await deployment.funded_keypair()
    error = await rejection(deployment.client.commit_update(outsider, COMMITMENT))
    assert error == ProgramError.NOT_ASSIGNED
    # using the assigned worker's task account does not help either
    instruction = ix.commit_update(deployment.program_id, outsider.pubkey(), COMMITMENT)
    metas = list(instruction.accounts)
    task = pda.task_address(deployment.program_id, 7, 1, bytes(assigned.pubkey()))
    metas[1] = AccountMeta(task, False, True)
    forged = Instruction(deployment.program_id, bytes(instruction.data), metas)
    error = await rejection(deployment.client.send([forged], outsider))
    assert error == ProgramError.NOT_ASSIGNED


async def test_late_commit_is_rejected(deployment: Deployment) -> None:
    (worker,) = await assigned_workers(deployment, 1, deadline_in=60)
    deployment.devnet.advance_time(120)
    error = await rejection(deployment.client.commit_update(worker, COMMITMENT))
    assert error == ProgramError.DEADLINE_PASSED


async def test_thirteen_of_nineteen_vaa_goes_through_the_buffer(deployment19: Deployment) -> None:
    d = deployment19
    worker = await d.funded_keypair()
    await d.client.register(
        worker, stake_lamports=LAMPORTS_PER_SOL, payout=bytes(32), capabilities=0
    )
    payload = task_assigned(d.program_id, [bytes(worker.pubkey())], deadline=2**40)
    vaa = d.sign(payload, signers=range(13))
    assert len(vaa.to_bytes()) > PACKET_DATA_SIZE - 300  # no room for it next to the accounts

    delivered = await d.client.receive_vaa(d.admin, vaa.to_bytes())
    assert delivered.path == "receive_from_buffer"
    assert await d.client.is_consumed(vaa.digest)
    assert (await d.client.fetch_task(7, 1, bytes(worker.pubkey()))).shard == 0
    buffer = pda.buffer_address(
        d.program_id, d.admin.pubkey(), int.from_bytes(vaa.digest[:8], "big")
    )
    assert d.devnet.chain.account(buffer) is None  # closed after use


async def test_tampered_buffer_is_rejected(deployment19: Deployment) -> None:
    d = deployment19
    worker = await d.funded_keypair()
    await d.client.register(
        worker, stake_lamports=LAMPORTS_PER_SOL, payout=bytes(32), capabilities=0
    )
    vaa = d.sign(
        task_assigned(d.program_id, [bytes(worker.pubkey())], deadline=2**40), signers=range(13)
    )
    raw = vaa.to_bytes()
    buffer_id = 42
    await d.client.write_buffer(d.admin, buffer_id, raw)
    last = len(raw) - 1
    tamper = ix.write_buffer(
        d.program_id, d.admin.pubkey(), buffer_id, len(raw), last, bytes([raw[last] ^ 1])
    )
    await d.client.send([tamper], d.admin)

    receive = ix.receive_from_buffer(
        d.program_id, d.admin.pubkey(), buffer_id, ix.delivery_for(vaa)
    )
    error = await rejection(d.client.send([receive], d.admin, compute_units=1_400_000))
    assert error == ProgramError.INVALID_SIGNATURE
    assert not await d.client.is_consumed(vaa.digest)


async def test_someone_elses_buffer_cannot_be_written(deployment: Deployment) -> None:
    owner = await deployment.funded_keypair()
    await deployment.client.write_buffer(owner, 1, b"\x01" * 100)
    intruder = await deployment.funded_keypair()
    instruction = ix.write_buffer(deployment.program_id, intruder.pubkey(), 1, 100, 0, b"\x02")
    metas = list(instruction.accounts)
    metas[1] = AccountMeta(
        pda.buffer_address(deployment.program_id, owner.pubkey(), 1), False, True
    )
    forged = Instruction(deployment.program_id, bytes(instruction.data), metas)
    assert await rejection(deployment.client.send([forged], intruder)) == ProgramError.WRONG_ACCOUNT


async def test_close_buffer_returns_its_rent(deployment: Deployment) -> None:
    owner = await deployment.funded_keypair()
    await deployment.client.write_buffer(owner, 3, b"\x01" * 500)
    buffer = pda.buffer_address(deployment.program_id, owner.pubkey(), 3)
    rent = await deployment.client.balance(buffer)
    assert rent > 0
    before = await deployment.client.balance(owner.pubkey())
    await deployment.client.send([ix.close_buffer(deployment.program_id, owner.pubkey(), 3)], owner)
    assert deployment.devnet.chain.account(buffer) is None
    assert await deployment.client.balance(owner.pubkey()) == before + rent - 5000
