"""The JSON bodies of the coordinator's HTTP API (pydantic models, shown in its OpenAPI spec).

Hashes and keys travel as lowercase hex without prefix; opaque bytes (secure-aggregation
messages, Merkle proofs, checkpoints inside a challenge answer) as standard base64.
"""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, ConfigDict, Field

from fedrelay.protocol.challenges import Challenge
from fedrelay.protocol.offers import MAX_SIGNATURE_BYTES, CommitmentOffer
from fedrelay.protocol.rounds import RoundState, WorkerRef
from fedrelay.protocol.wormhole import Commitment

HEX32 = r"^[0-9a-f]{64}$"


def b64encode(data: bytes) -> str:
    """Standard base64 of ``data``."""
    return base64.b64encode(data).decode()


def b64decode(text: str, field: str) -> bytes:
    """Decode standard base64, naming ``field`` in the error.

    Raises:
        ValueError: ``text`` is not valid base64.
    """
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{field} is not valid base64") from None


class _Schema(BaseModel):
    # Responses ignore unknown fields, so an older worker still reads a newer coordinator.
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Body(BaseModel):
    # Request bodies refuse unknown fields: a misspelt field is an error, not a silent default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorBody(_Schema):
    """Every error response: the error's kind and what was wrong."""

    error: str
    detail: str


class WorkerBody(_Body):
    """A worker: Wormhole chain id and 32-byte key in hex."""

    chain: int = Field(ge=0, le=0xFFFF)
    worker_key: str = Field(pattern=HEX32)

    def ref(self) -> WorkerRef:
        """The domain value."""
        return WorkerRef(self.chain, bytes.fromhex(self.worker_key))


class TaskView(_Schema):
    """One worker's task in a round."""

    worker_chain: int
    worker_key: str
    worker_id: str
    shard: int
    status: str
    update_hash: str | None


class RoundView(_Schema):
    """A round of a job, as the coordinator sees it."""

    job_id: int
    round: int
    total_rounds: int
    phase: str
    model_hash: str
    config_hash: str
    deadline: int | None
    proposed_model: str | None
    challenge_ends: int | None
    tasks: list[TaskView]

    @classmethod
    def of(cls, state: RoundState) -> RoundView:
        """The view of ``state``."""
        return cls(
            job_id=state.job_id,
            round=state.round,
            total_rounds=state.policy.total_rounds,
            phase=state.phase.value,
            model_hash=state.model_hash.hex(),
            config_hash=state.config_hash.hex(),
            deadline=state.deadline,
            proposed_model=state.proposed_model.hex() if state.proposed_model else None,
            challenge_ends=state.challenge_ends,
            tasks=[
                TaskView(
                    worker_chain=a.worker.chain,
                    worker_key=a.worker.key.hex(),
                    worker_id=a.worker.worker_id.hex(),
                    shard=a.shard,
                    status=a.status.value,
                    update_hash=a.commitment.update_hash.hex() if a.commitment else None,
                )
                for a in state.assignments
            ],
        )


class BlobRef(_Schema):
    """A stored blob: its name (keccak256 hex) and size."""

    name: str
    size: int


class UploadStart(_Schema):
    """Start (or find again) an upload session for a blob too large for one request."""

    name: str = Field(pattern=HEX32, description="keccak256 hex the whole blob must hash to")
    size: int = Field(ge=0, description="the blob's size in bytes")


class UploadView(_Schema):
    """An upload session: how many bytes of the blob arrived, and the largest chunk accepted.

    The next chunk is sent at ``offset = received``; once ``received == size`` the session is
    completed, which checks the hash and only then stores the blob.
    """

    upload_id: str
    name: str
    size: int
    received: int
    chunk_bytes: int


class SecAggMessages(_Schema):
    """Opaque secure-aggregation messages, base64, keyed by the sender's worker_id (hex)."""

    messages: dict[str, str]


class Survivors(_Schema):
    """The worker_ids (hex) whose masked inputs arrived, sorted."""

    workers: list[str]


