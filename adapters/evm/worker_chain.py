"""The EVM worker chain backend: WorkerHub through web3 (calls run in a worker thread)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import TypeVar

from requests.exceptions import RequestException
from web3 import Web3
from web3.exceptions import Web3Exception

from fedrelay.adapters.evm import (
    ContractEvent,
    ContractRevert,
    EvmChain,
    EvmError,
    HubTaskState,
    Signer,
    WorkerHubContract,
    address_to_bytes32,
    hub_assignments,
    hub_settlements,
)
from fedrelay.adapters.evm.signed_commitments import (
    SignedBatch,
    SignedCommitment,
    commitment_digest,
    recover_signer,
)
from fedrelay.ports.worker_chain import (
    AssignedTask,
    ChainPoll,
    ChainRejected,
    ChainUnavailable,
    CommitReceipt,
    OfferRecording,
    Outcome,
    SettledTask,
    StakeStatus,
    TaskKey,
    UpdateCommitment,
)
from fedrelay.protocol.offers import CommitmentOffer
from fedrelay.protocol.redact import redact_text, redact_url
from fedrelay.protocol.wormhole import MAX_BATCH, task_id

#: Reads of the pending commitments before a publisher gives the round up to others.
_PUBLISH_ATTEMPTS = 3
#: Blocks read per ``eth_getLogs`` request.
LOG_RANGE = 2_000
LOCK_UNAVAILABLE = 2
"""``WorkerHub.RefusalReason.LockUnavailable``: the worker's free stake did not cover the lock."""
EVM_WORKER_CHAIN = 4

_T = TypeVar("_T")


