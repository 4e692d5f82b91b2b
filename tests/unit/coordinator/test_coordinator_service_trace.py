"""The coordinator's steps of a round are spans of the round's derived trace."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import fedrelay.coordinator.service
from fedrelay.adapters.blobstore import MemoryBlobStore
from fedrelay.coordinator.memory_store import MemoryCoordinatorStore
from fedrelay.coordinator.service import CoordinatorService
from fedrelay.coordinator.testing import FakeClock, FakeJobMarket
from fedrelay.coordinator.verification import JobWorkbench
from fedrelay.ports.blobs import POSTER
from fedrelay.protocol.job_config import DataSpec, JobConfig, MlpSpec
from fedrelay.protocol.tracing import round_span_context
from fedrelay.training import encode_blob


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(fedrelay.coordinator.service, "tracer", provider.get_tracer("test"))
    return exporter


@pytest.mark.parametrize("chain_id", [2, 5])
async def test_a_step_of_a_round_is_a_span_of_the_rounds_trace(
    exporter: InMemorySpanExporter, chain_id: int
) -> None:
    clock = FakeClock()
    market = FakeJobMarket(clock, challenge_window=30)
    blobs = MemoryBlobStore()
    config = JobConfig(
        model=MlpSpec(hidden=8),
        data=DataSpec(shards=3, partition="iid", max_examples_per_shard=40),
    )
    model = await blobs.put(encode_blob(JobWorkbench(config).initial_model()), domain=POSTER)
    settings = await blobs.put(config.to_bytes(), domain=POSTER)
    job_id = market.post_job(
        bytes.fromhex(model),
        bytes.fromhex(settings),
        num_rounds=2,
        workers_per_round=2,
        reward_per_round=1,
    )
    service = CoordinatorService(
        market, MemoryCoordinatorStore(), blobs, chain_id=chain_id, clock=clock
    )

    await service.step()  # follows JobPosted, then advances round 0 (it waits for workers)

    [span] = exporter.get_finished_spans()
    root = round_span_context(chain_id, job_id, 0)
    assert span.name == "coordinator.posted"
    assert span.context is not None
    assert span.context.trace_id == root.trace_id
    assert span.parent is not None
    assert span.parent.span_id == root.span_id
    assert span.attributes == {"fedrelay.job_id": job_id, "fedrelay.round": 0}
