"""A shorter run of the end-to-end demo: the same outcome on fewer rounds, one trace per round.

The whole system runs for real (devnet chains, relayer stages with guardians, coordinator and
its API, six workers on two chains, one of them committing an update its transcript does not
end in); only the job is smaller. The demo runs once for the module, with an in-memory span
exporter attached to the process's tracer provider. The outcome is checked in the demo's
summary and again on the chains themselves; the spans against each round's derived trace.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fedrelay.adapters.devnet.network import (
    COORDINATOR_WORMHOLE_CHAIN,
    SOLANA_WORMHOLE_CHAIN,
    WORKER_EVM_WORMHOLE_CHAIN,
)
from fedrelay.adapters.devnet.state import WORKER_EVM, WORKER_SOLANA
from fedrelay.demo import DemoResult, DemoSettings, run_demo, write_summary
from fedrelay.protocol.tracing import round_span_context

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SETTINGS = DemoSettings(
    rounds=3,
    evm_workers=3,
    solana_workers=3,
    dishonest="update",  # the Kafka and PostgreSQL variant cheats with a transcript, on Solana
    dishonest_chain="evm",
    steps=40,
    checkpoint_every=20,
    learning_rate=0.2,
    min_accuracy=0.80,  # three rounds; the full demo asks 0.90 of ten
    timeout_s=240,
    rewards="credit",  # the Kafka and PostgreSQL variant pays through the RewardDistributor
)
WORKER_CHAINS = (WORKER_EVM_WORMHOLE_CHAIN, SOLANA_WORMHOLE_CHAIN)


@dataclass(frozen=True)
class DemoRun:
    """One run of the short demo and what it left behind."""

    result: DemoResult
    summary: dict[str, Any]
    report_dir: Path
    state_dir: Path
    spans: tuple[ReadableSpan, ...]


class _Collector(SpanProcessor):
    """Keeps finished spans in an exporter while open; a provider cannot drop a processor, so
    after the module it is closed and stays attached, doing nothing."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter
        self.open = True

    def on_end(self, span: ReadableSpan) -> None:
        if self.open:
            self.exporter.export((span,))


@pytest.fixture(scope="module")
def span_exporter() -> Iterator[InMemorySpanExporter]:
    """An in-memory exporter on the process's tracer provider (installed if there is none yet).

    The global provider can be set once per process, and the services' module-level tracers
    follow it, so an SDK provider another test installed is reused; the collector is closed
    afterwards, so that it keeps no later spans.
    """
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), f"not an SDK tracer provider: {provider!r}"
    exporter = InMemorySpanExporter()
    processor = _Collector(exporter)
    provider.add_span_processor(processor)
    yield exporter
    processor.open = False
    exporter.clear()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, span_exporter: InMemorySpanExporter) -> DemoRun:
    root = tmp_path_factory.mktemp("demo")
    result = run_demo(SETTINGS, root / "state")
    summary = json.loads(write_summary(result, root / "report").read_text())
    spans = tuple(span_exporter.get_finished_spans())
    return DemoRun(result, summary, root / "report", root / "state", spans)


def test_short_demo_pays_the_honest_workers_and_slashes_the_cheat(demo: DemoRun) -> None:
    result, summary = demo.result, demo.summary

    assert result.problems() == [], result.problems()
    assert summary["rounds"] == 3
    assert len(summary["accuracy_per_round"]) == 3
    assert summary["final_accuracy"] >= SETTINGS.min_accuracy

    workers = summary["workers"]
    assert len(workers) == 6
    assert {w["chain"] for w in workers} == {WORKER_EVM, WORKER_SOLANA}
    honest = [w for w in workers if not w["dishonest"]]
    cheats = [w for w in workers if w["dishonest"]]
    assert len(cheats) == 1
    assert len(honest) == 5
    assert summary["rewards"] == "credit"
    for worker in honest:  # paid by the coordinator and claimable on JobMarket, never slashed
        assert worker["reward"] > 0, worker
        assert worker["claimable"] == worker["reward"], worker
        assert worker["slashed_rounds"] == [], worker
        assert worker["slashed_on_chain"] == 0, worker
    cheat = cheats[0]
    assert cheat["chain"] == WORKER_EVM
    assert cheat["slashed_rounds"], cheat  # its update is not its transcript's final model
    assert cheat["stake_after"] < cheat["stake_before"]  # read back from WorkerHub
    assert cheat["claimable"] == 0
    assert "final checkpoint" in summary["dishonest_worker"]["detection_reason"]

    routes = summary["messages_per_route"]
    for route in (
        "worker-evm -> coordinator",
        "worker-solana -> coordinator",
        "coordinator -> worker-evm",
        "coordinator -> worker-solana",
    ):
        assert routes.get(route, {}).get("confirmed", 0) > 0, routes
    assert (demo.report_dir / "summary.md").exists()


