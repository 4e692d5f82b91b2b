"""The digest a worker signs for ``commitSigned`` is EIP-712's, and its signature recovers the
worker.

The digest is checked against eth-account's own EIP-712 encoder (an implementation apart from
ours); the WorkerHub's ``commitmentDigest`` is checked against ours on anvil in
``tests/integration/evm/test_evm_signed_commitments.py``.
"""

from __future__ import annotations

import pytest
from eth_account.messages import encode_typed_data
from eth_keys import keys

from fedrelay.adapters.evm import Signer, address_to_bytes32
from fedrelay.adapters.evm.signed_commitments import (
    HALF_ORDER,
    commitment_digest,
    domain_separator,
    sign_commitment,
)
from fedrelay.protocol.wormhole import Commitment, keccak256

KEY = "0x" + "4c" * 32
HUB = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
CHAIN_ID = 31338


def _commitment(worker_key: bytes) -> Commitment:
    return Commitment(worker_key, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, 1797, 412_000)


def _typed(job_id: int, round_number: int, commitment: bytes, chain_id: int = CHAIN_ID) -> bytes:
    message = encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "SignedCommitment": [
                    {"name": "jobId", "type": "uint64"},
                    {"name": "round", "type": "uint32"},
                    {"name": "commitment", "type": "bytes32"},
                ],
            },
            "primaryType": "SignedCommitment",
            "domain": {
                "name": "fedrelay WorkerHub",
                "version": "1",
                "chainId": chain_id,
                "verifyingContract": HUB,
            },
            "message": {"jobId": job_id, "round": round_number, "commitment": commitment},
        }
    )
    return keccak256(b"\x19" + message.version + message.header + message.body)


def test_the_digest_is_eip712_as_eth_account_encodes_it() -> None:
    commitment = _commitment(bytes(32)).digest()
    assert commitment_digest(CHAIN_ID, HUB, 7, 3, commitment) == _typed(7, 3, commitment)
    # Every part of the domain and message moves it.
    digests = {
        commitment_digest(CHAIN_ID, HUB, 7, 3, commitment),
        commitment_digest(CHAIN_ID + 1, HUB, 7, 3, commitment),
        commitment_digest(CHAIN_ID, "0x" + "11" * 20, 7, 3, commitment),
        commitment_digest(CHAIN_ID, HUB, 8, 3, commitment),
        commitment_digest(CHAIN_ID, HUB, 7, 4, commitment),
        commitment_digest(CHAIN_ID, HUB, 7, 3, keccak256(commitment)),
    }
    assert len(digests) == 6
    assert len(domain_separator(CHAIN_ID, HUB)) == 32


def test_a_signed_commitment_recovers_its_worker_with_a_low_s() -> None:
    worker = Signer(KEY)
    commitment = _commitment(address_to_bytes32(worker.address))
    signed = sign_commitment(worker, CHAIN_ID, HUB, 7, 3, commitment)
    vs = int.from_bytes(signed.vs, "big")
    s, parity = vs & ((1 << 255) - 1), vs >> 255
    assert s <= HALF_ORDER
    digest = commitment_digest(CHAIN_ID, HUB, 7, 3, commitment.digest())
    signature = keys.Signature(vrs=(parity, int.from_bytes(signed.r, "big"), s))
    recovered = signature.recover_public_key_from_msg_hash(digest)  # what ecrecover does
    assert recovered.to_checksum_address() == worker.address
    assert (signed.update_hash, signed.num_samples, signed.train_loss) == (
        commitment.update_hash,
        1797,
        412_000,
    )


def test_a_worker_cannot_sign_another_workers_commitment() -> None:
    worker = Signer(KEY)
    with pytest.raises(ValueError, match="not the signer"):
        sign_commitment(worker, CHAIN_ID, HUB, 7, 3, _commitment(b"\x00" * 12 + b"\x99" * 20))
