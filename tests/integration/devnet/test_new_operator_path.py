"""The new operator's path, every process started from the command line: a job completes and
no honest worker is slashed.

As a new operator would: ``fedrelay devnet up`` (two EVM worker keys), ``fedrelay db upgrade``
and ``fedrelay coordinator run`` in the coordinator's directory, ``fedrelay relayer run --stage
all`` in the relayer's, two ``fedrelay worker run`` (each in a directory of its own, staking),
and ``fedrelay job post`` with the default job configuration (digits, 4 shards, half the
transcripts challenged). Every flag is left at its default where it has one; what is passed is
what has no default (keys, endpoints, the job's size and pay, the stake) plus free ports and
state directories, so that the test does not collide with another one on the same machine.

The workers are started with no data flag at all: the task names the shard of the job's
partition, which is what the coordinator replays. The test waits (on conditions, with timeouts)
for the job to complete on chain, then checks on chain that both workers still hold their whole
stake and were paid, and in the coordinator's ledger that every task of every round was
accepted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from support.processes import Running, spawn

from fedrelay.adapters.devnet.process import free_port, wait_until
from fedrelay.adapters.devnet.state import DevnetInfo, read_state
from fedrelay.adapters.evm import EvmChain, JobMarketContract, JobStatus, address_to_bytes32
from fedrelay.adapters.evm.hub import WorkerHubContract

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FEDRELAY = Path(sys.executable).parent / "fedrelay"
ROUNDS = 2
WORKERS = 2
STAKE_WEI = 2 * 10**18
MIN_STAKE = 10**8  # 1 ETH, 8 decimals: a rejected update costs a whole ether
REWARD_WEI = 10**16
JOB_TIMEOUT = 900


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FEDRELAY), *argv],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**env, "COLUMNS": "200"},
        cwd=cwd,
    )


def _environment(info: DevnetInfo) -> dict[str, str]:
    """The caller's environment with the devnet's process-contract variables (devnet.env)."""
    env = {**os.environ, **info.environment(), "OTEL_TRACES_EXPORTER": "none"}
    for name in ("FEDRELAY_KAFKA_BOOTSTRAP", "FEDRELAY_DATABASE_URL", "FEDRELAY_BLOB_DIR"):
        env.pop(name, None)
    return env


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[DevnetInfo]:
    """``fedrelay devnet up`` with two EVM worker keys; ``devnet down`` afterwards."""
    state_dir = tmp_path / "devnet"
    ports = ["--coordinator-port", str(free_port()), "--worker-port", str(free_port()),
             "--solana-port", str(free_port())]  # fmt: skip
    up = _run(["devnet", "up", "--state-dir", str(state_dir), *ports, "--evm-workers", "2"],
              dict(os.environ), tmp_path)  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield read_state(state_dir)
    finally:
        _run(["devnet", "down", "--state-dir", str(state_dir)], dict(os.environ), tmp_path)


def _start(stack: ExitStack, argv: list[str], env: dict[str, str], cwd: Path, name: str) -> Running:
    cwd.mkdir(parents=True, exist_ok=True)
    port = int(env.get("FEDRELAY_HEALTH_PORT", "0"))
    running = spawn([str(FEDRELAY), *argv], env, cwd / f"{name}.log", port, cwd=cwd)
    stack.callback(running.stop)
    return running


def _logs(*processes: Running) -> str:
    return "\n".join(
        f"--- {p.log.name} ---\n{p.log.read_text(errors='replace')[-4000:]}" for p in processes
    )


def test_a_job_posted_with_defaults_completes_and_no_honest_worker_is_slashed(
    devnet: DevnetInfo, tmp_path: Path
) -> None:
    info = devnet
    env = _environment(info)
    keys = info.key_files
    coordinator_chain = info.chain("coordinator")
    worker_chain = info.chain("worker-evm")
    market = JobMarketContract(EvmChain(coordinator_chain.rpc_url), coordinator_chain.address)
    hub = WorkerHubContract(EvmChain(worker_chain.rpc_url), worker_chain.address)
    workers = [w for w in info.workers if w.chain == "worker-evm"][:WORKERS]
    assert len(workers) == WORKERS

    with ExitStack() as stack:
        # The coordinator: its ledger migrated, then the service and its API.
        coordinator_dir = tmp_path / "coordinator"
        coordinator_dir.mkdir()
        upgraded = _run(["db", "upgrade"], env, coordinator_dir)
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        api_port = free_port()
        coordinator_env = {
            **env,
            "FEDRELAY_API_PORT": str(api_port),
            "FEDRELAY_HEALTH_PORT": str(free_port()),
            "FEDRELAY_COORDINATOR_ADMIN_TOKEN": "new-operator-admin-token",
        }
        coordinator = _start(
            stack,
            ["coordinator", "run", "--signer-key-file", keys["aggregator"]],
            coordinator_env,
            coordinator_dir,
            "coordinator",
        )
        # The relayer: every stage in one process, a deliverer key per chain, every guardian.
        signers = [f"{chain.name}={keys[f'relayer-{chain.name}']}" for chain in info.chains]
        relayer_argv = ["relayer", "run", "--stage", "all"]
        for signer in signers:
            relayer_argv += ["--signer-key-file", signer]
        for guardian in info.guardian_key_files:
            relayer_argv += ["--guardian-key-file", guardian]
        relayer_env = {**env, "FEDRELAY_HEALTH_PORT": str(free_port())}
        relayer = _start(stack, relayer_argv, relayer_env, tmp_path / "relayer", "relayer")
        coordinator.wait_ready(True, timeout=120)
        relayer.wait_ready(True, timeout=120)

        # Two workers, staking, no data flag.
        running = []
        for number, worker in enumerate(workers):
            argv = [
                "worker", "run", "--chain", "evm", "--key-file", worker.key_file,
                "--coordinator-url", f"http://127.0.0.1:{api_port}",
                "--rpc-url", worker_chain.rpc_url, "--hub-address", worker_chain.address,
                "--stake", str(STAKE_WEI), "--payout", worker.payout_address,
            ]  # fmt: skip
            running.append(
                _start(stack, argv, env, tmp_path / f"worker-{number}", f"worker-{number}")
            )
        every = [coordinator, relayer, *running]

        def registered() -> bool:
            return all(
                market.worker(
                    worker_chain.wormhole_chain_id, address_to_bytes32(w.address)
                ).registered
                for w in workers
            )

        wait_until(registered, 180, "both registrations to reach the coordinator chain", 0.5,
                   lambda: all(p.alive() for p in every))  # fmt: skip
        staked = {w.address: hub.staker(w.address).staked for w in workers}
        assert set(staked.values()) == {STAKE_WEI}

        # The poster: the default configuration, through the coordinator's own blob directory.
        posted = _run(
            ["job", "post", "--rounds", str(ROUNDS), "--workers-per-round", str(WORKERS),
             "--reward-per-round", str(REWARD_WEI), "--min-stake", str(MIN_STAKE),
             "--signer-key-file", keys["owner"]],
            coordinator_env,
            coordinator_dir,
        )  # fmt: skip
        assert posted.returncode == 0, posted.stdout + posted.stderr + _logs(*every)
        job_id = int(posted.stdout.split("job ", 1)[1].split()[0])

        def completed() -> bool:
            return market.job(job_id).status is JobStatus.COMPLETED

        try:
            wait_until(completed, JOB_TIMEOUT, f"job {job_id} to complete", 1.0,
                       lambda: all(p.alive() for p in every))  # fmt: skip
        except (TimeoutError, ChildProcessError) as exc:
            raise AssertionError(f"{exc}\n{_logs(*every)}") from None

        # On chain: the whole stake is still there, and every worker was paid.
        for worker in workers:
            assert hub.staker(worker.address).staked == staked[worker.address], worker.address
            assert market.claimable(worker.payout_address) > 0, worker.payout_address
        # In the coordinator's ledger: every task of every round accepted, none slashed.
        status = _run(["job", "status", str(job_id), "--json"], coordinator_env, coordinator_dir)
        assert status.returncode == 0, status.stdout + status.stderr
        rounds = json.loads(status.stdout)["rounds"]
        assert [r["round"] for r in rounds] == list(range(ROUNDS))
        for r in rounds:
            assert [t["status"] for t in r["tasks"]] == ["accepted"] * WORKERS, r
            assert all(t["slash"] == 0 for t in r["tasks"]), r
