"""Every metric the Grafana dashboard queries is exported by a running fedrelay process.

A relayer (``relayer run --stage all``, embedded bus and ledger) carries one worker registration
from the worker chain to the coordinator chain, and a coordinator (``coordinator run``) follows
the same JobMarket and assigns that worker the task of a one-worker job posted with
``job post``; a proposal watch (``worker watch-proposals``) reads the same market. Their
``/metrics`` are scraped and parsed as Prometheus exposition; each
``fedrelay_*`` name in the dashboard's PromQL must be a metric family one of them exports.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from ops_support import (
    AGGREGATOR_KEY,
    FEDRELAY,
    coordinator_process,
    proposal_watch_process,
    relayer_process,
)

from fedrelay.adapters.devnet.process import wait_until
from fedrelay.adapters.devnet.toolchain import REPO_ROOT
from fedrelay.adapters.evm import Signer, address_to_bytes32
from fedrelay.adapters.evm.testing import EvmDeployment
from fedrelay.protocol.job_config import DataSpec, JobConfig, MlpSpec

pytestmark = pytest.mark.integration

DASHBOARD = REPO_ROOT / "helm" / "fedrelay" / "dashboards" / "fedrelay.json"
METRIC = re.compile(r"\bfedrelay_[a-z0-9_]+\b")
WORKERS = 4  # the worker chain's Wormhole chain id
WORKER_ACCOUNT = 3
POSTER_ACCOUNT = 4
CONFIG = JobConfig.model_validate(
    {"model": MlpSpec(hidden=8), "data": DataSpec(shards=1, max_examples_per_shard=40)}
)
# How the client library names a family after the series a query names (histograms, counters).
SERIES_SUFFIXES = ("_bucket", "_sum", "_count", "_total")


def _queried_families() -> set[str]:
    """The metric families the dashboard's PromQL expressions name."""
    dashboard = json.loads(DASHBOARD.read_text())
    names: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names |= set(METRIC.findall(target["expr"]))
    families = set()
    for name in names:
        for suffix in SERIES_SUFFIXES:
            name = name.removesuffix(suffix)
        families.add(name)
    return families


def test_every_metric_the_dashboard_queries_is_exported_by_a_running_process(
    evm: EvmDeployment, tmp_path: Path
) -> None:
    queried = _queried_families()
    assert len(queried) >= 9
    (tmp_path / "relayer").mkdir()
    (tmp_path / "coordinator").mkdir()
    (tmp_path / "watch").mkdir()
    head = int(evm.coordinator_chain.w3.eth.block_number)
    aggregator = evm.coordinator.private_keys[AGGREGATOR_KEY]
    with (
        relayer_process(evm, tmp_path / "relayer") as relayer,
        coordinator_process(
            evm.coordinator.rpc_url, evm.market.address, aggregator, tmp_path / "coordinator",
            start_block=head,
        ) as coordinator,
        proposal_watch_process(
            evm.coordinator.rpc_url, evm.market.address, tmp_path / "watch"
        ) as watch,
    ):  # fmt: skip
        relayer.wait_ready(True)
        coordinator.wait_ready(True)
        watch.wait_ready(True)
        # One message through every stage: a worker registration, worker chain -> coordinator.
        worker = Signer(evm.workers.private_keys[WORKER_ACCOUNT])
        evm.hub.stake(worker, 10**18)
        evm.hub.register(worker, address_to_bytes32(evm.coordinator.addresses[5]), 1)
        key = address_to_bytes32(worker.address)
        wait_until(lambda: evm.market.worker(WORKERS, key).registered, 60, "the registration")

        def delivered() -> bool:
            processed = relayer.families().get("fedrelay_stage_processed", set())
            return (("stage", "deliver-2"),) in processed

        wait_until(delivered, 30, "deliver-2 to count the delivery", 0.2, relayer.alive)
        _post_job(evm, tmp_path)

        def assigned() -> bool:
            workers = coordinator.families().get("fedrelay_coordinator_round_workers", set())
            return any(dict(labels).get("state") == "assigned" for labels in workers)

        wait_until(assigned, 60, "the coordinator to assign the job's task", 0.2, coordinator.alive)
        relayer_families = relayer.families()
        coordinator_families = coordinator.families()

        def watch_read_the_head() -> bool:
            answer = watch.get("/metrics")
            lines = (answer.text if answer else "").splitlines()
            line = next((x for x in lines if x.startswith("fedrelay_proposal_watch_block ")), None)
            head = int(evm.coordinator_chain.w3.eth.block_number)
            return line is not None and float(line.split()[1]) >= head

        wait_until(watch_read_the_head, 30, "the watch to read the head", 0.2, watch.alive)
        watch_families = watch.families()
        assert watch.stop() == 0, watch.log.read_text()[-3000:]  # SIGTERM: a clean stop

    exported = set(relayer_families) | set(coordinator_families) | set(watch_families)
    assert queried <= exported, f"queried but not exported: {sorted(queried - exported)}"
    # The relayer's families carry the series the panels select on.
    latency = relayer_families["fedrelay_stage_latency_seconds"]
    assert any(dict(labels).get("stage") == "deliver-2" for labels in latency)
    assert {dict(labels)["stage"] for labels in relayer_families["fedrelay_dlq_entries"]} >= {
        "assemble",
        "deliver-2",
    }
    coordinator_only = {name for name in queried if name.startswith("fedrelay_coordinator_")}
    assert coordinator_only
    assert coordinator_only <= set(coordinator_families)


def _post_job(evm: EvmDeployment, workdir: Path) -> None:
    """Post a one-round, one-worker job with ``fedrelay job post`` into the coordinator's blobs."""
    key_file, config_file = workdir / "poster.key", workdir / "job.json"
    key_file.write_text(evm.coordinator.private_keys[POSTER_ACCOUNT] + "\n")
    config_file.write_bytes(CONFIG.to_bytes())
    env = {**os.environ, "FEDRELAY_BLOB_DIR": str(workdir / "coordinator" / "blobs")}
    argv = [str(FEDRELAY), "job", "post", "--rounds", "1", "--workers-per-round", "1",
            "--reward-per-round", "1000", "--config", str(config_file),
            "--signer-key-file", str(key_file), "--rpc-url", evm.coordinator.rpc_url,
            "--job-market", evm.market.address]  # fmt: skip
    posted = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert posted.returncode == 0, posted.stdout + posted.stderr
