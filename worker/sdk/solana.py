"""The Solana worker chain backend: the worker program through its client.

Tasks are accounts, not events: a poll reads this worker's task accounts (a ``getProgramAccounts``
query filtered by kind and worker key). The cursor is unused, the node remembers which tasks it
saw.
"""

from __future__ import annotations

import struct

from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.models import MemcmpOpts
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from adapters.solana import instructions as ix
from adapters.solana._base58 import b58encode
from adapters.solana.client import WorkerProgramClient
from adapters.solana.errors import AccountNotFound, TransactionFailed
from adapters.solana.layout import SOLANA_CHAIN, Kind, TaskAccount
from adapters.wormhole import task_id
from worker.sdk.errors import ChainRejected, ChainUnavailable
from worker.sdk.tasks import (
    AssignedTask,
    ChainPoll,
    CommitReceipt,
    Outcome,
    SettledTask,
    StakeStatus,
    TaskKey,
    UpdateCommitment,
)

_TASK_KIND = struct.pack("<Q", Kind.TASK)
_WORKER_KEY_OFFSET = 8


class SolanaWorkerChain:
    """The worker program on Solana as a :class:`~worker.sdk.chain.WorkerChain`."""

    def __init__(self, rpc: AsyncClient, program_id: Pubkey, keypair: Keypair) -> None:
        """Bind the backend to an RPC connection, the program and the worker's keypair."""
        self.client = WorkerProgramClient(rpc, program_id)
        self._keypair = keypair

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
            account = await self.client.fetch_worker(self._keypair.pubkey())
        except AccountNotFound:
            return StakeStatus(0, False, 0)
        return StakeStatus(account.stake, True, account.assigned)

    async def stake_and_register(self, stake: int, payout: bytes, capabilities: int) -> None:
        """``register`` with ``stake`` lamports (the program stakes once, at registration)."""
        if (await self.stake_status()).registered:
            return
        try:
            await self.client.register(
                self._keypair, stake_lamports=stake, payout=payout, capabilities=capabilities
            )
        except TransactionFailed as exc:
            raise ChainRejected(f"the worker program refused the registration: {exc}") from exc

    async def _tasks(self) -> list[TaskAccount]:
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
        tasks = sorted(await self._tasks(), key=lambda t: (t.job_id, t.round))
        assigned = tuple(
            AssignedTask(
                TaskKey(t.job_id, t.round),
                self._task_id(t),
                t.shard,
                t.deadline,
                t.model_hash,
                t.config_hash,
            )
            for t in tasks
        )
        settled = tuple(
            SettledTask(self._task_id(t), Outcome(t.outcome)) for t in tasks if t.settled
        )
        return ChainPoll(assigned, settled, cursor)

    async def is_committed(self, key: TaskKey) -> bool:
        """Whether the task account records a commitment."""
        try:
            task = await self.client.fetch_task(key.job_id, key.round, self.worker_key)
        except AccountNotFound:
            return False
        return task.committed

    async def commit(self, commitment: UpdateCommitment) -> CommitReceipt:
        """``commit_update`` (publishes UPDATE_COMMITTED); returns the transaction signature."""
        try:
            receipt = await self.client.commit_update(
                self._keypair,
                ix.Commitment(
                    commitment.key.job_id,
                    commitment.key.round,
                    commitment.update_hash,
                    commitment.transcript_root,
                    commitment.num_samples,
                    commitment.train_loss,
                ),
            )
        except TransactionFailed as exc:
            raise ChainRejected(f"the worker program refused the commitment: {exc}") from exc
        return CommitReceipt(str(receipt.signature))

    async def begin_unstake(self, amount: int) -> None:
        """``begin_unstake`` (the whole stake; ``amount`` is not used on Solana)."""
        try:
            await self.client.begin_unstake(self._keypair)
        except TransactionFailed as exc:
            raise ChainRejected(f"the worker program refused to unbond: {exc}") from exc

    async def withdraw_stake(self) -> None:
        """``withdraw`` (closes the worker record)."""
        try:
            await self.client.withdraw(self._keypair)
        except TransactionFailed as exc:
            raise ChainRejected(f"the worker program refused the withdrawal: {exc}") from exc
