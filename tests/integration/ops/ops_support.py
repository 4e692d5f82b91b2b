"""Running `fedrelay relayer run` and `fedrelay coordinator run` as processes, and probing them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import support.wormhole as wormhole_testing
from prometheus_client.parser import text_string_to_metric_families

from fedrelay.adapters.devnet.process import free_port, wait_until
from fedrelay.adapters.evm.testing import EvmDeployment
from fedrelay.adapters.ledger import upgrade

FEDRELAY = Path(sys.executable).parent / "fedrelay"
GUARDIANS = 3
RELAYER_KEY = 6  # the anvil account that signs deliveries on both chains
AGGREGATOR_KEY = 1  # the coordinator chain's account that deploy_pair makes the aggregator


@dataclass(frozen=True)
class Running:
    """A fedrelay process under test: its child, log and health port."""

    process: subprocess.Popen[bytes]
    log: Path
    port: int

    def get(self, path: str) -> httpx.Response | None:
        """GET `path` on the health port; None while nothing answers."""
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=10)
        except httpx.TransportError:
            return None

    def alive(self) -> bool:
        """Whether the child still runs."""
        return self.process.poll() is None

    def wait_ready(self, ready: bool, timeout: float = 60) -> dict[str, dict[str, object]]:
        """Wait until ``/readyz`` answers 200 (`ready`) or 503 (not); returns its checks."""
        want = 200 if ready else 503
        answers: list[httpx.Response] = []

        def answered() -> bool:
            answer = self.get("/readyz")
            if answer is None:
                return False
            answers.append(answer)
            return answer.status_code == want

        try:
            wait_until(answered, timeout, f"/readyz to answer {want}", 0.2, self.alive)
        except (TimeoutError, ChildProcessError) as exc:
            raise AssertionError(f"{exc}\n{self.log.read_text()[-6000:]}") from None
        checks: dict[str, dict[str, object]] = answers[-1].json()["checks"]
        return checks

    def families(self) -> dict[str, set[tuple[tuple[str, str], ...]]]:
        """The metric families ``/metrics`` exports, each with the label sets of its samples."""
        answer = self.get("/metrics")
        assert answer is not None, self.log.read_text()[-6000:]
        assert answer.status_code == 200
        return {
            family.name: {tuple(sorted(sample.labels.items())) for sample in family.samples}
            for family in text_string_to_metric_families(answer.text)
        }

    def wait_stages_running(self, stages: set[str], timeout: float = 60) -> None:
        """Wait until each of `stages` has connected to its bus and reported its DLQ gauge."""

        def running() -> bool:
            labels = self.families().get("fedrelay_dlq_entries", set())
            return stages <= {dict(label).get("stage") for label in labels}

        try:
            wait_until(running, timeout, f"stages {sorted(stages)} to run", 0.2, self.alive)
        except (TimeoutError, ChildProcessError) as exc:
            raise AssertionError(f"{exc}\n{self.log.read_text()[-6000:]}") from None

    def stop(self) -> int:
        """SIGTERM, then wait for the exit (kill after 30 s); the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def stopped_log(self) -> str:
        """Stop the process (:meth:`stop`) and return its whole log."""
        self.stop()
        return self.log.read_text(errors="replace")


def _spawn(argv: list[str], env: dict[str, str], log: Path, port: int) -> Running:
    with log.open("wb") as sink:
        child = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
    return Running(child, log, port)


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
    running = _spawn(argv, env, workdir / "relayer.log", port)
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def coordinator_process(
    rpc_url: str, job_market: str, key: str, workdir: Path, *, start_block: int = 0
) -> Iterator[Running]:
    """`fedrelay coordinator run` following `job_market` on `rpc_url`, with a SQLite ledger.

    Args:
        rpc_url: The coordinator chain's RPC.
        job_market: The JobMarket's address.
        key: The aggregator's private key (0x hex), handed over in a file.
        workdir: Where the key, ledger, blobs and log go.
        start_block: Where to start following the chain.
    """
    key_file = workdir / "aggregator.key"
    key_file.write_text(key + "\n")
    port, database = free_port(), f"sqlite+aiosqlite:///{workdir / 'coordinator.db'}"
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
    running = _spawn(argv, env, workdir / "coordinator.log", port)
    try:
        yield running
    finally:
        running.stop()
