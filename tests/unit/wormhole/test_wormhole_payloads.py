"""The five fedrelay payload codecs, the id derivations and the target check."""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Any

import pytest
from support.wormhole import (
    evm_address,
    sample_commitment,
    sample_round_settled,
    sample_stake_changed,
    sample_task_assigned,
    sample_update_committed,
    sample_worker_registered,
)

from fedrelay.protocol.wormhole import (
    InvalidPayloadField,
    Outcome,
    PayloadSizeMismatch,
    RoundSettled,
    Settlement,
    SlashMode,
    StakeChanged,
    StakeReason,
    Task,
    TaskAssigned,
    UnknownPayloadId,
    UnsupportedPayloadVersion,
    UpdateCommitted,
    WorkerRegistered,
    WrongTarget,
    check_target,
    decode_payload,
    keccak256,
    loss_to_fixed,
    task_id,
    worker_id,
)

SAMPLES = [
    sample_worker_registered(),
    sample_task_assigned(1),
    sample_task_assigned(32),
    sample_update_committed(),
    sample_round_settled(1),
    sample_round_settled(32),
    *(sample_stake_changed(reason) for reason in StakeReason),
]
Payloads = WorkerRegistered | TaskAssigned | UpdateCommitted | RoundSettled | StakeChanged


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: type(p).__name__)
def test_decode_inverts_encode(payload: object) -> None:
    assert isinstance(payload, Payloads)
    assert decode_payload(payload.to_bytes()) == payload


def test_header_is_id_version_target_chain_target_address_job_id() -> None:
    data = sample_update_committed().to_bytes()
    assert data[0] == 3
    assert data[1] == 4
    assert struct.unpack(">H", data[2:4]) == (2,)
    assert data[4:36] == evm_address("coordinator")
    assert struct.unpack(">Q", data[36:44]) == (7,)


def test_worker_registered_layout() -> None:
    p = sample_worker_registered()
    data = p.to_bytes()
    assert len(data) == 120
    assert data[44:76] == p.worker_key
    assert struct.unpack(">Q", data[76:84]) == (p.stake,)
    assert data[84:116] == p.payout_address
    assert struct.unpack(">I", data[116:120]) == (3,)


def test_task_assigned_layout() -> None:
    p = sample_task_assigned(2)
    data = p.to_bytes()
    assert len(data) == 145 + 36 * 2
    assert struct.unpack(">IQ", data[44:56]) == (3, p.deadline)
    assert data[56:88] == p.model_hash
    assert data[88:120] == p.config_hash
    assert struct.unpack(">QQQ", data[120:144]) == (p.min_stake, p.stake_lock, p.release_at)
    assert data[144] == 2
    assert data[145:177] == p.tasks[0].worker_key
    assert struct.unpack(">I", data[213:217]) == (1,)


def test_update_committed_layout() -> None:
    p = sample_update_committed(2)
    data = p.to_bytes()
    assert len(data) == 49 + 136 * 2
    assert struct.unpack(">I", data[44:48]) == (3,)
    assert data[48] == 2
    second = data[49 + 136 : 49 + 272]
    c = p.commitments[1]
    assert second[0:32] == c.worker_key
    assert second[32:64] == c.update_hash
    assert second[64:96] == c.transcript_root
    assert second[96:128] == c.data_root
    assert struct.unpack(">II", second[128:136]) == (6001, 412_346)


def test_update_committed_carries_1_to_32_commitments() -> None:
    assert len(sample_update_committed(32).to_bytes()) == 49 + 136 * 32
    with pytest.raises(InvalidPayloadField, match=r"1\.\.32"):
        replace(sample_update_committed(), commitments=())
    with pytest.raises(InvalidPayloadField, match=r"1\.\.32"):
        replace(sample_update_committed(), commitments=sample_update_committed(32).commitments * 2)
    with pytest.raises(InvalidPayloadField, match="tuple of Commitment"):
        replace(sample_update_committed(), commitments=[sample_commitment()])


