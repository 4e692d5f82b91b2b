"""initialize, register, stake, unstake, withdraw and set_guardian_set through the devnet RPC."""

from __future__ import annotations

import base64
from collections.abc import Awaitable

import pytest
import support.wormhole as wormhole_testing
from solders.account import Account
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from fedrelay.adapters.solana import instructions as ix
from fedrelay.adapters.solana import pda
from fedrelay.adapters.solana.errors import InstructionArgumentError, TransactionFailed
from fedrelay.adapters.solana.layout import LAMPORTS_PER_STAKE_UNIT, ProgramError, PublishedMessage
from fedrelay.adapters.solana.testing import (
    COORDINATOR_CHAIN,
    COORDINATOR_EMITTER,
    LAMPORTS_PER_SOL,
    Deployment,
    task_assigned,
)
from fedrelay.protocol.wormhole import (
    StakeChanged,
    StakeReason,
    WorkerRegistered,
    decode_payload,
)

pytestmark = pytest.mark.integration

STAKE = 2 * LAMPORTS_PER_SOL
PAYOUT = wormhole_testing.evm_address("payout")


async def rejection(call: Awaitable[object]) -> ProgramError:
    """Await a call that must fail and return the worker program's error."""
    with pytest.raises(TransactionFailed) as failure:
        await call
    assert failure.value.program_error is not None, str(failure.value)
    return ProgramError(failure.value.program_error)


async def registered(deployment: Deployment) -> Keypair:
    worker = await deployment.funded_keypair()
    await deployment.client.register(worker, stake_lamports=STAKE, payout=PAYOUT, capabilities=1)
    return worker


async def test_initialize_stores_config_and_guardian_set(deployment: Deployment) -> None:
    config = await deployment.client.fetch_config()
    assert config.admin == bytes(deployment.admin.pubkey())
    assert (config.peer_chain, config.peer_emitter) == (COORDINATOR_CHAIN, COORDINATOR_EMITTER)
    assert config.next_sequence == 0
    guardian_set = await deployment.client.fetch_guardian_set(0)
    assert guardian_set.addresses == tuple(g.address for g in deployment.guardians)
    assert guardian_set.expiration_time == 0


async def test_initialize_twice_is_rejected(deployment: Deployment) -> None:
    args = ix.InitializeArgs(COORDINATOR_CHAIN, COORDINATOR_EMITTER, 0, (bytes(20),))
    error = await rejection(deployment.client.initialize(deployment.admin, args))
    assert error == ProgramError.ALREADY_INITIALIZED


async def test_register_stakes_into_vault_and_publishes_worker_registered(
    deployment: Deployment,
) -> None:
    client = deployment.client
    vault = pda.vault_address(client.program_id)
    vault_before = await client.balance(vault)
    worker = await registered(deployment)

    record = await client.fetch_worker(worker.pubkey())
    assert (record.key, record.stake, record.payout) == (bytes(worker.pubkey()), STAKE, PAYOUT)
    assert await client.balance(vault) - vault_before == STAKE

    message = await client.fetch_message(0)
    payload = decode_payload(message.payload)
    assert payload == WorkerRegistered(
        target_chain=COORDINATOR_CHAIN,
        target_address=COORDINATOR_EMITTER,
        job_id=0,
        worker_key=bytes(worker.pubkey()),
        stake=STAKE // LAMPORTS_PER_STAKE_UNIT,
        payout_address=PAYOUT,
        capabilities=1,
    )
    assert (await client.fetch_config()).next_sequence == 1
    assert [m.sequence for m in await client.all_messages()] == [0]


async def test_register_logs_the_message_for_watchers(deployment: Deployment) -> None:
    worker = await deployment.funded_keypair()
    receipt = await deployment.client.register(
        worker, stake_lamports=STAKE, payout=PAYOUT, capabilities=1
    )
    data_lines = [line for line in receipt.logs if line.startswith("Program data: ")]
    assert len(data_lines) == 1
    message = await deployment.client.fetch_message(0)
    header, payload = (base64.b64decode(p) for p in data_lines[0].split()[2:])
    assert payload == message.payload
    assert int.from_bytes(header[:8], "big") == 0


