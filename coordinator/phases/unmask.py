"""The unmasking step of a secure round: the bytes of each message over the HTTP API, and the
coordinator's recovery of the sum.

Workers run :class:`~fedrelay.protocol.secagg.Participant` and exchange its messages through the
API's
``secagg`` endpoints; the coordinator only ever reads public keys, sealed shares (which it cannot
open), masked inputs and reveals, and learns the sum. Client ids are worker ids in hex.

The bytes of every message and the round's parameters are those of
:mod:`fedrelay.protocol.secagg.wire`, which the worker SDK writes with.

Every message is decoded on its own first (:func:`screen`): keys that are not 96 bytes, a shares
message too short for its commitments, a masked input that is not a canonical blob of the two
tensors or whose vector does not have the model's length, a reveal that is not the expected
JSON, is its sender's fault with the reason, never an error of the whole round. The unmasking
then runs on the messages that decoded; every revealed share is checked against the commitment
its dealer sent with it (:func:`reveal_faults` names the holders of those that do not match).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fedrelay.ports.coordinator_store import CoordinatorRepository
from fedrelay.protocol.blobs import BlobError, decode_blob
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.rounds import WorkerRef
from fedrelay.protocol.secagg import (
    KeyAdvert,
    MaskedInput,
    MaskOpening,
    RingVector,
    SealedShares,
    SecAggConfig,
    SecureAggregationError,
    SecureSum,
    UnmaskResponse,
    check_opening,
    check_reveals,
    contribution,
    unmask_sum,
)
from fedrelay.protocol.secagg.messages import SecAggStage
from fedrelay.protocol.secagg.wire import (
    client_id,
    decode_keys,
    decode_masked,
    decode_reveal,
    decode_shares,
    round_config,
)


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
    return round_config(job_id, round_number, threshold)


async def masked_inputs(
    repository: CoordinatorRepository, job_id: int, round_number: int
) -> Mapping[WorkerRef, bytes]:
    """The masked-input messages of a round, per worker."""
    return await repository.secagg(job_id, round_number, SecAggStage.MASKED)


@dataclass(frozen=True)
class Screened:
    """A round's secure-aggregation messages, each decoded on its own.

    Attributes:
        adverts: The keys that decoded, per worker.
        masked: The masked inputs that decoded with the model's length, per worker.
        masked_bytes: Every stored masked input as sent, per worker (the survivors).
        reveals: The reveals that decoded, per worker.
        revealed: Every worker whose reveal was stored when the messages were read, decoded or
            not: whether the reveals are all in is judged on the messages the sum is unmasked
            from, never on a later read (a reveal stored after this one is used by the next
            screening).
        sealed: The sealed share bundles that decoded (with their public commitments).
        faults: Per worker whose message did not decode: which message and why (the first).
    """

    adverts: dict[WorkerRef, KeyAdvert] = field(default_factory=dict)
    masked: dict[WorkerRef, MaskedInput] = field(default_factory=dict)
    masked_bytes: dict[WorkerRef, bytes] = field(default_factory=dict)
    reveals: dict[WorkerRef, UnmaskResponse] = field(default_factory=dict)
    revealed: set[WorkerRef] = field(default_factory=set)
    sealed: list[SealedShares] = field(default_factory=list)
    faults: dict[WorkerRef, str] = field(default_factory=dict)


def _masked_input(sender: str, data: bytes, length: int) -> MaskedInput:
    """Decode one masked input; a :class:`SecureAggregationError` saying why it is refused."""
    try:
        decode_blob(data)
    except BlobError as exc:
        raise SecureAggregationError(
            f"masked input is not a canonical tensor blob: {exc}"
        ) from None
    try:
        masked = decode_masked(sender, data)
    except (ValueError, TypeError, OverflowError):  # e.g. a non-finite num_examples
        raise SecureAggregationError(f"masked input of {sender} is malformed") from None
    if masked.vector.shape != (length,):
        raise SecureAggregationError(
            f"masked input has shape {masked.vector.shape}, the model has {length} parameters"
        )
    if masked.num_examples < 0:
        raise SecureAggregationError(f"masked input counts {masked.num_examples} examples")
    return masked


async def screen(
    repository: CoordinatorRepository,
    job_id: int,
    round_number: int,
    workers: Sequence[WorkerRef],
    length: int,
) -> Screened:
    """Decode each of the round's stored keys, shares, masked inputs and reveals on its own.

    Args:
        repository: Where the API stored the round's messages.
        job_id: The job.
        round_number: The round.
        workers: The round's assigned workers (messages of anyone else are ignored).
        length: The model's number of parameters (every masked vector's length).

    Returns:
        What decoded, and the reason for each worker whose message did not.
    """
    screened = Screened()
    keys = await repository.secagg(job_id, round_number, SecAggStage.KEYS)
    masked = await masked_inputs(repository, job_id, round_number)
    reveals = await repository.secagg(job_id, round_number, SecAggStage.REVEALS)
    for worker in workers:
        sender = client_id(worker.worker_id)
        if worker in masked:
            screened.masked_bytes[worker] = masked[worker]
        if worker in reveals:
            screened.revealed.add(worker)
        try:
            if worker in keys:
                screened.adverts[worker] = decode_keys(sender, keys[worker])
            if worker in masked:
                screened.masked[worker] = _masked_input(sender, masked[worker], length)
            if worker in reveals:
                screened.reveals[worker] = decode_reveal(sender, reveals[worker])
        except SecureAggregationError as exc:
            screened.faults[worker] = f"secure aggregation message refused: {exc}"
    for recipient in workers:
        found = await repository.secagg(job_id, round_number, SecAggStage.SHARES, recipient)
        for dealer, data in found.items():
            try:
                screened.sealed.append(
                    decode_shares(client_id(dealer.worker_id), client_id(recipient.worker_id), data)
                )
            except SecureAggregationError as exc:
                screened.faults.setdefault(dealer, f"secure aggregation message refused: {exc}")
    return screened


def unmask(config: SecAggConfig, workers: Sequence[WorkerRef], screened: Screened) -> SecureSum:
    """The round's secure sum from the messages that decoded.

    A worker whose keys did not decode is not on the roster (and its masked input is left out);
    one whose reveal did not decode is a survivor that did not reveal, covered by the others'
    shares down to the threshold; a revealed share that does not match its dealer's commitment
    is left out the same way.

    Args:
        config: The round's secure-aggregation parameters.
        workers: The round's assigned workers.
        screened: The round's messages, decoded (:func:`screen`).

    Raises:
        SecureAggregationError: Messages are inconsistent.
        RecoveryFailed: Too few reveals to remove the masks.
        DealerFault: A worker's committed shares recover a secret other than its committed one.
    """
    adverts = [screened.adverts[w] for w in workers if w in screened.adverts]
    shared = {s.sender for s in screened.sealed}
    masked = [m for w, m in screened.masked.items() if w in screened.adverts]
    responses = list(screened.reveals.values())
    # A worker that sent masked input has completed the share phase, even when it had no
    # neighbour to send a share to (alone in its round).
    shared |= {m.client_id for m in masked}
    shared &= {a.client_id for a in adverts}
    return unmask_sum(config, adverts, sorted(shared), masked, responses, screened.sealed)


def reveal_faults(config: SecAggConfig, screened: Screened) -> dict[str, str]:
    """Per holder (client id) that revealed a share other than the one dealt to it, why."""
    _, faults = check_reveals(config, screened.sealed, list(screened.reveals.values()))
    return faults


@dataclass(frozen=True)
class OpenedInput:
    """A challenged worker's masked input with what its opening needs (see :func:`opened`)."""

    roster: dict[str, KeyAdvert]
    peers: frozenset[str]
    masked: MaskedInput
    opening: MaskOpening


