"""Fetch and route together on the in-process bus: observations fan out to their destinations."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import async_sessionmaker
from support.relayer import (
    GuardianApiStub,
    read_topic,
    sample_observation,
    signed_vaa_bytes,
)
from support.wormhole import (
    guardian_set,
    guardian_signers,
    sample_round_settled,
    sample_update_committed,
)

from fedrelay.adapters.kafka import MemoryBus
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger
from fedrelay.relayer.records import DeliveryRequest, decode_as, encode_message, message_key
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stage import StageRunner, stage_metrics
from fedrelay.relayer.stages.fetch import GuardianApi, VaaFetcher
from fedrelay.relayer.stages.route import Router

SIGNERS = guardian_signers(3)


async def test_observations_reach_the_delivery_topic_of_their_target(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    settings = RelayerSettings(
        database_url=url,
        guardian_addresses=tuple("0x" + a.hex() for a in guardian_set(3).addresses),
        retry_base_s=0.01,
        retry_cap_s=0.05,
        poll_wait_s=0.05,
    )
    to_worker = [sample_observation(i, payload=sample_round_settled().to_bytes()) for i in (1, 2)]
    to_coordinator = sample_observation(3, payload=sample_update_committed().to_bytes())
    bus = MemoryBus()
    await bus.create_topics(["observations", "vaas", "deliveries.2", "deliveries.4", "dlq"])
    producer = bus.producer()
    await producer.start()
    for observation in (*to_worker, to_coordinator):
        await producer.send(
            "observations", encode_message(observation), key=message_key(observation.message_id)
        )
    await producer.stop()

    registry = CollectorRegistry()
    with GuardianApiStub().running() as stub:
        for observation in (*to_worker, to_coordinator):
            stub.publish(observation.message_id, signed_vaa_bytes(observation, SIGNERS))
        api = GuardianApi(stub.url, timeout_s=settings.guardian_api_timeout_s)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        common = {"bus": bus, "metrics": stage_metrics(registry)}
        fetch = StageRunner(
            name="fetch", inputs=[settings.observations_topic],
            processor=VaaFetcher(api, SqlRelayerLedger(sessions), settings.guardian_sets()),
            end_offsets=bus.end_offsets_reader(), dead_letters=SqlRelayerLedger(sessions),
            **common, **settings.runner_options("fetch"),  # type: ignore[arg-type]
        )  # fmt: skip
        route = StageRunner(
            name="route", inputs=[settings.vaas_topic],
            processor=Router(destinations=frozenset({2, 4})),
            **common, **settings.runner_options("route"),  # type: ignore[arg-type]
        )  # fmt: skip
        tasks = [asyncio.create_task(r.run()) for r in (fetch, route)]
        try:
            worker = await read_topic(bus, settings.delivery_topic(4), 2, group_id=uuid.uuid4().hex)
            coordinator = await read_topic(
                bus, settings.delivery_topic(2), 1, group_id=uuid.uuid4().hex
            )
        finally:
            fetch.stop()
            route.stop()
            await asyncio.wait_for(asyncio.gather(*tasks), 5)
            await api.aclose()
            await engine.dispose()

    assert [decode_as(r.value, DeliveryRequest).message_id.sequence for r in worker] == [1, 2]
    [request] = [decode_as(r.value, DeliveryRequest) for r in coordinator]
    assert request.digest == to_coordinator.digest
    assert request.destination_chain == 2
    for stage in ("fetch", "route"):
        assert registry.get_sample_value("fedrelay_stage_processed_total", {"stage": stage}) == 3
