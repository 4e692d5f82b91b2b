"""Health endpoints tell readiness from their checks; trace context survives the bus."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, Counter

from fedrelay.adapters.devnet.process import free_port
from fedrelay.adapters.telemetry.health import HealthServer, NotReady, health_app
from fedrelay.protocol.tracing import (
    context_from_traceparent,
    extract_context,
    inject_headers,
    traceparent,
)


async def test_readyz_follows_its_checks() -> None:
    state = {"db": True}

    async def database() -> bool:
        return state["db"]

    async def broken() -> bool:
        raise ConnectionRefusedError("kafka down")

    registry = CollectorRegistry()
    Counter("fedrelay_probe_total", "probe", registry=registry).inc(3)
    app = health_app({"database": database}, registry=registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["database"] == {"ready": True, "detail": "ok"}
        state["db"] = False
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"]["database"]["ready"] is False
        metrics = await client.get("/metrics")
        assert "fedrelay_probe_total 3.0" in metrics.text

    failing = health_app({"kafka": broken}, registry=registry)
    transport = httpx.ASGITransport(app=failing)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
        body = (await client.get("/readyz")).json()
    assert body["ready"] is False
    assert body["checks"]["kafka"]["detail"] == "unreachable (ConnectionRefusedError)"


async def test_readyz_shows_a_checks_own_reason_and_the_process_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def schema() -> bool:
        raise NotReady("the ledger has no schema: run `fedrelay db upgrade`")

    app = health_app(
        {"schema": schema},
        registry=CollectorRegistry(),
        details={"leadership": lambda: {"role": "follower", "token": 4}},
    )
    transport = httpx.ASGITransport(app=app)
    with caplog.at_level(logging.WARNING):
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
            answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json() == {
        "ready": False,
        "checks": {
            "schema": {
                "ready": False,
                "detail": "the ledger has no schema: run `fedrelay db upgrade`",
            }
        },
        "leadership": {"role": "follower", "token": 4},
    }
    assert caplog.records == []  # the check's owner logs its reason itself, once


async def test_readyz_never_shows_exception_text(caplog: pytest.LogCaptureFixture) -> None:
    url = "https://rpc.example/v3/0123456789abcdef0123456789abcdef?apikey=hunter2-key"

    async def leaks() -> bool:
        raise OSError(f"Cannot connect to {url}")

    app = health_app({"chain": leaks}, registry=CollectorRegistry())
    transport = httpx.ASGITransport(app=app)
    with caplog.at_level(logging.WARNING, logger="fedrelay.adapters.telemetry.health"):
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
            first = await client.get("/readyz")
            await client.get("/readyz")
    assert first.status_code == 503
    assert first.json()["checks"]["chain"] == {"ready": False, "detail": "unreachable (OSError)"}
    assert "0123456789abcdef" not in first.text
    assert "hunter2" not in first.text
    failures = [r.getMessage() for r in caplog.records if "readiness check chain" in r.getMessage()]
    assert len(failures) == 1  # logged once per new reason, not on every probe
    assert "rpc.example/v3/***?apikey=***" in failures[0]
    assert "0123456789abcdef" not in failures[0]
    assert "hunter2" not in failures[0]


async def test_slow_check_counts_as_not_ready() -> None:
    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    app = health_app({"chain": hangs}, registry=CollectorRegistry(), check_timeout=0.1)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["chain"]["detail"] == "no answer within 0.1s"


async def test_health_server_serves_on_a_real_port() -> None:
    async def ok() -> bool:
        return True

    port = free_port()
    server = HealthServer({"ok": ok}, host="127.0.0.1", port=port, registry=CollectorRegistry())
    task = asyncio.create_task(server.serve())
    try:
        await server.wait_started(10)
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/readyz")
        assert response.status_code == 200
    finally:
        server.stop()
        await asyncio.wait_for(task, 10)


def test_trace_context_round_trips_through_headers_and_ledger_string() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    with tracer.start_as_current_span("watch") as watch:
        headers = inject_headers()
        stored = traceparent()
    assert dict(headers)["traceparent"].decode() == stored

    with tracer.start_as_current_span("attest", context=extract_context(headers)):
        pass
    with tracer.start_as_current_span("deliver", context=context_from_traceparent(stored)):
        pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    trace_id = watch.get_span_context().trace_id
    assert spans["attest"].context.trace_id == trace_id
    assert spans["deliver"].context.trace_id == trace_id
    assert spans["attest"].parent is not None
    assert spans["attest"].parent.span_id == watch.get_span_context().span_id
    assert trace.get_current_span().get_span_context().is_valid is False
