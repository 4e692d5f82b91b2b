"""Two coordinator replicas on one PostgreSQL ledger and one anvil chain: the leader dies
mid-round, the other takes the lease over and finishes the job as an undisturbed run does.

Both replicas are real ``fedrelay coordinator run`` processes sharing the ledger (a database of
its own on the harness's PostgreSQL), the blob store (a bucket of its own on the harness's
S3-compatible server, SeaweedFS) and the aggregator's key. Replica A starts
first and leads; replica B follows and serves the workers' API throughout (a follower serves the
API from the shared ledger and blob store). The test plays the relayer (guardian-signed VAAs
from the worker chain's peer) and the workers (SimulatedWorkers over B's HTTP API).

Job 1 runs undisturbed. In job 2, A is SIGKILLed once the tasks are assigned and the first
worker committed; B takes the lease within ``lease + renew`` seconds and completes the job. Both
jobs end the same (every worker accepted, the same rewards, the same model), and the chain shows
every coordinator transaction sent once: one ``assignTasks``, one ``finalizeRound`` (one
``RoundFinalized``) and one ``settleRound`` per job, none reverted.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import asyncpg
import pytest
from support.processes import Running, spawn
from support.simulated_worker import SimulatedWorker
from test_coordinator_service_anvil import (  # the deployment fixtures of the coordinator tests
    CONFIG,
    REWARD,
    WORKERS,
    Deployment,
    built_contracts,  # noqa: F401
    deployment,  # noqa: F401
    payouts,
)

from fedrelay.adapters.blobstore.s3 import S3BlobStore
from fedrelay.adapters.devnet.process import free_port
from fedrelay.adapters.devnet.services import Postgres, SeaweedS3
from fedrelay.adapters.evm import JobSpec, JobStatus, RoundPhase, address_to_bytes32
from fedrelay.adapters.ledger import upgrade
from fedrelay.coordinator.verification import JobWorkbench
from fedrelay.ports.blobs import POSTER
from fedrelay.protocol.api.signing import EvmSigner
from fedrelay.protocol.wormhole import Outcome
from fedrelay.training import encode_blob
from fedrelay.worker.sdk.api_client import CoordinatorClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FEDRELAY = Path(sys.executable).parent / "fedrelay"
LEASE_SECONDS = 4.0
RENEW_SECONDS = 1.0
TOKEN = "admin-token-0123456789"
NUM_WORKERS = 2


async def _fresh_database(postgres: Postgres) -> str:
    """A database of the test's own on the harness's server (job ids start at 1 on each chain)."""
    name = f"failover_{secrets.token_hex(4)}"
    connection = await asyncpg.connect(postgres.dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return postgres.async_url.rsplit("/", 1)[0] + "/" + name


class Replicas:
    """The coordinator replicas of one deployment: same ledger, blobs, key and lease."""

    def __init__(
        self, d: Deployment, database: str, s3: SeaweedS3, workdir: Path, stack: ExitStack
    ) -> None:
        self.deployment = d
        self.database = database
        bucket = s3.create_bucket("failover")
        self.blob_env = s3.blob_store_env(bucket, "replicas")  # as the chart sets them
        self.blobs = S3BlobStore(  # the poster's side: the job's model and configuration
            bucket,
            prefix="replicas",
            endpoint_url=s3.endpoint_url,
            region=s3.region,
            access_key_id=s3.access_key_id,
            secret_access_key=s3.secret_access_key,
        )
        self.workdir = workdir
        self.key_file = workdir / "aggregator.key"
        self.key_file.write_text(d.anvil.private_keys[1] + "\n")
        self.api_ports: dict[str, int] = {}
        self.running: dict[str, Running] = {}
        self._stack = stack

    def start(self, name: str) -> Running:
        """`fedrelay coordinator run` as replica `name`."""
        health, api = free_port(), free_port()
        env = {
            **os.environ,
            "FEDRELAY_DATABASE_URL": self.database,
            "FEDRELAY_COORDINATOR_RPC_URL": self.deployment.anvil.rpc_url,
            "FEDRELAY_COORDINATOR_JOB_MARKET": self.deployment.market.address,
            "FEDRELAY_API_HOST": "127.0.0.1",
            "FEDRELAY_API_PORT": str(api),
            "FEDRELAY_HEALTH_PORT": str(health),
            **self.blob_env,
            "FEDRELAY_START_BLOCK": str(self.deployment.start_block),
            "FEDRELAY_COORDINATOR_ADMIN_TOKEN": TOKEN,
            "FEDRELAY_DRAIN_SECONDS": "10",
            "FEDRELAY_POLL_SECONDS": "0.3",
            "FEDRELAY_LEASE_SECONDS": str(LEASE_SECONDS),
            "FEDRELAY_LEASE_RENEW_SECONDS": str(RENEW_SECONDS),
            "FEDRELAY_INSTANCE_ID": f"replica-{name}",
            "OTEL_TRACES_EXPORTER": "none",
        }
        argv = [str(FEDRELAY), "coordinator", "run", "--signer-key-file", str(self.key_file)]
        running = spawn(argv, env, self.workdir / f"replica-{name}.log", health)
        self._stack.callback(running.stop)
        self.api_ports[name] = api
        self.running[name] = running
        return running

    def leadership(self, name: str) -> dict[str, object]:
        """What replica `name`'s ``/readyz`` says about the lease."""
        answer = self.running[name].get("/readyz")
        assert answer is not None, self.logs()
        leadership: dict[str, object] = answer.json()["leadership"]
        return leadership

    def wait_role(self, name: str, role: str, timeout: float) -> dict[str, object]:
        """Wait until replica `name` reports `role`; its leadership view."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.running[name].alive(), self.logs()
            answer = self.running[name].get("/readyz")
            if answer is not None and answer.json().get("leadership", {}).get("role") == role:
                view: dict[str, object] = answer.json()["leadership"]
                return view
            time.sleep(0.05)  # polling a process's endpoint: there is nothing to wait on
        raise AssertionError(f"replica {name} is not {role} after {timeout:g}s\n{self.logs()}")

    def worker(self, index: int, api_of: str) -> SimulatedWorker:
        """A simulated worker talking to replica `api_of`'s HTTP API."""
        signer = EvmSigner(bytes([0x60 + index]) * 32, chain=WORKERS)
        client = CoordinatorClient(f"http://127.0.0.1:{self.api_ports[api_of]}", signer)
        return SimulatedWorker(client, signer.worker, CONFIG, self.deployment.commit)

    async def post_job(self) -> int:
        blobs = self.blobs
        model = await blobs.put(encode_blob(JobWorkbench(CONFIG).initial_model()), domain=POSTER)
        config = await blobs.put(CONFIG.to_bytes(), domain=POSTER)
        spec = JobSpec(
            model_hash=bytes.fromhex(model),
            config_hash=bytes.fromhex(config),
            num_rounds=1,
            workers_per_round=NUM_WORKERS,
            reward_per_round=REWARD,
            min_stake=10**8,
            worker_chains=(WORKERS,),
            rejected_slash=10**8,
            slash_recipients=(address_to_bytes32(self.deployment.signer(4).address),),
        )
        return self.deployment.market.post_job(self.deployment.signer(4), spec).job_id

    def logs(self) -> str:
        return "\n".join(
            f"--- replica {name}\n{r.log.read_text(errors='replace')[-5000:]}"
            for name, r in self.running.items()
        )


