"""receive_message: VAA verification and TASK_ASSIGNED / ROUND_SETTLED, through the devnet RPC."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import replace

import pytest
import support.wormhole as wormhole_testing
from solders.account import Account
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from fedrelay.adapters.solana import instructions as ix
from fedrelay.adapters.solana import pda
from fedrelay.adapters.solana.errors import TransactionFailed
from fedrelay.adapters.solana.layout import LAMPORTS_PER_STAKE_UNIT, SOLANA_CHAIN, ProgramError
from fedrelay.adapters.solana.testing import (
    COORDINATOR_EMITTER,
    LAMPORTS_PER_SOL,
    Deployment,
    round_settled,
    task_assigned,
)
from fedrelay.protocol.wormhole import (
    Outcome,
    Signature,
    StakeChanged,
    StakeReason,
    Vaa,
    decode_payload,
    parse_vaa,
    task_id,
)
from fedrelay.protocol.wormhole.guardians import SECP256K1_N

pytestmark = pytest.mark.integration

STAKE = 2 * LAMPORTS_PER_SOL


async def rejection(call: Awaitable[object]) -> ProgramError:
    """Await a call that must fail and return the worker program's error."""
    with pytest.raises(TransactionFailed) as failure:
        await call
    assert failure.value.program_error is not None, str(failure.value)
    return ProgramError(failure.value.program_error)


async def workers(deployment: Deployment, count: int) -> list[Keypair]:
    keys = []
    for _ in range(count):
        worker = await deployment.funded_keypair()
        await deployment.client.register(
            worker, stake_lamports=STAKE, payout=bytes(32), capabilities=0
        )
        keys.append(worker)
    return keys


def assignment(deployment: Deployment, keys: list[Keypair], **kwargs: int) -> bytes:
    deadline = deployment.devnet.chain.unix_time() + 600
    payload = task_assigned(
        deployment.program_id, [bytes(k.pubkey()) for k in keys], deadline=deadline, **kwargs
    )
    return deployment.sign(payload).to_bytes()


def send_raw(deployment: Deployment, vaa: bytes, delivery: ix.Delivery) -> Awaitable[object]:
    instruction = ix.receive_message(
        deployment.program_id, deployment.admin.pubkey(), vaa, delivery
    )
    return deployment.client.send([instruction], deployment.admin, compute_units=1_400_000)


async def test_task_assigned_records_tasks_and_assignments(deployment: Deployment) -> None:
    client = deployment.client
    crew = await workers(deployment, 3)
    vaa = assignment(deployment, crew, job_id=9, round_number=2)
    await client.receive_vaa(deployment.admin, vaa)

    parsed = parse_vaa(vaa)
    assert await client.is_consumed(parsed.digest)
    for shard, worker in enumerate(crew):
        task = await client.fetch_task(9, 2, bytes(worker.pubkey()))
        assert (task.shard, task.committed, task.settled) == (shard, False, False)
        assert (await client.fetch_worker(worker.pubkey())).assigned == 1


async def test_replayed_vaa_is_rejected_as_consumed(deployment: Deployment) -> None:
    crew = await workers(deployment, 1)
    vaa = assignment(deployment, crew)
    await deployment.client.receive_vaa(deployment.admin, vaa)
    error = await rejection(deployment.client.receive_vaa(deployment.admin, vaa))
    assert error == ProgramError.ALREADY_CONSUMED


async def test_wrong_emitter_is_rejected(deployment: Deployment) -> None:
    crew = await workers(deployment, 1)
    payload = task_assigned(deployment.program_id, [bytes(crew[0].pubkey())], deadline=2**40)
    for chain, emitter in [(2, wormhole_testing.evm_address("impostor")), (4, COORDINATOR_EMITTER)]:
        vaa = deployment.sign(payload, emitter_chain=chain, emitter=emitter).to_bytes()
        error = await rejection(deployment.client.receive_vaa(deployment.admin, vaa))
        assert error == ProgramError.WRONG_EMITTER


