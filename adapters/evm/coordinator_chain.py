"""The coordinator chain on EVM: :class:`~fedrelay.ports.coordinator_chain.CoordinatorChain` over
JobMarket.

JobMarket's stake events name workers and tasks by id (``StakeUpdated(workerId, ...)``,
``TaskRefused(taskId, workerId)``, ``SlashDisputed(jobId, round, taskId, answerBy)``); they are
passed on with the ids, and the service resolves them against the workers and rounds it knows.

web3 is synchronous; every call runs in a worker thread so the service's event loop (and the
HTTP API in the same process) keeps serving. Every transaction is sent inside the ``fence`` the
composition root gives (the leader lease, :mod:`fedrelay.ports.leader_lease`): a replica that no
longer leads has its transaction refused before it is signed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import replace
from functools import partial
from typing import TypeVar, cast

from web3.types import BlockIdentifier

from fedrelay.adapters.evm import ContractRevert, EvmChain, EvmError, JobMarketContract, Signer
from fedrelay.adapters.evm.chain import first_block_reaching
from fedrelay.adapters.evm.distributor import DistributorRoot, RewardDistributorContract
from fedrelay.adapters.evm.events import ContractEvent
from fedrelay.adapters.evm.market import JobStatus, TaskState, received_commitments
from fedrelay.adapters.evm.market import RoundResult as EvmRoundResult
from fedrelay.ports.coordinator_chain import (
    BlockRef,
    ChainCommitment,
    ChainError,
    ChainEvent,
    ChainJob,
    ChainRefused,
    ChainRound,
    ChainRoundPhase,
    JobPosted,
    RoundChallenged,
    RoundSettled,
    SlashDisputed,
    SlashMode,
    StakeChanged,
    StakeReason,
    TaskRefused,
    UpdateArrived,
    WorkerJoined,
    WorkerResult,
)
from fedrelay.ports.reward_roots import DistributorState, ProposedRoot
from fedrelay.protocol.challenges import NATIVE_DECIMALS
from fedrelay.protocol.rewards import RewardClaim, RewardTree
from fedrelay.protocol.rounds import WorkerRef
from fedrelay.protocol.wormhole import Task, task_id

T = TypeVar("T")

_ERC20_DECIMALS = [
    {
        "type": "function",
        "name": "decimals",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint8"}],
    }
]


def token_decimals(chain: EvmChain, token: str) -> int:
    """A reward token's decimals: 18 for the native token (address zero), else the ERC-20's
    ``decimals()``.

    Raises:
        EvmError: The token cannot be read.
    """
    if int(token, 16) == 0:
        return NATIVE_DECIMALS
    erc20 = chain.w3.eth.contract(address=chain.w3.to_checksum_address(token), abi=_ERC20_DECIMALS)
    return int(chain.call(erc20.functions.decimals()))


class EvmCoordinatorChain:
    """JobMarket on an EVM chain, with the aggregator's key for the calls it sends."""

    def __init__(
        self,
        market: JobMarketContract,
        aggregator: Signer,
        finality: str | int = "latest",
        *,
        fence: Callable[[], AbstractAsyncContextManager[object]] | None = None,
    ) -> None:
        """Follow ``market``; send transactions as ``aggregator``.

        Args:
            market: The JobMarket binding.
            aggregator: The key JobMarket knows as its aggregator.
            finality: The block tag the service follows (``latest``, ``safe``, ``finalized``),
                or a number of confirmations to stay behind the newest block.
            fence: Entered around every transaction sent (raising refuses it before it is
                signed); None: no fence (a single coordinator).
        """
        self._fence = fence or (lambda: nullcontext())
        self._market = market
        self._signer = aggregator
        self._finality = finality
        self._timestamps: dict[int, int] = {}
        self._token_decimals: dict[str, int] = {}

    async def _run(self, call: Callable[[], T], contract: str = "JobMarket") -> T:
        try:
            return await asyncio.to_thread(call)
        except ContractRevert as exc:
            raise ChainRefused(f"{contract} refused the call: {exc}") from exc
        except EvmError as exc:
            raise ChainError(f"coordinator chain call failed: {exc}") from exc

    async def _send(self, call: Callable[[], T], contract: str = "JobMarket") -> T:
        async with self._fence():
            return await self._run(call, contract)

    def _block(self, number: BlockIdentifier) -> BlockRef:
        block = self._market.chain.w3.eth.get_block(number)
        ref = BlockRef(
            int(block["number"]),
            bytes(block["hash"]),
            int(block["timestamp"]),
            bytes(block.get("mixHash") or bytes(32)),
        )
        self._timestamps[ref.number] = ref.timestamp
        return ref

    async def head(self) -> BlockRef:
        """See :meth:`CoordinatorChain.head`."""
        finality = self._finality
        if isinstance(finality, str):
            tag = cast(BlockIdentifier, finality)  # a tag the chains file validated
            return await self._run(lambda: self._block(tag))
        latest = await self._run(lambda: self._block("latest"))
        return await self.block(max(0, latest.number - finality))

    async def block(self, number: int) -> BlockRef:
        """See :meth:`CoordinatorChain.block`."""
        return await self._run(lambda: self._block(number))

    async def latest(self) -> BlockRef:
        """See :meth:`CoordinatorChain.latest`."""
        return await self._run(lambda: self._block("latest"))

    async def first_block_after(self, timestamp: int, from_block: int) -> BlockRef | None:
        """See :meth:`CoordinatorChain.first_block_after` (a binary search over block numbers)."""
        head = await self.head()
        if head.timestamp <= timestamp:
            return None

        def search() -> BlockRef:
            # The head is past `timestamp`, so the answer is in from_block..head.
            low, high = max(0, from_block), head.number
            return self._block(first_block_reaching(self._timestamp, timestamp + 1, low, high))

        return await self._run(search)

    def _timestamp(self, number: int) -> int:
        if number not in self._timestamps:
            self._block(number)
        return self._timestamps[number]

    def _convert(self, event: ContractEvent) -> list[ChainEvent]:
        """The port's events for one contract event (one per commitment of an
        ``UpdatesReceived``; none for an event the port does not name)."""
        if event.name == "UpdatesReceived":
            args, block = event.args, event.block_number
            at = self._timestamp(block)
            return [
                UpdateArrived(
                    int(args["jobId"]),
                    int(args["round"]),
                    WorkerRef(int(args["workerChain"]), c.worker_key),
                    c.update_hash,
                    block,
                    at,
                )
                for c in received_commitments({"args": args})
            ]
        found = self._convert_one(event)
        return [] if found is None else [found]

    def _convert_one(self, event: ContractEvent) -> ChainEvent | None:
        args, block = event.args, event.block_number
        at = self._timestamp(block)
        match event.name:
            case "JobPosted":
                return JobPosted(int(args["jobId"]), block, at)
            case "WorkerRegistered":
                worker = WorkerRef(int(args["workerChain"]), bytes(args["workerKey"]))
                return WorkerJoined(worker, int(args["stake"]), block, at)
            case "RoundChallenged" | "ProposalDisproved":
                # Challenged by the challenger or disproved by anyone: the proposal is void
                # and the round collects again.
                return RoundChallenged(int(args["jobId"]), int(args["round"]), block, at)
            case "RoundSettled":
                return RoundSettled(
                    int(args["jobId"]), int(args["round"]), bytes(args["modelHash"]), block, at
                )
            case "StakeUpdated":
                return StakeChanged(
                    bytes(args["workerId"]),
                    int(args["stake"]),
                    int(args["nonce"]),
                    StakeReason(int(args["reason"])),
                    block,
                    at,
                )
            case "TaskRefused":
                return TaskRefused(bytes(args["taskId"]), bytes(args["workerId"]), block, at)
            case "SlashDisputed":
                return SlashDisputed(
                    int(args["jobId"]),
                    int(args["round"]),
                    bytes(args["taskId"]),
                    int(args["answerBy"]),
                    block,
                    at,
                )
        return None

    async def events(self, from_block: int, to_block: int) -> Sequence[ChainEvent]:
        """See :meth:`CoordinatorChain.events`."""

        def read() -> list[ChainEvent]:
            found = self._market.events(from_block, to_block)
            converted = [e for raw in found for e in self._convert(raw)]
            credited = _only_credits(found)
            return [
                replace(e, credited_to=credited.get((e.job_id, e.round)))
                if isinstance(e, RoundSettled)
                else e
                for e in converted
            ]

        return await self._run(read)

    async def job(self, job_id: int) -> ChainJob:
        """See :meth:`CoordinatorChain.job`."""

        def read() -> ChainJob:
            job = self._market.job(job_id)
            functions = self._market.contract.functions
            chains = tuple(
                int(c) for c in self._market.chain.call(functions.jobWorkerChains(job_id))
            )
            # The slash policy and timeouts (Job fields 11..15: rejectedSlash, missedSlash,
            # slashMode, releaseAfter, progressTimeout).
            raw = self._market.chain.call(functions.getJob(job_id))
            return ChainJob(
                job_id=job_id,
                open=job.status is JobStatus.OPEN,
                num_rounds=job.num_rounds,
                current_round=job.current_round,
                workers_per_round=job.workers_per_round,
                min_stake=job.min_stake,
                model_hash=job.model_hash,
                config_hash=job.config_hash,
                reward_per_round=job.reward_per_round,
                worker_chains=chains,
                reward_decimals=self._decimals(job.token),
                reward_token=bytes.fromhex(job.token.removeprefix("0x")),
                rejected_slash=int(raw[11]),
                missed_slash=int(raw[12]),
                slash_mode=SlashMode(int(raw[13])),
                release_after=int(raw[14]),
                progress_timeout=int(raw[15]),
            )

        return await self._run(read)

    def _decimals(self, token: str) -> int:
        if token not in self._token_decimals:
            self._token_decimals[token] = token_decimals(self._market.chain, token)
        return self._token_decimals[token]

    async def round(self, job_id: int, round_number: int) -> ChainRound:
        """See :meth:`CoordinatorChain.round`."""
        found = await self._run(lambda: self._market.round(job_id, round_number))
        return ChainRound(
            ChainRoundPhase(int(found.phase)),
            found.assigned,
            found.challenge_deadline,
            found.proposed_model_hash,
        )

    async def commitment(
        self, job_id: int, round_number: int, worker: WorkerRef
    ) -> ChainCommitment:
        """See :meth:`CoordinatorChain.commitment`."""
        found = await self._run(
            lambda: self._market.commitment(job_id, round_number, worker.chain, worker.key)
        )
        return ChainCommitment(
            assigned=found.state is not TaskState.NONE,
            committed=found.state is TaskState.COMMITTED,
            update_hash=found.update_hash,
            transcript_root=found.transcript_root,
            data_root=found.data_root,
            num_samples=found.num_samples,
            train_loss=found.train_loss,
        )

    async def assigned_keys(self, job_id: int, round_number: int) -> Mapping[int, frozenset[bytes]]:
        """See :meth:`CoordinatorChain.assigned_keys` (the round's tasks rebuilt from the logs
        once)."""
        tasks = await self._run(lambda: self._market.round_tasks(job_id, round_number))
        return {chain: frozenset(keys) for chain, keys in tasks.assigned.items()}

    async def stake(self, worker: WorkerRef) -> int:
        """See :meth:`CoordinatorChain.stake`."""
        found = await self._run(lambda: self._market.worker(worker.chain, worker.key))
        return found.stake if found.registered else 0

    async def dispute_open(self, job_id: int, round_number: int, worker: WorkerRef) -> bool:
        """See :meth:`CoordinatorChain.dispute_open`."""
        task = task_id(job_id, round_number, worker.chain, worker.key)
        functions = self._market.contract.functions

        def read() -> bool:
            dispute = self._market.chain.call(functions.getDispute(task))
            found = self._market.round(job_id, round_number)
            # Dispute(proposal, answerBy, answered, answer): open while it names the pending
            # proposal and is unanswered.
            return int(dispute[0]) != 0 and int(dispute[0]) == found.proposal and not dispute[2]

        return await self._run(read)

    async def answer_dispute(
        self, job_id: int, round_number: int, worker: WorkerRef, evidence: bytes
    ) -> None:
        """See :meth:`CoordinatorChain.answer_dispute`."""
        function = self._market.contract.functions.answerDispute(
            job_id, round_number, worker.chain, worker.key, evidence
        )
        await self._send(lambda: self._market.chain.transact(self._signer, function))

    async def max_batch(self, worker_chain: int) -> int:
        """See :meth:`CoordinatorChain.max_batch`."""
        function = self._market.contract.functions.maxBatch(worker_chain)
        return int(await self._run(lambda: self._market.chain.call(function)))

    async def challenge_window(self) -> int:
        """See :meth:`CoordinatorChain.challenge_window`."""
        function = self._market.contract.functions.challengeWindow()
        return int(await self._run(lambda: self._market.chain.call(function)))

    async def assign_tasks(
        self, job_id: int, worker_chain: int, deadline: int, tasks: Sequence[Task]
    ) -> None:
        """See :meth:`CoordinatorChain.assign_tasks`."""
        await self._send(
            lambda: self._market.assign_tasks(self._signer, job_id, worker_chain, deadline, tasks)
        )

    async def finalize_round(
        self, job_id: int, round_number: int, model_hash: bytes, results: Sequence[WorkerResult]
    ) -> None:
        """See :meth:`CoordinatorChain.finalize_round`."""
        # The chain takes the job's policy amount for each fault.
        entries = [
            EvmRoundResult(
                r.worker.chain, r.worker.key, r.outcome, r.reward, int(r.fault), r.evidence
            )
            for r in results
        ]
        await self._send(
            lambda: self._market.finalize_round(
                self._signer, job_id, round_number, model_hash, entries
            )
        )

    async def settle_round(self, job_id: int, round_number: int) -> None:
        """See :meth:`CoordinatorChain.settle_round`."""
        await self._send(lambda: self._market.settle_round(self._signer, job_id, round_number))

    async def round_payouts(self, job_id: int, round_number: int) -> Mapping[bytes, int]:
        """See :meth:`CoordinatorChain.round_payouts` (the proposal's results from its
        ``ResultsProposed``, each worker's payout address from its registration)."""

        def read() -> dict[bytes, int]:
            paid: dict[bytes, int] = {}
            for result in self._market.proposal(job_id, round_number):
                if result.reward == 0:
                    continue
                payout = self._market.worker(result.worker_chain, result.worker_key).payout
                account = bytes.fromhex(payout.removeprefix("0x"))
                paid[account] = paid.get(account, 0) + result.reward
            return paid

        return await self._run(read)

    def reward_roots(self, distributor: str, *, from_block: int = 0) -> EvmRewardRoots:
        """The RewardDistributor at ``distributor``, with this chain's signer and fence; its
        vetoes are read from ``from_block`` on."""
        contract = RewardDistributorContract(self._market.chain, distributor)
        return EvmRewardRoots(contract, self, from_block=from_block)


