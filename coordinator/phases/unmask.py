"""The unmasking step of a secure round: the bytes of each message over the HTTP API, and the
coordinator's recovery of the sum.

Workers run :class:`~fedrelay.protocol.secagg.Participant` and exchange its messages through the
API's
``secagg`` endpoints; the coordinator only ever reads public keys, sealed shares (which it cannot
open), masked inputs and reveals, and learns the sum. Client ids are worker ids in hex.

The bytes of every message and the round's parameters are those of
:mod:`fedrelay.protocol.secagg.wire`, which the worker SDK writes with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fedrelay.ports.coordinator_store import CoordinatorRepository
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.rounds import WorkerRef
from fedrelay.protocol.secagg import (
    SecAggConfig,
    SecureAggregationError,
    SecureSum,
    unmask_sum,
)
from fedrelay.protocol.secagg.messages import SecAggStage
from fedrelay.protocol.secagg.wire import (
    client_id,
    decode_keys,
    decode_masked,
    decode_reveal,
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
    adverts = [decode_keys(client_id(w.worker_id), keys[w]) for w in workers if w in keys]
    shared: set[str] = set()
    for recipient in workers:
        found = await repository.secagg(job_id, round_number, SecAggStage.SHARES, recipient)
        shared.update(client_id(sender.worker_id) for sender in found)
    masked_raw = await masked_inputs(repository, job_id, round_number)
    masked = [decode_masked(client_id(w.worker_id), data) for w, data in masked_raw.items()]
    reveals = await repository.secagg(job_id, round_number, SecAggStage.REVEALS)
    responses = [decode_reveal(client_id(w.worker_id), data) for w, data in reveals.items()]
    # A worker that sent masked input has completed the share phase, even when it had no
    # neighbour to send a share to (alone in its round).
    shared |= {m.client_id for m in masked}
    shared &= {a.client_id for a in adverts}
    return unmask_sum(config, adverts, sorted(shared), masked, responses)
