"""Secure aggregation over the HTTP API: the bytes of each message and the coordinator's unmasking.

Workers run :class:`~fedrelay.protocol.secagg.Participant` and exchange its messages through the
API's
``secagg`` endpoints; the coordinator only ever reads public keys, sealed shares (which it cannot
open), masked inputs and reveals, and learns the sum. Client ids are worker ids in hex.

Wire formats, the same bytes as the worker SDK's ``fedrelay.worker.sdk.masking``:

- ``keys``: mask public key (32) || share public key (32).
- ``shares``: the sealed ciphertext as is (sender and recipient are the API's).
- ``masked``: a canonical tensor blob with ``masked`` (the ring vector's u64 values stored as
  int64) and ``num_examples`` (int64, one element); its keccak256 is the committed update hash.
- ``reveals``: JSON ``{"key_shares": {owner: "int"}, "self_mask_shares": {owner: "int"}}``.

Parameters: round id ``keccak256(u64 job || u32 round)``, the job's ``secagg_threshold``, the
default fixed-point code and the complete graph.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence

import numpy as np

from fedrelay.coordinator.repository import CoordinatorRepository, SecAggStage
from fedrelay.coordinator.rounds import WorkerRef
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.secagg import (
    KeyAdvert,
    MaskedInput,
    SecAggConfig,
    SecureAggregationError,
    SecureSum,
    UnmaskResponse,
    unmask_sum,
)
from fedrelay.protocol.wormhole import keccak256
from fedrelay.training import BlobError, decode_blob, encode_blob


def client_id(worker: WorkerRef) -> str:
    """The secure-aggregation client id of a worker: its worker id in hex."""
    return worker.worker_id.hex()


def secagg_config(config: JobConfig, job_id: int, round_number: int, workers: int) -> SecAggConfig:
    """The secure-aggregation parameters of one round (every party derives the same).

    Raises:
        SecureAggregationError: The job has no threshold, or more than the round's ``workers``.
    """
    threshold = config.secagg_threshold
    if threshold is None or threshold > workers:
        raise SecureAggregationError(
            f"secagg_threshold {threshold} does not fit a round of {workers} workers"
        )
    return SecAggConfig(
        round_id=keccak256(struct.pack(">QI", job_id, round_number)), threshold=threshold
    )


def encode_keys(advert: KeyAdvert) -> bytes:
    """The ``keys`` message of an advert."""
    return advert.mask_public + advert.share_public


def decode_keys(sender: str, data: bytes) -> KeyAdvert:
    """Parse a ``keys`` message.

    Raises:
        SecureAggregationError: The message is not 64 bytes.
    """
    if len(data) != 64:
        raise SecureAggregationError(f"keys of {sender} are {len(data)} bytes, expected 64")
    return KeyAdvert(sender, data[:32], data[32:])


def encode_masked(masked: MaskedInput) -> bytes:
    """The ``masked`` message (and committed update blob) of a masked input."""
    return encode_blob(
        {
            "masked": masked.vector.view(np.int64),
            "num_examples": np.array([masked.num_examples], dtype=np.int64),
        }
    )


def decode_masked(sender: str, data: bytes) -> MaskedInput:
    """Parse a ``masked`` message.

    Raises:
        SecureAggregationError: Not a canonical blob with the two tensors.
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
    """Parse a ``reveals`` message.

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


async def masked_inputs(
    repository: CoordinatorRepository, job_id: int, round_number: int
) -> Mapping[WorkerRef, bytes]:
    """The masked-input messages of a round, per worker."""
    return await repository.secagg(job_id, round_number, SecAggStage.MASKED)


async def reveal_senders(
    repository: CoordinatorRepository, job_id: int, round_number: int
) -> set[WorkerRef]:
    """The workers whose unmasking reveal arrived."""
    return set(await repository.secagg(job_id, round_number, SecAggStage.REVEALS))


async def unmask(
    repository: CoordinatorRepository,
    config: SecAggConfig,
    job_id: int,
    round_number: int,
    workers: Sequence[WorkerRef],
) -> SecureSum:
    """The round's secure sum from the messages stored by the API.

    Args:
        repository: Where the API stored the round's messages.
        config: The round's secure-aggregation parameters.
        job_id: The job.
        round_number: The round.
        workers: The round's assigned workers.

    Raises:
        SecureAggregationError: Messages are malformed or inconsistent.
        RecoveryFailed: Too few reveals to remove the masks.
    """
    keys = await repository.secagg(job_id, round_number, SecAggStage.KEYS)
    adverts = [decode_keys(client_id(w), keys[w]) for w in workers if w in keys]
    shared: set[str] = set()
    for recipient in workers:
        found = await repository.secagg(job_id, round_number, SecAggStage.SHARES, recipient)
        shared.update(client_id(sender) for sender in found)
    masked_raw = await masked_inputs(repository, job_id, round_number)
    masked = [decode_masked(client_id(w), data) for w, data in masked_raw.items()]
    reveals = await repository.secagg(job_id, round_number, SecAggStage.REVEALS)
    responses = [decode_reveal(client_id(w), data) for w, data in reveals.items()]
    # A worker that sent masked input has completed the share phase, even when it had no
    # neighbour to send a share to (alone in its round).
    shared |= {m.client_id for m in masked}
    shared &= {a.client_id for a in adverts}
    return unmask_sum(config, adverts, sorted(shared), masked, responses)
