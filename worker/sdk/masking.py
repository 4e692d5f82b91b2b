"""Secure aggregation from the worker's side, over the coordinator API's key-exchange endpoints.

The messages travel as opaque bytes; their forms, shared with the coordinator:

- keys: ``mask_public (32) || share_public (32)``, keyed by the sender's worker_id.
- shares: the sealed ciphertext for one recipient.
- masked input (also the update blob that is committed): a canonical tensor blob with
  ``masked`` (the ring vector's uint64 values stored as int64) and ``num_examples`` (int64, 1).
- reveals: JSON ``{"key_shares": {id: "int"}, "self_mask_shares": {id: "int"}}``.

Client ids are worker_ids in lowercase hex; the round id is ``keccak256(u64 job_id || u32
round)``; the update is the float32 difference between the trained and the assigned model,
tensors in sorted name order, each flattened in C order.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from fedrelay.protocol.secagg import (
    KeyAdvert,
    MaskedInput,
    SealedShares,
    SecAggConfig,
    UnmaskResponse,
)
from fedrelay.training import decode_blob, encode_blob, keccak256
from fedrelay.worker.sdk.errors import SecureAggregationFailed
from fedrelay.worker.sdk.tasks import TaskKey


def round_id(key: TaskKey) -> bytes:
    """The secure round's id for a job round."""
    return keccak256(struct.pack(">QI", key.job_id, key.round))


def secagg_config(key: TaskKey, threshold: int) -> SecAggConfig:
    """The parameters every worker of the round uses (complete graph, default fixed point)."""
    return SecAggConfig(round_id=round_id(key), threshold=threshold)


def flat_delta(
    trained: Mapping[str, npt.NDArray[np.float32]], start: Mapping[str, npt.NDArray[np.float32]]
) -> npt.NDArray[np.float32]:
    """``trained - start`` as one float32 vector (sorted names, C order)."""
    if sorted(trained) != sorted(start):
        raise SecureAggregationFailed("the trained model's tensors differ from the assigned ones")
    parts = [
        (np.asarray(trained[n], np.float32) - np.asarray(start[n], np.float32)).ravel()
        for n in sorted(trained)
    ]
    return np.concatenate(parts).astype(np.float32)


def encode_advert(advert: KeyAdvert) -> bytes:
    """A keys message."""
    return advert.mask_public + advert.share_public


def decode_advert(client_id: str, data: bytes) -> KeyAdvert:
    """A keys message from ``client_id``."""
    if len(data) != 64:
        raise SecureAggregationFailed(f"keys of {client_id} are {len(data)} bytes, expected 64")
    return KeyAdvert(client_id, data[:32], data[32:])


def decode_share(sender: str, recipient: str, data: bytes) -> SealedShares:
    """A sealed share message."""
    return SealedShares(sender, recipient, data)


def encode_masked(masked: MaskedInput) -> bytes:
    """A masked input as the update blob."""
    return encode_blob(
        {
            "masked": masked.vector.view(np.int64),
            "num_examples": np.array([masked.num_examples], dtype=np.int64),
        }
    )


def decode_masked(client_id: str, blob: bytes) -> MaskedInput:
    """A masked input from its update blob."""
    tensors = decode_blob(blob)
    try:
        vector = np.asarray(tensors["masked"], dtype=np.int64).view(np.uint64)
        count = int(np.asarray(tensors["num_examples"])[0])
    except (KeyError, IndexError) as exc:
        raise SecureAggregationFailed(f"masked input of {client_id} lacks {exc}") from exc
    return MaskedInput(client_id, count, vector)


def encode_reveal(response: UnmaskResponse) -> bytes:
    """A reveals message."""
    document = {
        "key_shares": {k: str(v) for k, v in sorted(response.key_shares.items())},
        "self_mask_shares": {k: str(v) for k, v in sorted(response.self_mask_shares.items())},
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def decode_reveal(sender: str, data: bytes) -> UnmaskResponse:
    """A reveals message from ``sender``."""
    try:
        document = json.loads(data)
        keys = {str(k): int(v) for k, v in document["key_shares"].items()}
        seeds = {str(k): int(v) for k, v in document["self_mask_shares"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SecureAggregationFailed(f"reveal from {sender} is malformed: {exc}") from exc
    return UnmaskResponse(sender, seeds, keys)
