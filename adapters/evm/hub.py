"""Typed access to an EVM worker chain's WorkerHub."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

from web3.types import TxReceipt

from fedrelay.adapters.evm.artifacts import load_artifact
from fedrelay.adapters.evm.batch import BatchDelivery, receive_batch
from fedrelay.adapters.evm.chain import EvmChain, Signer
from fedrelay.adapters.evm.core import address_to_bytes32
from fedrelay.adapters.evm.errors import EvmError
from fedrelay.adapters.evm.events import ContractEvent, events_between, receipt_events
from fedrelay.adapters.evm.signed_commitments import (
    CommitSkip,
    SignedBatch,
    SignedCommitment,
    SkippedCommitment,
    sign_commitment,
)
from fedrelay.protocol.wormhole import (
    MAX_BATCH,
    Commitment,
    MessageId,
    Outcome,
    RoundSettled,
    TaskAssigned,
    UpdateCommitted,
    chain_commitment,
    decode_payload,
    task_id,
)

_P = TypeVar("_P", TaskAssigned, RoundSettled)

#: ``WorkerHub.SkipReason.UnknownTask``: a settlement entry that met no task of its round.
SKIP_UNKNOWN_TASK = 0


@dataclass(frozen=True)
class HubAssignment:
    """One entry of a TASK_ASSIGNED the hub applied (its ``TasksAssigned`` event): the entry
    asked for the task; whether the hub created it, its ``getTask`` tells (a refused entry has
    a ``TaskRefused`` in the same transaction)."""

    job_id: int
    round: int
    worker_key: bytes
    shard: int
    deadline: int
    release_at: int


@dataclass(frozen=True)
class HubSettlement:
    """A task a ROUND_SETTLED the hub applied settled (an entry of its ``TasksSettled`` event
    that met its task), and the task's outcome."""

    task_id: bytes
    worker_key: bytes
    outcome: Outcome


def _applied(event: ContractEvent, kind: type[_P]) -> _P:
    payload = decode_payload(bytes(event.args["payload"]))
    if not isinstance(payload, kind):
        raise EvmError(f"{event.name} carries a {type(payload).__name__}, not {kind.__name__}")
    return payload


def hub_assignments(
    events: Sequence[ContractEvent], worker_key: bytes | None = None
) -> list[HubAssignment]:
    """The entries of the TASK_ASSIGNED messages among ``events`` (``TasksAssigned``), of
    ``worker_key`` only when given, in order."""
    found: list[HubAssignment] = []
    for event in events:
        if event.name != "TasksAssigned":
            continue
        m = _applied(event, TaskAssigned)
        found.extend(
            HubAssignment(m.job_id, m.round, t.worker_key, t.shard, m.deadline, m.release_at)
            for t in m.tasks
            if worker_key is None or t.worker_key == worker_key
        )
    return found


def hub_settlements(
    events: Sequence[ContractEvent], chain: int, worker_key: bytes | None = None
) -> list[HubSettlement]:
    """The tasks the ROUND_SETTLED messages among ``events`` (``TasksSettled``) settled on the
    hub of Wormhole chain ``chain``, of ``worker_key`` only when given, in order. An entry the
    hub skipped as meeting no task (``SettlementSkipped`` UnknownTask in the same transaction)
    is left out; an entry for a task already settled or released names a task that is."""
    unknown = {
        (e.transaction_hash, bytes(e.args["taskId"]))
        for e in events
        if e.name == "SettlementSkipped" and int(e.args["reason"]) == SKIP_UNKNOWN_TASK
    }
    found: list[HubSettlement] = []
    for event in events:
        if event.name != "TasksSettled":
            continue
        m = _applied(event, RoundSettled)
        for s in m.settlements:
            if worker_key is not None and s.worker_key != worker_key:
                continue
            tid = task_id(m.job_id, m.round, chain, s.worker_key)
            if (event.transaction_hash, tid) not in unknown:
                found.append(HubSettlement(tid, s.worker_key, s.outcome))
    return found


