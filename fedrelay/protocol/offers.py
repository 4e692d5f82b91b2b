"""Commitment offers: a worker's commitment for a round, signed so that anyone may record it.

On a worker chain that records signed commitments (the EVM WorkerHub's ``commitSigned``), a
worker need not send a transaction of its own to commit: it signs its commitment and offers it
through the coordinator's API, and whichever worker of the round records first submits every
offer of the round in one transaction. The coordinator only carries offers; it cannot forge or
alter one (the chain recovers the worker from the signature), and withholding one costs its
worker nothing but gas, since a worker always submits its own offer itself when no one else has
recorded it.

The signature is opaque here: each worker chain defines what is signed and how it is encoded
(for the WorkerHub, an EIP-712 digest and a 64-byte EIP-2098 compact signature; see
:mod:`fedrelay.adapters.evm.signed_commitments`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fedrelay.protocol.rounds import InvalidRoundInput, WorkerRef
from fedrelay.protocol.wormhole import Commitment

#: The longest signature an offer carries (a compact secp256k1 signature is 64 bytes).
MAX_SIGNATURE_BYTES = 128


@dataclass(frozen=True)
class CommitmentOffer:
    """A worker's signed commitment for job ``job_id`` round ``round`` on chain ``chain``.

    ``commitment.worker_key`` is the worker's key on that chain; ``signature`` authorises
    anyone to record the commitment there.

    Raises:
        InvalidRoundInput: A number out of range or a signature empty or too long.
    """

    job_id: int
    round: int
    chain: int
    commitment: Commitment
    signature: bytes

    def __post_init__(self) -> None:
        for name, value, maximum in (
            ("job id", self.job_id, 2**64 - 1),
            ("round", self.round, 2**32 - 1),
            ("chain", self.chain, 0xFFFF),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
                raise InvalidRoundInput(f"{name} must be an integer in 0..{maximum}, got {value!r}")
        if not isinstance(self.signature, bytes) or not 0 < len(self.signature) <= (
            MAX_SIGNATURE_BYTES
        ):
            raise InvalidRoundInput(
                f"an offer's signature is 1 to {MAX_SIGNATURE_BYTES} bytes, got "
                f"{len(self.signature) if isinstance(self.signature, bytes) else self.signature!r}"
            )

    @property
    def worker(self) -> WorkerRef:
        """The worker who signed it."""
        return WorkerRef(self.chain, self.commitment.worker_key)
