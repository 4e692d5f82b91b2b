"""A round's trace is derived from its coordinates: the same everywhere, distinct per round."""

from __future__ import annotations

import struct

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fedrelay.protocol.tracing import (
    ROUND_TRACE_TAG,
    InvalidRound,
    round_attributes,
    round_context,
    round_span_context,
    traceparent,
)
from fedrelay.protocol.wormhole import keccak256


def test_the_same_round_gives_the_same_context_every_time() -> None:
    first = round_span_context(2, 7, 3)
    again = round_span_context(2, 7, 3)
    assert (first.trace_id, first.span_id) == (again.trace_id, again.span_id)
    assert traceparent(round_context(2, 7, 3)) == traceparent(round_context(2, 7, 3))


def test_the_derivation_is_the_documented_one() -> None:
    digest = keccak256(ROUND_TRACE_TAG + struct.pack(">HQI", 2, 7, 3))
    root = round_span_context(2, 7, 3)
    assert root.trace_id == int.from_bytes(digest[:16], "big")
    assert root.span_id == int.from_bytes(digest[16:24], "big")
    assert traceparent(round_context(2, 7, 3)) == f"00-{digest[:16].hex()}-{digest[16:24].hex()}-01"


def test_chain_job_and_round_each_change_the_trace() -> None:
    coordinates = [(2, 7, 3), (2, 7, 4), (2, 8, 3), (5, 7, 3), (2, 0, 0), (2, 3, 7)]
    roots = [round_span_context(*c) for c in coordinates]
    assert len({r.trace_id for r in roots}) == len(coordinates)
    assert len({r.span_id for r in roots}) == len(coordinates)


@pytest.mark.parametrize("coordinates", [(0, 0, 0), (2, 1, 0), (0xFFFF, 2**64 - 1, 2**32 - 1)])
def test_ids_are_valid_remote_and_sampled(coordinates: tuple[int, int, int]) -> None:
    root = round_span_context(*coordinates)
    assert root.is_valid
    assert root.trace_id != 0
    assert root.span_id != 0
    assert root.is_remote
    assert root.trace_flags.sampled


def test_spans_started_in_the_round_context_join_the_round() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    root = round_span_context(2, 7, 3)

    posted = tracer.start_as_current_span(
        "coordinator.posted", context=round_context(2, 7, 3), attributes=round_attributes(7, 3)
    )
    with posted, tracer.start_as_current_span("child"):
        pass
    with tracer.start_as_current_span("worker.train", context=round_context(2, 7, 3)):
        pass

    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {s.context.trace_id for s in spans.values()} == {root.trace_id}
    assert spans["coordinator.posted"].parent is not None
    assert spans["coordinator.posted"].parent.span_id == root.span_id
    assert spans["worker.train"].parent is not None
    assert spans["worker.train"].parent.span_id == root.span_id
    assert spans["child"].parent is not None
    assert spans["child"].parent.span_id == spans["coordinator.posted"].context.span_id
    assert spans["coordinator.posted"].attributes == {"fedrelay.job_id": 7, "fedrelay.round": 3}


@pytest.mark.parametrize(
    ("coordinates", "named"),
    [
        ((-1, 7, 3), "coordinator_chain"),
        ((0x1_0000, 7, 3), "coordinator_chain"),
        ((2, -1, 3), "job_id"),
        ((2, 2**64, 3), "job_id"),
        ((2, 7, 2**32), "round"),
        ((2, 7, True), "round"),
        ((2, "7", 3), "job_id"),
    ],
)
def test_coordinates_outside_the_protocol_widths_are_refused(
    coordinates: tuple[object, object, object], named: str
) -> None:
    with pytest.raises(InvalidRound, match=named):
        round_context(*coordinates)  # type: ignore[arg-type]
