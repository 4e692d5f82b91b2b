"""The relayer's Solana routes on the real devnet RPC (LiteSVM), the in-process bus and SQLite.

- coordinator -> Solana: TASK_ASSIGNED VAAs (signed directly by the devnet guardians, since the
  coordinator chain's contracts are not part of this test) enter at the ``vaas`` topic, are routed
  to ``deliveries.1`` and delivered into the worker program; duplicates are applied once and a
  poison VAA ends in the DLQ with its reason while the rest flows on;
- Solana -> vaas: WORKER_REGISTERED and UPDATE_COMMITTED published by the program are watched,
  attested by each guardian after its own read of the chain, and assembled into VAAs;
- parallel sends: the pipelined deliver stage takes a poll's deliveries together and sends the
  independent ones as one group (:mod:`fedrelay.relayer.stages.parallel`). Independent
  deliveries land several per slot (a devnet with wall-clock slots), each once; a poll with a
  VAA consumed meanwhile, a duplicate record, a VAA that shares workers with two others and a
  poison VAA applies nothing twice, the dependent VAA lands after the two it depends on and the
  poison one is dead (and in the DLQ) with the program's reason; the stage cancelled after
  persisting a group and before broadcasting it resumes with the very bytes persisted, or, once
  their blockhash has expired, signs anew; a group whose blockhash expires as it is sent goes
  again, signed anew. Each checks exactly once on the chain (consumed records, tasks, the
  payer's transactions) and in the ledger (attempts).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import support.wormhole as wormhole_testing
from prometheus_client import CollectorRegistry
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from support.relayer import read_topic
from support.relayer_evm import delivery_of

from fedrelay.adapters.devnet.solana_rpc import SolanaDevnet, serve_devnet
from fedrelay.adapters.kafka import MemoryBus
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import (
    AttemptOutcome,
    DeadLetter,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    ObservationStatus,
)
from fedrelay.adapters.ledger.models import Observation as ObservationRow
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger
from fedrelay.adapters.solana import instructions as ix
from fedrelay.adapters.solana.client import WorkerProgramClient
from fedrelay.adapters.solana.layout import SOLANA_CHAIN
from fedrelay.adapters.solana.layout import Instruction as Tag
from fedrelay.adapters.solana.program import program_bytes
from fedrelay.adapters.solana.relay import SolanaDestination, SolanaSource
from fedrelay.adapters.solana.testing import LAMPORTS_PER_SOL, Deployment, deploy, task_assigned
from fedrelay.ports.relay import SignedDelivery
from fedrelay.protocol.wormhole import (
    GuardianSets,
    UpdateCommitted,
    Vaa,
    WorkerRegistered,
    decode_payload,
    parse_vaa,
    verify_vaa,
)
from fedrelay.relayer.backoff import BackoffPolicy
from fedrelay.relayer.records import (
    DeliveryRequest,
    SignedVaa,
    decode_as,
    encode_message,
    message_key,
)
from fedrelay.relayer.stage import REASON_HEADER, RecordProcessor, StageRunner, stage_metrics
from fedrelay.relayer.stages.assemble import Assembler
from fedrelay.relayer.stages.attest import Attester
from fedrelay.relayer.stages.deliver import Deliverer
from fedrelay.relayer.stages.pipeline import PipelinedDeliverer, SignerLane
from fedrelay.relayer.stages.route import Router
from fedrelay.relayer.stages.watch import Watcher

pytestmark = pytest.mark.integration

GUARDIANS = 3
GUARDIAN_SETS = GuardianSets.of(wormhole_testing.guardian_set(GUARDIANS))
POLICY = BackoffPolicy(base_s=0.01, cap_s=0.05, max_attempts=3)


@pytest.fixture
def devnet(solana_devnet: SolanaDevnet) -> SolanaDevnet:
    """The session's devnet (tests/integration/conftest.py); each test deploys its own program."""
    return solana_devnet


@pytest.fixture
async def deployment(devnet: SolanaDevnet) -> AsyncIterator[Deployment]:
    async with AsyncClient(devnet.url) as rpc:
        client = WorkerProgramClient(rpc, Pubkey.new_unique())
        yield await deploy(devnet, client, program_bytes(), guardian_count=GUARDIANS)


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


