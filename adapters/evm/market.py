"""Typed access to the coordinator chain's JobMarket."""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from eth_abi.abi import encode as abi_encode
from web3.logs import DISCARD
from web3.types import TxReceipt

from fedrelay.adapters.evm.artifacts import load_artifact
from fedrelay.adapters.evm.batch import BatchDelivery, receive_batch
from fedrelay.adapters.evm.chain import EvmChain, Signer
from fedrelay.adapters.evm.core import MessageCoreContract
from fedrelay.adapters.evm.errors import ContractRevert, EvmError
from fedrelay.adapters.evm.events import ContractEvent, events_between, receipt_events
from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.merkle import MerkleTree
from fedrelay.protocol.wormhole import MessageId, Outcome, Task
from fedrelay.protocol.wormhole.payloads import Commitment as WireCommitment
from fedrelay.protocol.wormhole.payloads import TaskAssigned, UpdateCommitted, decode_payload

NATIVE = "0x0000000000000000000000000000000000000000"


class JobStatus(IntEnum):
    """A job's life cycle on chain."""

    NONE = 0
    OPEN = 1
    COMPLETED = 2
    CANCELLED = 3


class RoundPhase(IntEnum):
    """A round's phase on chain."""

    IDLE = 0
    COLLECTING = 1
    PROPOSED = 2
    SETTLED = 3


class TaskState(IntEnum):
    """A task's state on the coordinator chain, as its lane's messages and events show it.

    JobMarket keeps no record per task: assignments are in its TASK_ASSIGNED messages,
    commitments in its ``UpdatesReceived`` events, both checked against the lane's hash chains.
    """

    NONE = 0
    ASSIGNED = 1
    COMMITTED = 2


@dataclass(frozen=True)
class JobSpec:
    """What a poster escrows and asks for. Amounts are in the token's smallest unit."""

    model_hash: bytes
    config_hash: bytes
    num_rounds: int
    workers_per_round: int
    reward_per_round: int
    min_stake: int
    worker_chains: tuple[int, ...]
    token: str = NATIVE
    rejected_slash: int = 0
    missed_slash: int = 0
    slash_mode: int = 0
    slash_recipients: tuple[bytes, ...] = ()
    release_after: int = 3600
    progress_timeout: int = 7 * 24 * 3600

    @property
    def escrow(self) -> int:
        """The whole reward, escrowed when the job is posted."""
        return self.reward_per_round * self.num_rounds


@dataclass(frozen=True)
class RoundResult:
    """The aggregator's verdict on one worker's task in a round.

    ``fault`` (0 none, 1 rejected, 2 missed) is nonzero exactly for SLASHED, with ``evidence``
    the hash of the published evidence blob; JobMarket takes the job's slash for the fault.
    """

    worker_chain: int
    worker_key: bytes
    outcome: Outcome
    reward: int = 0
    fault: int = 0
    evidence: bytes = bytes(32)

    def entry(self) -> tuple[bytes, int, int, int, int, bytes]:
        """JobMarket's ``Result``: workerKey, workerChain, outcome, fault, reward, evidence."""
        return (
            self.worker_key,
            self.worker_chain,
            int(self.outcome),
            self.fault,
            self.reward,
            self.evidence,
        )

    @classmethod
    def from_entry(cls, raw: Sequence[Any] | Mapping[str, Any]) -> RoundResult:
        """A result from the ``Result`` a call (a tuple) or an event (named fields) returns."""
        if isinstance(raw, Mapping):
            names = ("workerKey", "workerChain", "outcome", "fault", "reward", "evidence")
            raw = [raw[name] for name in names]
        key, chain, outcome, fault, reward, evidence = raw
        return cls(
            worker_chain=int(chain),
            worker_key=bytes(key),
            outcome=Outcome(int(outcome)),
            reward=int(reward),
            fault=int(fault),
            evidence=bytes(evidence),
        )

    def leaf(self, job_id: int, round_number: int) -> bytes:
        """This result's leaf in its proposal's results root, as JobMarket hashes it.

        ``keccak256(abi.encode(jobId, round, result))``: a leaf of one job or round is no leaf of
        another.
        """
        return keccak256(
            abi_encode(
                ["uint64", "uint32", "(bytes32,uint16,uint8,uint8,uint128,bytes32)"],
                [job_id, round_number, self.entry()],
            )
        )