class CommitmentOfferBody(_Body):
    """A worker's commitment for a round and its signature (hex), offered for anyone to record
    on the worker's chain (:mod:`fedrelay.protocol.offers`); the worker is the request's
    signer."""

    update_hash: str = Field(pattern=HEX32)
    transcript_root: str = Field(pattern=HEX32)
    data_root: str = Field(pattern=HEX32)
    num_samples: int = Field(ge=0, lt=2**32)
    train_loss: int = Field(ge=0, lt=2**32)
    signature: str = Field(
        pattern=rf"^([0-9a-f]{{2}}){{1,{MAX_SIGNATURE_BYTES}}}$",
        description="the chain's signature, hex (64 bytes on an EVM worker chain)",
    )

    @classmethod
    def of(cls, offer: CommitmentOffer) -> CommitmentOfferBody:
        """The body of ``offer``."""
        c = offer.commitment
        return cls(
            update_hash=c.update_hash.hex(),
            transcript_root=c.transcript_root.hex(),
            data_root=c.data_root.hex(),
            num_samples=c.num_samples,
            train_loss=c.train_loss,
            signature=offer.signature.hex(),
        )

    def offer(self, job_id: int, round_number: int, worker: WorkerRef) -> CommitmentOffer:
        """The domain value, ``worker``'s."""
        return CommitmentOffer(
            job_id,
            round_number,
            worker.chain,
            Commitment(
                worker.key,
                bytes.fromhex(self.update_hash),
                bytes.fromhex(self.transcript_root),
                bytes.fromhex(self.data_root),
                self.num_samples,
                self.train_loss,
            ),
            bytes.fromhex(self.signature),
        )


class CommitmentOfferView(_Schema):
    """One offered commitment: its worker's key (hex) and the offer's fields."""

    worker_key: str
    update_hash: str
    transcript_root: str
    data_root: str
    num_samples: int
    train_loss: int
    signature: str

    @classmethod
    def of(cls, offer: CommitmentOffer) -> CommitmentOfferView:
        """The view of ``offer``."""
        body = CommitmentOfferBody.of(offer)
        return cls(worker_key=offer.commitment.worker_key.hex(), **body.model_dump())

    def offer(self, job_id: int, round_number: int, chain: int) -> CommitmentOffer:
        """The domain value (raises ``ValueError`` or ``InvalidRoundInput`` on bad fields)."""
        fields = self.model_dump()
        worker = WorkerRef(chain, bytes.fromhex(fields.pop("worker_key")))
        return CommitmentOfferBody(**fields).offer(job_id, round_number, worker)


class CommitmentOffers(_Schema):
    """The commitments offered for a round on one worker chain, in the order of worker keys."""

    chain: int
    offers: list[CommitmentOfferView]


class ChallengeRequest(_Body):
    """Ask a worker for one segment of its round's transcript."""

    job_id: int = Field(ge=0, lt=2**63)
    round: int = Field(ge=0, lt=2**32)
    worker: WorkerBody
    segment: int = Field(ge=0, lt=2**32)
    answer_by: int = Field(ge=0, lt=2**64, description="unix seconds")


class ChallengeAnswerBody(_Body):
    """A worker's answer: checkpoints c_i and c_(i+1) and their Merkle proofs, base64; when the
    challenge asks for them (``wants_examples``), the examples the segment consumed, opened
    (:func:`fedrelay.protocol.data_commitment.encode_openings`, base64)."""

    start_checkpoint: str
    end_checkpoint: str
    start_proof: str
    end_proof: str
    examples: str = ""
    mask_opening: str | None = None
    """Under secure aggregation: the worker's masking private key and self-mask seed for the
    round (64 bytes, base64), checked against its masked input and then deleted."""


class AnswerView(_Schema):
    """A stored answer: the checkpoints as blob names, the proofs as base64."""

    start_checkpoint: str
    end_checkpoint: str
    start_proof: str
    end_proof: str
    answered_at: int


class ChallengeView(_Schema):
    """A transcript challenge and, once given, its answer."""

    challenge_id: str
    job_id: int
    round: int
    worker_chain: int
    worker_key: str
    segment: int
    issued_at: int
    answer_by: int
    answer: AnswerView | None
    wants_examples: bool = False
    reveal_verdict: str | None = None

    @classmethod
    def of(cls, challenge: Challenge) -> ChallengeView:
        """The view of ``challenge``."""
        answer = challenge.answer
        return cls(
            challenge_id=challenge.challenge_id,
            job_id=challenge.job_id,
            round=challenge.round,
            worker_chain=challenge.worker.chain,
            worker_key=challenge.worker.key.hex(),
            segment=challenge.segment,
            issued_at=challenge.issued_at,
            answer_by=challenge.answer_by,
            wants_examples=challenge.wants_examples,
            reveal_verdict=challenge.reveal_verdict,
            answer=None
            if answer is None
            else AnswerView(
                start_checkpoint=answer.start_checkpoint,
                end_checkpoint=answer.end_checkpoint,
                start_proof=b64encode(answer.start_proof),
                end_proof=b64encode(answer.end_proof),
                answered_at=answer.answered_at,
            ),
        )
