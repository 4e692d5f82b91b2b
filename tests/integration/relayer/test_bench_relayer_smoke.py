"""`fedrelay bench relayer` in miniature: 5 messages through the real pipeline on each route (the
EVM worker chain, the Solana worker program), figures present."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from fedrelay.adapters.devnet.services import Anvil, Kafka, Postgres
from fedrelay.bench.relayer import bench_relayer
from fedrelay.bench.relayer_solana import bench_solana_route

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("batch_max", "layout"), [(1, "one-process"), (8, "one-process"), (1, "processes")]
)
async def test_the_relayer_benchmark_delivers_every_message_and_reports_its_figures(
    batch_max: int,
    layout: str,
    coordinator_chain: Anvil,
    worker_chain: Anvil,
    kafka: Kafka,
    postgres: Postgres,
) -> None:
    figures = await bench_relayer(
        coordinator_chain, worker_chain, kafka, postgres, 5, batch_max=batch_max,
        steady_messages=3, timeout_s=120, console=Console(stderr=True, quiet=True),
        layout=layout, warm_up_messages=2,
    )  # fmt: skip
    json.dumps(figures)  # one JSON line's worth
    assert figures["benchmark"] == "relayer"
    assert (figures["batch_max"], figures["layout"]) == (batch_max, layout)
    # warm-up 2, burst 5, steady 3: every one confirmed
    assert (figures["messages"], figures["confirmed"], figures["raw_transactions"]) == (5, 10, 5)
    assert figures["warm_up_messages"] == 2
    # every stage reports its figures, from this process or from the stage processes' /metrics
    assert {"watch-2", "attest-0", "attest-1", "attest-2", "assemble", "route", "deliver-4"} <= set(
        figures["stages"]
    )
    assert figures["stages"]["deliver-4"]["records"] >= 10
    for name in ("throughput_msg_per_s", "latency_p50_s", "latency_p99_s", "sequential_raw_tps",
                 "pipelined_raw_tps", "ratio_to_sequential_raw", "ratio_to_pipelined_raw",
                 "steady_latency_p50_s", "steady_latency_p99_s", "deliver_stage_msg_per_s",
                 "elapsed_s"):  # fmt: skip
        assert isinstance(figures[name], float), name
    assert figures["latency_p50_s"] <= figures["latency_p99_s"]
    assert figures["steady_latency_p50_s"] <= figures["steady_latency_p99_s"]


async def test_the_relayer_benchmark_refuses_zero_messages_and_an_unknown_layout(
    coordinator_chain: Anvil, worker_chain: Anvil, kafka: Kafka, postgres: Postgres
) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        await bench_relayer(coordinator_chain, worker_chain, kafka, postgres, 0)
    with pytest.raises(ValueError, match="layout must be one of processes, one-process"):
        await bench_relayer(coordinator_chain, worker_chain, kafka, postgres, 5, layout="pods")


async def test_the_solana_route_delivers_every_message_and_reports_its_figures(
    coordinator_chain: Anvil, kafka: Kafka, postgres: Postgres
) -> None:
    figures = await bench_solana_route(
        coordinator_chain, kafka, postgres, 5, steady_messages=3, workers=2, timeout_s=120,
        console=Console(stderr=True, quiet=True),
    )  # fmt: skip
    json.dumps(figures)  # one JSON line's worth
    assert set(figures) == {
        "solana_messages", "solana_throughput_msg_per_s", "solana_latency_p50_s",
        "solana_latency_p99_s", "solana_slot_ms", "solana_route",
    }  # fmt: skip
    assert (figures["solana_messages"], figures["solana_slot_ms"]) == (5, 400)
    for name in ("solana_throughput_msg_per_s", "solana_latency_p50_s", "solana_latency_p99_s"):
        assert isinstance(figures[name], float), name
        assert figures[name] > 0, name
    assert figures["solana_latency_p50_s"] <= figures["solana_latency_p99_s"]
    assert "Solana worker program" in figures["solana_route"]