def _logged_commitments(name: str, args: Mapping[str, Any]) -> tuple[Commitment, ...]:
    """The commitments one hub event recorded: an ``UpdateCommitted``'s one, or the entries of
    a ``CommitmentsRecorded``'s payload from its ``first`` on (those before were recorded
    earlier and published with them)."""
    if name == "UpdateCommitted":
        return (
            Commitment(
                worker_key=address_to_bytes32(args["worker"]),
                update_hash=bytes(args["updateHash"]),
                transcript_root=bytes(args["transcriptRoot"]),
                data_root=bytes(args["dataRoot"]),
                num_samples=int(args["numSamples"]),
                train_loss=int(args["trainLoss"]),
            ),
        )
    payload = decode_payload(bytes(args["payload"]))
    if not isinstance(payload, UpdateCommitted):
        raise EvmError(f"CommitmentsRecorded carries a {type(payload).__name__}")
    return payload.commitments[int(args["first"]) :]


class HubTaskState(IntEnum):
    """A task's state on the worker chain."""

    NONE = 0
    ASSIGNED = 1
    COMMITTED = 2
    SETTLED = 3
    RELEASED = 4


@dataclass(frozen=True)
class Staker:
    """A worker's stake on its chain (wei); ``locked`` is what its open tasks lock."""

    staked: int
    unbonding: int
    unbonding_ready_at: int
    active_tasks: int
    registered: bool
    locked: int = 0
    stake_nonce: int = 0


@dataclass(frozen=True)
class HubTask:
    """A task as the worker chain stores it."""

    state: HubTaskState
    deadline: int
    release_at: int = 0
    lock: int = 0


@dataclass(frozen=True)
class CommitLog:
    """A job round's log on a worker chain: its commitments' hash chain (from zero, in the order
    recorded), the chain's value after the last published one, and the block of the first; how
    many of the round's tasks were created here and how many have had their settlement entry
    (the round is settled here once both are equal)."""

    head: bytes
    published_head: bytes
    first_block: int
    created: int = 0
    closed: int = 0

    @property
    def settled(self) -> bool:
        """Whether every task of the round created here has had its ROUND_SETTLED entry."""
        return self.created != 0 and self.closed == self.created

    @property
    def pending(self) -> bool:
        """Whether a recorded commitment has not been published yet."""
        return self.head != self.published_head


NO_COMMITMENTS = bytes(32)
"""Where a worker chain's commit log starts (an empty round's head)."""