class EvmRewardRoots:
    """:class:`~fedrelay.ports.reward_roots.RewardRoots` over a RewardDistributor, proposing as
    the coordinator chain's aggregator (the distributor's updater) inside its fence."""

    #: Blocks per ``eth_getLogs`` request when reading the vetoes.
    LOG_CHUNK = 10_000

    def __init__(
        self,
        distributor: RewardDistributorContract,
        chain: EvmCoordinatorChain,
        *,
        from_block: int = 0,
    ) -> None:
        """Drive ``distributor`` through ``chain``; read its ``RootVetoed`` events from
        ``from_block`` on (a block no later than its deployment reads them all)."""
        self._distributor = distributor
        self._chain = chain
        self._next_block = from_block  # the first block whose vetoes are not read yet
        self._vetoed: set[bytes] = set()

    async def state(self) -> DistributorState:
        """See :meth:`RewardRoots.state`."""

        def read() -> DistributorState:
            d = self._distributor
            return DistributorState(
                address=bytes.fromhex(d.address.removeprefix("0x")),
                chain_id=d.chain_id(),
                live=_root(d.live_root()),
                pending=_root(d.pending_root()),
            )

        return await self._chain._run(read, "the RewardDistributor")

    async def vetoed(self) -> frozenset[bytes]:
        """See :meth:`RewardRoots.vetoed`: the blocks up to the followed head not read before,
        in chunks of :attr:`LOG_CHUNK`; a failed read leaves the rest for the next call."""
        head = (await self._chain.head()).number
        while self._next_block <= head:
            last = min(head, self._next_block + self.LOG_CHUNK - 1)
            read = partial(self._distributor.vetoed_roots, self._next_block, last)
            self._vetoed.update(await self._chain._run(read, "the RewardDistributor"))
            self._next_block = last + 1
        return frozenset(self._vetoed)

    async def propose(self, tree: RewardTree) -> None:
        """See :meth:`RewardRoots.propose`."""
        signer = self._chain._signer
        propose = partial(self._distributor.propose_root, signer, tree)
        await self._chain._send(propose, "the RewardDistributor")

    async def claimed(self, account: bytes, token: bytes) -> int:
        """See :meth:`RewardRoots.claimed`."""
        read = partial(self._distributor.claimed, "0x" + account.hex(), "0x" + token.hex())
        return await self._chain._run(read, "the RewardDistributor")

    async def claim(self, claims: Sequence[RewardClaim]) -> None:
        """See :meth:`RewardRoots.claim` (``claimBatch`` from the aggregator's key)."""
        pay = partial(self._distributor.claim_batch, self._chain._signer, list(claims))
        await self._chain._send(pay, "the RewardDistributor")


def _only_credits(found: Sequence[ContractEvent]) -> dict[tuple[int, int], bytes]:
    """The account each settlement among ``found`` credited, by (job, round), for those whose
    transaction has exactly one ``RewardCredited``: with a rewards account set, settleRound
    credits it the round's total, then emits ``RoundSettled``, in the same transaction."""
    credits: dict[bytes, list[bytes]] = {}
    for event in found:
        if event.name == "RewardCredited":
            account = bytes.fromhex(str(event.args["account"]).removeprefix("0x"))
            credits.setdefault(event.transaction_hash, []).append(account)
    only: dict[tuple[int, int], bytes] = {}
    for event in found:
        accounts = credits.get(event.transaction_hash, [])
        if event.name == "RoundSettled" and len(accounts) == 1:
            only[(int(event.args["jobId"]), int(event.args["round"]))] = accounts[0]
    return only


def _root(found: DistributorRoot) -> ProposedRoot | None:
    if found.epoch == 0:
        return None
    return ProposedRoot(
        bytes(found.root), found.count, found.epoch, found.live_at, bytes(found.content)
    )