async def _until(
    condition: Callable[[], Awaitable[bool]], what: str, replicas: Replicas, limit: float = 120
) -> None:
    deadline = time.monotonic() + limit
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{replicas.logs()}")
        await asyncio.sleep(0.1)  # polling the chain and the API: there is nothing to wait on


async def _finish(replicas: Replicas, job_id: int, workers: list[SimulatedWorker]) -> None:
    """Answer challenges until the job's round is settled and the job completed.

    Blocks are mined as the wait goes on, as on a live chain: anvil mines only for
    transactions, and ``settleRound`` needs a block past the challenge window.
    """
    d = replicas.deployment

    async def completed() -> bool:
        for w in workers:
            await w.answer_challenges(job_id)
        d.chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        return d.market.job(job_id).status is JobStatus.COMPLETED

    await _until(completed, f"job {job_id} to complete", replicas)


def _outcome(d: Deployment, job_id: int) -> tuple[bytes, dict[bytes, tuple[int, int, int]]]:
    """The job's final model and each worker's (outcome, slash, reward), keyed by worker key."""
    raw = [r.entry() for r in d.market.proposal(job_id, 0)]
    return d.market.job(job_id).model_hash, {
        bytes(r[0]): (int(r[2]), int(r[3]), int(r[4])) for r in raw
    }


