"""The shared vectors (tests/vectors) through transactions: the program agrees with them.

VAA vectors: each is delivered to a deployment whose guardian sets, clock and peer emitter are the
vector's. A valid VAA passes verification and is then refused only because its payload is not
addressed to this program (WRONG_TARGET or PAYLOAD_MALFORMED, errors that come after
verification); an invalid one is refused for the vector's reason.

Payload vectors: the valid TASK_ASSIGNED and ROUND_SETTLED payloads, re-addressed to the program,
are applied and the resulting accounts hold the vector's fields; every invalid payload is refused.
UPDATE_COMMITTED vectors go the other way: their commitments, held in task accounts, are
published by the program, which must give the vector's bytes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from solana.rpc.async_api import AsyncClient
from solders.account import Account
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from fedrelay.adapters.devnet.solana_rpc import SolanaDevnet
from fedrelay.adapters.solana import instructions as ix
from fedrelay.adapters.solana import pda
from fedrelay.adapters.solana.client import WorkerProgramClient
from fedrelay.adapters.solana.errors import TransactionFailed
from fedrelay.adapters.solana.layout import (
    LAMPORTS_PER_STAKE_UNIT,
    SOLANA_CHAIN,
    TASK_ACCOUNT_LEN,
    WORKER_ACCOUNT_LEN,
    GuardianSetAccount,
    ProgramError,
    TaskAccount,
    WorkerAccount,
)
from fedrelay.adapters.solana.testing import (
    COORDINATOR_CHAIN,
    COORDINATOR_EMITTER,
    LAMPORTS_PER_SOL,
    Deployment,
    task_assigned,
)
from fedrelay.protocol.wormhole import (
    Outcome,
    SlashMode,
    StakeReason,
    decode_payload,
    keccak256,
    task_id,
)

pytestmark = pytest.mark.integration

VECTORS = Path(__file__).resolve().parents[2] / "vectors"
VAAS = json.loads((VECTORS / "vaas.json").read_text())
PAYLOADS = json.loads((VECTORS / "payloads.json").read_text())

EXPECTED_FOR_REASON = {
    "malformed_vaa": ProgramError.VAA_MALFORMED,
    "unknown_guardian_set": ProgramError.UNKNOWN_GUARDIAN_SET,
    "guardian_set_expired": ProgramError.GUARDIAN_SET_EXPIRED,
    "no_quorum": ProgramError.NO_QUORUM,
    "signature_indices_not_ascending": ProgramError.SIGNATURES_NOT_ASCENDING,
    "guardian_index_out_of_range": ProgramError.GUARDIAN_INDEX_OUT_OF_RANGE,
    "malformed_signature": ProgramError.INVALID_SIGNATURE,
    "high_s": ProgramError.HIGH_S,
    "signer_mismatch": ProgramError.INVALID_SIGNATURE,
}
#: Errors the program raises only after a VAA verified.
AFTER_VERIFICATION = {ProgramError.WRONG_TARGET, ProgramError.PAYLOAD_MALFORMED}


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))


def _header(vaa: bytes) -> tuple[int, int, bytes, bytes, bytes]:
    """(guardian set index, emitter chain, emitter, digest) read leniently from raw VAA bytes."""
    index = int.from_bytes(vaa[1:5], "big") if len(vaa) >= 5 else 1
    body_at = 6 + 66 * vaa[5] if len(vaa) >= 6 else len(vaa)
    body = vaa[body_at:]
    chain = int.from_bytes(body[8:10], "big") if len(body) >= 51 else 2
    emitter = body[10:42] if len(body) >= 51 else bytes(32)
    return index, chain, emitter, keccak256(keccak256(body)), body


async def _deliver_vector(
    devnet: SolanaDevnet, rpc: AsyncClient, elf: bytes, case: dict[str, Any]
) -> ProgramError:
    vaa = _hex(case["vaa"])
    index, chain, emitter, digest, _ = _header(vaa)
    sets = sorted(case["guardian_sets"], key=lambda s: s["index"])
    client = WorkerProgramClient(rpc, Pubkey.new_unique())
    devnet.chain.set_time(int(case["now"]))
    try:
        devnet.add_program(client.program_id, elf)
        admin = await _funded(client)
        first = sets[0]
        await client.initialize(
            admin,
            ix.InitializeArgs(
                peer_chain=chain,
                peer_emitter=emitter,
                guardian_set_index=first["index"],
                guardian_addresses=tuple(_hex(a) for a in first["addresses"]),
            ),
        )
        for later in sets[1:]:
            await client.set_guardian_set(admin, [_hex(a) for a in later["addresses"]])
        for stored in sets:
            _store_expiration(
                devnet, client.program_id, stored["index"], int(stored["expiration_time"])
            )
        delivery = ix.Delivery(index, digest, 0, 0, ())
        with pytest.raises(TransactionFailed) as failure:
            await client.receive_vaa_buffered(admin, vaa, delivery)
    finally:
        devnet.chain.set_time(None)
    assert failure.value.program_error is not None, str(failure.value)
    return ProgramError(failure.value.program_error)


async def _funded(client: WorkerProgramClient) -> Keypair:
    keypair = Keypair()
    await client.airdrop(keypair.pubkey(), 100 * LAMPORTS_PER_SOL)
    return keypair


def _store_expiration(
    devnet: SolanaDevnet, program_id: Pubkey, index: int, expiration: int
) -> None:
    address = pda.guardian_set_address(program_id, index)
    account = devnet.chain.account(address)
    assert account is not None
    stored = GuardianSetAccount.decode(bytes(account.data))
    patched = GuardianSetAccount(stored.index, expiration, stored.addresses, stored.bump)
    devnet.chain.set_account(
        address,
        Account(account.lamports, patched.to_bytes(), account.owner, False, account.rent_epoch),
    )


@pytest.mark.parametrize("case", VAAS["valid"], ids=lambda c: c["name"])
async def test_valid_vaa_vector_verifies_in_the_program(
    solana_devnet: SolanaDevnet,
    solana_rpc: AsyncClient,
    worker_program_elf: bytes,
    case: dict[str, Any],
) -> None:
    error = await _deliver_vector(solana_devnet, solana_rpc, worker_program_elf, case)
    assert error in AFTER_VERIFICATION


@pytest.mark.parametrize("case", VAAS["invalid"], ids=lambda c: c["name"])
async def test_invalid_vaa_vector_is_rejected_for_its_reason(
    solana_devnet: SolanaDevnet,
    solana_rpc: AsyncClient,
    worker_program_elf: bytes,
    case: dict[str, Any],
) -> None:
    error = await _deliver_vector(solana_devnet, solana_rpc, worker_program_elf, case)
    assert error == EXPECTED_FOR_REASON[case["error"]]


def _retarget(payload: bytes, program_id: Pubkey) -> bytes:
    if len(payload) < 36:
        return payload
    return payload[:2] + SOLANA_CHAIN.to_bytes(2, "big") + bytes(program_id) + payload[36:]


def _install_worker(deployment: Deployment, key: bytes, stake: int = 5 * LAMPORTS_PER_SOL) -> None:
    """Give `key` a worker record (vector keys are EVM addresses nobody here can sign for)."""
    address, bump = Pubkey.find_program_address([b"worker", key], deployment.program_id)
    record = WorkerAccount(key, bytes(32), stake, 0, 0, 0, 0, 0, 0, bump)
    lamports = deployment.devnet.chain.svm.minimum_balance_for_rent_exemption(WORKER_ACCOUNT_LEN)
    deployment.devnet.chain.set_account(
        address, Account(lamports, record.to_bytes(), deployment.program_id, False, 0)
    )


TASK_VECTORS = [v for v in PAYLOADS["valid"] if v["fields"]["type"] == "TASK_ASSIGNED"]
SETTLE_VECTORS = [v for v in PAYLOADS["valid"] if v["fields"]["type"] == "ROUND_SETTLED"]
U64 = 2**64 - 1


@pytest.mark.parametrize("vector", TASK_VECTORS, ids=lambda v: v["name"])
async def test_task_assigned_vector_is_applied_field_by_field(
    deployment: Deployment, vector: dict[str, Any]
) -> None:
    """Every v2 field reaches the task; a min_stake no stake can meet refuses every entry."""
    fields = vector["fields"]
    min_stake, lock = int(fields["min_stake"]), int(fields["stake_lock"])
    reachable = min_stake * LAMPORTS_PER_STAKE_UNIT <= U64
    stake = min_stake * LAMPORTS_PER_STAKE_UNIT if reachable else U64 // 2
    keys = [_hex(task["worker_key"]) for task in fields["tasks"]]
    for key in keys:
        _install_worker(deployment, key, stake)
    vaa = deployment.sign(_retarget(_hex(vector["bytes"]), deployment.program_id))
    await deployment.client.receive_vaa(deployment.admin, vaa.to_bytes())

    client = deployment.client
    job, round_number = int(fields["job_id"]), fields["round"]
    if not reachable:
        refusals = [decode_payload(m.payload) for m in await client.all_messages()]
        assert [(r.worker_key, r.reason, r.task_id) for r in refusals] == [  # type: ignore[union-attr]
            (key, StakeReason.TASK_REFUSED, task_id(job, round_number, SOLANA_CHAIN, key))
            for key in keys
        ]
        return
    for task, key in zip(fields["tasks"], keys, strict=True):
        stored = await client.fetch_task(job, round_number, key)
        assert stored.shard == task["shard"]
        assert stored.deadline == int(fields["deadline"])
        assert stored.model_hash == _hex(fields["model_hash"])
        assert stored.config_hash == _hex(fields["config_hash"])
        assert stored.stake_lock == lock * LAMPORTS_PER_STAKE_UNIT
        assert stored.release_at == int(fields["release_at"])
        assert (await client.fetch_worker(Pubkey(key))).locked == lock * LAMPORTS_PER_STAKE_UNIT


@pytest.mark.parametrize("vector", SETTLE_VECTORS, ids=lambda v: v["name"])
async def test_round_settled_vector_is_applied_field_by_field(
    deployment: Deployment, vector: dict[str, Any]
) -> None:
    """Outcomes, the capped slash, and where the slashed lamports go (mode and recipient)."""
    fields = vector["fields"]
    keys = [_hex(s["worker_key"]) for s in fields["settlements"]]
    stake, lock_units = 5 * LAMPORTS_PER_SOL, 2 * LAMPORTS_PER_SOL // LAMPORTS_PER_STAKE_UNIT
    for key in keys:
        _install_worker(deployment, key, stake)
    client = deployment.client
    await client.airdrop(pda.vault_address(client.program_id), len(keys) * stake)
    job, round_number = int(fields["job_id"]), fields["round"]
    assign = task_assigned(
        deployment.program_id, keys, job_id=job, round_number=round_number, deadline=2**40,
        min_stake=lock_units, stake_lock=lock_units,
    )  # fmt: skip
    await client.receive_vaa(deployment.admin, deployment.sign(assign).to_bytes())
    vaa = deployment.sign(_retarget(_hex(vector["bytes"]), deployment.program_id))
    await client.receive_vaa(deployment.admin, vaa.to_bytes())

    total = 0
    for settlement, key in zip(fields["settlements"], keys, strict=True):
        task = await client.fetch_task(job, round_number, key)
        assert (task.settled, task.outcome) == (True, settlement["outcome"])
        worker = await client.fetch_worker(Pubkey(key))
        slashed = 0
        if settlement["outcome"] == Outcome.SLASHED:
            asked = int(settlement["slash"]) * LAMPORTS_PER_STAKE_UNIT
            slashed = min(asked, lock_units * LAMPORTS_PER_STAKE_UNIT, stake)
        assert worker.stake == stake - slashed
        total += slashed
    record = await client.fetch_consumed(vaa.digest)
    assert record.slashed == total
    honest = [i for i, s in enumerate(fields["settlements"]) if s["outcome"] == Outcome.ACCEPTED]
    assert record.honest_entries == tuple(honest)

    recipient = Pubkey(_hex(fields["slash_recipient"]))
    share = total // len(honest) if fields["slash_mode"] == SlashMode.TO_HONEST and honest else 0
    payer = deployment.admin
    # The devnet lives for the session and vectors share keys: compare balances, not totals.
    if share:
        for entry in honest:
            before = await client.balance(Pubkey(keys[entry]))
            await client.claim_slashed(payer, vaa.digest, Pubkey(keys[entry]), entry)
            assert await client.balance(Pubkey(keys[entry])) - before == share
    if total - share * len(honest):
        # A remainder of a few lamports cannot open an account: the poster's account exists.
        await client.airdrop(recipient, LAMPORTS_PER_SOL)
        before = await client.balance(recipient)
        await client.claim_slashed(payer, vaa.digest, recipient)
        assert await client.balance(recipient) - before == total - share * len(honest)


def _install_committed_task(deployment: Deployment, job: int, rnd: int, entry: bytes) -> None:
    """A task holding the commitment of one UPDATE_COMMITTED entry (vector keys are EVM
    addresses nobody here can sign for, so commit_update cannot store it)."""
    key = entry[:32]
    address, bump = Pubkey.find_program_address(
        [b"task", struct.pack(">QI", job, rnd), key], deployment.program_id
    )
    samples, loss = struct.unpack(">II", entry[128:136])
    task = TaskAccount(
        key, bytes(32), bytes(32), job, 2**40, 0, 2**41, rnd, 0, True, False, 0, bump,
        update_hash=entry[32:64], transcript_root=entry[64:96], data_root=entry[96:128],
        num_samples=samples, train_loss=loss,
    )  # fmt: skip
    lamports = deployment.devnet.chain.svm.minimum_balance_for_rent_exemption(TASK_ACCOUNT_LEN)
    deployment.devnet.chain.set_account(
        address, Account(lamports, task.to_bytes(), deployment.program_id, False, 0)
    )


#: UPDATE_COMMITTED vectors of protocol version 4 (a batch of one job round's commitments).
COMMITTED_VECTORS = [v for v in PAYLOADS["valid"] if _hex(v["bytes"])[:2] == b"\x03\x04"]


@pytest.mark.parametrize("vector", COMMITTED_VECTORS, ids=lambda v: v["name"])
async def test_update_committed_vector_is_what_the_program_publishes(
    deployment: Deployment, vector: dict[str, Any]
) -> None:
    """The vector's commitments, held in task accounts and published in its entry order, give
    its bytes (the target being this deployment's coordinator)."""
    payload = _hex(vector["bytes"])
    job, rnd = struct.unpack_from(">QI", payload, 36)
    count = payload[48]
    entries = [payload[49 + 136 * i : 49 + 136 * (i + 1)] for i in range(count)]
    for entry in entries:
        _install_committed_task(deployment, job, rnd, entry)
    client = deployment.client
    per_transaction = client.commitments_per_transaction()
    first = await client.next_sequence()
    keys = [entry[:32] for entry in entries]
    for start in range(0, count, per_transaction):
        await client.publish_commitments(
            deployment.admin, job, rnd, keys[start : start + per_transaction]
        )
    published = [m.payload for m in await client.messages_from(first)]
    target = struct.pack(">H", COORDINATOR_CHAIN) + COORDINATOR_EMITTER
    expected = [
        payload[:2] + target + payload[36:48] + bytes([len(part)]) + b"".join(part)
        for part in (
            entries[start : start + per_transaction] for start in range(0, count, per_transaction)
        )
    ]
    assert published == expected
    if count <= per_transaction:
        assert published == [payload[:2] + target + payload[36:]]


@pytest.mark.parametrize("vector", PAYLOADS["invalid"], ids=lambda v: v["name"])
async def test_invalid_payload_vector_is_rejected(
    deployment: Deployment, vector: dict[str, Any]
) -> None:
    payload = _retarget(_hex(vector["bytes"]), deployment.program_id)
    vaa = deployment.sign(payload)
    delivery = ix.Delivery(vaa.guardian_set_index, vaa.digest, 0, 0, ())
    instruction = ix.receive_message(
        deployment.program_id, deployment.admin.pubkey(), vaa.to_bytes(), delivery
    )
    with pytest.raises(TransactionFailed) as failure:
        await deployment.client.send([instruction], deployment.admin, compute_units=400_000)
    assert failure.value.program_error == ProgramError.PAYLOAD_MALFORMED