@pytest.mark.parametrize("target", ["other program", "other chain"])
async def test_wrong_target_is_rejected(deployment: Deployment, target: str) -> None:
    crew = await workers(deployment, 1)
    payload = task_assigned(deployment.program_id, [bytes(crew[0].pubkey())], deadline=2**40)
    raw = bytearray(payload.to_bytes())
    if target == "other program":
        raw[4:36] = bytes(Pubkey.new_unique())
    else:
        raw[2:4] = (4).to_bytes(2, "big")
    vaa = deployment.sign(bytes(raw))
    error = await rejection(send_raw(deployment, vaa.to_bytes(), ix.delivery_for(vaa)))
    assert error == ProgramError.WRONG_TARGET


def crew_keys(crew: list[Keypair]) -> tuple[bytes, ...]:
    return tuple(bytes(k.pubkey()) for k in crew)


def _tamper(vaa: bytes, offset_from_end: int) -> bytes:
    raw = bytearray(vaa)
    raw[-offset_from_end] ^= 0x01
    return bytes(raw)


async def test_tampered_payload_is_rejected(deployment: Deployment) -> None:
    crew = await workers(deployment, 1)
    vaa = assignment(deployment, crew)
    tampered = _tamper(vaa, 1)  # the last shard byte
    delivery = ix.delivery_for(parse_vaa(vaa))
    error = await rejection(send_raw(deployment, tampered, delivery))
    assert error == ProgramError.INVALID_SIGNATURE


async def test_tampered_signature_is_rejected(deployment: Deployment) -> None:
    crew = await workers(deployment, 1)
    vaa = bytearray(assignment(deployment, crew))
    vaa[6 + 1 + 5] ^= 0x40  # a byte of r
    delivery = ix.delivery_for(parse_vaa(bytes(vaa)))
    error = await rejection(send_raw(deployment, bytes(vaa), delivery))
    assert error == ProgramError.INVALID_SIGNATURE


async def test_high_s_signature_is_rejected(deployment: Deployment) -> None:
    crew = await workers(deployment, 1)
    vaa = parse_vaa(assignment(deployment, crew))
    sig = vaa.signatures[0]
    high = (SECP256K1_N - int.from_bytes(sig.s, "big")).to_bytes(32, "big")
    flipped = Vaa(
        vaa.guardian_set_index, (Signature(sig.guardian_index, sig.r, high, 1 - sig.v),), vaa.body
    )
    error = await rejection(send_raw(deployment, flipped.to_bytes(), ix.delivery_for(flipped)))
    assert error == ProgramError.HIGH_S


async def test_below_quorum_and_unordered_signatures_are_rejected(deployment19: Deployment) -> None:
    d = deployment19
    crew = await workers(d, 1)
    payload = task_assigned(d.program_id, crew_keys(crew), deadline=2**40)
    twelve = d.sign(payload, signers=range(12))
    assert (
        await rejection(d.client.receive_vaa(d.admin, twelve.to_bytes())) == ProgramError.NO_QUORUM
    )

    ordered = d.sign(payload, signers=range(13))
    swapped = list(ordered.signatures)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    unordered = Vaa(ordered.guardian_set_index, tuple(swapped), ordered.body)
    error = await rejection(d.client.receive_vaa(d.admin, unordered.to_bytes()))
    assert error == ProgramError.SIGNATURES_NOT_ASCENDING


async def test_signature_by_a_non_guardian_is_rejected(deployment: Deployment) -> None:
    crew = await workers(deployment, 1)
    payload = task_assigned(deployment.program_id, crew_keys(crew), deadline=2**40)
    strangers = [wormhole_testing.guardian_signers(5)[4]]
    vaa = deployment.sign(payload, guardians=strangers)
    error = await rejection(deployment.client.receive_vaa(deployment.admin, vaa.to_bytes()))
    assert error == ProgramError.INVALID_SIGNATURE