async def opened(
    repository: CoordinatorRepository,
    job_id: int,
    round_number: int,
    worker: WorkerRef,
    screened: Screened,
) -> OpenedInput:
    """``worker``'s masked input, its mask opening and the keys and peers it masked with.

    The peers are the senders of the shares stored for ``worker`` that advertised keys: the
    neighbours whose shares reached it, the ones a participant masks with.

    Raises:
        SecureAggregationError: No opening was sent, or the worker's messages did not decode.
    """
    sent = await repository.secagg(job_id, round_number, SecAggStage.OPENING)
    if worker not in sent:
        raise SecureAggregationError(
            "the answer opens no masks: a challenge in a secure round needs the mask opening"
        )
    masked = screened.masked.get(worker)
    if masked is None or worker not in screened.adverts:
        raise SecureAggregationError("the worker's keys or masked input did not decode")
    roster = {a.client_id: a for a in screened.adverts.values()}
    found = await repository.secagg(job_id, round_number, SecAggStage.SHARES, worker)
    peers = frozenset(client_id(s.worker_id) for s in found) & set(roster)
    return OpenedInput(roster, peers, masked, MaskOpening.decode(sent[worker]))


def check_opened(config: SecAggConfig, found: OpenedInput, delta: npt.NDArray[np.float32]) -> None:
    """Check an opened masked input against the update ``delta`` (see :func:`check_opening`)."""
    check_opening(config, found.roster, found.peers, found.masked, found.opening, delta)


def opened_contribution(config: SecAggConfig, found: OpenedInput) -> RingVector:
    """What an opened masked input adds to the unmasked sum."""
    return contribution(config, found.roster, found.peers, found.masked, found.opening)
