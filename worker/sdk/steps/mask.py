"""Masking: a secure round's key exchange, the masked input, and the later unmasking reveals.

The worker advertises its keys, waits for every peer's, deals its secret shares, waits for the
shares dealt to it, and sends its update masked. Its secrets stay in memory (a
:class:`SecureRound` per task): once the round is aggregating, it reveals what the coordinator
needs to unmask the survivors' sum. A node restarted after masking does not reveal; the other
workers' shares (the threshold) cover it.

A pass that fails part-way through the exchange (a dropped connection, a refusal) leaves the
task's :class:`KeyExchange` in memory, and the next pass resumes it: the same keys and the same
sealed shares, sending only what the coordinator has not accepted yet. (Fresh keys would be
refused as a conflict with the advert the peers already hold, and the peers would wait for shares
that never come.) The exchange is dropped once the masked input is sent or the task is given up.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from fedrelay.ports.worker_chain import TaskKey
from fedrelay.protocol.api.schemas import RoundView
from fedrelay.protocol.secagg import Participant, SecureAggregationError, wire
from fedrelay.protocol.secagg.messages import SecAggStage
from fedrelay.training import ModelTensors, trainable_tensors
from fedrelay.worker.sdk import masking
from fedrelay.worker.sdk.config import JobConfig
from fedrelay.worker.sdk.errors import SecureAggregationFailed, StopRequested, TaskRefused
from fedrelay.worker.sdk.steps.train import TrainedUpdate, model_tensors

if TYPE_CHECKING:
    from fedrelay.worker.sdk.node import WorkerNode


@dataclass
class SecureRound:
    """A masked task's secrets, kept until its unmasking shares are revealed."""

    participant: Participant
    revealed: bool = False


@dataclass
class KeyExchange:
    """A secure round's exchange in progress, kept across passes until the masked input is sent.

    ``shares`` maps each peer's worker_id (hex) to the sealed shares dealt to it (encoded once:
    sealing is randomised); ``delivered`` holds the peers the coordinator accepted them for;
    ``masked`` is the task's update with its masked input once computed, returned as it is when
    a pass fails while sending it (a retrained update could differ, and the coordinator keeps
    the first masked input).
    """

    participant: Participant
    advert: bytes
    advertised: bool = False
    shares: dict[str, bytes] | None = None
    delivered: set[str] = field(default_factory=set)
    masked: TrainedUpdate | None = None


async def mask(
    node: WorkerNode,
    key: TaskKey,
    view: RoundView,
    job: JobConfig,
    trained: TrainedUpdate,
    start: ModelTensors,
) -> TrainedUpdate:
    """Take part in the secure round of ``key``; ``trained`` with its update masked.

    Raises:
        SecureAggregationFailed: A phase of the protocol could not complete.
        TaskRefused: The peers' messages were incomplete at the deadline.
        StopRequested: A stop was requested while waiting for peers.
    """
    me = node.chain_worker_id()
    peers = sorted(t.worker_id for t in view.tasks)
    try:
        exchange = node.key_exchanges.get(key)
        if exchange is None:
            threshold = job.secagg_threshold or 0  # the schema requires it under secure aggregation
            participant = Participant(me, masking.secagg_config(key, threshold))
            exchange = KeyExchange(participant, wire.encode_keys(participant.advertise()))
            node.key_exchanges[key] = exchange
        participant = exchange.participant
        node.progress.phase(key, "exchanging keys")
        if not exchange.advertised:
            await node.api.send_secagg(key.job_id, key.round, SecAggStage.KEYS, exchange.advert)
            exchange.advertised = True
        keys = await _await_all(node, key, "keys", peers)
        if exchange.shares is None:
            adverts = [wire.decode_keys(wid.hex(), data) for wid, data in keys.items()]
            dealt = participant.share_keys(sorted(adverts, key=lambda a: a.client_id))
            exchange.shares = {s.recipient: wire.encode_shares(s) for s in dealt}
        for recipient, data in exchange.shares.items():
            if recipient in exchange.delivered:
                continue
            await node.api.send_secagg(
                key.job_id,
                key.round,
                SecAggStage.SHARES,
                data,
                recipient_id=bytes.fromhex(recipient),
            )
            exchange.delivered.add(recipient)
        shares = await _await_all(node, key, "shares", [p for p in peers if p != me])
        participant.receive_shares(
            [wire.decode_shares(wid.hex(), me, data) for wid, data in shares.items()]
        )
        if exchange.masked is None:
            final = model_tensors(key, trained.update_blob)
            moving = trainable_tensors(start, job.model.trainable)  # what the update carries
            weight = job.update_weight(trained.num_samples)  # what the coordinator checks
            delta = masking.flat_delta(final, moving)
            masked = node.finalise_masked(participant.mask(delta, weight))
            exchange.masked = replace(trained, update_blob=wire.encode_masked(masked))
        result = exchange.masked
        await node.api.send_secagg(key.job_id, key.round, SecAggStage.MASKED, result.update_blob)
    except SecureAggregationError as exc:
        node.key_exchanges.pop(key, None)
        raise SecureAggregationFailed(f"secure aggregation of {key} failed: {exc}") from exc
    except TaskRefused:
        node.key_exchanges.pop(key, None)
        raise
    node.key_exchanges.pop(key, None)
    node.secure_rounds[key] = SecureRound(participant)
    return result


def opening_of(node: WorkerNode, key: TaskKey) -> str:
    """The mask opening of ``key``'s secure round (hex), or "" for a plain round."""
    secure = node.secure_rounds.get(key)
    if secure is None:
        return ""
    mask_key, self_seed = secure.participant.secrets()
    return (mask_key + self_seed).hex()


async def _await_all(
    node: WorkerNode, key: TaskKey, which: str, wanted: list[str]
) -> dict[bytes, bytes]:
    while True:
        if which == "keys":
            found = await node.api.secagg_keys(key.job_id, key.round)
        else:
            found = await node.api.secagg_shares(key.job_id, key.round)
        if {w.hex() for w in found} >= set(wanted):
            return {w: d for w, d in found.items() if w.hex() in wanted}
        record = node.state.task(key)
        if record is not None and node.clock() > record.deadline:
            raise TaskRefused(f"secure {which} of {key} incomplete at the deadline")
        if node.stopping:
            raise StopRequested(f"stopped while waiting for secure {which} of {key}")
        await node.pause()


async def reveal_masks(node: WorkerNode) -> None:
    """Reveal the unmasking shares of every masked round that is now aggregating."""
    for key, secure in list(node.secure_rounds.items()):
        if secure.revealed:
            continue
        view = await node.api.round_status(key.job_id, key.round)
        if view.phase != "aggregating":
            continue
        survivors = await node.api.survivors(key.job_id, key.round)
        try:
            response = secure.participant.unmask([s.hex() for s in survivors])
        except SecureAggregationError as exc:
            node.progress.note(f"{key}: cannot reveal shares: {exc}")
            del node.secure_rounds[key]
            continue
        await node.api.send_secagg(
            key.job_id, key.round, SecAggStage.REVEALS, wire.encode_reveal(response)
        )
        secure.revealed = True
        node.progress.note(f"{key}: unmasking shares revealed")
