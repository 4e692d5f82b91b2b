"""Commitments a worker signs for someone else to record on its WorkerHub (``commitSigned``).

A worker that commits with its own transaction pays the transaction's 21,000 gas and its
calldata for one entry of its round's commit log. Signed instead, its commitment is one entry of
a batch that anyone submits: the WorkerHub recovers the worker from the signature, applies the
same task rules as ``commitUpdate`` and records the entry in the same log, so publishing and
everything after it is unchanged.

What a worker signs is the EIP-712 digest of ``SignedCommitment(uint64 jobId,uint32 round,
bytes32 commitment)`` under the domain ``fedrelay WorkerHub`` version ``1``, the chain's EVM id
and the hub's address, ``commitment`` being the hash its round's commit log chains
(:meth:`fedrelay.protocol.wormhole.Commitment.digest`). So a signature records nothing on another
chain, hub, job or round, and once recorded the task is committed and cannot be committed again.
The signature travels in the compact form of EIP-2098 (``r`` and ``vs``: ``s`` with ``v``'s
parity in its top bit); one whose ``s`` is above half the curve order is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from coincurve import PublicKey
from eth_abi.abi import encode as abi_encode
from web3 import Web3

from fedrelay.protocol.wormhole import Commitment, keccak256

if TYPE_CHECKING:
    from fedrelay.adapters.evm.chain import Signer

DOMAIN_TYPEHASH = keccak256(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
DOMAIN_NAME = b"fedrelay WorkerHub"
DOMAIN_VERSION = b"1"
COMMITMENT_TYPEHASH = keccak256(b"SignedCommitment(uint64 jobId,uint32 round,bytes32 commitment)")
HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
"""Half of secp256k1's order: a larger ``s`` is the malleable twin of a smaller one."""


class CommitSkip(IntEnum):
    """Why ``commitSigned`` left an entry out (``CommitmentSkipped``)."""

    NONE = 0
    BAD_SIGNATURE = 1
    NOT_ASSIGNED = 2
    ALREADY_COMMITTED = 3
    TASK_CLOSED = 4
    STAKE_BELOW_LOCK = 5
    TOO_LATE = 6


@dataclass(frozen=True)
class SignedCommitment:
    """A worker's commitment (its fields without the worker key) and its compact signature."""

    update_hash: bytes
    transcript_root: bytes
    data_root: bytes
    num_samples: int
    train_loss: int
    r: bytes
    vs: bytes

    @property
    def signature(self) -> bytes:
        """The 64-byte compact signature, ``r`` then ``vs`` (what a commitment offer carries)."""
        return self.r + self.vs

    @classmethod
    def of(cls, commitment: Commitment, signature: bytes) -> SignedCommitment:
        """``commitment``'s fields with a 64-byte compact ``signature``.

        Raises:
            ValueError: The signature is not 64 bytes.
        """
        if len(signature) != 64:
            raise ValueError(f"a compact signature is 64 bytes, got {len(signature)}")
        return cls(
            commitment.update_hash,
            commitment.transcript_root,
            commitment.data_root,
            commitment.num_samples,
            commitment.train_loss,
            signature[:32],
            signature[32:],
        )

    def entry(self) -> tuple[bytes, bytes, bytes, int, int, bytes, bytes]:
        """The ABI tuple of ``WorkerHub.SignedCommitment``."""
        return (
            self.update_hash,
            self.transcript_root,
            self.data_root,
            self.num_samples,
            self.train_loss,
            self.r,
            self.vs,
        )


def domain_separator(chain_id: int, hub_address: str) -> bytes:
    """The EIP-712 domain separator of the WorkerHub at ``hub_address`` on EVM chain
    ``chain_id``."""
    return keccak256(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                DOMAIN_TYPEHASH,
                keccak256(DOMAIN_NAME),
                keccak256(DOMAIN_VERSION),
                chain_id,
                hub_address,
            ],
        )
    )


def commitment_digest(
    chain_id: int, hub_address: str, job_id: int, round_number: int, commitment: bytes
) -> bytes:
    """What a worker signs for its ``commitment`` (the commit log's hash of its fields) in
    ``job_id`` round ``round_number`` (WorkerHub ``commitmentDigest``)."""
    if len(commitment) != 32:
        raise ValueError(f"a commitment hash is 32 bytes, got {len(commitment)}")
    struct_hash = keccak256(
        abi_encode(
            ["bytes32", "uint64", "uint32", "bytes32"],
            [COMMITMENT_TYPEHASH, job_id, round_number, commitment],
        )
    )
    return keccak256(b"\x19\x01" + domain_separator(chain_id, hub_address) + struct_hash)


def sign_commitment(
    worker: Signer, chain_id: int, hub_address: str, job_id: int, round_number: int,
    commitment: Commitment,
) -> SignedCommitment:  # fmt: skip
    """Sign ``commitment`` (whose ``worker_key`` must be ``worker``'s address) for the hub at
    ``hub_address`` on EVM chain ``chain_id``.

    Raises:
        ValueError: The commitment names another worker.
    """
    own = bytes(12) + bytes.fromhex(worker.address[2:])
    if commitment.worker_key != own:
        raise ValueError(
            f"the commitment names worker key {commitment.worker_key.hex()}, not the signer "
            f"{worker.address}"
        )
    digest = commitment_digest(chain_id, hub_address, job_id, round_number, commitment.digest())
    r, s, v = worker.sign_hash(digest)
    if s > HALF_ORDER:  # eth-account signs with low s; kept as a guard
        raise ValueError("the signature's s is above half the curve order")
    vs = s | ((v - 27) << 255)
    return SignedCommitment(
        commitment.update_hash,
        commitment.transcript_root,
        commitment.data_root,
        commitment.num_samples,
        commitment.train_loss,
        r.to_bytes(32, "big"),
        vs.to_bytes(32, "big"),
    )


def recover_signer(digest: bytes, r: bytes, vs: bytes) -> str | None:
    """The address that signed ``digest`` with the compact signature (``r``, ``vs``), as the
    WorkerHub recovers it; None for a signature the hub refuses (``s`` zero or above half the
    order, ``r`` out of range, no point recovered)."""
    s = int.from_bytes(vs, "big") & ((1 << 255) - 1)
    parity = int.from_bytes(vs, "big") >> 255
    r_value = int.from_bytes(r, "big")
    if len(r) != 32 or len(vs) != 32 or not 0 < s <= HALF_ORDER:
        return None
    if not 0 < r_value <= 2 * HALF_ORDER:
        return None
    try:
        public = PublicKey.from_signature_and_message(
            r + s.to_bytes(32, "big") + bytes([parity]), digest, hasher=None
        )
    except ValueError:
        return None
    return Web3.to_checksum_address(keccak256(public.format(compressed=False)[1:])[12:])


@dataclass(frozen=True)
class SkippedCommitment:
    """An entry ``commitSigned`` left out: the address its signature recovered (the zero
    address for an invalid one) and why."""

    worker: str
    reason: CommitSkip


@dataclass(frozen=True)
class SignedBatch:
    """What one ``commitSigned`` transaction did."""

    transaction_hash: bytes
    gas_used: int
    recorded: int
    skipped: Sequence[SkippedCommitment]
