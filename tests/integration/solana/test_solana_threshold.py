"""Version-2 (threshold-signed) VAAs in the worker program: the shared vectors of
tests/vectors/threshold.json, keys appended by governance VAAs, rotation and expiry, and the
compute units of one v2 verification beside a 13-of-19 v1 one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from solana.rpc.async_api import AsyncClient
from solders.account import Account
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from test_solana_vectors import _store_expiration  # the vector deployments' guardian sets

from fedrelay.adapters.devnet.guardians import guardian_signers, threshold_key
from fedrelay.adapters.devnet.solana_rpc import SolanaDevnet
from fedrelay.adapters.devnet.worker_program import Deployment, task_assigned
from fedrelay.adapters.solana import instructions as ix
from fedrelay.adapters.solana import pda
from fedrelay.adapters.solana.client import Receipt, WorkerProgramClient
from fedrelay.adapters.solana.errors import TransactionFailed
from fedrelay.adapters.solana.layout import ProgramError, ThresholdKeyAccount
from fedrelay.adapters.solana.testing import LAMPORTS_PER_SOL
from fedrelay.protocol.wormhole import Vaa, VaaBody, keccak256, sign_vaa
from fedrelay.protocol.wormhole import threshold as tss

pytestmark = pytest.mark.integration

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "vectors" / "threshold.json").read_text()
)
EXPECTED_FOR_REASON = {
    "malformed_vaa": ProgramError.VAA_MALFORMED,
    "unknown_threshold_key": ProgramError.UNKNOWN_THRESHOLD_KEY,
    "threshold_key_expired": ProgramError.THRESHOLD_KEY_EXPIRED,
    "guardian_set_expired": ProgramError.GUARDIAN_SET_EXPIRED,
    "malformed_signature": ProgramError.INVALID_SIGNATURE,
    "signer_mismatch": ProgramError.INVALID_SIGNATURE,
}
AFTER_VERIFICATION = {ProgramError.WRONG_TARGET, ProgramError.PAYLOAD_MALFORMED}
COMPUTE = 1_400_000


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))


def _key_meta(program_id: Pubkey, index: int) -> AccountMeta:
    return AccountMeta(pda.threshold_key_address(program_id, index), False, False)


async def _receive_v2(
    client: WorkerProgramClient, payer: Keypair, vaa: bytes, digest: bytes, buffer_id: int
) -> Receipt:
    """receive_from_buffer with the threshold key named by the VAA in the guardian-set slot."""
    await client.write_buffer(payer, buffer_id, vaa)
    delivery = ix.Delivery(0, digest, 0, 0, ())
    built = ix.receive_from_buffer(client.program_id, payer.pubkey(), buffer_id, delivery)
    index = int.from_bytes(vaa[1:5], "big") if len(vaa) >= 5 else 0
    accounts = list(built.accounts)
    accounts[2] = _key_meta(client.program_id, index)
    instruction = Instruction(client.program_id, built.data, accounts)
    return await client.send([instruction], payer, compute_units=COMPUTE)


async def _error_of(receiving: Any) -> ProgramError:
    with pytest.raises(TransactionFailed) as failure:
        await receiving
    assert failure.value.program_error is not None, str(failure.value)
    return ProgramError(failure.value.program_error)


def _install(devnet: SolanaDevnet, program_id: Pubkey, key: dict[str, Any]) -> None:
    address, bump = Pubkey.find_program_address(
        [b"threshold_key", key["index"].to_bytes(4, "big")], program_id
    )
    record = ThresholdKeyAccount(
        key["index"],
        _hex(key["public_key"]),
        key["guardian_set_index"],
        int(key["expiration_time"]),
        bump,
    )
    lamports = devnet.chain.svm.minimum_balance_for_rent_exemption(64)
    devnet.chain.set_account(address, Account(lamports, record.to_bytes(), program_id, False, 0))


async def _deliver_vector(
    devnet: SolanaDevnet, rpc: AsyncClient, elf: bytes, case: dict[str, Any]
) -> ProgramError:
    """Deliver a vector to a deployment holding its guardian sets, keys, clock and peer."""
    vaa = _hex(case["vaa"])
    body = vaa[57:] if len(vaa) >= 57 + 51 else bytes(51)
    client = WorkerProgramClient(rpc, Pubkey.new_unique())
    devnet.chain.set_time(int(case["now"]))
    try:
        devnet.add_program(client.program_id, elf)
        admin = Keypair()
        await client.airdrop(admin.pubkey(), 100 * LAMPORTS_PER_SOL)
        sets = sorted(case["guardian_sets"], key=lambda s: s["index"])
        await client.initialize(
            admin,
            ix.InitializeArgs(
                peer_chain=int.from_bytes(body[8:10], "big"),
                peer_emitter=body[10:42],
                guardian_set_index=sets[0]["index"],
                guardian_addresses=tuple(_hex(a) for a in sets[0]["addresses"]),
            ),
        )
        for later in sets[1:]:
            await client.set_guardian_set(admin, [_hex(a) for a in later["addresses"]])
        for stored in sets:
            _store_expiration(
                devnet, client.program_id, stored["index"], int(stored["expiration_time"])
            )
        for key in case["keys"]:
            _install(devnet, client.program_id, key)
        digest = keccak256(keccak256(body))
        return await _error_of(_receive_v2(client, admin, vaa, digest, 1))
    finally:
        devnet.chain.set_time(None)


CASES = [pytest.param(case, None, id=case["name"]) for case in VECTORS["valid"]] + [
    pytest.param(case, EXPECTED_FOR_REASON[case["error"]], id=case["name"])
    for case in VECTORS["invalid"]
]


@pytest.mark.parametrize(("case", "expected"), CASES)
async def test_threshold_vector_in_the_program(
    solana_devnet: SolanaDevnet,
    solana_rpc: AsyncClient,
    worker_program_elf: bytes,
    case: dict[str, Any],
    expected: ProgramError | None,
) -> None:
    """A valid vector verifies and is refused only after verification (its payload is not for
    this program); an invalid one is refused for its reason."""
    error = await _deliver_vector(solana_devnet, solana_rpc, worker_program_elf, case)
    if expected is None:
        assert error in AFTER_VERIFICATION
    else:
        assert error == expected


# ---- governance, rotation, cost ---------------------------------------------------------------


async def _append(
    d: Deployment,
    vaa: bytes,
    *,
    index: int,
    set_index: int,
    previous_set: int | None = None,
    buffer_id: int = 77,
) -> Receipt:
    await d.client.write_buffer(d.admin, buffer_id, vaa)
    instruction = ix.append_threshold_key(
        d.program_id,
        d.admin.pubkey(),
        buffer_id,
        guardian_set_index=set_index,
        index=index,
        previous_guardian_set_index=previous_set,
    )
    return await d.client.send([instruction], d.admin, compute_units=COMPUTE)


def _governance(
    payload: tss.AppendKey,
    set_index: int,
    *,
    chain: int = 1,
    emitter: bytes = tss.GOVERNANCE_EMITTER,
) -> bytes:
    body = VaaBody(0, 0, chain, emitter, 900 + payload.tss_index, 32, payload.to_bytes())
    signers = guardian_signers(19)
    return sign_vaa(body, set_index, [(i, signers[i]) for i in range(13)]).to_bytes()


def _threshold(vaa: Vaa, tss_index: int, set_index: int) -> bytes:
    return tss.sign_threshold_vaa(
        vaa.body, tss_index, threshold_key(19, set_index), range(13)
    ).to_bytes()


async def _key(d: Deployment, index: int) -> ThresholdKeyAccount:
    account = d.devnet.chain.account(pda.threshold_key_address(d.program_id, index))
    assert account is not None
    return ThresholdKeyAccount.decode(bytes(account.data))


async def test_a_governance_vaa_appends_a_key_and_a_v2_vaa_is_applied(
    deployment19: Deployment,
) -> None:
    d = deployment19
    await _append(d, _hex(VECTORS["governance"][0]["vaa"]), index=0, set_index=0)
    key = await _key(d, 0)
    assert key.public_key == threshold_key(19, 0).group_key
    assert (key.guardian_set_index, key.expiration_time) == (0, 0)

    worker = Keypair().pubkey()
    payload = task_assigned(d.program_id, [bytes(worker)], deadline=2**40)
    v1 = d.sign(payload)
    v2 = _threshold(v1, 0, 0)
    receipt = await _receive_v2(d.client, d.admin, v2, v1.digest, 5)
    assert await d.client.is_consumed(v1.digest)
    record = await d.client.fetch_consumed(v1.digest)
    assert (record.payload, record.applied) == (payload.to_bytes(), 0)  # entries: apply_batch
    # The v1 VAA of the same body is the same message: already consumed.
    error = await _error_of(d.client.receive_vaa_buffered(d.admin, v1.to_bytes()))
    assert error == ProgramError.ALREADY_CONSUMED

    assert receipt.compute_units > 0


async def _units_to_refuse(receiving: Any) -> tuple[ProgramError, int]:
    """The error and the compute units of a transaction the program refused."""
    with pytest.raises(TransactionFailed) as failure:
        await receiving
    used = [
        int(line.split(" consumed ")[1].split()[0])
        for line in failure.value.logs
        if " consumed " in line
    ]
    assert failure.value.program_error is not None, failure.value.logs
    assert used, failure.value.logs
    return ProgramError(failure.value.program_error), used[-1]


async def test_one_recovery_instead_of_thirteen(deployment19: Deployment) -> None:
    """v1 (13 of 19) and v2 of one body, for another program: both verify, then are refused as
    WRONG_TARGET before anything depends on the digest, so the units are those of verification
    (printed with -s; deterministic: the body is fixed, and the arithmetic of v2 depends on it)."""
    d = deployment19
    await _append(d, _hex(VECTORS["governance"][0]["vaa"]), index=0, set_index=0)
    elsewhere = task_assigned(Pubkey.default(), [bytes(32)], deadline=2**40)
    d.devnet.chain.set_time(1_767_225_600)  # the body's timestamp, hence its digest, is fixed
    try:
        v1 = d.sign(elsewhere)
    finally:
        d.devnet.chain.set_time(None)
    delivery = ix.Delivery(0, v1.digest, 0, 0, ())
    v1_error, v1_units = await _units_to_refuse(
        d.client.receive_vaa_buffered(d.admin, v1.to_bytes(), delivery)
    )
    v2_error, v2_units = await _units_to_refuse(
        _receive_v2(d.client, d.admin, _threshold(v1, 0, 0), v1.digest, 11)
    )
    assert v1_error == v2_error == ProgramError.WRONG_TARGET
    print(f"receive_from_buffer up to WRONG_TARGET: v1 13 of 19 {v1_units} CU, v2 {v2_units} CU")
    assert v2_units < v1_units - 250_000


async def test_rotation_keeps_the_old_key_until_its_expiry_and_v1_keeps_working(
    deployment19: Deployment,
) -> None:
    d = deployment19
    start = d.devnet.chain.unix_time()
    d.devnet.chain.set_time(start)
    try:
        await _append(d, _hex(VECTORS["governance"][0]["vaa"]), index=0, set_index=0)
        await d.client.set_guardian_set(d.admin, [g.address for g in d.guardians])
        d.guardian_set_index = 1
        payload = task_assigned(d.program_id, [bytes(Keypair().pubkey())], deadline=2**40)
        old = d.sign(payload)
        # Set 0 was replaced and key 0 has no successor yet: refused until key 1 comes.
        error = await _error_of(
            _receive_v2(d.client, d.admin, _threshold(old, 0, 0), old.digest, 6)
        )
        assert error == ProgramError.GUARDIAN_SET_EXPIRED
        # A governance VAA of the replaced set cannot append.
        stale = _governance(tss.AppendKey(0, 1, threshold_key(19, 1).group_key, 86_400), 0)
        error = await _error_of(
            _append(d, stale, index=1, set_index=0, previous_set=0, buffer_id=78)
        )
        assert error == ProgramError.NOT_GOVERNANCE
        await _append(
            d,
            _hex(VECTORS["governance"][1]["vaa"]),
            index=1,
            set_index=1,
            previous_set=0,
            buffer_id=79,
        )
        key0, key1 = await _key(d, 0), await _key(d, 1)
        assert key0.expiration_time == start + 86_400  # min(delay, ttl), within set 0's expiry
        assert (key1.guardian_set_index, key1.expiration_time) == (1, 0)

        await _receive_v2(d.client, d.admin, _threshold(old, 0, 0), old.digest, 7)
        fresh = d.sign(
            task_assigned(d.program_id, [bytes(Keypair().pubkey())], job_id=9, deadline=2**40)
        )
        await _receive_v2(d.client, d.admin, _threshold(fresh, 1, 1), fresh.digest, 8)
        await d.client.receive_vaa_buffered(
            d.admin,
            d.sign(
                task_assigned(d.program_id, [bytes(Keypair().pubkey())], job_id=10, deadline=2**40)
            ).to_bytes(),
        )
        d.devnet.chain.set_time(start + 86_401)
        late = d.sign(
            task_assigned(d.program_id, [bytes(Keypair().pubkey())], job_id=11, deadline=2**40)
        )
        error = await _error_of(
            _receive_v2(d.client, d.admin, _threshold(late, 0, 0), late.digest, 9)
        )
        assert error == ProgramError.THRESHOLD_KEY_EXPIRED
        await _receive_v2(d.client, d.admin, _threshold(late, 1, 1), late.digest, 10)
    finally:
        d.devnet.chain.set_time(None)


async def test_governance_refusals(deployment19: Deployment) -> None:
    d = deployment19
    key = threshold_key(19, 0).group_key
    payload = tss.AppendKey(0, 0, key, 60)
    error = await _error_of(_append(d, _governance(payload, 0, chain=2), index=0, set_index=0))
    assert error == ProgramError.NOT_GOVERNANCE
    wrong_emitter = _governance(payload, 0, emitter=bytes(31) + b"\x05")
    error = await _error_of(_append(d, wrong_emitter, index=0, set_index=0, buffer_id=80))
    assert error == ProgramError.NOT_GOVERNANCE
    for_evm = _governance(tss.AppendKey(4, 0, key, 60), 0)
    error = await _error_of(_append(d, for_evm, index=0, set_index=0, buffer_id=81))
    assert error == ProgramError.GOVERNANCE_PAYLOAD
    not_a_point = payload.to_bytes()[:40] + (5).to_bytes(32, "big") + payload.to_bytes()[72:]
    body = VaaBody(0, 0, 1, tss.GOVERNANCE_EMITTER, 5, 32, not_a_point)
    signers = guardian_signers(19)
    bad_key = sign_vaa(body, 0, [(i, signers[i]) for i in range(13)]).to_bytes()
    error = await _error_of(_append(d, bad_key, index=0, set_index=0, buffer_id=82))
    assert error == ProgramError.GOVERNANCE_PAYLOAD
    await _append(d, _governance(payload, 0), index=0, set_index=0, buffer_id=83)
    error = await _error_of(_append(d, _governance(payload, 0), index=0, set_index=0, buffer_id=84))
    assert error == ProgramError.THRESHOLD_KEY_EXISTS
    skipping = _governance(tss.AppendKey(0, 2, key, 60), 0)
    error = await _error_of(
        _append(d, skipping, index=2, set_index=0, previous_set=0, buffer_id=85)
    )
    assert error == ProgramError.UNKNOWN_THRESHOLD_KEY


async def test_the_client_appends_a_key_and_delivers_a_v2_batch_whole(
    deployment19: Deployment,
) -> None:
    """`WorkerProgramClient.append_threshold_key` and `receive_vaa` with a version-2 VAA: the
    key account takes the guardian set's slot, every entry of the batch is applied (the tasks of
    registered workers exist), and the v1 twin is the same, consumed, message."""
    d = deployment19
    await d.client.append_threshold_key(d.admin, _hex(VECTORS["governance"][0]["vaa"]))
    assert (await d.client.fetch_threshold_key(0)).public_key == threshold_key(19, 0).group_key
    workers = [await d.funded_keypair(seed=f"threshold client worker {i}") for i in range(3)]
    for worker in workers:
        await d.client.register(
            worker, stake_lamports=LAMPORTS_PER_SOL, payout=bytes(32), capabilities=0
        )
    keys = [bytes(w.pubkey()) for w in workers]
    payload = task_assigned(d.program_id, keys, deadline=2**40)
    v1 = d.sign(payload)
    delivered = await d.client.receive_vaa(d.admin, _threshold(v1, 0, 0))
    assert sum(len(r.applied_keys) for r in delivered.receipts) == len(keys)
    record = await d.client.fetch_consumed(v1.digest)
    assert record.applied == len(keys)
    for key in keys:
        task = await d.client.fetch_task(payload.job_id, payload.round, key)
        assert (task.worker_key, task.job_id) == (key, payload.job_id)
    error = await _error_of(d.client.receive_vaa(d.admin, v1.to_bytes()))
    assert error == ProgramError.ALREADY_CONSUMED
