"""Example payloads with recognisable contents, for the shared test vectors, benchmarks and docs.

Addresses and hashes are derived from labels (:func:`filler`), so a hex dump shows where each
field came from.
"""

from __future__ import annotations

from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.wormhole.payloads import (
    TASK_REASONS,
    Commitment,
    Outcome,
    RoundSettled,
    Settlement,
    SlashMode,
    StakeChanged,
    StakeReason,
    Task,
    TaskAssigned,
    UpdateCommitted,
    WorkerRegistered,
    task_id,
)


def filler(label: str) -> bytes:
    """Return 32 recognisable pseudo-random bytes for a label (keys, hashes, addresses)."""
    return keccak256(label.encode())


def evm_address(label: str) -> bytes:
    """Return a 20-byte EVM address derived from a label, left-padded to bytes32."""
    return bytes(12) + filler(label)[12:]


def sample_worker_registered() -> WorkerRegistered:
    """A WORKER_REGISTERED from EVM worker chain 4 to the coordinator on chain 2."""
    return WorkerRegistered(
        target_chain=2,
        target_address=evm_address("coordinator"),
        job_id=0,
        worker_key=evm_address("worker 0"),
        stake=25_000_000_000,
        payout_address=evm_address("payout 0"),
        capabilities=3,
    )


def sample_task_assigned(count: int = 3) -> TaskAssigned:
    """A TASK_ASSIGNED for ``count`` workers of EVM worker chain 4."""
    return TaskAssigned(
        target_chain=4,
        target_address=evm_address("worker contract"),
        job_id=7,
        round=3,
        deadline=1_767_225_600,
        model_hash=filler("model round 3"),
        config_hash=filler("config"),
        min_stake=10_000_000_000,
        stake_lock=2_500_000_000,
        release_at=1_767_225_600 + 86_400,
        tasks=tuple(Task(evm_address(f"worker {i}"), shard=i) for i in range(count)),
    )


def sample_commitment(i: int = 0) -> Commitment:
    """Worker ``i``'s commitment (a Solana key)."""
    return Commitment(
        worker_key=filler(f"solana worker {i}" if i else "solana worker"),
        update_hash=filler(f"update {i}" if i else "update"),
        transcript_root=filler(f"transcript {i}" if i else "transcript"),
        data_root=filler(f"data {i}" if i else "data"),
        num_samples=6000 + i,
        train_loss=412_345 + i,
    )


def sample_update_committed(count: int = 1) -> UpdateCommitted:
    """An UPDATE_COMMITTED carrying ``count`` Solana workers' commitments to the coordinator."""
    return UpdateCommitted(
        target_chain=2,
        target_address=evm_address("coordinator"),
        job_id=7,
        round=3,
        commitments=tuple(sample_commitment(i) for i in range(count)),
    )


def sample_round_settled(count: int = 3) -> RoundSettled:
    """A ROUND_SETTLED for ``count`` workers, cycling through the three outcomes."""
    settlements = tuple(
        Settlement(
            evm_address(f"worker {i}"),
            Outcome(i % 3),
            slash=100_000_000 * (i + 1) if i % 3 == Outcome.SLASHED else 0,
        )
        for i in range(count)
    )
    return RoundSettled(
        target_chain=4,
        target_address=evm_address("worker contract"),
        job_id=7,
        round=3,
        model_hash=filler("model round 4"),
        slash_mode=SlashMode.TO_HONEST,
        slash_recipient=evm_address("poster"),
        settlements=settlements,
    )


def sample_stake_changed(reason: StakeReason = StakeReason.SLASHED) -> StakeChanged:
    """A STAKE_CHANGED from EVM worker chain 4 to the coordinator; task reasons name task 7/3."""
    worker = evm_address("worker 0")
    return StakeChanged(
        target_chain=2,
        target_address=evm_address("coordinator"),
        job_id=0,
        worker_key=worker,
        stake=22_500_000_000,
        nonce=3,
        reason=reason,
        task_id=task_id(7, 3, 4, worker) if reason in TASK_REASONS else bytes(32),
    )