CHAIN_START = (1).to_bytes(32, "big")
"""Where a lane's hash chains start (JobMarket's ``CHAIN_START``)."""


class _LogsBehindLanes(EvmError):
    """The logs read for a round do not match its lanes (read again before it is reported)."""


def received_commitments(event: Any) -> tuple[WireCommitment, ...]:
    """The commitments of one ``UpdatesReceived`` event (its UPDATE_COMMITTED payload's
    entries, in the order they joined the lane).

    Raises:
        EvmError: The event's payload is no UPDATE_COMMITTED (a node serving corrupt logs).
    """
    payload = decode_payload(bytes(event["args"]["payload"]))
    if not isinstance(payload, UpdateCommitted):
        raise EvmError(f"UpdatesReceived carries a {type(payload).__name__}, not UPDATE_COMMITTED")
    return payload.commitments


def chain_step(previous: bytes, *items: bytes) -> bytes:
    """One step of a lane's hash chain: ``keccak256(abi.encode(previous, items...))``.

    An assignment adds ``(key,)``, a commitment ``(key, commitment)``.
    """
    return keccak256(b"".join((previous, *items)))


def results_root(job_id: int, round_number: int, results: Sequence[RoundResult]) -> bytes:
    """The Merkle root of ``results``' leaves in the order given, as ``checkProposal``
    computes it (the root a proposal names)."""
    return MerkleTree([r.leaf(job_id, round_number) for r in results]).root


def in_lane_order(chains: Sequence[int], results: Sequence[RoundResult]) -> list[RoundResult]:
    """``results`` in the order ``finalizeRound`` takes them: lane by lane in the job's worker
    chain order (``chains``), each lane's by increasing worker key (its assignment order).

    Raises:
        EvmError: A result names a chain the job does not have.
    """
    position = {chain: i for i, chain in enumerate(chains)}
    for result in results:
        if result.worker_chain not in position:
            raise EvmError(f"a result names worker chain {result.worker_chain}, not the job's")
    return sorted(results, key=lambda r: (position[r.worker_chain], r.worker_key))


@dataclass(frozen=True)
class LaneCommit:
    """One UPDATE_COMMITTED a lane received: the worker, its fields, and where it arrived."""

    worker_chain: int
    worker_key: bytes
    commitment: Commitment
    block_number: int
    log_index: int


@dataclass(frozen=True)
class RoundTasks:
    """A round's tasks as the coordinator chain holds them: the keys each lane assigned (in
    assignment order) and the commitments it received (in arrival order)."""

    assigned: Mapping[int, tuple[bytes, ...]]
    commits: Mapping[int, tuple[LaneCommit, ...]]

    def commitment(self, worker_chain: int, worker_key: bytes) -> Commitment:
        """One worker's task: its state, with its commitment once one arrived."""
        for commit in self.commits.get(worker_chain, ()):
            if commit.worker_key == worker_key:
                return commit.commitment
        if worker_key in self.assigned.get(worker_chain, ()):
            return Commitment(TaskState.ASSIGNED, bytes(32), bytes(32), bytes(32), 0, 0)
        return Commitment(TaskState.NONE, bytes(32), bytes(32), bytes(32), 0, 0)

    def proposal_commits(self, chains: Sequence[int]) -> list[tuple[bytes, bytes]]:
        """Every commitment the round's lanes received, lane by lane in the job's chain order
        (``chains``), each lane's in arrival order: the evidence ``checkProposal`` and
        ``disprove`` take, as (workerKey, commitment) pairs."""
        return [
            (commit.worker_key, commit.commitment.digest())
            for chain in chains
            for commit in self.commits.get(chain, ())
        ]


@dataclass(frozen=True)
class Job:
    """A job as stored on chain."""

    poster: str
    token: str
    status: JobStatus
    num_rounds: int
    current_round: int
    workers_per_round: int
    min_stake: int
    model_hash: bytes
    config_hash: bytes
    reward_per_round: int
    escrow: int


