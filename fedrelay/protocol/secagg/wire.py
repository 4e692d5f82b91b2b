"""The bytes of the secure-aggregation messages, as workers send them through the coordinator.

Workers run :class:`~fedrelay.protocol.secagg.Participant`; its messages travel through the
coordinator API's ``secagg`` endpoints as opaque bytes, one message per stage
(:class:`~fedrelay.protocol.secagg.messages.SecAggStage`):

- ``keys``: mask public key (32) || share public key (32) || self-mask seed commitment (32);
- ``shares``: commitment to the key share (32) || commitment to the seed share (32) || the
  sealed ciphertext for one recipient (sender and recipient are the API's);
- ``masked``: a canonical tensor blob with ``masked`` (the ring vector's u64 values stored as
  int64) and ``num_examples`` (int64, one element); its keccak256 is the committed update hash;
- ``reveals``: JSON ``{"key_shares": {owner: "int"}, "self_mask_shares": {owner: "int"}}``,
  sorted keys, no spaces.

Client ids are worker ids in lowercase hex. A round's parameters are derived the same way by
every party: round id ``keccak256(u64 job || u32 round)``, the job's ``secagg_threshold``, the
default fixed-point code and the complete graph. The shared vectors in
``tests/vectors/secagg.json`` pin these bytes.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from fedrelay.protocol.blobs import BlobError, decode_blob, encode_blob
from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.secagg.commitments import COMMITMENT_BYTES, ShareCommitments
from fedrelay.protocol.secagg.errors import SecureAggregationError
from fedrelay.protocol.secagg.protocol import (
    KeyAdvert,
    MaskedInput,
    SealedShares,
    SecAggConfig,
    UnmaskResponse,
)

KEYS_LENGTH = 96


def client_id(worker_id: bytes) -> str:
    """The secure-aggregation client id of a worker: its 32-byte worker id in lowercase hex."""
    return worker_id.hex()


def round_id(job_id: int, round_number: int) -> bytes:
    """The secure round's id: ``keccak256(u64 job_id || u32 round)``."""
    return keccak256(struct.pack(">QI", job_id, round_number))


def round_config(job_id: int, round_number: int, threshold: int) -> SecAggConfig:
    """The parameters every party of a round uses (complete graph, default fixed point)."""
    return SecAggConfig(round_id=round_id(job_id, round_number), threshold=threshold)


def encode_keys(advert: KeyAdvert) -> bytes:
    """The ``keys`` message of an advert."""
    return advert.mask_public + advert.share_public + advert.seed_commitment


def decode_keys(sender: str, data: bytes) -> KeyAdvert:
    """Parse the ``keys`` message of ``sender``.

    Raises:
        SecureAggregationError: The message is not 96 bytes.
    """
    if len(data) != KEYS_LENGTH:
        raise SecureAggregationError(
            f"keys of {sender} are {len(data)} bytes, expected {KEYS_LENGTH}"
        )
    return KeyAdvert(sender, data[:32], data[32:64], data[64:])


def encode_shares(sealed: SealedShares) -> bytes:
    """The ``shares`` message of a sealed bundle."""
    return sealed.commitments.key + sealed.commitments.seed + sealed.ciphertext


def decode_shares(sender: str, recipient: str, data: bytes) -> SealedShares:
    """Parse the ``shares`` message from ``sender`` to ``recipient``.

    Raises:
        SecureAggregationError: The message is too short to hold the two commitments and a
            ciphertext.
    """
    if len(data) <= 2 * COMMITMENT_BYTES:
        raise SecureAggregationError(
            f"shares from {sender} to {recipient} are {len(data)} bytes, too short for two "
            f"{COMMITMENT_BYTES}-byte commitments and a ciphertext"
        )
    commitments = ShareCommitments(
        data[:COMMITMENT_BYTES], data[COMMITMENT_BYTES : 2 * COMMITMENT_BYTES]
    )
    return SealedShares(sender, recipient, data[2 * COMMITMENT_BYTES :], commitments)


def encode_masked(masked: MaskedInput) -> bytes:
    """The ``masked`` message of a masked input, which is also the committed update blob."""
    return encode_blob(
        {
            "masked": masked.vector.view(np.int64),
            "num_examples": np.array([masked.num_examples], dtype=np.int64),
        }
    )


def decode_masked(sender: str, data: bytes) -> MaskedInput:
    """Parse the ``masked`` message of ``sender``.

    Raises:
        SecureAggregationError: Not a canonical blob holding the two tensors.
    """
    try:
        tensors = decode_blob(data)
        vector = np.asarray(tensors["masked"], dtype=np.int64).view(np.uint64)
        count = int(np.asarray(tensors["num_examples"]).reshape(-1)[0])
    except (BlobError, KeyError, IndexError):
        raise SecureAggregationError(f"masked input of {sender} is malformed") from None
    return MaskedInput(sender, count, vector)


def encode_reveal(response: UnmaskResponse) -> bytes:
    """The ``reveals`` message of an unmask response."""
    body = {
        "key_shares": {k: str(v) for k, v in sorted(response.key_shares.items())},
        "self_mask_shares": {k: str(v) for k, v in sorted(response.self_mask_shares.items())},
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def decode_reveal(sender: str, data: bytes) -> UnmaskResponse:
    """Parse the ``reveals`` message of ``sender``.

    Raises:
        SecureAggregationError: The message is not the expected JSON.
    """
    try:
        body = json.loads(data)
        own = {str(k): int(v) for k, v in body["self_mask_shares"].items()}
        keys = {str(k): int(v) for k, v in body["key_shares"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SecureAggregationError(f"reveal of {sender} is malformed") from None
    return UnmaskResponse(sender, own, keys)