def test_round_settled_layout() -> None:
    p = sample_round_settled(3)
    data = p.to_bytes()
    assert len(data) == 114 + 41 * 3
    assert struct.unpack(">I", data[44:48]) == (3,)
    assert data[48:80] == p.model_hash
    assert data[80] == SlashMode.TO_HONEST
    assert data[81:113] == p.slash_recipient
    assert data[113] == 3
    third = data[114 + 82 : 114 + 123]
    assert third[:32] == p.settlements[2].worker_key
    assert third[32] == Outcome.SLASHED
    assert struct.unpack(">Q", third[33:41]) == (300_000_000,)


def test_stake_changed_layout() -> None:
    p = sample_stake_changed(StakeReason.TASK_RELEASED)
    data = p.to_bytes()
    assert len(data) == 125
    assert data[0] == 5
    assert data[36:44] == bytes(8)
    assert data[44:76] == p.worker_key
    assert struct.unpack(">QQ", data[76:92]) == (p.stake, p.nonce)
    assert data[92] == StakeReason.TASK_RELEASED
    assert data[93:125] == task_id(7, 3, 4, p.worker_key)


def test_stake_changed_must_carry_job_id_zero() -> None:
    with pytest.raises(InvalidPayloadField, match="job_id 0"):
        replace(sample_stake_changed(), job_id=1)


@pytest.mark.parametrize("reason", [0, 7, 255])
def test_unknown_stake_reason_is_rejected(reason: int) -> None:
    data = bytearray(sample_stake_changed().to_bytes())
    data[92] = reason
    with pytest.raises(InvalidPayloadField, match="reason must be one of 1, 2, 3, 4, 5, 6"):
        decode_payload(bytes(data))


@pytest.mark.parametrize(
    "reason", sorted(set(StakeReason) - {StakeReason.TASK_REFUSED, StakeReason.TASK_RELEASED})
)
def test_only_task_reasons_name_a_task(reason: StakeReason) -> None:
    with pytest.raises(InvalidPayloadField, match=f"{reason.name} must carry a zero task_id"):
        replace(sample_stake_changed(reason), task_id=b"\x01" * 32)


def test_stake_reason_given_as_int_becomes_stake_reason() -> None:
    changed = replace(sample_stake_changed(), reason=2)  # type: ignore[arg-type]
    assert changed.reason is StakeReason.UNBONDING


def test_stake_lock_above_min_stake_is_rejected() -> None:
    assigned = sample_task_assigned(1)
    assert replace(assigned, stake_lock=assigned.min_stake).stake_lock == assigned.min_stake
    with pytest.raises(InvalidPayloadField, match=r"stake_lock \d+ must not exceed min_stake"):
        replace(assigned, stake_lock=assigned.min_stake + 1)
    data = bytearray(assigned.to_bytes())
    data[128:136] = struct.pack(">Q", assigned.min_stake + 1)
    with pytest.raises(InvalidPayloadField, match="must not exceed min_stake"):
        decode_payload(bytes(data))


def test_unknown_slash_mode_is_rejected() -> None:
    data = bytearray(sample_round_settled(1).to_bytes())
    data[80] = 2
    with pytest.raises(InvalidPayloadField, match="slash_mode must be one of 0, 1"):
        decode_payload(bytes(data))


def test_zero_slash_recipient_is_rejected() -> None:
    with pytest.raises(InvalidPayloadField, match="slash_recipient must not be zero"):
        replace(sample_round_settled(1), slash_recipient=bytes(32))
    data = sample_round_settled(1).to_bytes()
    with pytest.raises(InvalidPayloadField, match="slash_recipient must not be zero"):
        decode_payload(data[:81] + bytes(32) + data[113:])


def test_unknown_payload_id_is_rejected() -> None:
    data = bytearray(sample_update_committed().to_bytes())
    data[0] = 9
    with pytest.raises(UnknownPayloadId, match="payload id 9"):
        decode_payload(bytes(data))


def test_unknown_version_is_rejected() -> None:
    data = bytearray(sample_update_committed().to_bytes())
    for old in (1, 2):
        data[1] = old
        with pytest.raises(UnsupportedPayloadVersion, match=f"version {old} is not supported"):
            decode_payload(bytes(data))


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: type(p).__name__)
def test_missing_and_trailing_bytes_are_rejected(payload: object) -> None:
    assert isinstance(payload, Payloads)
    data = payload.to_bytes()
    with pytest.raises(PayloadSizeMismatch, match="missing 1"):
        decode_payload(data[:-1])
    with pytest.raises(PayloadSizeMismatch, match="trailing 1"):
        decode_payload(data + b"\x00")


