"""Fetch: signed VAAs from a guardian REST API, here a loopback server answering in its shape."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from support.relayer import (
    CountingLedger,
    GuardianApiStub,
    read_topic,
    sample_observation,
    signed_vaa_bytes,
    wait_until,
)
from support.wormhole import guardian_set, guardian_signers

from fedrelay.adapters.devnet.process import free_port
from fedrelay.adapters.kafka import MemoryBus, Record
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import StoredVaa
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger
from fedrelay.protocol.wormhole import GuardianSets, NoQuorum
from fedrelay.relayer.backoff import BackoffPolicy
from fedrelay.relayer.records import SignedVaa, decode_as, encode_message
from fedrelay.relayer.stage import REASON_HEADER, StageResult, StageRunner, stage_metrics
from fedrelay.relayer.stages.fetch import (
    FetchError,
    GuardianApi,
    GuardianApiUnavailable,
    VaaFetcher,
    VaaNotYetSigned,
    check_fetched,
    signed_vaa_path,
)

SIGNERS = guardian_signers(4)
SETS = GuardianSets.of(guardian_set(4))
NOW = 1_800_000_000


@pytest.fixture
def stub() -> Iterator[GuardianApiStub]:
    with GuardianApiStub().running() as server:
        yield server


@pytest.fixture
async def api(stub: GuardianApiStub) -> AsyncIterator[GuardianApi]:
    client = GuardianApi(stub.url, timeout_s=5)
    yield client
    await client.aclose()


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


def test_path_follows_the_public_api() -> None:
    observation = sample_observation(7)
    expected = f"/v1/signed_vaa/2/{observation.emitter_address.hex()}/7"
    assert signed_vaa_path(observation.message_id) == expected


async def test_statuses_map_to_domain_errors(stub: GuardianApiStub, api: GuardianApi) -> None:
    observation = sample_observation(1)
    vaa = signed_vaa_bytes(observation, SIGNERS)
    with pytest.raises(VaaNotYetSigned, match=r"no signed VAA for 2/.*/1 yet"):
        await api.signed_vaa(observation.message_id)
    stub.publish(observation.message_id, vaa)
    stub.fail_next(1, 503)
    with pytest.raises(GuardianApiUnavailable, match="answered 503"):
        await api.signed_vaa(observation.message_id)
    stub.fail_next(1, 429)
    with pytest.raises(GuardianApiUnavailable, match="answered 429"):
        await api.signed_vaa(observation.message_id)
    assert await api.signed_vaa(observation.message_id) == vaa
    assert stub.hits(observation.message_id) == 4


@pytest.mark.parametrize(
    ("status", "body", "complaint"),
    [
        (400, b'{"code": 3, "message": "bad emitter"}', "answered 400"),
        (200, b"<html>", "non-JSON"),
        (200, b'{"vaa": "AQ=="}', "lacks a vaaBytes string"),
        (200, b'{"vaaBytes": "not base64!"}', "not valid base64"),
    ],
)
async def test_unusable_answers_are_fetch_errors(
    stub: GuardianApiStub, api: GuardianApi, status: int, body: bytes, complaint: str
) -> None:
    observation = sample_observation(2)
    stub.raw_answers[signed_vaa_path(observation.message_id)] = (status, body)
    with pytest.raises(FetchError, match=complaint):
        await api.signed_vaa(observation.message_id)


async def test_unreachable_api_is_retryable() -> None:
    client = GuardianApi(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    try:
        with pytest.raises(GuardianApiUnavailable, match="unreachable"):
            await client.signed_vaa(sample_observation(1).message_id)
    finally:
        await client.aclose()


def test_check_fetched_wants_the_observed_message() -> None:
    observation = sample_observation(3)
    assert check_fetched(observation, signed_vaa_bytes(observation, SIGNERS), SETS, NOW)
    other = signed_vaa_bytes(sample_observation(4), SIGNERS)
    with pytest.raises(FetchError, match=r"returned 2/.*/4 for 2/.*/3"):
        check_fetched(observation, other, SETS, NOW)
    altered = sample_observation(3, payload=b"\x02\x01" + bytes(42))
    with pytest.raises(FetchError, match="different body"):
        check_fetched(observation, signed_vaa_bytes(altered, SIGNERS), SETS, NOW)
    with pytest.raises(FetchError, match="malformed VAA"):
        check_fetched(observation, b"\x01\x00", SETS, NOW)
    too_few = signed_vaa_bytes(observation, SIGNERS[:2])
    with pytest.raises(NoQuorum):
        check_fetched(observation, too_few, SETS, NOW)


async def test_stage_waits_for_signing_then_emits_each_vaa_once(
    stub: GuardianApiStub, api: GuardianApi, sessions: async_sessionmaker[AsyncSession]
) -> None:
    pending, ready, mismatched = (
        sample_observation(10),
        sample_observation(11),
        sample_observation(12),
    )
    stub.publish(ready.message_id, signed_vaa_bytes(ready, SIGNERS))
    stub.publish(mismatched.message_id, signed_vaa_bytes(ready, SIGNERS))  # another message's VAA
    bus = MemoryBus()
    await bus.create_topics(["observations", "vaas", "dlq"])
    producer = bus.producer()
    await producer.start()
    for observation in (pending, ready, pending, mismatched):  # `pending` observed twice
        await producer.send("observations", encode_message(observation), key=b"emitter")
    await producer.stop()

    registry = CollectorRegistry()
    runner = StageRunner(
        name="fetch", bus=bus, inputs=["observations"], group_id="fetch",
        transactional_id="fetch-0",
        processor=VaaFetcher(api, SqlRelayerLedger(sessions), SETS, clock=lambda: NOW),
        policy=BackoffPolicy(base_s=0.02, cap_s=0.05, max_attempts=50), poll_wait_s=0.05,
        metrics=stage_metrics(registry),
    )  # fmt: skip
    task = asyncio.create_task(runner.run())
    await wait_until(lambda: stub.hits(pending.message_id) >= 3)  # 404, then backoff
    stub.publish(pending.message_id, signed_vaa_bytes(pending, SIGNERS))
    vaas = await read_topic(bus, "vaas", 2, group_id=f"r-{uuid.uuid4().hex}", limit_s=10)
    [dead] = await read_topic(bus, "dlq", 1, group_id=f"r-{uuid.uuid4().hex}", limit_s=10)
    runner.stop()
    await asyncio.wait_for(task, 5)
    await bus.close()

    sequences = [decode_as(r.value, SignedVaa).message_id.sequence for r in vaas]
    assert sequences == [10, 11]  # in emitter order; the second `pending` emitted nothing
    assert b"FetchError" in (dead.header(REASON_HEADER) or b"")
    assert json.loads(dead.value)["sequence"] == 12
    assert (registry.get_sample_value("fedrelay_stage_retried_total", {"stage": "fetch"}) or 0) >= 2
    async with sessions() as session:
        stored = (await session.scalars(select(StoredVaa.sequence))).all()
    assert sorted(stored) == [10, 11]


def test_stub_answers_in_the_api_shape(stub: GuardianApiStub) -> None:
    import urllib.request

    observation = sample_observation(5)
    vaa = signed_vaa_bytes(observation, SIGNERS)
    stub.publish(observation.message_id, vaa)
    url = stub.url + signed_vaa_path(observation.message_id)
    with urllib.request.urlopen(url, timeout=5) as response:
        assert base64.b64decode(json.load(response)["vaaBytes"]) == vaa


async def test_a_batch_is_fetched_then_stored_in_one_ledger_transaction(
    stub: GuardianApiStub, api: GuardianApi, sessions: async_sessionmaker[AsyncSession]
) -> None:
    first, second, pending, mismatched = (sample_observation(20 + i) for i in range(4))
    for observation in (first, second):
        stub.publish(observation.message_id, signed_vaa_bytes(observation, SIGNERS))
    stub.publish(mismatched.message_id, signed_vaa_bytes(first, SIGNERS))  # another message's
    batch = [first, pending, second, first, mismatched]  # `first` observed twice
    records = [
        Record("observations", 0, offset, b"emitter", encode_message(observation))
        for offset, observation in enumerate(batch)
    ]
    ledger = CountingLedger(sessions)
    fetcher = VaaFetcher(api, ledger, SETS, clock=lambda: NOW)

    outcomes = await fetcher.process_batch(records)

    assert ledger.opened == 1
    assert isinstance(outcomes[1], VaaNotYetSigned)
    assert isinstance(outcomes[4], FetchError)
    emitted = [
        decode_as(o.outputs[0].value, SignedVaa).message_id.sequence
        for o in outcomes
        if isinstance(o, StageResult) and o.outputs
    ]
    assert emitted == [20, 21]  # the second `first` emits nothing
    assert isinstance(outcomes[3], StageResult)
    replayed = await fetcher.process_batch(records)  # the hand-off never committed
    assert [o.outputs for o in replayed if isinstance(o, StageResult)] == [
        o.outputs for o in outcomes if isinstance(o, StageResult)
    ]
    async with sessions() as session:
        stored = (await session.scalars(select(StoredVaa.sequence))).all()
    assert sorted(stored) == [20, 21]
