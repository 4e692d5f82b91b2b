"""The Solana worker chain backend: the worker program through its client.

Tasks are accounts, not events: a poll reads this worker's task accounts (a ``getProgramAccounts``
query filtered by kind and worker key). The cursor is unused, the node remembers which tasks it
saw.

Transactions race on a busy chain: the program writes each published message to the account of
the next sequence, read just before sending, so two workers sending at once name the same
account and one is refused (``STALE_SEQUENCE``); and a blockhash fetched before another
transaction may no longer be accepted (``BlockhashNotFound``). Both are refused at preflight,
before anything lands, so :class:`SolanaWorkerChain` sends again with a fresh blockhash and
re-derived accounts, a bounded number of times with backoff. An answer that leaves open whether
the transaction landed (a lost connection, a confirmation timeout) is followed by a check of the
chain before anything is sent again, so a commitment or registration never lands twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TypeVar

from httpx import HTTPError
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.models import MemcmpOpts
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from fedrelay.adapters.solana import instructions as ix
from fedrelay.adapters.solana._base58 import b58encode
from fedrelay.adapters.solana.client import WorkerProgramClient
from fedrelay.adapters.solana.errors import AccountNotFound, ConfirmationTimeout, TransactionFailed
from fedrelay.adapters.solana.layout import SOLANA_CHAIN, Kind, ProgramError, TaskAccount
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
from fedrelay.protocol.wormhole import task_id

log = logging.getLogger(__name__)

_TASK_KIND = struct.pack("<Q", Kind.TASK)
_WORKER_KEY_OFFSET = 8
#: Refusals that a lost race explains: sending again with fresh state can succeed.
_RACE_ERRORS = (ProgramError.STALE_SEQUENCE,)
_RACE_TEXTS = ("BlockhashNotFound",)
#: publish_commitments refusals that a concurrent publisher explains.
_PUBLISH_RACE_ERRORS = (ProgramError.ALREADY_PUBLISHED,)
#: Answers that leave open whether the transaction landed.
_UNCERTAIN = (ConfirmationTimeout, SolanaRpcException, HTTPError, OSError)

_T = TypeVar("_T")


@contextlib.contextmanager
def _reading(what: str) -> Iterator[None]:
    """Report an endpoint that does not answer a read as :class:`ChainUnavailable`."""
    try:
        yield
    except (SolanaRpcException, RPCException, HTTPError, OSError) as exc:
        raise ChainUnavailable(f"the Solana RPC endpoint did not answer {what}: {exc}") from exc


def lost_race(exc: TransactionFailed) -> bool:
    """Whether a refusal is one a concurrent transaction explains (sending again may succeed)."""
    return exc.program_error in _RACE_ERRORS or any(t in str(exc) for t in _RACE_TEXTS)


class SolanaWorkerChain:
    """The worker program on Solana as a :class:`~fedrelay.ports.worker_chain.WorkerChain`."""

    #: Sends of one transaction before giving up.
    ATTEMPTS = 8
    #: Pause after the first failed attempt (seconds); doubled after each, with jitter.
    BACKOFF_S = 0.05
    #: Longest pause between attempts (seconds).
    MAX_BACKOFF_S = 1.0

    def __init__(self, rpc: AsyncClient, program_id: Pubkey, keypair: Keypair) -> None:
        """Bind the backend to an RPC connection, the program and the worker's keypair."""
        self.client = WorkerProgramClient(rpc, program_id)
        self._keypair = keypair
        self._jitter = random.SystemRandom()

    async def _send(
        self,
        what: str,
        send: Callable[[], Awaitable[_T]],
        landed: Callable[[], Awaitable[bool]],
    ) -> _T | None:
        """Run ``send`` until it succeeds, sending again after a lost race or an unclear answer.

        Before every attempt after the first, ``landed`` is asked whether an earlier attempt
        took effect after all; then nothing is sent and None is returned.

        Raises:
            ChainRejected: The program refused the transaction for a reason no race explains.
            ChainUnavailable: Every attempt lost a race or got no clear answer (the caller may
                try again later: nothing was refused for good).
        """
        last: Exception | None = None
        for attempt in range(1, self.ATTEMPTS + 1):
            if attempt > 1:
                pause = min(self.MAX_BACKOFF_S, self.BACKOFF_S * 2 ** (attempt - 2))
                await asyncio.sleep(pause * self._jitter.uniform(0.5, 1.5))
                try:
                    if await landed():
                        return None
                except (ChainUnavailable, *_UNCERTAIN) as exc:
                    last = exc
                    continue
            try:
                return await send()
            except TransactionFailed as exc:
                if not lost_race(exc):
                    raise ChainRejected(f"the worker program refused {what}: {exc}") from exc
                last = exc
            except _UNCERTAIN as exc:
                last = exc
            log.info("%s: attempt %d of %d did not land (%s)", what, attempt, self.ATTEMPTS, last)
        raise ChainUnavailable(
            f"{what} did not land in {self.ATTEMPTS} attempts; the last answer was: {last}"
        )

    def __repr__(self) -> str:
        worker = self._keypair.pubkey()
        return f"SolanaWorkerChain(program={self.client.program_id}, worker={worker})"

    @classmethod
    async def connect(
        cls, rpc: AsyncClient, program_id: Pubkey, keypair: Keypair
    ) -> SolanaWorkerChain:
        """The backend, after checking that the endpoint answers.

        Raises:
            ChainUnavailable: The RPC endpoint does not answer.
        """
        try:
            await rpc.get_latest_blockhash(Confirmed)
        except (SolanaRpcException, RPCException, OSError) as exc:
            raise ChainUnavailable(
                f"the Solana RPC endpoint does not answer; check --rpc-url ({exc})"
            ) from None
        return cls(rpc, program_id, keypair)

    @property
    def wormhole_chain(self) -> int:
        """Solana's Wormhole id."""
        return SOLANA_CHAIN

    @property
    def worker_key(self) -> bytes:
        """The worker's public key."""
        return bytes(self._keypair.pubkey())

    async def stake_status(self) -> StakeStatus:
        """The worker's stake record (lamports); unregistered when it has none."""
        try:
            with _reading("a stake query"):
                account = await self.client.fetch_worker(self._keypair.pubkey())
        except AccountNotFound:
            return StakeStatus(0, False, 0)
        return StakeStatus(
            account.stake, True, account.assigned, account.unbonding, account.unbonding_at
        )

    async def stake_and_register(self, stake: int, payout: bytes, capabilities: int) -> None:
        """``register`` with ``stake`` lamports, or ``stake`` up to it when registered."""
        status = await self.stake_status()
        if status.registered:
            if status.staked < stake:
                missing = stake - status.staked
                await self._send(
                    "the stake",
                    lambda: self.client.stake(self._keypair, missing),
                    lambda: self._staked_at_least(stake),
                )
            return

        async def registered() -> bool:
            return (await self.stake_status()).registered

        await self._send(
            "the registration",
            lambda: self.client.register(
                self._keypair, stake_lamports=stake, payout=payout, capabilities=capabilities
            ),
            registered,
        )

    async def _staked_at_least(self, amount: int) -> bool:
        return (await self.stake_status()).staked >= amount

    async def _tasks(self) -> list[TaskAccount]:
        with _reading("the task poll"):
            found = await self.client.rpc.get_program_accounts(
                self.client.program_id,
                commitment=Confirmed,
                encoding="base64",
                filters=[
                    MemcmpOpts(offset=0, bytes=b58encode(_TASK_KIND)),
                    MemcmpOpts(offset=_WORKER_KEY_OFFSET, bytes=b58encode(self.worker_key)),
                ],
            )
        return [TaskAccount.decode(bytes(row.account.data)) for row in found.value]

    def _task_id(self, task: TaskAccount) -> bytes:
        return task_id(task.job_id, task.round, SOLANA_CHAIN, task.worker_key)

    async def poll(self, cursor: int) -> ChainPoll:
        """Every task account of this worker; settled ones also as settlements."""
        tasks = sorted(
            (t for t in await self._tasks() if not t.released), key=lambda t: (t.job_id, t.round)
        )
        assigned = tuple(
            AssignedTask(
                TaskKey(t.job_id, t.round),
                self._task_id(t),
                t.shard,
                t.deadline,
                t.model_hash,
                t.config_hash,
                t.release_at,
            )
            for t in tasks
        )
        settled = tuple(
            SettledTask(self._task_id(t), Outcome(t.outcome)) for t in tasks if t.settled
        )
        return ChainPoll(assigned, settled, cursor)

    async def _own_task(self, key: TaskKey) -> TaskAccount | None:
        """This worker's task account for ``key``, or None when there is none."""
        try:
            with _reading("a task query"):
                return await self.client.fetch_task(key.job_id, key.round, self.worker_key)
        except AccountNotFound:
            return None

    async def is_committed(self, key: TaskKey) -> bool:
        """Whether the task account records a commitment."""
        task = await self._own_task(key)
        return task is not None and task.committed

    async def sign_commitment(self, commitment: UpdateCommitment) -> None:
        """None: the program records only commitments their workers send (:meth:`commit`)."""
        return None

    async def record_offers(
        self, key: TaskKey, offers: Sequence[CommitmentOffer]
    ) -> OfferRecording:
        """Refused: the program records no signed commitments.

        Raises:
            ChainRejected: Always.
        """
        raise ChainRejected(
            f"the Solana worker program records no signed commitments ({len(offers)} offered "
            f"for {key}); each worker commits with its own transaction"
        )

    async def commit(self, commitment: UpdateCommitment) -> CommitReceipt:
        """``commit_update`` (the task account keeps the commitment; it goes out with
        :meth:`publish_commitments`); returns the transaction signature.

        A transaction refused at preflight by an expired blockhash is sent again; an attempt
        that may have landed is checked with :meth:`is_committed` first. When an earlier
        attempt turns out to have landed, the receipt's transaction is empty.

        Raises:
            ChainRejected: The program refused the commitment (not a lost race).
            ChainUnavailable: No attempt landed (races or no clear answer every time).
        """
        key = commitment.key
        arguments = ix.Commitment(
            key.job_id,
            key.round,
            commitment.update_hash,
            commitment.transcript_root,
            commitment.data_root,
            commitment.num_samples,
            commitment.train_loss,
        )
        receipt = await self._send(
            f"the commitment of {key}",
            lambda: self.client.commit_update(self._keypair, arguments),
            lambda: self.is_committed(key),
        )
        return CommitReceipt("" if receipt is None else str(receipt.signature))

    async def commitment_published(self, key: TaskKey) -> bool:
        """Whether this worker's commitment for ``key`` went out in an UPDATE_COMMITTED."""
        task = await self._own_task(key)
        return task is not None and task.published

    async def publish_commitments(self, key: TaskKey) -> int:
        """Publish every pending commitment of ``key``'s job round on this chain (anyone's), as
        many per UPDATE_COMMITTED as a transaction holds; this worker pays the messages.

        The pending tasks are read again before each transaction, so a task another publisher
        sent meanwhile is left out; a transaction that lost such a race (``ALREADY_PUBLISHED``,
        ``STALE_SEQUENCE``, an expired blockhash) is built again from a fresh read, and an
        unclear answer is settled by that read too.

        Returns:
            How many entries this call's transactions published (0 when none was pending).
            A transaction whose confirmation timed out counts only if its signature is found
            landed; one whose answer was lost with the connection counts the entries found
            published, which a concurrent publisher may have sent.

        Raises:
            ChainRejected: The program refused a publication for a reason no race explains.
            ChainUnavailable: Publishing kept failing to land.
        """
        per_transaction = self.client.commitments_per_transaction()
        published = 0
        failures = 0
        while True:
            with _reading("the pending commitments"):
                pending = await self.client.pending_commitments(key.job_id, key.round)
            if not pending:
                return published
            batch = [task.worker_key for task in pending[:per_transaction]]
            try:
                await self.client.publish_commitments(self._keypair, key.job_id, key.round, batch)
            except TransactionFailed as exc:
                if not (lost_race(exc) or exc.program_error in _PUBLISH_RACE_ERRORS):
                    raise ChainRejected(
                        f"the worker program refused the commitments of {key}: {exc}"
                    ) from exc
                last: Exception = exc
            except _UNCERTAIN as exc:
                last = exc
                published += await self._landed_entries(exc, key, batch)
            else:
                published += len(batch)
                failures = 0
                continue
            failures += 1
            log.info("the commitments of %s: attempt %d did not land (%s)", key, failures, last)
            if failures >= self.ATTEMPTS:
                raise ChainUnavailable(
                    f"the commitments of {key} did not go out in {self.ATTEMPTS} attempts; "
                    f"the last answer was: {last}"
                )
            pause = min(self.MAX_BACKOFF_S, self.BACKOFF_S * 2 ** (failures - 1))
            await asyncio.sleep(pause * self._jitter.uniform(0.5, 1.5))

    async def _landed_entries(self, exc: Exception, key: TaskKey, workers: list[bytes]) -> int:
        """How many entries a transaction that got an unclear answer published: all of them if
        it is known to have landed (its signature, when the answer named it, has a successful
        status), else none; without its signature, how many of ``workers``' tasks are published
        now (by it or, in a race, by another publisher). 0 when the chain does not answer."""
        signature = exc.signature if isinstance(exc, ConfirmationTimeout) else None
        try:
            with _reading("the published commitments"):
                if signature is not None:
                    return len(workers) if await self.client.landed(signature) else 0
                tasks = [
                    await self.client.fetch_task(key.job_id, key.round, worker)
                    for worker in workers
                ]
        except (ChainUnavailable, AccountNotFound):
            return 0
        return sum(task.published for task in tasks)

    async def begin_unstake(self, amount: int) -> None:
        """``begin_unstake`` of ``amount`` lamports (refused below what open tasks lock).

        Not sent again after an unclear answer: a second request would unbond twice.
        """
        try:
            await self.client.begin_unstake(self._keypair, amount)
        except TransactionFailed as exc:
            raise ChainRejected(f"the worker program refused the unbonding: {exc}") from exc
        except _UNCERTAIN as exc:
            raise ChainUnavailable(f"the unbonding got no clear answer: {exc}") from exc

    async def withdraw_stake(self) -> None:
        """``withdraw`` what finished unbonding (the worker record stays)."""

        async def withdrawn() -> bool:
            return (await self.stake_status()).unbonding == 0

        await self._send("the withdrawal", lambda: self.client.withdraw(self._keypair), withdrawn)

    async def release_expired_task(self, key: TaskKey) -> None:
        """Release this worker's task ``key`` left unsettled past its release time."""

        async def released() -> bool:
            task = await self._own_task(key)
            return task is not None and task.released

        await self._send(
            f"the release of {key}",
            lambda: self.client.release_expired_task(self._keypair, key.job_id, key.round),
            released,
        )

    async def claim_slashed(self, digest: bytes, entry: int) -> None:
        """Take this worker's share of the slashed lamports of the ROUND_SETTLED ``digest``
        (``entry``: this worker's index in that batch)."""
        try:
            await self.client.claim_slashed(self._keypair, digest, self._keypair.pubkey(), entry)
        except TransactionFailed as exc:
            raise ChainRejected(f"the worker program refused the claim: {exc}") from exc
        except _UNCERTAIN as exc:
            raise ChainUnavailable(f"the claim got no clear answer: {exc}") from exc