class WorkerHubContract:
    """A deployed WorkerHub: stake, registration, assignments, commitments, settlements."""

    def __init__(self, chain: EvmChain, address: str) -> None:
        self.chain = chain
        self.address = chain.w3.to_checksum_address(address)
        self.contract = chain.w3.eth.contract(
            address=self.address, abi=list(load_artifact("WorkerHub").abi)
        )

    def set_peer(self, signer: Signer, chain: int, peer: bytes) -> TxReceipt:
        """Trust `peer` (bytes32) as emitter and target on Wormhole chain `chain` (owner only)."""
        return self.chain.transact(signer, self.contract.functions.setPeer(chain, peer))

    def _change_fee(self, signer: Signer) -> int:
        """The fee of the STAKE_CHANGED a registered worker's stake change publishes."""
        return self._fee() if self.staker(signer.address).registered else 0

    def stake(self, signer: Signer, amount: int) -> TxReceipt:
        """Add `amount` wei to the signer's bonded stake (plus the message fee when registered)."""
        value = amount + self._change_fee(signer)
        return self.chain.transact(signer, self.contract.functions.stake(), value=value)

    def request_unbond(self, signer: Signer, amount: int) -> TxReceipt:
        """Start unbonding `amount` wei of the signer's stake (refused below what tasks lock)."""
        function = self.contract.functions.requestUnbond(amount)
        return self.chain.transact(signer, function, value=self._change_fee(signer))

    def release_settled(self, signer: Signer, job_id: int, workers: Sequence[str]) -> TxReceipt:
        """Free the locks that ``workers``' settled tasks of ``job_id`` still hold (anyone may
        send it: a settlement without a slash leaves each lock to the job's task two rounds on)."""
        addresses = [self.chain.w3.to_checksum_address(w) for w in workers]
        function = self.contract.functions.releaseSettled(job_id, addresses)
        return self.chain.transact(signer, function)

    def settled_locks(self, job_id: int, workers: Sequence[str]) -> int:
        """How many task locks :meth:`release_settled` would free now (a call, no transaction)."""
        addresses = [self.chain.w3.to_checksum_address(w) for w in workers]
        return int(self.chain.call(self.contract.functions.releaseSettled(job_id, addresses)))

    def jobs_of(self, worker: str, from_block: int, to_block: int) -> set[int]:
        """The jobs whose TASK_ASSIGNED named ``worker`` in blocks ``from_block..to_block``
        (its task created or refused)."""
        logs = self.contract.events.TasksAssigned().get_logs(
            from_block=from_block, to_block=to_block
        )
        events = [
            ContractEvent("TasksAssigned", dict(e["args"]), 0, bytes(e["transactionHash"]), 0)
            for e in logs
        ]
        key = address_to_bytes32(self.chain.w3.to_checksum_address(worker))
        return {a.job_id for a in hub_assignments(events, key)}

    def withdraw_stake(self, signer: Signer) -> TxReceipt:
        """Withdraw unbonded stake once the delay passed."""
        function = self.contract.functions.withdrawStake()
        return self.chain.transact(signer, function, value=self._change_fee(signer))

    def register(self, signer: Signer, payout: bytes, capabilities: int) -> TxReceipt:
        """Publish WORKER_REGISTERED for the signer (payout is a bytes32 coordinator address)."""
        function = self.contract.functions.register(payout, capabilities)
        return self.chain.transact(signer, function, value=self._fee())

    def commit_update(
        self,
        signer: Signer,
        job_id: int,
        round_number: int,
        update_hash: bytes,
        transcript_root: bytes,
        data_root: bytes,
        num_samples: int,
        train_loss: int,
    ) -> TxReceipt:
        """Commit the signer's update for an assigned task, and the root and count of the data it
        trained on: the commitment joins the round's commit log (no message of its own; see
        :meth:`publish_commitments`)."""
        function = self.contract.functions.commitUpdate(
            job_id, round_number, update_hash, transcript_root, data_root, num_samples, train_loss
        )
        return self.chain.transact(signer, function)

    def commit_signed(
        self, submitter: Signer, job_id: int, round_number: int, entries: Sequence[SignedCommitment]
    ) -> SignedBatch:
        """Record commitments the workers signed (:func:`sign_commitment`) in one transaction
        sent by ``submitter`` (anyone): each as its worker's own :meth:`commit_update` would,
        those that do not qualify left out and named in the result.

        Raises:
            ValueError: ``entries`` is empty.
        """
        if not entries:
            raise ValueError("commit_signed needs at least one signed commitment")
        function = self.contract.functions.commitSigned(
            job_id, round_number, [e.entry() for e in entries]
        )
        return self._signed_batch(self.chain.transact(submitter, function))

    def commit_signed_and_publish(
        self,
        submitter: Signer,
        job_id: int,
        round_number: int,
        pending: Sequence[Commitment],
        entries: Sequence[SignedCommitment],
    ) -> SignedBatch:
        """Record ``entries`` as :meth:`commit_signed` does and publish them after ``pending``
        (the round's commitments recorded before and not yet published, in order) as one
        UPDATE_COMMITTED, in one transaction; ``submitter`` pays the core's fee for the message.

        Raises:
            ValueError: More than 32 commitments in all.
            ContractRevert: ``CommitmentsMismatch`` when ``pending`` is not exactly the pending
                ones, ``NothingToPublish`` when nothing would be published (nothing recorded).
        """
        if len(pending) + len(entries) > MAX_BATCH:
            raise ValueError(
                f"one message holds {MAX_BATCH} commitments, got {len(pending) + len(entries)}"
            )
        function = self.contract.functions.commitSignedAndPublish(
            job_id,
            round_number,
            [_commitment_tuple(c) for c in pending],
            [e.entry() for e in entries],
        )
        return self._signed_batch(self.chain.transact(submitter, function, value=self._fee()))

    def _signed_batch(self, receipt: TxReceipt) -> SignedBatch:
        events = self.events_in(receipt)
        skipped = [
            SkippedCommitment(str(e.args["worker"]), CommitSkip(int(e.args["reason"])))
            for e in events
            if e.name == "CommitmentSkipped"
        ]
        recorded = sum(
            len(_logged_commitments(e.name, e.args))
            for e in events
            if e.name in ("UpdateCommitted", "CommitmentsRecorded")
        )
        return SignedBatch(
            bytes(receipt["transactionHash"]), int(receipt["gasUsed"]), recorded, skipped
        )

    def sign_commitment(
        self, worker: Signer, job_id: int, round_number: int, commitment: Commitment
    ) -> SignedCommitment:
        """``worker``'s signature of ``commitment`` for this hub (see :func:`sign_commitment`)."""
        return sign_commitment(
            worker, self.chain.chain_id, self.address, job_id, round_number, commitment
        )

    def commitment_digest(self, job_id: int, round_number: int, commitment: bytes) -> bytes:
        """What the hub recovers signatures over (its ``commitmentDigest`` view)."""
        function = self.contract.functions.commitmentDigest(job_id, round_number, commitment)
        return bytes(self.chain.call(function))

    def commit_log(self, job_id: int, round_number: int) -> CommitLog:
        """The round's commit log (all zero before its first commitment)."""
        raw = self.chain.call(self.contract.functions.getCommitLog(job_id, round_number))
        return CommitLog(bytes(raw[0]), bytes(raw[1]), int(raw[2]), int(raw[3]), int(raw[4]))

    def round_commitments(self, job_id: int, round_number: int) -> tuple[Commitment, ...]:
        """Every commitment of the round recorded up to the log's head, in the order recorded,
        read from the hub's commitment events and checked against the head.

        Raises:
            EvmError: The events do not rebuild the head (a node serving partial logs).
        """
        return self._recorded(job_id, round_number, self.commit_log(job_id, round_number))

    def _recorded(self, job_id: int, round_number: int, log: CommitLog) -> tuple[Commitment, ...]:
        """``round_commitments`` up to the head of ``log`` (read once by the caller): the
        ``UpdateCommitted`` of each commitment recorded alone and the ``CommitmentsRecorded``
        of each batch ``commitSignedAndPublish`` recorded, in log order."""
        if log.head == NO_COMMITMENTS:
            return ()
        span = {
            "argument_filters": {"jobId": job_id, "round": round_number},
            "from_block": log.first_block,
            "to_block": self.chain.w3.eth.block_number,
        }
        logs = [
            *self.contract.events.UpdateCommitted().get_logs(**span),
            *self.contract.events.CommitmentsRecorded().get_logs(**span),
        ]
        logs.sort(key=lambda e: (int(e["blockNumber"]), int(e["logIndex"])))
        found: list[Commitment] = []
        chained = NO_COMMITMENTS
        for event in logs:
            for entry in _logged_commitments(str(event["event"]), event["args"]):
                found.append(entry)
                chained = chain_commitment(chained, entry.worker_key, entry.digest())
                if chained == log.head:
                    return tuple(found)  # later events came after the head was read
        raise EvmError(
            f"the commitment events of job {job_id} round {round_number} from block "
            f"{log.first_block} do not rebuild its commit log ({len(found)} read)"
        )

    def pending_commitments(self, job_id: int, round_number: int) -> tuple[Commitment, ...]:
        """The round's commitments recorded but not yet published, in order."""
        log = self.commit_log(job_id, round_number)
        if not log.pending:
            return ()
        recorded = self._recorded(job_id, round_number, log)
        if log.published_head == NO_COMMITMENTS:
            return recorded
        chained = NO_COMMITMENTS
        for i, entry in enumerate(recorded):
            chained = chain_commitment(chained, entry.worker_key, entry.digest())
            if chained == log.published_head:
                return recorded[i + 1 :]
        raise EvmError(
            f"job {job_id} round {round_number}: the published head is not on the commit log"
        )

    def publish_commitments(
        self, signer: Signer, job_id: int, round_number: int, entries: Sequence[Commitment]
    ) -> TxReceipt:
        """Publish the round's pending commitments (`entries`, every one recorded since the last
        publication, in order) as UPDATE_COMMITTED messages of up to 32; the signer pays the
        core's fee per message.

        Raises:
            ContractRevert: ``CommitmentsMismatch`` when `entries` are not exactly the pending
                ones (also when a commitment landed meanwhile: read them again),
                ``NothingToPublish`` when none are pending.
        """
        messages = -(-len(entries) // MAX_BATCH)
        function = self.contract.functions.publishCommitments(
            job_id,
            round_number,
            [_commitment_tuple(c) for c in entries],
        )
        return self.chain.transact(signer, function, value=self._fee() * messages)

    def receive_message(self, signer: Signer, vaa: bytes) -> TxReceipt:
        """Deliver a TASK_ASSIGNED or ROUND_SETTLED VAA.

        Raises:
            AlreadyConsumed: The VAA was delivered before.
            InvalidVaa: The core rejected its signatures.
            ContractRevert: Any other rejection.
        """
        return self.chain.transact(signer, self.contract.functions.receiveMessage(vaa))

    def receive_batch(self, signer: Signer, vaas: Sequence[bytes], value: int = 0) -> BatchDelivery:
        """Deliver TASK_ASSIGNED and ROUND_SETTLED VAAs in one ``receiveMessages`` transaction.

        Each entry is applied on its own: a consumed or refused one does not revert the others.
        `value` tops up the fee reserve that pays the messages the entries publish.

        Returns:
            The receipt and each entry's result (applied, consumed, invalid or failed, with the
            decoded reason of a refused entry).
        """
        return receive_batch(self.chain, signer, self.contract, vaas, value)

    def is_consumed(self, message: MessageId) -> bool:
        """Whether the message (emitter chain, emitter, sequence) has been consumed here, by a
        VAA of any version or signature set (``vaa.message_id``)."""
        function = self.contract.functions.isConsumed(
            message.emitter_chain, message.emitter_address, message.sequence
        )
        return bool(self.chain.call(function))

    def staker(self, worker: str) -> Staker:
        """A worker's stake record."""
        address = self.chain.w3.to_checksum_address(worker)
        raw = self.chain.call(self.contract.functions.getStaker(address))
        # (staked, locked, activeTasks, registered, unbonding, unbondingReadyAt, stakeNonce)
        return Staker(
            staked=int(raw[0]),
            unbonding=int(raw[4]),
            unbonding_ready_at=int(raw[5]),
            active_tasks=int(raw[2]),
            registered=bool(raw[3]),
            locked=int(raw[1]),
            stake_nonce=int(raw[6]),
        )

    def task(self, job_id: int, round_number: int, worker_key: bytes) -> HubTask:
        """A task as stored here: all zero (state NONE) when there is none, or when a later
        round of the job has taken its slot (a worker's tasks in a job take turns in two
        slots, by the round's parity)."""
        raw = self.chain.call(self.contract.functions.getTask(job_id, round_number, worker_key))
        # (state, round, deadline, releaseAt, lock): one slot; the update hash is in
        # UpdateCommitted
        return HubTask(HubTaskState(raw[0]), int(raw[2]), int(raw[3]), int(raw[4]))

    def events(self, from_block: int, to_block: int) -> list[ContractEvent]:
        """This contract's events in blocks `from_block..to_block` (inclusive), in order."""
        return events_between(self.contract, from_block, to_block)

    def events_in(self, receipt: TxReceipt) -> list[ContractEvent]:
        """This contract's events in one transaction."""
        return receipt_events(self.contract, receipt)

    def message_fee(self) -> int:
        """The core's fee (wei) for one published message."""
        return self._fee()

    def _fee(self) -> int:
        core = self.chain.w3.eth.contract(
            address=self.chain.call(self.contract.functions.core()),
            abi=list(load_artifact("MessageCore").abi),
        )
        return int(self.chain.call(core.functions.messageFee()))


def _commitment_tuple(c: Commitment) -> tuple[bytes, bytes, bytes, bytes, int, int]:
    """The ABI tuple of ``PayloadCodec.Commitment``."""
    return (
        c.worker_key,
        c.update_hash,
        c.transcript_root,
        c.data_root,
        c.num_samples,
        c.train_loss,
    )