@dataclass(frozen=True)
class Round:
    """A round as stored on chain."""

    phase: RoundPhase
    assigned: int
    proposal: int
    challenge_deadline: int
    proposed_block: int
    opened_block: int
    proposed_model_hash: bytes
    proposed_total: int
    results_root: bytes


@dataclass(frozen=True)
class Commitment:
    """A task's state and, once committed, the worker's update commitment."""

    state: TaskState
    update_hash: bytes
    transcript_root: bytes
    data_root: bytes
    num_samples: int
    train_loss: int

    def digest(self) -> bytes:
        """The hash a lane's commit chain takes for it (``PayloadCodec.commitmentHash``)."""
        return keccak256(
            self.update_hash
            + self.transcript_root
            + self.data_root
            + struct.pack(">II", self.num_samples, self.train_loss)
        )


@dataclass(frozen=True)
class Lane:
    """A job's tasks on one worker chain in the lane's round (JobMarket's ``Lane``)."""

    round: int
    assigned: int
    committed: int
    last_key: bytes
    assigned_chain: bytes
    commit_chain: bytes


@dataclass(frozen=True)
class RegisteredWorker:
    """A worker as the coordinator chain knows it from WORKER_REGISTERED."""

    registered: bool
    stake: int
    payout: str
    capabilities: int


@dataclass(frozen=True)
class PostedJob:
    """The outcome of `post_job`."""

    job_id: int
    receipt: TxReceipt = field(repr=False)