def _coordinator_transactions(d: Deployment) -> Iterator[tuple[str, int, bool]]:
    """Every transaction the aggregator's key sent: (function, job, succeeded)."""
    aggregator = d.signer(1).address
    w3 = d.chain.w3
    for number in range(d.start_block, int(w3.eth.block_number) + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if tx["from"] != aggregator:  # type: ignore[index]
                continue
            function, args = d.market.contract.decode_function_input(tx["input"])  # type: ignore[index]
            receipt = w3.eth.get_transaction_receipt(tx["hash"])  # type: ignore[index]
            ok = receipt["status"] == 1
            yield function.fn_name, int(args["jobId"]), ok


async def test_leader_sigkilled_mid_round_the_follower_takes_over_and_completes_the_job(
    deployment: Deployment,  # noqa: F811
    postgres: Postgres,
    s3_server: SeaweedS3,
    tmp_path: Path,
) -> None:
    d = deployment
    database = await _fresh_database(postgres)
    await asyncio.to_thread(upgrade, database)
    with ExitStack() as stack:
        replicas = Replicas(d, database, s3_server, tmp_path, stack)
        replicas.start("a")
        first = replicas.wait_role("a", "leader", 60)
        replicas.start("b")
        replicas.running["b"].wait_ready(True)
        assert replicas.wait_role("b", "follower", 30) == {
            "role": "follower", "holder": "replica-b", "leader": "replica-a",
            "token": first["token"],
        }  # fmt: skip
        workers = [replicas.worker(i, api_of="b") for i in range(NUM_WORKERS)]
        for w, payout in zip(workers, payouts(d, NUM_WORKERS), strict=True):
            d.register(w.worker, payout)

        # Job 1, undisturbed: A leads, the workers use B's API.
        undisturbed = await replicas.post_job()

        async def assigned(job_id: int) -> bool:
            return d.market.round(job_id, 0).assigned == NUM_WORKERS

        await _until(lambda: assigned(undisturbed), "job 1's tasks to be assigned", replicas)
        for w in workers:
            await w.train(undisturbed, 0)
        await _finish(replicas, undisturbed, workers)

        # Job 2: A is killed mid-round, once the tasks are out and one worker committed.
        failover = await replicas.post_job()
        await _until(lambda: assigned(failover), "job 2's tasks to be assigned", replicas)
        await workers[0].train(failover, 0)
        assert replicas.leadership("a")["role"] == "leader"
        replicas.running["a"].process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        replicas.running["a"].process.wait(timeout=30)
        took_over = replicas.wait_role("b", "leader", LEASE_SECONDS + RENEW_SECONDS + 10)
        takeover = time.monotonic() - killed
        print(f"takeover after SIGKILL: {takeover:.2f}s")  # the figure, shown with -s
        assert took_over["holder"] == took_over["leader"] == "replica-b"
        assert int(str(took_over["token"])) > int(str(first["token"]))
        for w in workers[1:]:
            await w.train(failover, 0)
        await _finish(replicas, failover, workers)

    # The same outcome as the undisturbed run.
    assert d.market.round(failover, 0).phase is RoundPhase.SETTLED
    model_1, results_1 = _outcome(d, undisturbed)
    model_2, results_2 = _outcome(d, failover)
    # The draw (seeded by the assignment's block) may hand the shards to other workers, so the
    # results compare as a whole: the same outcomes, slashes and rewards, the same model.
    assert sorted(results_2.values()) == sorted(results_1.values())
    assert set(results_2) == set(results_1) == {w.worker.key for w in workers}
    assert {outcome for outcome, _, _ in results_2.values()} == {int(Outcome.ACCEPTED)}
    assert sum(reward for _, _, reward in results_2.values()) == REWARD
    assert model_2 == model_1 != bytes(32)
    # Counted from the chain: every coordinator transaction once, none reverted.
    sent = list(_coordinator_transactions(d))
    assert all(ok for *_, ok in sent), sent
    assert Counter((function, job) for function, job, _ in sent) == {  # one-round jobs
        (function, job): 1
        for job in (undisturbed, failover)
        for function in ("assignTasks", "finalizeRound", "settleRound")
    }
    finalized = Counter(
        (int(e.args["jobId"]), int(e.args["round"]))
        for e in d.market.events(d.start_block, int(d.chain.w3.eth.block_number))
        if e.name == "RoundFinalized"
    )
    assert finalized == {(undisturbed, 0): 1, (failover, 0): 1}
