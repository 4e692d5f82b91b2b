"""Running `fedrelay relayer run`, `fedrelay coordinator run` and `fedrelay worker
watch-proposals` as processes, and probing them."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import support.wormhole as wormhole_testing
from support.processes import Running, spawn

from fedrelay.adapters.devnet.process import free_port
from fedrelay.adapters.evm.testing import EvmDeployment
from fedrelay.adapters.ledger import upgrade

FEDRELAY = Path(sys.executable).parent / "fedrelay"
GUARDIANS = 3
RELAYER_KEY = 6  # the anvil account that signs deliveries on both chains
AGGREGATOR_KEY = 1  # the coordinator chain's account that deploy_pair makes the aggregator


@contextmanager
def relayer_process(
    evm: EvmDeployment, workdir: Path, *, kafka_bootstrap: str | None = None
) -> Iterator[Running]:
    """`fedrelay relayer run --stage all` over both chains of `evm`, with a SQLite ledger.

    Args:
        evm: The chains and their contracts.
        workdir: Where the chains file, keys, ledger and log go.
        kafka_bootstrap: The broker to use; None for the embedded in-process bus.
    """
    chains_file = workdir / "chains.yaml"
    chains_file.write_text(evm.chains_yaml())
    signer = workdir / "signer.key"
    signer.write_text(evm.coordinator.private_keys[RELAYER_KEY] + "\n")
    argv = [str(FEDRELAY), "relayer", "run", "--stage", "all", "--signer-key-file", str(signer)]
    for index in range(GUARDIANS):
        key = workdir / f"guardian-{index}.key"
        key.write_text("0x" + wormhole_testing.guardian_key(index).hex() + "\n")
        argv += ["--guardian-key-file", str(key)]
    port, tag = free_port(), uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "FEDRELAY_CHAINS_FILE": str(chains_file),
        "FEDRELAY_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'relayer.db'}",
        "FEDRELAY_HEALTH_PORT": str(port),
        "FEDRELAY_GROUP_PREFIX": f"fedrelay-{tag}",
        "FEDRELAY_POLL_WAIT_S": "0.1",
        "FEDRELAY_WATCH_INTERVAL_S": "0.1",
        "FEDRELAY_LAG_INTERVAL_S": "0.5",
        "OTEL_TRACES_EXPORTER": "none",
    }
    env.pop("FEDRELAY_KAFKA_BOOTSTRAP", None)
    if kafka_bootstrap is not None:
        env["FEDRELAY_KAFKA_BOOTSTRAP"] = kafka_bootstrap
    running = spawn(argv, env, workdir / "relayer.log", port)
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def coordinator_process(
    rpc_url: str,
    job_market: str,
    key: str,
    workdir: Path,
    *,
    start_block: int = 0,
    migrate: bool = True,
) -> Iterator[Running]:
    """`fedrelay coordinator run` following `job_market` on `rpc_url`, with a SQLite ledger.

    Args:
        rpc_url: The coordinator chain's RPC.
        job_market: The JobMarket's address.
        key: The aggregator's private key (0x hex), handed over in a file.
        workdir: Where the key, ledger, blobs and log go.
        start_block: Where to start following the chain.
        migrate: Bring the ledger to the newest migration first (False: an empty ledger).
    """
    key_file = workdir / "aggregator.key"
    key_file.write_text(key + "\n")
    port, database = free_port(), f"sqlite+aiosqlite:///{workdir / 'coordinator.db'}"
    if migrate:
        upgrade(database)  # the chart's pre-install Job does this for the coordinator
    env = {
        **os.environ,
        "FEDRELAY_DATABASE_URL": database,
        "FEDRELAY_COORDINATOR_RPC_URL": rpc_url,
        "FEDRELAY_COORDINATOR_JOB_MARKET": job_market,
        "FEDRELAY_API_HOST": "127.0.0.1",
        "FEDRELAY_API_PORT": str(free_port()),
        "FEDRELAY_HEALTH_PORT": str(port),
        "FEDRELAY_BLOB_DIR": str(workdir / "blobs"),
        "FEDRELAY_START_BLOCK": str(start_block),
        "FEDRELAY_COORDINATOR_ADMIN_TOKEN": "admin-token-0123456789",
        "FEDRELAY_DRAIN_SECONDS": "10",
        "OTEL_TRACES_EXPORTER": "none",
    }
    argv = [str(FEDRELAY), "coordinator", "run", "--signer-key-file", str(key_file)]
    running = spawn(argv, env, workdir / "coordinator.log", port)
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def proposal_watch_process(rpc_url: str, job_market: str, workdir: Path) -> Iterator[Running]:
    """`fedrelay worker watch-proposals` over `job_market` on `rpc_url`, reporting only, with its
    health and metrics on a port of its own."""
    port = free_port()
    env = {
        **os.environ,
        "FEDRELAY_COORDINATOR_RPC_URL": rpc_url,
        "FEDRELAY_COORDINATOR_JOB_MARKET": job_market,
        "FEDRELAY_HEALTH_PORT": str(port),
        "OTEL_TRACES_EXPORTER": "none",
    }
    argv = [str(FEDRELAY), "worker", "watch-proposals", "--poll-interval", "0.2"]
    running = spawn(argv, env, workdir / "proposal-watch.log", port)
    try:
        yield running
    finally:
        running.stop()
