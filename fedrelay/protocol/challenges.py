"""Transcript challenges: the coordinator asks a worker to open one segment of its training.

The challenge id is part of the protocol (workers and the coordinator derive the same one).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from fedrelay.protocol.rounds import WorkerRef
from fedrelay.protocol.wormhole import keccak256


@dataclass(frozen=True)
class ChallengeAnswer:
    """A worker's answer: the two checkpoints (as blob names) and their Merkle proofs."""

    start_checkpoint: str
    end_checkpoint: str
    start_proof: bytes
    end_proof: bytes
    answered_at: int


@dataclass(frozen=True)
class Challenge:
    """The coordinator asks a worker for transcript segment ``segment`` of its round."""

    job_id: int
    round: int
    worker: WorkerRef
    segment: int
    issued_at: int
    answer_by: int
    answer: ChallengeAnswer | None = None

    @property
    def challenge_id(self) -> str:
        """keccak256(u64 job || u32 round || worker_id || u32 segment) in hex: one per segment."""
        packed = struct.pack(">QI", self.job_id, self.round) + self.worker.worker_id
        return keccak256(packed + struct.pack(">I", self.segment)).hex()