async def test_register_twice_and_below_minimum_are_rejected(deployment: Deployment) -> None:
    worker = await registered(deployment)
    again = deployment.client.register(worker, stake_lamports=STAKE, payout=PAYOUT, capabilities=0)
    assert await rejection(again) == ProgramError.ALREADY_REGISTERED
    poor = await deployment.funded_keypair()
    small = deployment.client.register(poor, stake_lamports=10, payout=PAYOUT, capabilities=0)
    assert await rejection(small) == ProgramError.STAKE_TOO_LOW


async def test_missing_signer_is_rejected(deployment: Deployment) -> None:
    worker = await registered(deployment)
    payer = await deployment.funded_keypair()
    unsigned = ix.begin_unstake(deployment.program_id, worker.pubkey(), STAKE, sequence=1)
    metas = [AccountMeta(m.pubkey, False, m.is_writable) for m in unsigned.accounts]
    instruction = Instruction(deployment.program_id, bytes(unsigned.data), metas)
    error = await rejection(deployment.client.send([instruction], payer))
    assert error == ProgramError.MISSING_SIGNER


async def test_someone_elses_stake_account_is_rejected(deployment: Deployment) -> None:
    victim = await registered(deployment)
    thief = await registered(deployment)
    instruction = ix.begin_unstake(deployment.program_id, thief.pubkey(), STAKE, sequence=2)
    metas = list(instruction.accounts)
    metas[2] = AccountMeta(pda.worker_address(deployment.program_id, victim.pubkey()), False, True)
    forged = Instruction(deployment.program_id, bytes(instruction.data), metas)
    assert await rejection(deployment.client.send([forged], thief)) == ProgramError.WRONG_ACCOUNT
    assert (await deployment.client.fetch_worker(victim.pubkey())).unbonding_at == 0


async def _substitute_config(deployment: Deployment, owner: Pubkey) -> Pubkey:
    """Copy the real config into a new address owned by `owner`; return that address."""
    real = deployment.devnet.chain.account(pda.config_address(deployment.program_id))
    assert real is not None
    fake = Pubkey.new_unique()
    deployment.devnet.chain.set_account(
        fake, Account(real.lamports, bytes(real.data), owner, False, real.rent_epoch)
    )
    return fake


@pytest.mark.parametrize(
    ("owned_by_program", "expected"),
    [(False, ProgramError.WRONG_OWNER), (True, ProgramError.WRONG_ACCOUNT)],
)
async def test_substituted_config_is_rejected(
    deployment: Deployment, owned_by_program: bool, expected: ProgramError
) -> None:
    owner = deployment.program_id if owned_by_program else Pubkey.new_unique()
    fake = await _substitute_config(deployment, owner)
    worker = await deployment.funded_keypair()
    instruction = ix.register(
        deployment.program_id, worker.pubkey(), stake_lamports=STAKE, payout=PAYOUT,
        capabilities=0, sequence=0,
    )  # fmt: skip
    metas = list(instruction.accounts)
    metas[1] = AccountMeta(fake, False, True)
    forged = Instruction(deployment.program_id, bytes(instruction.data), metas)
    assert await rejection(deployment.client.send([forged], worker)) == expected


def stake_changes(messages: list[PublishedMessage]) -> list[StakeChanged]:
    payloads = [decode_payload(m.payload) for m in messages]
    return [p for p in payloads if isinstance(p, StakeChanged)]