def test_short_header_is_rejected() -> None:
    with pytest.raises(PayloadSizeMismatch, match="header is 44 bytes"):
        decode_payload(sample_update_committed().to_bytes()[:43])


@pytest.mark.parametrize("count", [0, 33, 255])
def test_batch_count_outside_1_to_32_is_rejected_when_decoding(count: int) -> None:
    data = sample_task_assigned(1).to_bytes()
    entry = data[145:181]
    with pytest.raises(InvalidPayloadField, match=r"1\.\.32"):
        decode_payload(data[:144] + bytes((count,)) + entry * count)
    settled = sample_round_settled(1).to_bytes()
    with pytest.raises(InvalidPayloadField, match=r"1\.\.32"):
        decode_payload(settled[:113] + bytes((count,)) + settled[114:155] * count)


def test_batch_count_outside_1_to_32_is_rejected_when_building() -> None:
    with pytest.raises(InvalidPayloadField, match=r"1\.\.32"):
        replace(sample_task_assigned(1), tasks=())
    with pytest.raises(InvalidPayloadField, match=r"1\.\.32"):
        replace(sample_round_settled(1), settlements=sample_round_settled(32).settlements * 2)


def test_unknown_outcome_is_rejected() -> None:
    data = bytearray(sample_round_settled(1).to_bytes())
    data[114 + 32] = 3
    with pytest.raises(InvalidPayloadField, match="outcome"):
        decode_payload(bytes(data))
    with pytest.raises(InvalidPayloadField, match="outcome"):
        Settlement(bytes(32), 7, 0)  # type: ignore[arg-type]


def test_settlement_outcome_given_as_int_becomes_outcome() -> None:
    assert Settlement(bytes(32), 2, 5).outcome is Outcome.SLASHED  # type: ignore[arg-type]


def test_worker_registered_must_carry_job_id_zero() -> None:
    with pytest.raises(InvalidPayloadField, match="job_id 0"):
        replace(sample_worker_registered(), job_id=1)


@pytest.mark.parametrize(
    "change",
    [
        {"target_chain": 2**16},
        {"target_address": bytes(20)},
        {"job_id": -1},
        {"round": 2**32},
    ],
)
def test_out_of_range_fields_are_rejected(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayloadField):
        replace(sample_update_committed(), **change)


@pytest.mark.parametrize(
    "change",
    [
        {"num_samples": 2**32},
        {"train_loss": -1},
        {"update_hash": b"short"},
        {"worker_key": bytes(31)},
    ],
)
def test_out_of_range_commitment_fields_are_rejected(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayloadField):
        replace(sample_commitment(), **change)


def test_task_shard_must_be_u32() -> None:
    with pytest.raises(InvalidPayloadField, match="shard"):
        Task(bytes(32), 2**32)


def test_worker_id_derivation() -> None:
    key = b"\x42" * 32
    assert worker_id(4, key) == keccak256(b"\x00\x04" + key)


def test_task_id_derivation() -> None:
    key = b"\x42" * 32
    expected = keccak256(
        (7).to_bytes(8, "big") + (3).to_bytes(4, "big") + (1).to_bytes(2, "big") + key
    )
    assert task_id(7, 3, 1, key) == expected
    assert task_id(7, 3, 1, key) != task_id(7, 4, 1, key)


def test_target_check() -> None:
    payload = sample_update_committed()
    coordinator = evm_address("coordinator")
    check_target(payload, 2, coordinator)
    assert decode_payload(payload.to_bytes(), target=(2, coordinator)) == payload
    with pytest.raises(WrongTarget, match="not chain 4"):
        check_target(payload, 4, coordinator)
    with pytest.raises(WrongTarget):
        decode_payload(payload.to_bytes(), target=(2, evm_address("someone else")))


@pytest.mark.parametrize(
    ("loss", "fixed"),
    [(0.0, 0), (0.4123456, 412_346), (-1.0, 0), (1e9, 2**32 - 1), (float("nan"), 2**32 - 1)],
)
def test_loss_to_fixed_scales_and_saturates(loss: float, fixed: int) -> None:
    assert loss_to_fixed(loss) == fixed