async def test_fake_guardian_set_is_rejected(deployment: Deployment) -> None:
    """A guardian-set-shaped account with the attacker's keys, at another address."""
    attacker = wormhole_testing.guardian_signers(5)[4]
    real = deployment.devnet.chain.account(pda.guardian_set_address(deployment.program_id, 0))
    assert real is not None
    forged = bytearray(real.data)
    forged[24:44] = attacker.address
    crew = await workers(deployment, 1)
    vaa = deployment.sign(
        task_assigned(deployment.program_id, crew_keys(crew), deadline=2**40), guardians=[attacker]
    )
    delivery = ix.delivery_for(vaa)
    for owner, expected in [
        (Pubkey.new_unique(), ProgramError.WRONG_OWNER),
        (deployment.program_id, ProgramError.WRONG_ACCOUNT),
    ]:
        fake = Pubkey.new_unique()
        deployment.devnet.chain.set_account(
            fake, Account(real.lamports, bytes(forged), owner, False, 0)
        )
        instruction = ix.receive_message(
            deployment.program_id, deployment.admin.pubkey(), vaa.to_bytes(), delivery
        )
        metas = list(instruction.accounts)
        metas[2] = AccountMeta(fake, False, False)
        substituted = Instruction(deployment.program_id, bytes(instruction.data), metas)
        error = await rejection(
            deployment.client.send([substituted], deployment.admin, compute_units=400_000)
        )
        assert error == expected


async def test_old_guardian_set_works_until_it_expires(deployment: Deployment) -> None:
    client = deployment.client
    crew = await workers(deployment, 2)
    old_guardians = deployment.guardians
    new_guardians = wormhole_testing.guardian_signers(4)[1:]
    await client.set_guardian_set(deployment.admin, [g.address for g in new_guardians])

    first = task_assigned(deployment.program_id, crew_keys(crew[:1]), deadline=2**40)
    vaa = deployment.sign(first, guardian_set_index=0, guardians=old_guardians)
    await client.receive_vaa(deployment.admin, vaa.to_bytes())  # within the TTL

    deployment.devnet.advance_time(86401)
    second = task_assigned(
        deployment.program_id, crew_keys(crew[1:]), round_number=2, deadline=2**40
    )
    late = deployment.sign(second, guardian_set_index=0, guardians=old_guardians)
    error = await rejection(client.receive_vaa(deployment.admin, late.to_bytes()))
    assert error == ProgramError.GUARDIAN_SET_EXPIRED

    current = deployment.sign(second, guardian_set_index=1, guardians=new_guardians)
    await client.receive_vaa(deployment.admin, current.to_bytes())
    assert (await client.fetch_task(7, 2, bytes(crew[1].pubkey()))).shard == 0


async def test_unregistered_worker_in_batch_is_refused_and_the_rest_applied(
    deployment: Deployment,
) -> None:
    client = deployment.client
    crew = await workers(deployment, 2)
    stranger = Keypair()
    vaa = assignment(deployment, [crew[0], stranger, crew[1]])
    await client.receive_vaa(deployment.admin, vaa)
    for shard, worker in [(0, crew[0]), (2, crew[1])]:
        assert (await client.fetch_task(7, 1, bytes(worker.pubkey()))).shard == shard
    task = pda.task_address(client.program_id, 7, 1, bytes(stranger.pubkey()))
    assert deployment.devnet.chain.account(task) is None
    refusal = decode_payload((await client.fetch_message(2)).payload)  # after 2 registrations
    assert isinstance(refusal, StakeChanged)
    key = bytes(stranger.pubkey())
    assert (refusal.worker_key, refusal.stake, refusal.nonce, refusal.reason, refusal.task_id) == (
        key, 0, 0, StakeReason.TASK_REFUSED, task_id(7, 1, SOLANA_CHAIN, key),
    )  # fmt: skip