async def eventually(check: Callable[[], Awaitable[bool]], limit_s: float = 30.0) -> None:
    """Return once `check()` holds, asking every 50 ms; TimeoutError after `limit_s`."""
    async with asyncio.timeout(limit_s):
        while not await check():  # noqa: ASYNC110 - the ledger has no change event to wait on
            await asyncio.sleep(0.05)


async def registered_workers(deployment: Deployment, count: int) -> list[Keypair]:
    crew = []
    for _ in range(count):
        worker = await deployment.funded_keypair()
        await deployment.client.register(
            worker, stake_lamports=LAMPORTS_PER_SOL, payout=bytes(32), capabilities=1
        )
        crew.append(worker)
    return crew


def runner(
    name: str, bus: MemoryBus, inputs: list[str], processor: RecordProcessor, **extra: object
) -> StageRunner:
    return StageRunner(
        name=name, bus=bus, inputs=inputs, group_id=name, transactional_id=f"{name}-0",
        processor=processor, policy=POLICY, poll_wait_s=0.02,
        metrics=stage_metrics(CollectorRegistry()), **extra,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_task_assignments_reach_the_program_once_and_poison_goes_to_the_dlq(
    deployment: Deployment, sessions: async_sessionmaker[AsyncSession]
) -> None:
    d = deployment
    crew = await registered_workers(d, 2)
    keys = [bytes(w.pubkey()) for w in crew]
    deadline = d.devnet.chain.unix_time() + 3600
    first = d.sign(task_assigned(d.program_id, keys, round_number=1, deadline=deadline))
    poison = d.sign(
        task_assigned(d.program_id, keys, round_number=2, deadline=deadline),
        guardians=wormhole_testing.guardian_signers(GUARDIANS + 1)[1:],  # not the program's set
    )
    second = d.sign(task_assigned(d.program_id, keys, round_number=3, deadline=deadline))
    early = d.sign(task_assigned(d.program_id, keys, round_number=4, deadline=deadline))
    await d.client.receive_vaa(d.admin, early.to_bytes())  # delivered by someone else before

    bus = MemoryBus()
    await bus.create_topics(["vaas", "deliveries.1", "dlq"])
    producer = bus.producer()
    await producer.start()
    for vaa in (first, poison, first, early, second):  # `first` twice: a duplicate
        signed = SignedVaa(vaa=vaa.to_bytes(), emitted_at_ms=0)
        await producer.send("vaas", encode_message(signed), key=message_key(vaa.message_id))
    await producer.stop()

    payer = await d.funded_keypair()
    deliverer = Deliverer(
        SolanaDestination(d.client, payer), SqlRelayerLedger(sessions), POLICY, confirm_timeout_s=10
    )
    runners = [
        runner("route", bus, ["vaas"], Router(destinations=frozenset({SOLANA_CHAIN}))),
        runner(
            "deliver-1", bus, ["deliveries.1"], deliverer, dead_letters=SqlRelayerLedger(sessions)
        ),
    ]
    tasks = [asyncio.create_task(r.run()) for r in runners]

    async def settled() -> bool:
        async with sessions() as session:
            done = await session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.status != DeliveryStatus.PENDING)
            )
            return done == 4

    try:
        [dead] = await read_topic(bus, "dlq", 1, group_id=uuid.uuid4().hex)
        await eventually(settled)
    finally:
        for r in runners:
            r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)

    assert b"INVALID_SIGNATURE" in (dead.header(REASON_HEADER) or b"")
    assert decode_as(dead.value, DeliveryRequest).digest == poison.digest
    for vaa, consumed in ((first, True), (second, True), (early, True), (poison, False)):
        assert await d.client.is_consumed(vaa.digest) is consumed
    for round_number in (1, 3):
        for key in keys:
            task = await d.client.fetch_task(7, round_number, key)
            assert task.shard == keys.index(key)
    async with sessions() as session:
        statuses = {
            bytes(row.digest): row.status for row in await session.scalars(select(Delivery))
        }
        attempts = (await session.scalars(select(DeliveryAttempt))).all()
        [entry] = (await session.scalars(select(DeadLetter))).all()
    assert statuses == {
        first.digest: DeliveryStatus.CONFIRMED,
        second.digest: DeliveryStatus.CONFIRMED,
        early.digest: DeliveryStatus.ALREADY_DELIVERED,
        poison.digest: DeliveryStatus.DEAD,
    }
    confirmed = [a for a in attempts if a.outcome == AttemptOutcome.CONFIRMED]
    assert len(confirmed) == 2  # `first` was signed and sent once despite its duplicate
    assert "INVALID_SIGNATURE" in entry.reason