class JobMarketContract:
    """A deployed JobMarket: jobs, rounds, incoming VAAs, payouts."""

    #: Readings of a round's logs before a mismatch with its lanes is reported (round_tasks).
    LANE_READS = 3
    #: Seconds before the second reading (twice that before the third).
    LANE_READ_PAUSE_S = 0.2

    def __init__(self, chain: EvmChain, address: str) -> None:
        self.chain = chain
        self.address = chain.w3.to_checksum_address(address)
        self.contract = chain.w3.eth.contract(
            address=self.address, abi=list(load_artifact("JobMarket").abi)
        )

    # ---------------------------------------------------------------- administration

    def set_peer(self, signer: Signer, chain: int, peer: bytes) -> TxReceipt:
        """Trust `peer` (bytes32) as emitter and target on Wormhole chain `chain` (owner only)."""
        return self.chain.transact(signer, self.contract.functions.setPeer(chain, peer))

    def set_rewards_account(self, signer: Signer, account: str) -> TxReceipt:
        """Credit rounds settled from now on to `account` (a RewardDistributor), each round's
        total once; the zero address credits each rewarded worker's payout address again."""
        function = self.contract.functions.setRewardsAccount(
            self.chain.w3.to_checksum_address(account)
        )
        return self.chain.transact(signer, function)

    def aggregator(self) -> str:
        """The account that assigns tasks and proposes outcomes (`setAggregator`)."""
        return str(self.chain.call(self.contract.functions.aggregator()))

    def rewards_account(self, block: int | None = None) -> str:
        """Where settled rounds' rewards go (the zero address: each worker's payout), now or as
        of the end of ``block``."""
        return str(self.chain.call(self.contract.functions.rewardsAccount(), block))

    def set_max_batch(self, signer: Signer, chain: int, size: int) -> TxReceipt:
        """Set the largest batch one message to `chain` carries (owner only)."""
        return self.chain.transact(signer, self.contract.functions.setMaxBatch(chain, size))

    # ---------------------------------------------------------------- jobs and rounds

    def post_job(self, signer: Signer, spec: JobSpec) -> PostedJob:
        """Post a job; native jobs send the escrow with the call (ERC-20 needs an approval)."""
        value = spec.escrow if spec.token == NATIVE else 0
        args = (
            self.chain.w3.to_checksum_address(spec.token),
            spec.model_hash,
            spec.config_hash,
            spec.num_rounds,
            spec.workers_per_round,
            spec.reward_per_round,
            spec.min_stake,
            list(spec.worker_chains),
            spec.rejected_slash,
            spec.missed_slash,
            spec.slash_mode,
            list(spec.slash_recipients),
            spec.release_after,
            spec.progress_timeout,
        )
        receipt = self.chain.transact(signer, self.contract.functions.postJob(args), value=value)
        events = self.contract.events.JobPosted().process_receipt(receipt, errors=DISCARD)
        if not events:
            raise EvmError("postJob succeeded without a JobPosted event")
        return PostedJob(job_id=int(events[0]["args"]["jobId"]), receipt=receipt)

    def cancel_job(self, signer: Signer, job_id: int) -> TxReceipt:
        """Cancel (or close when completed) a job and refund its unspent escrow to the poster."""
        return self.chain.transact(signer, self.contract.functions.cancelJob(job_id))

    def assign_tasks(
        self, signer: Signer, job_id: int, worker_chain: int, deadline: int, tasks: Sequence[Task]
    ) -> TxReceipt:
        """Assign the current round's `tasks` on `worker_chain` (one TASK_ASSIGNED message).

        The batch is sent in increasing key order. JobMarket takes a round's keys on one chain in
        strictly increasing order across all its batches: split a round's tasks into batches
        after sorting them (``AssignmentOutOfOrder`` otherwise).
        """
        entries = [(t.worker_key, t.shard) for t in sorted(tasks, key=lambda t: t.worker_key)]
        function = self.contract.functions.assignTasks(job_id, worker_chain, deadline, entries)
        return self.chain.transact(signer, function, value=self._fee(1))

    def finalize_round(
        self,
        signer: Signer,
        job_id: int,
        round_number: int,
        model_hash: bytes,
        results: Sequence[RoundResult],
    ) -> TxReceipt:
        """Propose the round's outcome; it settles after the challenge window.

        The results go lane by lane with their total and Merkle root. The market takes a
        proposal optimistically (anyone may disprove one that breaks a rule), so it is checked
        first against every rule with ``checkProposal`` (an ``eth_call`` with the commitments the
        lanes received, read from the chain): a proposal that would be disproved raises that
        rule's error and nothing is sent.

        Raises:
            ContractRevert: The proposal breaks a rule (the checker's error), or the market
                refused it.
        """
        chains = self.worker_chains(job_id)
        tasks = self.round_tasks(job_id, round_number)
        ordered = in_lane_order(chains, results)
        total = sum(r.reward for r in ordered)
        root = results_root(job_id, round_number, ordered)
        self.check_proposal(job_id, round_number, ordered, tasks.proposal_commits(chains))
        function = self.contract.functions.finalizeRound(
            job_id, round_number, model_hash, total, root, [r.entry() for r in ordered]
        )
        return self.chain.transact(signer, function)

    def proposal_checker(self) -> Any:
        """The market's ProposalChecker (created with it), as a web3 contract."""
        address = self.chain.call(self.contract.functions.proposalChecker())
        return self.chain.w3.eth.contract(
            address=self.chain.w3.to_checksum_address(address),
            abi=list(load_artifact("ProposalChecker").abi),
        )

    def check_proposal(
        self,
        job_id: int,
        round_number: int,
        results: Sequence[RoundResult],
        commits: Sequence[tuple[bytes, bytes]],
        total: int | None = None,
        root: bytes | None = None,
    ) -> None:
        """Check ``results`` (in proposal order) as a proposal of the job's current round:
        returns when they keep every rule, raises the first rule's error otherwise.

        ``total`` and ``root`` default to the results' own; ``commits`` are the lanes'
        (:meth:`RoundTasks.proposal_commits`).

        Raises:
            ContractRevert: The rule broken (``AcceptedWithoutCommitment``, ...), or
                ``CommitsMismatch`` when ``commits`` are not the lanes'.
        """
        function = self.proposal_checker().functions.checkProposal(
            job_id,
            round_number,
            sum(r.reward for r in results) if total is None else total,
            results_root(job_id, round_number, results) if root is None else root,
            [r.entry() for r in results],
            list(commits),
        )
        self.chain.call(function)

    def disprove_proposal(self, signer: Signer, job_id: int, round_number: int) -> TxReceipt:
        """Void the round's pending proposal, which breaks a rule (anyone, in its window).

        Sends the proposal's results, read back from its ``finalizeRound`` transaction, with the
        commitments the lanes received.

        Raises:
            ContractRevert: ``ProposalValid`` when the proposal keeps every rule; the market's
                refusal otherwise (not proposed, window closed).
        """
        results = self.proposal(job_id, round_number, check_root=False)
        commits = self.round_tasks(job_id, round_number).proposal_commits(
            self.worker_chains(job_id)
        )
        function = self.proposal_checker().functions.disprove(
            job_id, round_number, [r.entry() for r in results], commits
        )
        return self.chain.transact(signer, function)

    def audit_proposal(self, job_id: int, round_number: int) -> ContractRevert | None:
        """Check the round's pending proposal against every rule, as a disproof would: its
        results read back from its ``finalizeRound`` transaction, its total and root from the
        round, the lanes' commitments from the chain. None when it keeps every rule, else the
        rule's error (what ``disprove_proposal`` would void it with).

        Raises:
            EvmError: The round is not proposed, or the commitments read from the chain do not
                rebuild its lanes (a node serving partial logs).
        """
        stored = self.round(job_id, round_number)
        if stored.phase is not RoundPhase.PROPOSED:
            raise EvmError(
                f"job {job_id} round {round_number} has no pending proposal (it is "
                f"{stored.phase.name})"
            )
        results = self.proposal(job_id, round_number, check_root=False)
        commits = self.round_tasks(job_id, round_number).proposal_commits(
            self.worker_chains(job_id)
        )
        try:
            self.check_proposal(
                job_id,
                round_number,
                results,
                commits,
                stored.proposed_total,
                stored.results_root,
            )
        except ContractRevert as exc:
            if exc.name == "CommitsMismatch":
                raise EvmError(
                    f"job {job_id} round {round_number}: the commitments read from the chain do "
                    "not rebuild its lanes (a node serving partial logs?)"
                ) from exc
            return exc
        return None

    def challenge_round(
        self, signer: Signer, job_id: int, round_number: int, evidence: bytes
    ) -> TxReceipt:
        """Reject a proposal inside its challenge window (challenger only)."""
        function = self.contract.functions.challengeRound(job_id, round_number, evidence)
        return self.chain.transact(signer, function)

    def settle_round(self, signer: Signer, job_id: int, round_number: int) -> TxReceipt:
        """Settle a proposal after its window; pays the fee of every ROUND_SETTLED batch.

        The proposal's results are read back from its ``finalizeRound`` transaction and sent
        again (the contract checks them against the hash it stored).
        """
        results = self.proposal(job_id, round_number)
        entries = [r.entry() for r in results]
        function = self.contract.functions.settleRound(job_id, round_number, entries)
        return self.chain.transact(
            signer, function, value=self._fee(self.settlement_batches(results))
        )

    def settlement_batches(self, results: Sequence[RoundResult]) -> int:
        """How many ROUND_SETTLED messages settling ``results`` publishes (the fee to pay).

        Per worker chain, its results in batches of that chain's ``maxBatch`` (read now), as
        ``settleRound`` publishes them.
        """
        per_chain: dict[int, int] = {}
        for result in results:
            per_chain[result.worker_chain] = per_chain.get(result.worker_chain, 0) + 1
        batches = 0
        for chain, count in per_chain.items():
            size = int(self.chain.call(self.contract.functions.maxBatch(chain)))
            batches += -(-count // size)
        return batches

    def dispute_slash(
        self, signer: Signer, job_id: int, round_number: int, worker_chain: int, worker_key: bytes
    ) -> TxReceipt:
        """Dispute a worker's slash in the pending proposal (as its payout address).

        Sends the worker's result with its Merkle proof against the proposal's results root.

        Raises:
            EvmError: The proposal has no result for the worker, or the market refused.
        """
        results = self.proposal(job_id, round_number)
        index = next(
            (
                i
                for i, r in enumerate(results)
                if r.worker_chain == worker_chain and r.worker_key == worker_key
            ),
            None,
        )
        if index is None:
            raise EvmError(
                f"job {job_id} round {round_number}'s proposal has no result for the worker"
            )
        result = results[index]
        tree = MerkleTree([r.leaf(job_id, round_number) for r in results])
        proof = list(tree.proof(index).siblings)
        function = self.contract.functions.disputeSlash(
            job_id, round_number, index, result.entry(), proof
        )
        return self.chain.transact(signer, function)

    def proposal(
        self, job_id: int, round_number: int, *, check_root: bool = True
    ) -> list[RoundResult]:
        """The results of the round's pending (or last settled) proposal, in proposed order.

        Read from the input of the ``finalizeRound`` transaction whose ``ResultsProposed``
        event, in the block the round records (``proposed_block``), carries the round's current
        proposal number, and (with ``check_root``) checked against the root the event names:
        the market does not check that root when it takes a proposal, anyone may disprove one
        whose results do not hash to it.

        Raises:
            EvmError: The round has no proposal, its event is not in that block, the
                transaction that made it did not call ``finalizeRound`` on this market
                directly (a contract wallet's call is inside its own input), or (with
                ``check_root``) its results do not hash to its root.
        """
        stored = self.round(job_id, round_number)
        if stored.proposed_block == 0 or stored.proposal == 0:
            raise EvmError(f"job {job_id} round {round_number} has no proposal")
        logs = self.contract.events.ResultsProposed().get_logs(
            argument_filters={"jobId": job_id, "round": round_number},
            from_block=stored.proposed_block,
            to_block=stored.proposed_block,
        )
        where = f"job {job_id} round {round_number} proposal {stored.proposal}"
        log = next((g for g in logs if int(g["args"]["proposal"]) == stored.proposal), None)
        if log is None:
            raise EvmError(f"{where}: no ResultsProposed in block {stored.proposed_block}")
        tx = self.chain.w3.eth.get_transaction(log["transactionHash"])
        if str(tx["to"]).lower() != self.address.lower():
            raise EvmError(
                f"{where} was sent to {tx['to']}, not to the JobMarket: its results are not "
                "the transaction's input (a market that takes proposals only as their own "
                "transaction never shows this)"
            )
        function, args = self.contract.decode_function_input(tx["input"])
        if function.fn_name != "finalizeRound":
            raise EvmError(f"{where} came from a {function.fn_name} call, not finalizeRound")
        results = [RoundResult.from_entry(raw) for raw in args["results"]]
        if check_root and (
            not results
            or results_root(job_id, round_number, results) != bytes(log["args"]["resultsRoot"])
        ):
            raise EvmError(
                f"{where}: the transaction's results do not hash to its root (a proposal "
                "anyone may disprove)"
            )
        return results

    def settled_model(self, job_id: int, round_number: int) -> bytes:
        """The model hash a settled round gave its job, from its ``RoundSettled`` event (the
        round's record keeps the proposal only while it is pending).

        Raises:
            EvmError: The round is not settled, or no node log shows its settlement.
        """
        stored = self.round(job_id, round_number)
        if stored.phase is not RoundPhase.SETTLED:
            raise EvmError(f"job {job_id} round {round_number} is not settled")
        logs = self.contract.events.RoundSettled().get_logs(
            argument_filters={"jobId": job_id, "round": round_number},
            from_block=stored.proposed_block,
        )
        if not logs:
            raise EvmError(
                f"job {job_id} round {round_number}: no RoundSettled from block "
                f"{stored.proposed_block} on"
            )
        return bytes(logs[-1]["args"]["modelHash"])

    def withdraw(self, signer: Signer, token: str = NATIVE) -> TxReceipt:
        """Withdraw the signer's claimable balance of `token`."""
        checksummed = self.chain.w3.to_checksum_address(token)
        return self.chain.transact(signer, self.contract.functions.withdraw(checksummed))

    # ---------------------------------------------------------------- messages in

    def receive_message(self, signer: Signer, vaa: bytes) -> TxReceipt:
        """Deliver a WORKER_REGISTERED or UPDATE_COMMITTED VAA.

        Raises:
            AlreadyConsumed: The VAA was delivered before.
            InvalidVaa: The core rejected its signatures.
            ContractRevert: Any other rejection (wrong emitter, target, unknown task, ...).
        """
        return self.chain.transact(signer, self.contract.functions.receiveMessage(vaa))

    def receive_batch(self, signer: Signer, vaas: Sequence[bytes]) -> BatchDelivery:
        """Deliver WORKER_REGISTERED, UPDATE_COMMITTED, STAKE_CHANGED VAAs in one transaction.

        Each entry is applied on its own: a consumed or refused one does not revert the others.

        Returns:
            The receipt and each entry's result (applied, consumed, invalid or failed, with the
            decoded reason of a refused entry).
        """
        return receive_batch(self.chain, signer, self.contract, vaas)

    def is_consumed(self, message: MessageId) -> bool:
        """Whether the message (emitter chain, emitter, sequence) has been consumed here, by a
        VAA of any version or signature set (``vaa.message_id``)."""
        function = self.contract.functions.isConsumed(
            message.emitter_chain, message.emitter_address, message.sequence
        )
        return bool(self.chain.call(function))

    # ---------------------------------------------------------------- views

    def job(self, job_id: int) -> Job:
        """The stored job."""
        raw = self.chain.call(self.contract.functions.getJob(job_id))
        return Job(
            poster=str(raw[0]),
            token=str(raw[1]),
            status=JobStatus(raw[2]),
            num_rounds=int(raw[3]),
            current_round=int(raw[4]),
            workers_per_round=int(raw[5]),
            min_stake=int(raw[6]),
            model_hash=bytes(raw[7]),
            config_hash=bytes(raw[8]),
            reward_per_round=int(raw[9]),
            escrow=int(raw[10]),
        )

    def round(self, job_id: int, round_number: int) -> Round:
        """The stored round."""
        raw = self.chain.call(self.contract.functions.getRound(job_id, round_number))
        return Round(
            phase=RoundPhase(raw[0]),
            assigned=int(raw[1]),
            proposal=int(raw[2]),
            challenge_deadline=int(raw[3]),
            proposed_block=int(raw[4]),
            opened_block=int(raw[5]),
            proposed_model_hash=bytes(raw[6]),
            proposed_total=int(raw[7]),
            results_root=bytes(raw[8]),
        )

    def lane(self, job_id: int, worker_chain: int, block: int | None = None) -> Lane:
        """The job's lane on ``worker_chain`` (its tasks there in the lane's round), as of
        ``block`` when given, else the latest block."""
        raw = self.chain.call(self.contract.functions.getLane(job_id, worker_chain), block)
        return Lane(
            round=int(raw[0]),
            assigned=int(raw[1]),
            committed=int(raw[2]),
            last_key=bytes(raw[3]),
            assigned_chain=bytes(raw[4]),
            commit_chain=bytes(raw[5]),
        )

    def worker_chains(self, job_id: int) -> tuple[int, ...]:
        """The job's worker chains, in its order (the order of its lanes)."""
        return tuple(
            int(c) for c in self.chain.call(self.contract.functions.jobWorkerChains(job_id))
        )

    def commitment(
        self, job_id: int, round_number: int, worker_chain: int, worker_key: bytes
    ) -> Commitment:
        """The task of one worker in one round, with its commitment once received."""
        return self.round_tasks(job_id, round_number).commitment(worker_chain, worker_key)

    def round_tasks(self, job_id: int, round_number: int) -> RoundTasks:
        """A round's assignments and commitments, read from the chain and checked.

        From the round's first assignment block on: the TASK_ASSIGNED messages the market
        published through its core (their keys) and its ``UpdatesReceived`` events. While the
        round is its job's current one, each lane's count and hash chains must match them.

        A node may answer ``eth_getLogs`` for its newest block before it serves that block's
        logs: a mismatch is read again (with a fresh head) up to :attr:`LANE_READS` times, a
        short pause apart, before it is reported.

        Raises:
            EvmError: The messages or events do not match a lane (a node serving partial logs).
        """
        stored = self.round(job_id, round_number)
        if stored.opened_block == 0:
            return RoundTasks({}, {})
        for attempt in range(1, self.LANE_READS + 1):
            try:
                return self._read_round_tasks(job_id, round_number, stored.opened_block)
            except _LogsBehindLanes:
                if attempt == self.LANE_READS:
                    raise
                time.sleep(self.LANE_READ_PAUSE_S * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_round_tasks(self, job_id: int, round_number: int, opened_block: int) -> RoundTasks:
        """:meth:`round_tasks`' one reading, from ``opened_block`` to the newest block."""
        head = self.chain.w3.eth.block_number
        assigned: dict[int, list[bytes]] = {}
        for message in self._core().published_between(opened_block, head, self.address):
            payload = decode_payload(message.payload)
            if (
                isinstance(payload, TaskAssigned)
                and payload.job_id == job_id
                and payload.round == round_number
            ):
                assigned.setdefault(payload.target_chain, []).extend(
                    t.worker_key for t in payload.tasks
                )
        commits: dict[int, list[LaneCommit]] = {}
        logs = self.contract.events.UpdatesReceived().get_logs(
            argument_filters={"jobId": job_id, "round": round_number},
            from_block=opened_block,
            to_block=head,
        )
        for log in logs:
            chain = int(log["args"]["workerChain"])
            for entry in received_commitments(log):
                commitment = Commitment(
                    state=TaskState.COMMITTED,
                    update_hash=entry.update_hash,
                    transcript_root=entry.transcript_root,
                    data_root=entry.data_root,
                    num_samples=entry.num_samples,
                    train_loss=entry.train_loss,
                )
                commits.setdefault(chain, []).append(
                    LaneCommit(
                        chain,
                        entry.worker_key,
                        commitment,
                        int(log["blockNumber"]),
                        int(log["logIndex"]),
                    )
                )
        tasks = RoundTasks(
            {c: tuple(keys) for c, keys in assigned.items()},
            {c: tuple(found) for c, found in commits.items()},
        )
        self._check_lanes(job_id, round_number, tasks, head)
        return tasks

    def _check_lanes(self, job_id: int, round_number: int, tasks: RoundTasks, head: int) -> None:
        # The lanes are read at the block the logs were read up to: a delivery mined between
        # the two reads is in neither, instead of only in the lane.
        for chain in set(tasks.assigned) | set(tasks.commits):
            lane = self.lane(job_id, chain, head)
            if lane.round != round_number:
                continue  # a later round has reused the lane
            keys = tasks.assigned.get(chain, ())
            commits = tasks.commits.get(chain, ())
            assigned_chain = CHAIN_START
            for key in keys:
                assigned_chain = chain_step(assigned_chain, key)
            commit_chain = CHAIN_START
            for commit in commits:
                commit_chain = chain_step(
                    commit_chain, commit.worker_key, commit.commitment.digest()
                )
            if (len(keys), assigned_chain) != (lane.assigned, lane.assigned_chain) or (
                len(commits),
                commit_chain,
            ) != (lane.committed, lane.commit_chain):
                raise _LogsBehindLanes(
                    f"job {job_id} round {round_number}: the logs read for worker chain {chain} "
                    f"({len(keys)} assigned, {len(commits)} committed) do not match its lane "
                    f"({lane.assigned} assigned, {lane.committed} committed)"
                )

    def worker(self, worker_chain: int, worker_key: bytes) -> RegisteredWorker:
        """A worker's registration as received from its chain."""
        worker_id = self.chain.call(self.contract.functions.workerIdOf(worker_chain, worker_key))
        raw = self.chain.call(self.contract.functions.getWorker(worker_id))
        return RegisteredWorker(bool(raw[0]), int(raw[1]), str(raw[2]), int(raw[3]))

    def claimable(self, account: str, token: str = NATIVE) -> int:
        """What `account` can withdraw of `token`."""
        w3 = self.chain.w3
        function = self.contract.functions.claimable(
            w3.to_checksum_address(account), w3.to_checksum_address(token)
        )
        return int(self.chain.call(function))

    def events(self, from_block: int, to_block: int) -> list[ContractEvent]:
        """This contract's events in blocks `from_block..to_block` (inclusive), in order."""
        return events_between(self.contract, from_block, to_block)

    def events_in(self, receipt: TxReceipt) -> list[ContractEvent]:
        """This contract's events in one transaction."""
        return receipt_events(self.contract, receipt)

    def _fee(self, messages: int) -> int:
        return self._core().message_fee() * messages

    def _core(self) -> MessageCoreContract:
        return MessageCoreContract(self.chain, self.chain.call(self.contract.functions.core()))