async def test_stake_unstake_withdraw_publish_stake_changed(deployment: Deployment) -> None:
    client = deployment.client
    worker = await registered(deployment)
    extra = LAMPORTS_PER_SOL
    await client.stake(worker, extra)
    assert await rejection(client.withdraw(worker)) == ProgramError.NOT_UNBONDING
    await client.begin_unstake(worker, STAKE)
    assert await rejection(client.withdraw(worker)) == ProgramError.UNBONDING_NOT_OVER
    record = await client.fetch_worker(worker.pubkey())
    assert (record.stake, record.unbonding) == (extra, STAKE)

    deployment.devnet.advance_time(3601)
    before = await client.balance(worker.pubkey())
    await client.withdraw(worker)
    after = await client.balance(worker.pubkey())
    assert STAKE - LAMPORTS_PER_SOL // 100 < after - before < STAKE  # less the message's rent
    record = await client.fetch_worker(worker.pubkey())  # the record stays: its nonce counts on
    assert (record.stake, record.unbonding, record.nonce) == (extra, 0, 3)

    key = bytes(worker.pubkey())
    units = extra // LAMPORTS_PER_STAKE_UNIT
    assert [(c.worker_key, c.stake, c.nonce, c.reason, c.task_id) for c in stake_changes(
        await client.all_messages()
    )] == [
        (key, (STAKE + extra) // LAMPORTS_PER_STAKE_UNIT, 1, StakeReason.STAKED, bytes(32)),
        (key, units, 2, StakeReason.UNBONDING, bytes(32)),
        (key, units, 3, StakeReason.WITHDRAWN, bytes(32)),
    ]  # fmt: skip
    for change in stake_changes(await client.all_messages()):
        assert (change.target_chain, change.target_address) == (
            COORDINATOR_CHAIN,
            COORDINATOR_EMITTER,
        )


async def test_unbond_of_locked_stake_is_refused(deployment: Deployment) -> None:
    client = deployment.client
    worker = await registered(deployment)
    lock_units = LAMPORTS_PER_SOL // LAMPORTS_PER_STAKE_UNIT  # 1 SOL
    payload = task_assigned(
        client.program_id,
        [bytes(worker.pubkey())],
        deadline=deployment.devnet.chain.unix_time() + 60,
        min_stake=2 * lock_units,
        stake_lock=lock_units,
    )
    await client.receive_vaa(deployment.admin, deployment.sign(payload).to_bytes())
    record = await client.fetch_worker(worker.pubkey())
    assert (record.locked, record.assigned) == (LAMPORTS_PER_SOL, 1)

    error = await rejection(client.begin_unstake(worker, STAKE))
    assert error == ProgramError.STAKE_LOCKED
    error = await rejection(client.begin_unstake(worker, STAKE - LAMPORTS_PER_SOL + 10))
    assert error == ProgramError.STAKE_LOCKED
    await client.begin_unstake(worker, STAKE - LAMPORTS_PER_SOL)  # all that is not locked
    assert (await client.fetch_worker(worker.pubkey())).stake == LAMPORTS_PER_SOL


@pytest.mark.parametrize("amount", [0, 15])
async def test_amounts_must_be_whole_units(deployment: Deployment, amount: int) -> None:
    worker = await registered(deployment)
    with pytest.raises(InstructionArgumentError):
        await deployment.client.begin_unstake(worker, amount)
    instruction = ix.stake(deployment.program_id, worker.pubkey(), 10, sequence=1)
    forged = Instruction(
        deployment.program_id,
        bytes([instruction.data[0]]) + amount.to_bytes(8, "little"),
        instruction.accounts,
    )
    assert (
        await rejection(deployment.client.send([forged], worker)) == ProgramError.INVALID_ARGUMENT
    )


async def test_set_guardian_set_by_admin_only(deployment: Deployment) -> None:
    client = deployment.client
    newcomers = wormhole_testing.guardian_signers(3)
    addresses = [g.address for g in newcomers]
    outsider = await deployment.funded_keypair()
    assert await rejection(client.set_guardian_set(outsider, addresses)) == ProgramError.NOT_ADMIN

    before = deployment.devnet.chain.unix_time()
    await client.set_guardian_set(deployment.admin, addresses)
    config = await client.fetch_config()
    assert config.guardian_set_index == 1
    assert (await client.fetch_guardian_set(1)).addresses == tuple(addresses)
    old = await client.fetch_guardian_set(0)
    assert before + 86400 <= old.expiration_time <= deployment.devnet.chain.unix_time() + 86400
