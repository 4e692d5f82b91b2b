"""How the Solana backend sends a commitment again: lost races, unclear answers, real refusals.

The program client is replaced by a scripted one, so each test fixes what every attempt answers
and counts what was sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

from fedrelay.adapters.devnet.process import free_port
from fedrelay.adapters.solana.client import Receipt
from fedrelay.adapters.solana.errors import ConfirmationTimeout, TransactionFailed
from fedrelay.adapters.solana.layout import ProgramError
from fedrelay.adapters.solana.worker_chain import SolanaWorkerChain, lost_race
from fedrelay.ports.worker_chain import TaskKey, UpdateCommitment
from fedrelay.worker.sdk.errors import ChainRejected, ChainUnavailable

KEY = TaskKey(3, 1)
COMMITMENT = UpdateCommitment(KEY, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, 50, 7)
STALE_SEQUENCE = TransactionFailed(
    "worker program rejected the transaction: STALE_SEQUENCE (42)",
    program_error=ProgramError.STALE_SEQUENCE,
)
STALE_BLOCKHASH = TransactionFailed(
    "transaction failed: TransactionErrorFieldless.BlockhashNotFound"
)


@dataclass
class _Task:
    committed: bool


@dataclass
class _ScriptedClient:
    """Answers each commit_update with the next scripted item (an exception or a success)."""

    answers: list[Exception | None]
    committed_after: int | None = None  # the chain shows the commitment after this many sends
    sent: int = 0
    checks: int = field(default=0)

    async def commit_update(self, worker: Keypair, commitment: object) -> Receipt:
        answer = self.answers[self.sent]
        self.sent += 1
        if answer is not None:
            raise answer
        return Receipt(Signature.new_unique(), 1, 100, ())

    async def fetch_task(self, job_id: int, round_number: int, worker_key: bytes) -> _Task:
        self.checks += 1
        landed = self.committed_after is not None and self.sent >= self.committed_after
        return _Task(committed=landed)


def _chain(client: object) -> SolanaWorkerChain:
    chain = SolanaWorkerChain(AsyncClient("http://127.0.0.1:9"), Pubkey.new_unique(), Keypair())
    chain.client = client  # type: ignore[assignment]
    chain.BACKOFF_S = 0.0
    return chain


def test_races_are_told_apart_from_refusals() -> None:
    assert lost_race(STALE_SEQUENCE)
    assert lost_race(STALE_BLOCKHASH)
    assert not lost_race(TransactionFailed("rejected", program_error=ProgramError.WRONG_ACCOUNT))
    assert not lost_race(
        TransactionFailed("rejected", program_error=ProgramError.ALREADY_COMMITTED)
    )


async def test_a_lost_race_is_sent_again_until_it_lands() -> None:
    client = _ScriptedClient([STALE_SEQUENCE, STALE_BLOCKHASH, None])
    receipt = await _chain(client).commit(COMMITMENT)
    assert receipt.transaction
    assert client.sent == 3
    assert client.checks == 2  # the chain was asked before each send after the first


async def test_an_attempt_that_landed_unseen_is_not_sent_again() -> None:
    client = _ScriptedClient([ConfirmationTimeout("not confirmed in 30s")], committed_after=1)
    receipt = await _chain(client).commit(COMMITMENT)
    assert receipt.transaction == ""
    assert client.sent == 1


async def test_a_refusal_no_race_explains_is_not_retried() -> None:
    refusal = TransactionFailed("rejected", program_error=ProgramError.NOT_ASSIGNED)
    client = _ScriptedClient([refusal, None])
    with pytest.raises(ChainRejected, match="refused the commitment of"):
        await _chain(client).commit(COMMITMENT)
    assert client.sent == 1


async def test_races_on_every_attempt_leave_the_chain_unavailable_not_rejected() -> None:
    chain = _chain(_ScriptedClient([STALE_SEQUENCE] * SolanaWorkerChain.ATTEMPTS))
    with pytest.raises(ChainUnavailable, match="STALE_SEQUENCE"):
        await chain.commit(COMMITMENT)
    assert isinstance(chain.client, _ScriptedClient)
    assert chain.client.sent == SolanaWorkerChain.ATTEMPTS


async def test_an_endpoint_that_does_not_answer_reads_is_unavailable() -> None:
    rpc = AsyncClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    chain = SolanaWorkerChain(rpc, Pubkey.new_unique(), Keypair())
    try:
        with pytest.raises(ChainUnavailable, match="did not answer the task poll"):
            await chain.poll(0)
        with pytest.raises(ChainUnavailable, match="did not answer a task query"):
            await chain.is_committed(KEY)
    finally:
        await rpc.close()


@dataclass
class _PendingTask:
    worker_key: bytes


@dataclass
class _RacedPublisher:
    """Scripted: the one publish_commitments sent gets no confirmation in time; meanwhile the
    round's commitments went out (by this transaction when ``ours_landed``, else by another
    publisher's)."""

    ours_landed: bool
    pending: list[_PendingTask] = field(
        default_factory=lambda: [_PendingTask(bytes([n]) * 32) for n in range(3)]
    )
    timed_out: Signature = field(default_factory=Signature.new_unique)

    def commitments_per_transaction(self) -> int:
        return 8

    async def pending_commitments(self, job_id: int, round_number: int) -> list[_PendingTask]:
        return list(self.pending)

    async def publish_commitments(
        self, payer: Keypair, job_id: int, round_number: int, tasks: list[bytes]
    ) -> Receipt:
        self.pending = []  # published, by this transaction or by another
        raise ConfirmationTimeout("not confirmed in 30s", signature=self.timed_out)

    async def landed(self, signature: Signature) -> bool:
        return signature == self.timed_out and self.ours_landed


@pytest.mark.parametrize(("ours_landed", "counted"), [(True, 3), (False, 0)])
async def test_a_timed_out_publication_counts_only_if_its_own_transaction_landed(
    ours_landed: bool, counted: int
) -> None:
    chain = _chain(_RacedPublisher(ours_landed))
    # Another publisher's entries are not this call's, though they are found published.
    assert await chain.publish_commitments(KEY) == counted