async def test_a_large_vaa_goes_through_a_buffer_and_follow_up_batches(
    devnet: SolanaDevnet, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with AsyncClient(devnet.url) as rpc:
        client = WorkerProgramClient(rpc, Pubkey.new_unique())
        d = await deploy(devnet, client, program_bytes(), guardian_count=19)
        crew = await registered_workers(d, 20)
        keys = [bytes(w.pubkey()) for w in crew]
        payload = task_assigned(d.program_id, keys, deadline=d.devnet.chain.unix_time() + 3600)
        vaa = d.sign(payload, signers=range(13))
        request = DeliveryRequest(
            vaa=vaa.to_bytes(), destination_chain=SOLANA_CHAIN,
            target_address=bytes(d.program_id), emitted_at_ms=0,
        )  # fmt: skip
        payer = await d.funded_keypair()
        deliverer = Deliverer(SolanaDestination(client, payer), SqlRelayerLedger(sessions), POLICY)

        assert await deliverer.deliver(request) == DeliveryStatus.CONFIRMED
        assert await deliverer.deliver(request) == DeliveryStatus.CONFIRMED  # once only

        record = await client.fetch_consumed(vaa.digest)
        assert record.applied == len(keys)  # the follow-up apply_batch transactions ran
        for shard, key in enumerate(keys):
            assert (await client.fetch_task(7, 1, key)).shard == shard
        async with sessions() as session:
            [attempt] = (await session.scalars(select(DeliveryAttempt))).all()
        assert attempt.outcome == AttemptOutcome.CONFIRMED
        sent = VersionedTransaction.from_bytes(bytes(attempt.signed_tx or b""))
        receive = sent.message.instructions[-1]
        assert bytes(receive.data)[:1] == bytes([Tag.RECEIVE_FROM_BUFFER])  # the VAA was buffered
        pairs = bytes(receive.data)[1]
        empty = replace(ix.delivery_for(vaa), worker_keys=())
        fixed = len(ix.receive_from_buffer(d.program_id, payer.pubkey(), 0, empty).accounts)
        assert (len(receive.accounts) - fixed) // 2 == pairs < len(keys)  # the rest: apply_batch
        assert devnet.chain.processed(attempt.tx_hash or "") is not None


async def test_worker_messages_are_watched_attested_and_assembled(
    deployment: Deployment, sessions: async_sessionmaker[AsyncSession]
) -> None:
    d = deployment
    [worker] = await registered_workers(d, 1)  # publishes WORKER_REGISTERED as sequence 0
    key = bytes(worker.pubkey())
    deadline = d.devnet.chain.unix_time() + 3600
    await d.client.receive_vaa(
        d.admin, d.sign(task_assigned(d.program_id, [key], deadline=deadline)).to_bytes()
    )
    commitment = ix.Commitment(
        job_id=7, round=1, update_hash=wormhole_testing.filler("update"),
        transcript_root=wormhole_testing.filler("transcript"),
        data_root=wormhole_testing.filler("data"), num_samples=600, train_loss=4_000,
    )  # fmt: skip
    await d.client.commit_update(worker, commitment)  # held in the task account
    await d.client.publish_commitments(d.admin, 7, 1, [key])  # UPDATE_COMMITTED as sequence 1

    source = SolanaSource(d.client.rpc, d.program_id)
    bus = MemoryBus()
    await bus.create_topics(["observations", "signatures", "vaas", "dlq"])
    watcher = Watcher(
        source, bus, SqlRelayerLedger(sessions), transactional_id="watch-1-0", poll_interval_s=0.05
    )
    signers = wormhole_testing.guardian_signers(GUARDIANS)
    runners = [
        runner(
            f"attest-{i}", bus, ["observations"], Attester({SOLANA_CHAIN: source}, signers[i], i)
        )
        for i in range(GUARDIANS)
    ]
    runners.append(
        runner(
            "assemble", bus, ["signatures"], Assembler(SqlRelayerLedger(sessions), GUARDIAN_SETS)
        )
    )
    tasks = [asyncio.create_task(r.run()) for r in runners]
    tasks.append(asyncio.create_task(watcher.run()))
    try:
        records = await read_topic(bus, "vaas", 2, group_id=uuid.uuid4().hex)
    finally:
        watcher.stop()
        for r in runners:
            r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)

    vaas = sorted((parse_vaa(decode_as(r.value, SignedVaa).vaa) for r in records),
                  key=lambda v: v.body.sequence)  # fmt: skip
    assert [v.body.sequence for v in vaas] == [0, 1]
    for vaa in vaas:
        verify_vaa(vaa, GUARDIAN_SETS, now=vaa.body.timestamp)
        assert (vaa.body.emitter_chain, vaa.body.emitter_address) == (1, bytes(d.program_id))
    registered, committed = (decode_payload(v.body.payload) for v in vaas)
    assert isinstance(registered, WorkerRegistered)
    assert registered.worker_key == key
    assert isinstance(committed, UpdateCommitted)
    [entry] = committed.commitments
    assert entry.update_hash == commitment.update_hash
    assert entry.worker_key == key
    async with sessions() as session:
        statuses = [row.status for row in await session.scalars(select(ObservationRow))]
    assert statuses == [ObservationStatus.ASSEMBLED] * 2


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it."""


class KilledAfterBroadcast(SolanaDestination):
    """The real destination, with the relayer process dying right after the first broadcast
    (before the ledger records it and before the batch's follow-up transactions)."""

    async def broadcast(self, delivery: SignedDelivery) -> None:
        await super().broadcast(delivery)
        raise Killed


async def test_a_delivery_killed_after_broadcast_resumes_and_finishes_the_batch(
    deployment: Deployment, sessions: async_sessionmaker[AsyncSession]
) -> None:
    d = deployment
    crew = await registered_workers(d, 8)
    keys = [bytes(w.pubkey()) for w in crew]
    vaa = d.sign(task_assigned(d.program_id, keys, deadline=d.devnet.chain.unix_time() + 3600))
    request = DeliveryRequest(
        vaa=vaa.to_bytes(), destination_chain=SOLANA_CHAIN,
        target_address=bytes(d.program_id), emitted_at_ms=0,
    )  # fmt: skip
    payer = await d.funded_keypair()
    with pytest.raises(Killed):
        await Deliverer(
            KilledAfterBroadcast(d.client, payer), SqlRelayerLedger(sessions), POLICY
        ).deliver(request)
    partial = await d.client.fetch_consumed(vaa.digest)
    assert 0 < partial.applied < len(keys)  # received, but the batch is not complete

    restarted = Deliverer(SolanaDestination(d.client, payer), SqlRelayerLedger(sessions), POLICY)
    assert await restarted.deliver(request) == DeliveryStatus.CONFIRMED

    assert (await d.client.fetch_consumed(vaa.digest)).applied == len(keys)
    async with sessions() as session:
        [attempt] = (await session.scalars(select(DeliveryAttempt))).all()
        [delivery] = (await session.scalars(select(Delivery))).all()
    assert attempt.outcome == AttemptOutcome.CONFIRMED  # the first signature, not a new one
    assert delivery.tx_hash == attempt.tx_hash
    assert d.devnet.chain.processed(attempt.tx_hash or "") is not None


# --- parallel sends -------------------------------------------------------------------------------

SLOT_MS = 1_000  # long enough for a group's sends to share slots; a real cluster's is 400 ms
TOPIC = f"deliveries.{SOLANA_CHAIN}"


@pytest.fixture(scope="module")
def timed_devnet() -> Iterator[SolanaDevnet]:
    with serve_devnet(slot_ms=SLOT_MS) as devnet:
        yield devnet


async def deployed(devnet: SolanaDevnet) -> AsyncIterator[Deployment]:
    async with AsyncClient(devnet.url) as rpc:
        client = WorkerProgramClient(rpc, Pubkey.new_unique())
        yield await deploy(devnet, client, program_bytes(), guardian_count=GUARDIANS)


@pytest.fixture
async def timed(timed_devnet: SolanaDevnet) -> AsyncIterator[Deployment]:
    """The program on the devnet with wall-clock slots."""
    async for deployment in deployed(timed_devnet):
        yield deployment


@pytest.fixture
async def either(
    request: pytest.FixtureRequest, timed_devnet: SolanaDevnet, devnet: SolanaDevnet
) -> AsyncIterator[Deployment]:
    """The program on the devnet with wall-clock slots (``"timed"``), or on the session's devnet
    (``"untimed"``: a slot, and a new blockhash, per transaction; the older ones expire)."""
    async for deployment in deployed(timed_devnet if request.param == "timed" else devnet):
        yield deployment


async def crew_of(d: Deployment, count: int) -> list[bytes]:
    return [bytes(w.pubkey()) for w in await registered_workers(d, count)]


def assignment(d: Deployment, keys: Sequence[bytes], job_id: int) -> Vaa:
    deadline = d.devnet.chain.unix_time() + 3600
    return d.sign(task_assigned(d.program_id, keys, job_id=job_id, deadline=deadline))


async def published(vaas: Sequence[Vaa]) -> MemoryBus:
    """A bus whose deliveries topic holds a delivery request per VAA, in order."""
    bus = MemoryBus()
    await bus.create_topics([TOPIC, "dlq"])
    producer = bus.producer()
    await producer.start()
    for vaa in vaas:
        request = DeliveryRequest(
            vaa=vaa.to_bytes(), destination_chain=SOLANA_CHAIN,
            target_address=vaa.body.emitter_address, emitted_at_ms=0,
        )  # fmt: skip
        await producer.send(TOPIC, encode_message(request), key=message_key(vaa.message_id))
    await producer.stop()
    return bus


def pipelined(
    bus: MemoryBus, sessions: async_sessionmaker[AsyncSession], destination: SolanaDestination
) -> StageRunner:
    """The deliver stage, pipelined with one lane (window 32), taking up to 256 records a poll."""
    ledger = SqlRelayerLedger(sessions)
    lane = SignerLane(Deliverer(destination, ledger, POLICY, confirm_timeout_s=10), window=32)
    processor = PipelinedDeliverer([lane])
    return runner("deliver-1", bus, [TOPIC], processor, dead_letters=ledger, batch_size=256)


async def delivered(
    bus: MemoryBus,
    sessions: async_sessionmaker[AsyncSession],
    destination: SolanaDestination,
    count: int,
) -> None:
    """Run the pipelined deliver stage until `count` deliveries are done; then stop it."""

    async def done() -> bool:
        async with sessions() as session:
            statuses = list(await session.scalars(select(Delivery.status)))
        ended = (DeliveryStatus.CONFIRMED, DeliveryStatus.ALREADY_DELIVERED, DeliveryStatus.DEAD)
        return sum(status in ended for status in statuses) == count

    stage = pipelined(bus, sessions, destination)
    task = asyncio.create_task(stage.run())
    try:
        await eventually(done, 60)
    finally:
        stage.stop()
        await asyncio.wait_for(task, 30)


async def ledger_of(
    sessions: async_sessionmaker[AsyncSession], vaa: Vaa
) -> tuple[Delivery, list[DeliveryAttempt]]:
    """The delivery of `vaa` and its attempts, in order."""
    delivery, attempts = await delivery_of(sessions, vaa.digest)
    assert delivery is not None
    return delivery, sorted(attempts, key=lambda a: a.attempt)


async def sent_once(
    d: Deployment, sessions: async_sessionmaker[AsyncSession], vaa: Vaa, job_id: int
) -> str:
    """Check that `vaa` was applied once (its consumed record, a task per worker) by one attempt
    of ours, confirmed in the ledger; that attempt's transaction."""
    keys = ix.delivery_for(vaa).worker_keys
    assert (await d.client.fetch_consumed(vaa.digest)).applied == len(keys)
    for shard, key in enumerate(keys):
        assert (await d.client.fetch_task(job_id, 1, key)).shard == shard
    delivery, [attempt] = await ledger_of(sessions, vaa)
    confirmed = (DeliveryStatus.CONFIRMED, AttemptOutcome.CONFIRMED)
    assert (delivery.status, attempt.outcome) == confirmed
    assert attempt.tx_hash is not None
    assert delivery.tx_hash == attempt.tx_hash
    return attempt.tx_hash


def landed_by(d: Deployment, payer: Keypair) -> list[str]:
    """The transactions the payer paid for that succeeded, oldest first (airdrops left out)."""
    history = d.devnet.chain.signatures_for(str(payer.pubkey()))
    return [
        t.signature
        for t in reversed(history)
        if t.err is None and list(t.tx.message.account_keys)[:1] == [payer.pubkey()]
    ]


async def test_independent_deliveries_go_out_in_parallel_several_per_slot_each_once(
    timed: Deployment, sessions: async_sessionmaker[AsyncSession]
) -> None:
    d = timed
    vaas = [assignment(d, [key], 100 + i) for i, key in enumerate(await crew_of(d, 12))]
    payer = await d.funded_keypair()

    await delivered(await published(vaas), sessions, SolanaDestination(d.client, payer), 12)

    sent = [await sent_once(d, sessions, vaa, 100 + i) for i, vaa in enumerate(vaas)]
    assert sorted(landed_by(d, payer)) == sorted(sent)  # one transaction per delivery, no more
    landed = [d.devnet.chain.processed(tx) for tx in sent]
    slots = Counter(t.slot for t in landed if t is not None)
    assert max(slots.values()) >= 2, f"one delivery per slot: {slots}"
    # Signed together, none waiting for another to land (each landing rotates the blockhash).
    blockhashes = Counter(t.tx.message.recent_blockhash for t in landed if t is not None)
    assert max(blockhashes.values()) >= 2, f"signed one at a time: {blockhashes}"


async def test_a_consumed_a_duplicate_a_dependent_and_a_poison_vaa_in_one_poll(
    timed: Deployment, sessions: async_sessionmaker[AsyncSession]
) -> None:
    d = timed
    crew = await crew_of(d, 6)
    vaas = [assignment(d, [key], 200 + i) for i, key in enumerate(crew[:5])]
    dependent = assignment(d, [crew[1], crew[3]], 200)  # a round's second batch, after 1 and 3
    consumed = vaas[2]
    await d.client.receive_vaa(d.admin, consumed.to_bytes())  # delivered by someone else
    deadline = d.devnet.chain.unix_time() + 3600
    poison = d.sign(
        task_assigned(d.program_id, [crew[5]], job_id=250, deadline=deadline),
        guardians=wormhole_testing.guardian_signers(GUARDIANS + 1)[1:],  # not the program's set
    )
    payer = await d.funded_keypair()
    records = [*vaas, dependent, poison, vaas[0]]  # vaas[0] twice: a duplicate record
    bus = await published(records)

    await delivered(bus, sessions, SolanaDestination(d.client, payer), 7)

    delivery, attempts = await ledger_of(sessions, consumed)
    assert (delivery.status, attempts) == (DeliveryStatus.ALREADY_DELIVERED, [])  # none sent
    assert (await d.client.fetch_consumed(consumed.digest)).applied == 1
    sent = {
        vaa.digest: await sent_once(d, sessions, vaa, 200 + i)  # the duplicate added nothing
        for i, vaa in enumerate(vaas)
        if vaa is not consumed
    }
    sent[dependent.digest] = await sent_once(d, sessions, dependent, 200)
    order = landed_by(d, payer)
    assert sorted(order) == sorted(sent.values())
    last = order.index(sent[dependent.digest])
    assert last > order.index(sent[vaas[1].digest])
    assert last > order.index(sent[vaas[3].digest])
    # The poison VAA went out with the group, was refused at preflight, and is dead with why.
    refused, [attempt] = await ledger_of(sessions, poison)
    assert (refused.status, attempt.outcome) == (DeliveryStatus.DEAD, AttemptOutcome.REVERTED)
    assert "INVALID_SIGNATURE" in (refused.last_error or "")
    assert not await d.client.is_consumed(poison.digest)
    [dead] = await read_topic(bus, "dlq", 1, group_id=uuid.uuid4().hex)
    assert decode_as(dead.value, DeliveryRequest).digest == poison.digest


async def test_a_group_whose_blockhash_expires_as_it_is_sent_goes_again_signed_anew(
    devnet: SolanaDevnet, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The session's devnet takes only its latest blockhash: the first of a group to land
    expires the rest, which go in the next group, signed anew (and, after three such groups,
    the plain deliverer's way); each message is still applied once and none dead."""
    async for d in deployed(devnet):
        vaas = [assignment(d, [key], 600 + i) for i, key in enumerate(await crew_of(d, 5))]
        payer = await d.funded_keypair()
        bus = await published(vaas)

        await delivered(bus, sessions, SolanaDestination(d.client, payer), len(vaas))

        failed, regrouped = 0, 0
        for i, vaa in enumerate(vaas):
            assert (await d.client.fetch_consumed(vaa.digest)).applied == 1
            assert await d.client.fetch_task(600 + i, 1, ix.delivery_for(vaa).worker_keys[0])
            delivery, attempts = await ledger_of(sessions, vaa)
            assert delivery.status == DeliveryStatus.CONFIRMED
            *expired, last = attempts
            assert (last.outcome, last.tx_hash) == (AttemptOutcome.CONFIRMED, delivery.tx_hash)
            for attempt in expired:
                # expired in a group (failed, signed anew), or, after three groups, replaced by
                # the plain deliverer's next attempt; either way it never landed
                assert attempt.outcome in (AttemptOutcome.FAILED, AttemptOutcome.REPLACED)
                if attempt.outcome == AttemptOutcome.FAILED:
                    assert "expired" in (attempt.error or "")
                assert d.devnet.chain.processed(attempt.tx_hash or "") is None
            failed += len(expired)
            regrouped += sum("signed anew in the next" in (a.error or "") for a in expired)
        assert regrouped > 0, "the group's blockhash never expired"
        assert failed >= regrouped
        assert len(landed_by(d, payer)) == len(vaas)
        async with sessions() as session:
            assert not (await session.scalars(select(DeadLetter))).all()


class HeldBeforeBroadcast(SolanaDestination):
    """The real destination, whose parallel sends never start: the stage is cancelled there,
    after the group's attempts are persisted."""

    reached: asyncio.Event
    never: asyncio.Event

    async def broadcast_many(self, deliveries: Sequence[SignedDelivery]) -> list[Exception | None]:
        self.reached.set()
        await self.never.wait()
        raise AssertionError("the stage was to be cancelled before anything was sent")


@pytest.mark.parametrize(
    ("either", "blockhash"), [("timed", "still valid"), ("untimed", "expired")], indirect=["either"]
)
async def test_a_stage_cancelled_between_persisting_a_group_and_sending_it_resumes_once(
    either: Deployment, blockhash: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    d = either
    vaas = [assignment(d, [key], 400 + i) for i, key in enumerate(await crew_of(d, 4))]
    payer = await d.funded_keypair()
    bus = await published(vaas)
    held = HeldBeforeBroadcast(d.client, payer)
    held.reached, held.never = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(pipelined(bus, sessions, held).run())
    try:
        await asyncio.wait_for(held.reached.wait(), 60)
    finally:
        task.cancel()  # what a SIGKILL leaves: nothing after this point runs
        with pytest.raises(asyncio.CancelledError):
            await task
    unsent = []
    for vaa in vaas:
        _, [attempt] = await ledger_of(sessions, vaa)
        assert attempt.outcome == AttemptOutcome.PREPARED  # persisted before any send
        assert not await d.client.is_consumed(vaa.digest)
        unsent.append(attempt)
    if blockhash == "expired":
        await d.funded_keypair()  # a transaction, so a new blockhash: the group's cannot land

    await delivered(bus, sessions, SolanaDestination(d.client, payer), len(vaas))

    for i, (vaa, before) in enumerate(zip(vaas, unsent, strict=True)):
        if blockhash == "still valid":  # the very bytes persisted before the cancel
            assert await sent_once(d, sessions, vaa, 400 + i) == before.tx_hash
            landed = d.devnet.chain.processed(before.tx_hash or "")
            assert landed is not None
            assert bytes(landed.tx) == before.signed_tx
            continue
        # refused as expired (never landed), then signed anew and applied once
        assert (await d.client.fetch_consumed(vaa.digest)).applied == 1
        delivery, attempts = await ledger_of(sessions, vaa)
        assert delivery.status == DeliveryStatus.CONFIRMED
        outcomes = [(a.outcome, a.tx_hash) for a in attempts]
        assert outcomes == [
            (AttemptOutcome.FAILED, before.tx_hash),
            (AttemptOutcome.CONFIRMED, delivery.tx_hash),
        ]
        assert d.devnet.chain.processed(before.tx_hash or "") is None
    assert len(landed_by(d, payer)) == len(vaas)
