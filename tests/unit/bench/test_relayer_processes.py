"""The relayer benchmark's stage processes: their settings, their commands, their figures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedrelay.bench.relayer_processes import (
    add_stage_figures,
    chart_layout,
    settings_env,
)
from fedrelay.relayer.settings import RelayerSettings


def test_the_settings_reach_a_stage_process_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = RelayerSettings(
        database_url="postgresql+asyncpg://u@127.0.0.1:1/db", kafka_bootstrap="127.0.0.1:9",
        topic_partitions=2, observations_topic="observations-x", poll_wait_s=0.1,
        guardian_addresses=("0x" + "11" * 20, "0x" + "22" * 20), deliver_batch_max=8,
        batches_in_flight=2, chains_file=Path("/tmp/chains.yaml"),
    )  # fmt: skip
    for name in list(os.environ):
        if name.startswith("FEDRELAY_"):
            monkeypatch.delenv(name)
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    assert RelayerSettings() == settings
    assert "FEDRELAY_KAFKA_BOOTSTRAP" in settings_env(settings)
    assert "FEDRELAY_KAFKA_BOOTSTRAP" not in settings_env(RelayerSettings(kafka_bootstrap=None))


def test_the_processes_are_the_charts_workloads() -> None:
    keys = [Path("/k/guardian-0.key"), Path("/k/guardian-1.key")]
    commands = chart_layout(["coordinator", "worker-evm"], keys, Path("/k/signer.key"))
    assert [c.name for c in commands] == [
        "watch-coordinator", "watch-worker-evm", "guardian-0", "guardian-1", "assemble",
        "deliver-coordinator", "deliver-worker-evm",
    ]  # fmt: skip
    by_name = {c.name: c.args for c in commands}
    assert by_name["watch-worker-evm"] == (
        "relayer", "run", "--stage", "watch", "--chain", "worker-evm",
    )  # fmt: skip
    assert by_name["guardian-1"] == (
        "guardian", "run", "--guardian-key-file", "/k/guardian-1.key", "--guardian-index", "1",
    )  # fmt: skip
    assert by_name["assemble"] == ("relayer", "run", "--stage", "assemble")
    assert by_name["deliver-coordinator"] == (
        "relayer", "run", "--stage", "deliver", "--signer-key-file", "/k/signer.key",
        "--chain", "coordinator",
    )  # fmt: skip


def test_under_threshold_attestation_each_guardian_runs_with_its_share() -> None:
    keys = [Path("/k/guardian-0.key"), Path("/k/guardian-1.key")]
    shares = [Path("/k/guardian-0.share"), Path("/k/guardian-1.share")]
    commands = chart_layout(["coordinator"], keys, Path("/k/signer.key"), shares)
    by_name = {c.name: c.args for c in commands}
    assert by_name["guardian-1"] == (
        "guardian", "run", "--guardian-key-file", "/k/guardian-1.key", "--guardian-index", "1",
        "--threshold-share-file", "/k/guardian-1.share",
    )  # fmt: skip
    with pytest.raises(ValueError, match="1 threshold shares for 2 guardians"):
        chart_layout(["coordinator"], keys, Path("/k/signer.key"), shares[:1])


METRICS = """\
# HELP fedrelay_stage_processed_total Records a stage processed and committed.
# TYPE fedrelay_stage_processed_total counter
fedrelay_stage_processed_total{stage="assemble"} 30.0
fedrelay_stage_processed_total{stage="route"} 10.0
# HELP fedrelay_stage_batches_total Batches (bus transactions) a stage handed on.
# TYPE fedrelay_stage_batches_total counter
fedrelay_stage_batches_total{stage="route"} 4.0
# HELP fedrelay_stage_step_seconds_total Wall-clock seconds.
# TYPE fedrelay_stage_step_seconds_total counter
fedrelay_stage_step_seconds_total{stage="route",step="process"} 0.25
fedrelay_stage_step_seconds_total{stage="route",step="handoff"} 1.5
# HELP fedrelay_stage_failed_total Records a stage gave up on.
# TYPE fedrelay_stage_failed_total counter
fedrelay_stage_failed_total{stage="route"} 1.0
"""


def test_each_processs_metrics_are_summed_per_stage() -> None:
    figures: dict[str, dict[str, float]] = {}
    add_stage_figures(figures, METRICS)
    add_stage_figures(figures, METRICS)  # a second process reporting the same stages adds up
    assert figures == {
        "assemble": {"records": 60.0},
        "route": {"records": 20.0, "batches": 8.0, "process_s": 0.5, "handoff_s": 3.0},
    }