def test_the_report_counts_gas_and_compute_units_and_plots_accuracy(demo: DemoRun) -> None:
    summary = demo.summary
    for chain in ("coordinator", WORKER_EVM):
        gas = summary["gas"][chain]
        assert gas["gas_used"] > 0, gas
        assert gas["fees_wei"] > 0, gas
        assert gas["transactions"] == sum(r["transactions"] for r in gas["by_role"].values())
    # Deliveries are paid by the relayer's signer on each EVM chain, settlement by the aggregator.
    assert summary["gas"]["coordinator"]["by_role"]["aggregator"]["gas_used"] > 0
    assert summary["gas"][WORKER_EVM]["by_role"]["workers"]["gas_used"] > 0
    solana = summary["compute_units"][WORKER_SOLANA]
    assert solana["compute_units"] > 0, solana
    assert solana["by_instruction"]["commit_update"]["instructions"] >= SETTINGS.rounds
    # each round's commitments leave Solana together, in at least one publication a round
    assert solana["by_instruction"]["publish_commitments"]["instructions"] >= SETTINGS.rounds
    per_round = summary["gas_per_worker_round"]
    for chain in ("coordinator", WORKER_EVM):
        assert per_round[chain]["gas"] > 0, per_round
        assert per_round[chain]["worker_rounds"] > 0, per_round
    assert per_round[WORKER_SOLANA]["compute_units"] > 0, per_round
    assert per_round["coordinator"]["worker_rounds"] == sum(w["tasks"] for w in summary["workers"])
    plot = (demo.report_dir / "accuracy.png").read_bytes()
    assert plot.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(plot) > 1000
    assert "accuracy.png" in (demo.report_dir / "summary.md").read_text()


def _scope(span: ReadableSpan) -> str:
    return span.instrumentation_scope.name if span.instrumentation_scope else ""


def _attribute(span: ReadableSpan, name: str) -> Any:
    return (span.attributes or {}).get(name)


def _watched_by(span: ReadableSpan, spans: list[ReadableSpan]) -> str | None:
    """The watch stage at the start of the relayer path that led to ``span``."""
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    current: ReadableSpan | None = span
    while current is not None:
        stage = str(_attribute(current, "fedrelay.stage"))
        if stage.startswith("watch-"):
            return stage
        current = by_id.get(current.parent.span_id) if current.parent is not None else None
    return None


def test_one_round_is_one_trace(demo: DemoRun) -> None:
    job_id = demo.result.job_id
    assert demo.result.rounds == 3
    for round_number in range(demo.result.rounds):
        root = round_span_context(COORDINATOR_WORMHOLE_CHAIN, job_id, round_number)
        spans = [
            s for s in demo.spans if s.context is not None and s.context.trace_id == root.trace_id
        ]
        where = f"round {round_number} of job {job_id}"

        # One tree: every span hangs off another span of the trace or off the round's root.
        ids = {s.context.span_id for s in spans if s.context is not None}
        orphans = [
            s.name
            for s in spans
            if s.parent is None or s.parent.span_id not in ids | {root.span_id}
        ]
        assert orphans == [], f"{where}: spans outside the round's tree: {orphans}"

        coordinator = [s for s in spans if _scope(s) == "fedrelay.coordinator"]
        assert coordinator, f"{where}: no coordinator span"
        assert {
            (_attribute(s, "fedrelay.job_id"), _attribute(s, "fedrelay.round")) for s in coordinator
        } == {(job_id, round_number)}
        assert {"coordinator.posted", "coordinator.collecting"} <= {s.name for s in coordinator}

        relayed = [s for s in spans if _scope(s) == "fedrelay.relayer"]
        stages = sorted({str(_attribute(s, "fedrelay.stage")) for s in relayed})
        assert {"assemble", "route"} <= set(stages), f"{where}: {stages}"
        assert any(stage.startswith("attest-") for stage in stages), f"{where}: {stages}"
        routes = {(_watched_by(s, spans), _attribute(s, "fedrelay.stage")) for s in relayed}
        outbound = {(f"watch-{COORDINATOR_WORMHOLE_CHAIN}", f"deliver-{c}") for c in WORKER_CHAINS}
        inbound = {(f"watch-{c}", f"deliver-{COORDINATOR_WORMHOLE_CHAIN}") for c in WORKER_CHAINS}
        # coordinator -> worker chain: TASK_ASSIGNED (and ROUND_SETTLED) watched on the
        # coordinator chain, attested, assembled, routed and delivered to a worker chain
        assert routes & outbound, f"{where}: {sorted(map(str, routes))}"
        # worker chain -> coordinator: UPDATE_COMMITTED watched on a worker chain and delivered
        # to the coordinator chain
        assert routes & inbound, f"{where}: {sorted(map(str, routes))}"

        workers = [s for s in spans if _scope(s) == "fedrelay.worker"]
        # ... and a worker published the round's pending commitments (UPDATE_COMMITTED)
        assert {
            "worker.download",
            "worker.train",
            "worker.upload",
            "worker.commit",
            "worker.publish",
        } <= {s.name for s in workers}, f"{where}: {sorted({s.name for s in workers})}"
        assert {_attribute(s, "fedrelay.round") for s in workers} == {round_number}


def test_deliveries_keep_the_round_trace_in_the_ledger(demo: DemoRun) -> None:
    ledger = demo.state_dir / "relayer.db"
    assert ledger.exists(), f"the relayer's SQLite ledger is not at {ledger}"
    with closing(sqlite3.connect(ledger)) as connection:
        rows = connection.execute(
            "SELECT destination_chain, trace_context FROM deliveries "
            "WHERE trace_context IS NOT NULL"
        ).fetchall()
    destinations_by_trace: dict[int, set[int]] = {}
    for destination, context in rows:
        destinations_by_trace.setdefault(int(context.split("-")[1], 16), set()).add(destination)
    for round_number in range(demo.result.rounds):
        root = round_span_context(COORDINATOR_WORMHOLE_CHAIN, demo.result.job_id, round_number)
        destinations = destinations_by_trace.get(root.trace_id, set())
        assert COORDINATOR_WORMHOLE_CHAIN in destinations, (round_number, destinations)
        assert destinations & set(WORKER_CHAINS), (round_number, destinations)