class EvmWorkerChain:
    """A worker's WorkerHub on an EVM chain, as a
    :class:`~fedrelay.ports.worker_chain.WorkerChain`."""

    #: The blocks before the cursor each poll reads again (:meth:`poll`).
    REREAD_BLOCKS = 2

    def __init__(
        self,
        rpc_url: str,
        hub_address: str,
        private_key: str | bytes,
        *,
        wormhole_chain: int = EVM_WORKER_CHAIN,
        confirmations: int = 0,
        start_block: int = 0,
    ) -> None:
        """Connect to the chain and the hub.

        Args:
            rpc_url: The chain's JSON-RPC endpoint.
            hub_address: The WorkerHub's address.
            private_key: The worker's secp256k1 key (never logged; the repr shows the address).
            wormhole_chain: The chain's Wormhole id.
            confirmations: Blocks an event must be under before the worker acts on it.
            start_block: The first block to read (the hub's deployment block saves scanning).

        Raises:
            ChainUnavailable: The endpoint does not answer.
        """
        try:
            Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 10})).eth.block_number  # noqa: B018
        except (RequestException, Web3Exception, OSError, ValueError) as exc:
            raise ChainUnavailable(
                f"the EVM RPC endpoint {redact_url(rpc_url)} does not answer; check --rpc-url "
                f"({redact_text(str(exc), [rpc_url])})"
            ) from None
        self._chain = EvmChain(rpc_url)
        self.hub = WorkerHubContract(self._chain, hub_address)
        self._signer = Signer(private_key)
        self._wormhole_chain = wormhole_chain
        self._confirmations = confirmations
        self._start_block = start_block

    def __repr__(self) -> str:
        return f"EvmWorkerChain(hub={self.hub.address}, worker={self._signer.address})"

    @property
    def wormhole_chain(self) -> int:
        """The chain's Wormhole id."""
        return self._wormhole_chain

    @property
    def worker_key(self) -> bytes:
        """The worker's address left-padded to 32 bytes."""
        return address_to_bytes32(self._signer.address)

    @property
    def address(self) -> str:
        """The worker's checksummed address."""
        return str(self._signer.address)

    async def _run(self, call: Callable[[], _T]) -> _T:
        try:
            return await asyncio.to_thread(call)
        except (RequestException, OSError) as exc:
            raise ChainUnavailable(f"the EVM worker chain stopped answering: {exc}") from exc
        except EvmError as exc:
            raise ChainRejected(f"the WorkerHub refused: {exc}") from exc

    async def stake_status(self) -> StakeStatus:
        """The worker's stake record (wei)."""
        staker = await self._run(lambda: self.hub.staker(self._signer.address))
        return StakeStatus(
            staker.staked,
            staker.registered,
            staker.active_tasks,
            staker.unbonding,
            staker.unbonding_ready_at if staker.unbonding else 0,
        )

    async def stake_and_register(self, stake: int, payout: bytes, capabilities: int) -> None:
        """Top the bonded stake up to ``stake`` wei, then register."""
        status = await self.stake_status()
        if status.staked < stake:
            await self._run(lambda: self.hub.stake(self._signer, stake - status.staked))
        await self._run(lambda: self.hub.register(self._signer, payout, capabilities))

    async def poll(self, cursor: int) -> ChainPoll:
        """This worker's entries of the TASK_ASSIGNED and ROUND_SETTLED messages the hub applied
        (its ``TasksAssigned`` and ``TasksSettled`` events) from block ``cursor`` on, and from the
        :attr:`REREAD_BLOCKS` blocks before it again: a node may answer ``eth_getLogs`` for its
        newest block before it serves that block's logs, and a task left out then would be
        missed (the node takes a task or a settlement it knows once). An assignment counts when
        the hub holds its task (``getTask``; a refused entry left none)."""
        latest = await self._run(lambda: int(self._chain.w3.eth.block_number))
        last = latest - self._confirmations
        first = max(cursor - self.REREAD_BLOCKS, self._start_block, 0)
        events = await self._in_spans(first, last, self.hub.events)
        me = self.worker_key
        chain = self._wormhole_chain
        assigned: list[AssignedTask] = []
        for a in hub_assignments(events, me):
            task = await self._run(partial(self.hub.task, a.job_id, a.round, me))
            if task.state == HubTaskState.NONE:
                continue  # refused (TaskRefused), or its slot long taken by a later round
            assigned.append(
                AssignedTask(
                    TaskKey(a.job_id, a.round),
                    task_id(a.job_id, a.round, chain, me),
                    a.shard,
                    a.deadline,
                    release_at=task.release_at,
                )
            )
        settled = tuple(
            SettledTask(s.task_id, Outcome(int(s.outcome)))
            for s in hub_settlements(events, chain, me)
        )
        if any(self._starved(e) for e in events):
            # Locks of settled tasks (earlier jobs' last rounds) left too little free stake for
            # a task: free them, so that the next assignment finds the stake.
            await self.release_settled_locks()
        return ChainPoll(tuple(assigned), settled, max(cursor, last + 1))

    async def _in_spans(
        self, first: int, last: int, read: Callable[[int, int], Iterable[_T]]
    ) -> list[_T]:
        """``read(start, end)`` over blocks ``first..last`` in spans of :data:`LOG_RANGE`
        blocks (what one ``eth_getLogs`` may ask for), the results in block order."""
        found: list[_T] = []
        start = first
        while start <= last:
            end = min(last, start + LOG_RANGE - 1)
            found.extend(await self._run(partial(read, start, end)))
            start = end + 1
        return found

    def _starved(self, event: ContractEvent) -> bool:
        """Whether ``event`` refused this worker a task for want of free stake."""
        return (
            event.name == "TaskRefused"
            and bytes(event.args["workerKey"]) == self.worker_key
            and int(event.args["reason"]) == LOCK_UNAVAILABLE
        )

    async def release_expired_task(self, key: TaskKey) -> None:
        """``releaseExpiredTask`` (publishes STAKE_CHANGED TASK_RELEASED; pays the message fee)."""
        hub = self.hub

        def send() -> None:
            function = hub.contract.functions.releaseExpiredTask(key.job_id, key.round)
            hub.chain.transact(self._signer, function, value=hub.message_fee())

        await self._run(send)

    async def is_committed(self, key: TaskKey) -> bool:
        """Whether the hub holds this worker's commitment (or already settled the task)."""
        task = await self._run(lambda: self.hub.task(key.job_id, key.round, self.worker_key))
        return task.state in (HubTaskState.COMMITTED, HubTaskState.SETTLED)

    async def commit(self, commitment: UpdateCommitment) -> CommitReceipt:
        """``commitUpdate`` (the commitment joins the round's commit log); returns the
        transaction hash."""
        key = commitment.key
        receipt = await self._run(
            lambda: self.hub.commit_update(
                self._signer,
                key.job_id,
                key.round,
                commitment.update_hash,
                commitment.transcript_root,
                commitment.data_root,
                commitment.num_samples,
                commitment.train_loss,
            )
        )
        return CommitReceipt("0x" + bytes(receipt["transactionHash"]).hex())

    async def sign_commitment(self, commitment: UpdateCommitment) -> bytes:
        """The worker's EIP-712 signature of ``commitment`` for this hub (64 bytes, compact), for
        anyone to record with ``commitSigned``."""
        key = commitment.key
        signed = await self._run(
            lambda: self.hub.sign_commitment(
                self._signer, key.job_id, key.round, commitment.entry(self.worker_key)
            )
        )
        return signed.signature

    async def record_offers(
        self, key: TaskKey, offers: Sequence[CommitmentOffer]
    ) -> OfferRecording:
        """``commitSigned`` with the offers of ``key``'s round on this chain whose signatures
        recover to their workers and whose workers the round's commit log does not hold yet;
        the rest are left out before the transaction (a coordinator passing on a forged or
        stale offer costs no gas). Nothing is sent when nothing is left."""

        def record() -> OfferRecording:
            refused: dict[bytes, str] = {}
            held = {c.worker_key for c in self.hub.round_commitments(key.job_id, key.round)}
            chain_id = self._chain.chain_id
            chosen: dict[bytes, SignedCommitment] = {}
            for offer in offers:
                worker = offer.commitment.worker_key
                if (offer.job_id, offer.round, offer.chain) != (
                    key.job_id,
                    key.round,
                    self._wormhole_chain,
                ):
                    refused[worker] = "an offer for another job, round or chain"
                    continue
                if worker in held or worker in chosen:
                    continue
                if len(offer.signature) != 64:
                    refused[worker] = f"a {len(offer.signature)}-byte signature (64 expected)"
                    continue
                signed = SignedCommitment.of(offer.commitment, offer.signature)
                digest = commitment_digest(
                    chain_id, self.hub.address, key.job_id, key.round, offer.commitment.digest()
                )
                signer = recover_signer(digest, signed.r, signed.vs)
                if signer is None or address_to_bytes32(signer) != worker:
                    refused[worker] = "its signature is not its worker's"
                    continue
                chosen[worker] = signed
            if not chosen:
                return OfferRecording(refused=refused)
            batch = self._record_and_publish(key, list(chosen.values()))
            for skipped in batch.skipped:
                refused[address_to_bytes32(skipped.worker)] = skipped.reason.name
            return OfferRecording(
                "0x" + batch.transaction_hash.hex(),
                tuple(w for w in chosen if w not in refused),
                refused,
            )

        return await self._run(record)

    def _record_and_publish(self, key: TaskKey, entries: list[SignedCommitment]) -> SignedBatch:
        """Record ``entries`` and publish them with the round's pending commitments:
        ``commitSignedAndPublish`` of as many as fit one message after the pending ones, then
        of 32 at a time (each transaction one UPDATE_COMMITTED). When the pending ones fill a
        message, or the log moved under us, the rest goes in one ``commitSigned`` and the
        publish step sends them on. Returns the transactions' sum (the first's hash)."""
        pending = self.hub.pending_commitments(key.job_id, key.round)
        batches: list[SignedBatch] = []
        at = 0
        while at < len(entries) and len(pending) < MAX_BATCH:
            chunk = entries[at : at + MAX_BATCH - len(pending)]
            try:
                batches.append(
                    self.hub.commit_signed_and_publish(
                        self._signer, key.job_id, key.round, pending, chunk
                    )
                )
            except ContractRevert as exc:
                if exc.name not in ("CommitmentsMismatch", "NothingToPublish"):
                    raise
                break
            at += len(chunk)
            pending = ()
        if at < len(entries):
            batches.append(
                self.hub.commit_signed(self._signer, key.job_id, key.round, entries[at:])
            )
        return SignedBatch(
            batches[0].transaction_hash,
            sum(b.gas_used for b in batches),
            sum(b.recorded for b in batches),
            [s for b in batches for s in b.skipped],
        )

    async def commitment_published(self, key: TaskKey) -> bool:
        """Whether this worker's commitment for ``key`` is no longer pending on the hub."""

        def read() -> bool:
            if not self.hub.commit_log(key.job_id, key.round).pending:
                return True
            pending = self.hub.pending_commitments(key.job_id, key.round)
            return all(c.worker_key != self.worker_key for c in pending)

        return await self._run(read)

    async def publish_commitments(self, key: TaskKey) -> int:
        """``publishCommitments`` with the round's pending commitments, read from the hub's
        events; a commitment landing meanwhile, or another publisher, makes it read again."""

        def publish() -> int:
            for _ in range(_PUBLISH_ATTEMPTS):
                pending = self.hub.pending_commitments(key.job_id, key.round)
                if not pending:
                    return 0
                try:
                    self.hub.publish_commitments(self._signer, key.job_id, key.round, pending)
                except ContractRevert as exc:
                    if exc.name not in ("CommitmentsMismatch", "NothingToPublish"):
                        raise
                    continue  # the log moved under us: read it again
                return len(pending)
            return 0

        return await self._run(publish)

    async def begin_unstake(self, amount: int) -> None:
        """``requestUnbond(amount)``, once the locks of this worker's settled tasks are freed
        (:meth:`release_settled_locks`)."""
        await self.release_settled_locks()
        await self._run(lambda: self.hub.request_unbond(self._signer, amount))

    async def release_settled_locks(self) -> int:
        """Free the locks this worker's settled tasks still hold (``releaseSettled`` for each
        job that assigned it a task since the start block and holds such a lock: a settlement
        without a slash leaves a task's lock to the job's task two rounds on, which a job's
        last two rounds never have). Returns how many locks were freed."""
        me = self._signer.address
        if (await self._run(lambda: self.hub.staker(me))).active_tasks == 0:
            return 0  # no task holds a lock (a job's lock may be zero)
        latest = await self._run(lambda: int(self._chain.w3.eth.block_number))
        first = max(self._start_block, 0)
        jobs = set(await self._in_spans(first, latest, partial(self.hub.jobs_of, me)))
        freed = 0
        for job_id in sorted(jobs):
            count = await self._run(partial(self.hub.settled_locks, job_id, [me]))
            if count:
                await self._run(partial(self.hub.release_settled, self._signer, job_id, [me]))
                freed += count
        return freed

    async def withdraw_stake(self) -> None:
        """``withdrawStake()``."""
        await self._run(lambda: self.hub.withdraw_stake(self._signer))