async def test_round_settled_releases_and_slashes(deployment: Deployment) -> None:
    client = deployment.client
    crew = await workers(deployment, 3)
    lock_units = STAKE // LAMPORTS_PER_STAKE_UNIT // 4
    await client.receive_vaa(
        deployment.admin, assignment(deployment, crew, min_stake=lock_units, stake_lock=lock_units)
    )
    slash_units = 50_000_000  # 0.5 SOL in 8-decimal units, below the lock
    outcomes = [
        (bytes(crew[0].pubkey()), Outcome.ACCEPTED, 0),
        (bytes(crew[1].pubkey()), Outcome.DROPPED, 0),
        (bytes(crew[2].pubkey()), Outcome.SLASHED, slash_units),
    ]
    vault = pda.vault_address(client.program_id)
    vault_before = await client.balance(vault)
    settled = deployment.sign(round_settled(deployment.program_id, outcomes))
    await client.receive_vaa(deployment.admin, settled.to_bytes())

    records = [await client.fetch_worker(k.pubkey()) for k in crew]
    assert [(r.assigned, r.locked) for r in records] == [(0, 0)] * 3
    slashed = slash_units * LAMPORTS_PER_STAKE_UNIT
    assert [r.stake for r in records] == [STAKE, STAKE, STAKE - slashed]
    assert (await client.fetch_config()).slashed_lamports == slashed
    assert vault_before - await client.balance(vault) == slashed  # out of the vault
    assert (await client.fetch_consumed(settled.digest)).slashed == slashed
    tasks = [await client.fetch_task(7, 1, bytes(k.pubkey())) for k in crew]
    assert [(t.settled, t.outcome) for t in tasks] == [(True, 0), (True, 1), (True, 2)]

    again = deployment.sign(round_settled(deployment.program_id, outcomes))
    await client.receive_vaa(deployment.admin, again.to_bytes())  # skipped, not reverted
    assert (await client.fetch_worker(crew[2].pubkey())).stake == STAKE - slashed
    assert (await client.fetch_consumed(again.digest)).applied == 3


async def test_large_batch_is_finished_by_apply_batch(deployment: Deployment) -> None:
    client = deployment.client
    crew = await workers(deployment, 12)
    vaa = parse_vaa(assignment(deployment, crew))
    delivered = await client.receive_vaa(deployment.admin, vaa.to_bytes())

    assert len(delivered.receipts) > 1  # twelve pairs do not fit next to the VAA
    applied = [key for receipt in delivered.receipts for key in receipt.applied_keys]
    assert applied == list(crew_keys(crew))
    for worker in crew:
        assert (await client.fetch_worker(worker.pubkey())).assigned == 1
    record = await client.fetch_consumed(vaa.digest)
    assert record.applied == 12

    done = ix.apply_batch(client.program_id, deployment.admin.pubkey(), ix.delivery_for(vaa))
    error = await rejection(client.send([done], deployment.admin, compute_units=400_000))
    assert error == ProgramError.BATCH_COMPLETE


async def test_apply_batch_checks_entries_in_payload_order(deployment: Deployment) -> None:
    client = deployment.client
    crew = await workers(deployment, 3)
    vaa = parse_vaa(assignment(deployment, crew))
    first_only = replace(ix.delivery_for(vaa), worker_keys=crew_keys(crew)[:1])
    await send_raw(deployment, vaa.to_bytes(), first_only)
    assert (await client.fetch_consumed(vaa.digest)).applied == 1

    skipping = replace(first_only, worker_keys=crew_keys(crew)[2:])  # entry 2 before entry 1
    instruction = ix.apply_batch(client.program_id, deployment.admin.pubkey(), skipping)
    error = await rejection(client.send([instruction], deployment.admin, compute_units=400_000))
    assert error == ProgramError.WRONG_ACCOUNT

    rest = replace(first_only, worker_keys=crew_keys(crew)[1:])
    await client.send(
        [ix.apply_batch(client.program_id, deployment.admin.pubkey(), rest)], deployment.admin
    )
    assert (await client.fetch_consumed(vaa.digest)).applied == 3


async def test_interrupted_delivery_is_completed(deployment: Deployment) -> None:
    client = deployment.client
    crew = await workers(deployment, 4)
    vaa = parse_vaa(assignment(deployment, crew))
    first_only = replace(ix.delivery_for(vaa), worker_keys=crew_keys(crew)[:1])
    await send_raw(deployment, vaa.to_bytes(), first_only)  # the relayer stopped here

    error = await rejection(client.receive_vaa(deployment.admin, vaa.to_bytes()))
    assert error == ProgramError.ALREADY_CONSUMED
    finished = await client.complete_delivery(deployment.admin, vaa.to_bytes())
    assert [k for r in finished for k in r.applied_keys] == list(crew_keys(crew)[1:])
    assert (await client.fetch_consumed(vaa.digest)).applied == 4
    assert await client.complete_delivery(deployment.admin, vaa.to_bytes()) == ()
