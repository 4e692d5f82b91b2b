"""The worker SDK on a real anvil worker chain with the real coordinator API in process.

The test plays the coordinator and the relayer: it opens a round in the API, signs the
TASK_ASSIGNED (and later ROUND_SETTLED) VAA with the Python test guardians and delivers it to
the WorkerHub. The worker does the rest: it finds the task in the hub's events, trains, uploads,
commits on chain, answers a challenge, and after a restart commits nothing twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.coordinator import LocalCoordinator, served
from support.market import funded_evm_key
from support.wormhole import evm_address, guardian_signers

from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.evm import (
    EvmChain,
    HubTaskState,
    JobSpec,
    MessageCoreContract,
    RoundResult,
    Signer,
    WorkerHubContract,
    address_to_bytes32,
    deploy_job_market,
    deploy_message_core,
    deploy_worker_hub,
    link,
)
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR
from fedrelay.adapters.evm.deploy import Link
from fedrelay.adapters.evm.events import ContractEvent
from fedrelay.adapters.evm.rewards import RewardAccount
from fedrelay.adapters.evm.worker_chain import EvmWorkerChain
from fedrelay.protocol.api.signing import EvmSigner
from fedrelay.protocol.challenges import Challenge
from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.merkle import decode_proof
from fedrelay.protocol.offers import CommitmentOffer
from fedrelay.protocol.wormhole import (
    Commitment,
    GuardianSigner,
    Outcome,
    PayloadId,
    RoundSettled,
    Settlement,
    Task,
    TaskAssigned,
    UpdateCommitted,
    VaaBody,
    decode_payload,
    sign_vaa,
    task_id,
)
from fedrelay.protocol.wormhole.payloads import Payload
from fedrelay.training import blob_hash, encode_blob, verify_proof
from fedrelay.training.torch_trainer import initial_model, mlp
from fedrelay.worker.sdk import (
    DigitsShards,
    JobConfig,
    SettledTask,
    StateStore,
    TaskKey,
    TaskStage,
    UpdateCommitment,
    WorkerNode,
)
from fedrelay.worker.sdk import Outcome as SdkOutcome

pytestmark = pytest.mark.integration

COORDINATOR_CHAIN = 2
WORKER_CHAIN = 4
COORDINATOR_EMITTER = evm_address("worker sdk coordinator")
GUARDIANS = 4  # quorum 3
JOB = 11
CONFIG = JobConfig(seed=7, steps=6, checkpoint_every=2, batch_size=16)


@pytest.fixture(scope="session")
def forge_project() -> Forge:
    """The contracts' Foundry project, built once per session."""
    forge = Forge(Path(CONTRACTS_DIR))
    forge.build()
    return forge


@dataclass
class HubDeployment:
    anvil: Anvil
    chain: EvmChain
    core: MessageCoreContract
    hub: WorkerHubContract
    guardians: Sequence[GuardianSigner]
    sequence: int = 0

    def deliver(self, payload: Payload) -> None:
        """Sign ``payload`` as the coordinator's emitter and deliver it, as the relayer does."""
        body = VaaBody(
            timestamp=int(time.time()),
            nonce=0,
            emitter_chain=COORDINATOR_CHAIN,
            emitter_address=COORDINATOR_EMITTER,
            sequence=self.sequence,
            consistency_level=1,
            payload=payload.to_bytes(),
        )
        self.sequence += 1
        quorum = len(self.guardians) * 2 // 3 + 1
        vaa = sign_vaa(body, 0, list(enumerate(self.guardians))[:quorum])
        self.hub.receive_message(Signer(self.anvil.private_keys[6]), vaa.to_bytes())

    def assign(
        self,
        job_id: int,
        deadline: int,
        hashes: tuple[bytes, bytes],
        tasks: Sequence[Task],
        stake_lock: int = 0,
    ) -> None:
        """Deliver round 0's TASK_ASSIGNED of ``job_id`` (``hashes``: model and config;
        ``stake_lock``, 8 decimals, also its minimum stake)."""
        self.deliver(
            TaskAssigned(
                target_chain=WORKER_CHAIN,
                target_address=address_to_bytes32(self.hub.address),
                job_id=job_id,
                round=0,
                deadline=deadline,
                model_hash=hashes[0],
                config_hash=hashes[1],
                min_stake=stake_lock,
                stake_lock=stake_lock,
                release_at=deadline + 86_400,
                tasks=tuple(tasks),
            )
        )

    def settle(self, job_id: int, settlements: Sequence[Settlement]) -> None:
        """Deliver round 0's ROUND_SETTLED of ``job_id`` (slashes to a fixed recipient)."""
        self.deliver(
            RoundSettled(
                target_chain=WORKER_CHAIN,
                target_address=address_to_bytes32(self.hub.address),
                job_id=job_id,
                round=0,
                model_hash=b"\x42" * 32,
                slash_mode=0,
                slash_recipient=b"\x44" * 32,
                settlements=tuple(settlements),
            )
        )

    def chain_time(self) -> int:
        return int(self.chain.w3.eth.get_block("latest")["timestamp"])


@pytest.fixture(scope="module")
def deployment(forge_project: Forge, worker_chain: Anvil) -> HubDeployment:
    chain = EvmChain(worker_chain.rpc_url)
    owner = Signer(worker_chain.private_keys[0])
    guardians = guardian_signers(GUARDIANS)
    core = deploy_message_core(
        chain, owner, WORKER_CHAIN, ["0x" + g.address.hex() for g in guardians]
    )
    hub = deploy_worker_hub(
        chain,
        owner,
        core.address,
        coordinator_chain=COORDINATOR_CHAIN,
        min_stake=10**18,
        unbonding_delay=3600,
    )
    hub.set_peer(owner, COORDINATOR_CHAIN, COORDINATOR_EMITTER)
    return HubDeployment(worker_chain, chain, core, hub, guardians)


async def test_an_evm_worker_trains_commits_answers_and_resumes(
    deployment: HubDeployment, tmp_path: Path
) -> None:
    d = deployment
    key = d.anvil.private_keys[3]
    signer = EvmSigner(key, chain=WORKER_CHAIN)
    coordinator = LocalCoordinator()
    state_path = tmp_path / "worker.json"

    def node_with(path: Path) -> WorkerNode:
        return WorkerNode(
            EvmWorkerChain(d.anvil.rpc_url, d.hub.address, key),
            coordinator.client(signer),
            DigitsShards(4),
            StateStore(path),
            poll_interval=0.01,
            publish_after=0.0,  # the only worker of its round: publish in the pass that commits
        )

    node = node_with(state_path)
    payout = address_to_bytes32(d.anvil.addresses[5])
    status = await node.register(stake=2 * 10**18, payout=payout)
    assert status.registered
    assert status.staked == 2 * 10**18
    worker_key = signer.worker.key
    assert d.hub.staker(d.anvil.addresses[3]).registered

    # The coordinator opens the round; the relayer delivers TASK_ASSIGNED to the hub.
    deadline = max(d.chain_time(), int(time.time())) + 600
    model_hash, config_hash = await coordinator.open_round(
        JOB, [signer.worker], initial_model(mlp, seed=2), CONFIG, deadline
    )
    start_block = d.chain.w3.eth.block_number
    d.assign(JOB, deadline, (model_hash, config_hash), (Task(worker_key, 1),))
    assert d.hub.task(JOB, 0, worker_key).state is HubTaskState.ASSIGNED

    report = await node.step()
    assert report.committed == (TaskKey(JOB, 0),)

    # On chain: the task is committed, the round's commit log holds it (its events rebuild the
    # head), and the node published the round's commitments: UPDATE_COMMITTED with the
    # uploaded update's hash and the transcript root, in the transaction that recorded its
    # signed commitment.
    hub_task = d.hub.task(JOB, 0, worker_key)
    assert hub_task.state is HubTaskState.COMMITTED
    [logged] = d.hub.round_commitments(JOB, 0)
    assert logged.worker_key == worker_key
    update_hash = logged.update_hash
    latest = d.chain.w3.eth.block_number
    uploads = await coordinator.repository.updates(JOB, 0)
    assert uploads == {signer.worker: update_hash.hex()}
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    assert record.published
    receipt = d.chain.w3.eth.get_transaction_receipt(record.transaction)  # type: ignore[arg-type]
    [message] = [
        m
        for m in d.core.published_between(start_block, latest, d.hub.address)
        if m.payload[0] == PayloadId.UPDATE_COMMITTED
    ]
    assert d.core.published_messages(receipt) == [message], "recorded and published at once"
    batch = decode_payload(message.payload)
    assert isinstance(batch, UpdateCommitted)
    [published] = batch.commitments
    assert published.worker_key == worker_key
    assert published.update_hash == update_hash
    assert published.transcript_root.hex() == record.transcript_root
    assert published.num_samples == len(DigitsShards(4).dataset(1))
    assert 0 < published.train_loss < 10_000_000

    # The coordinator challenges segment 2; the worker answers with proofs against the root.
    now = int(time.time())
    challenge = Challenge(JOB, 0, signer.worker, segment=2, issued_at=now, answer_by=now + 60)
    await coordinator.repository.save_challenge(challenge)
    assert (await node.step()).answered == (challenge.challenge_id,)
    [answered] = await coordinator.repository.challenges(challenge_id=challenge.challenge_id)
    assert answered.answer is not None
    end = await coordinator.blobs.get(answered.answer.end_checkpoint)
    assert verify_proof(
        blob_hash(end), decode_proof(answered.answer.end_proof), published.transcript_root
    )

    # Restarts, with the state file and without it, never commit the task again.
    for path, recovered in ((state_path, ()), (tmp_path / "lost-state.json", (TaskKey(JOB, 0),))):
        restarted = node_with(path)
        again = await restarted.step()
        assert again.committed == ()
        assert again.recovered == recovered
        resumed = restarted.state.task(TaskKey(JOB, 0))
        assert resumed is not None
        assert resumed.stage is TaskStage.COMMITTED
    assert len(d.hub.round_commitments(JOB, 0)) == 1, "recorded once"

    # ROUND_SETTLED arrives; the worker records its outcome. The task's lock stays until the
    # job's task two rounds on takes it over, or the worker frees it as it unbonds.
    d.settle(JOB, [Settlement(worker_key, Outcome.ACCEPTED, 0)])
    assert (await node.step()).settled == (TaskKey(JOB, 0),)
    settled = node.state.task(TaskKey(JOB, 0))
    assert settled is not None
    assert settled.outcome == SdkOutcome.ACCEPTED
    assert d.hub.staker(d.anvil.addresses[3]).active_tasks == 1
    await node.begin_unstake(10**18)
    assert d.hub.staker(d.anvil.addresses[3]).active_tasks == 0
    assert d.hub.staker(d.anvil.addresses[3]).locked == 0
    assert d.hub.staker(d.anvil.addresses[3]).unbonding == 10**18


async def test_evm_workers_offer_signed_commitments_that_one_transaction_records(
    deployment: HubDeployment, tmp_path: Path
) -> None:
    """Two workers sign their commitments and offer them through the coordinator; the first
    whose turn comes records both (and not a third worker's forged offer) and publishes them in
    one ``commitSignedAndPublish``; the other sends no transaction for its commitment."""
    d = deployment
    job = JOB + 20
    keys = [d.anvil.private_keys[7], d.anvil.private_keys[8]]
    signers = [EvmSigner(k, chain=WORKER_CHAIN) for k in keys]
    coordinator = LocalCoordinator()
    now = [time.time()]
    nodes = [
        WorkerNode(
            EvmWorkerChain(d.anvil.rpc_url, d.hub.address, k),
            coordinator.client(s),
            DigitsShards(4),
            StateStore(tmp_path / f"offering-{i}.json"),
            poll_interval=0.01,
            clock=lambda: now[0],
            publish_after=100.0,  # not due for 100 s or more, unless the deadline is near
        )
        for i, (k, s) in enumerate(zip(keys, signers, strict=True))
    ]
    payout = address_to_bytes32(d.anvil.addresses[5])
    for node in nodes:
        await node.register(stake=2 * 10**18, payout=payout)
    idle = EvmWorkerChain(d.anvil.rpc_url, d.hub.address, d.anvil.private_keys[9])
    await idle.stake_and_register(2 * 10**18, payout, 0)
    idle_ref = EvmSigner(d.anvil.private_keys[9], chain=WORKER_CHAIN).worker

    deadline = max(d.chain_time(), int(time.time())) + 600
    workers = [s.worker for s in signers] + [idle_ref]
    model_hash, config_hash = await coordinator.open_round(
        job, workers, initial_model(mlp, seed=6), CONFIG, deadline
    )
    start_block = d.chain.w3.eth.block_number
    d.assign(
        job,
        deadline,
        (model_hash, config_hash),
        tuple(Task(w.key, shard) for shard, w in enumerate(workers, start=1)),
    )
    key = TaskKey(job, 0)
    for node in nodes:
        assert (await node.step()).committed == ()
        record = node.state.task(key)
        assert record is not None
        assert record.stage is TaskStage.SIGNED
    for signer in signers:
        assert d.hub.task(job, 0, signer.worker.key).state is HubTaskState.ASSIGNED
    offers = await coordinator.repository.offers(job, 0, WORKER_CHAIN)
    assert {o.commitment.worker_key for o in offers} == {s.worker.key for s in signers}
    # A forged offer for the idle worker (its key, a signature that is not its own).
    await coordinator.repository.put_offer(
        CommitmentOffer(
            job,
            0,
            WORKER_CHAIN,
            Commitment(idle_ref.key, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, 10, 10),
            offers[0].signature,
        )
    )
    second = Signer(keys[1]).address
    second_nonce = d.chain.w3.eth.get_transaction_count(second)

    now[0] += 500.0  # the deadline is near for the first worker: it records the round
    assert (await nodes[0].step()).committed == (key,)

    first_record = nodes[0].state.task(key)
    assert first_record is not None
    assert first_record.stage is TaskStage.COMMITTED
    assert first_record.published
    receipt = d.chain.w3.eth.get_transaction_receipt(first_record.transaction)  # type: ignore[arg-type]
    # recorded and published together: one CommitmentsRecorded logs the published payload
    [batch] = [e for e in d.hub.events_in(receipt) if e.name == "CommitmentsRecorded"]
    logged = decode_payload(bytes(batch.args["payload"]))
    assert isinstance(logged, UpdateCommitted)
    recorded = logged.commitments[int(batch.args["first"]) :]
    assert {c.worker_key for c in recorded} == {s.worker.key for s in signers}, (
        "both offers in the one transaction"
    )
    for signer in signers:
        assert d.hub.task(job, 0, signer.worker.key).state is HubTaskState.COMMITTED
    assert d.hub.task(job, 0, idle_ref.key).state is HubTaskState.ASSIGNED, "the forgery is out"
    latest = d.chain.w3.eth.block_number
    [message] = [
        m
        for m in d.core.published_between(start_block, latest, d.hub.address)
        if m.payload[0] == PayloadId.UPDATE_COMMITTED
    ]
    assert d.core.published_messages(receipt) == [message], "published by the same transaction"
    batch = decode_payload(message.payload)
    assert isinstance(batch, UpdateCommitted)
    assert {c.worker_key for c in batch.commitments} == {s.worker.key for s in signers}
    by_worker = {c.worker_key: c for c in batch.commitments}
    uploads = await coordinator.repository.updates(job, 0)
    for signer in signers:
        assert by_worker[signer.worker.key].update_hash.hex() == uploads[signer.worker]

    # The second worker finds its commitment recorded and published: no transaction of its own.
    report = await nodes[1].step()
    assert report.committed == (key,)
    second_record = nodes[1].state.task(key)
    assert second_record is not None
    assert second_record.stage is TaskStage.COMMITTED
    assert second_record.transaction == ""
    assert second_record.published
    assert d.chain.w3.eth.get_transaction_count(second) == second_nonce


async def test_the_evm_backend_records_only_offers_its_workers_signed_for_the_round(
    deployment: HubDeployment,
) -> None:
    """What a coordinator passes on is checked before any gas is spent on it: an offer signed
    for another round, an offer naming another job, and an offer of a worker already recorded
    are left out; each recording publishes what it recorded."""
    d = deployment
    job = JOB + 21
    keys = ["0x" + keccak256(f"offers attack worker {i}".encode()).hex() for i in range(2)]
    chains = [EvmWorkerChain(d.anvil.rpc_url, d.hub.address, k) for k in keys]
    payout = address_to_bytes32(d.anvil.addresses[5])
    for chain in chains:
        d.anvil.rpc("anvil_setBalance", [chain.address, hex(10**20)])
        await chain.stake_and_register(2 * 10**18, payout, 0)
    first, second = chains
    deadline = max(d.chain_time(), int(time.time())) + 600
    tasks = [Task(c.worker_key, shard) for shard, c in enumerate(chains)]
    d.assign(job, deadline, (b"\x01" * 32, b"\x02" * 32), tasks)
    key = TaskKey(job, 0)

    async def offer(chain: EvmWorkerChain, signed_for: TaskKey, named: TaskKey) -> CommitmentOffer:
        fields = UpdateCommitment(
            signed_for, keccak256(chain.worker_key), b"\x03" * 32, b"\x04" * 32, 7, 8
        )
        signature = await chain.sign_commitment(fields)
        commitment = fields.entry(chain.worker_key)
        return CommitmentOffer(named.job_id, named.round, WORKER_CHAIN, commitment, signature)

    own = await offer(first, key, key)
    other_round = await offer(second, TaskKey(job, 1), key)  # signed for round 1, offered for 0
    other_job = await offer(second, key, TaskKey(job + 1, 0))  # names another job
    start_block = d.chain.w3.eth.block_number
    forged = await first.record_offers(key, [other_round])
    assert forged.refused == {second.worker_key: "its signature is not its worker's"}
    misnamed = await first.record_offers(key, [other_job])
    assert misnamed.refused == {second.worker_key: "an offer for another job, round or chain"}
    assert forged.transaction == misnamed.transaction == ""
    assert d.chain.w3.eth.block_number == start_block, "no transaction for either"
    recording = await first.record_offers(key, [own, other_round, other_job])
    assert recording.recorded == (first.worker_key,)
    assert d.hub.task(job, 0, second.worker_key).state is HubTaskState.ASSIGNED

    # The second worker records its own offer; the first's, passed on again, costs nothing.
    valid = await offer(second, key, key)
    again = await second.record_offers(key, [valid, own])
    assert again.recorded == (second.worker_key,)
    assert d.hub.task(job, 0, second.worker_key).state is HubTaskState.COMMITTED
    latest = d.chain.w3.eth.block_number
    published = [
        decode_payload(m.payload)
        for m in d.core.published_between(start_block + 1, latest, d.hub.address)
        if m.payload[0] == PayloadId.UPDATE_COMMITTED
    ]
    assert [
        [c.worker_key for c in p.commitments] for p in published if isinstance(p, UpdateCommitted)
    ] == [
        [first.worker_key],
        [second.worker_key],
    ], "each recording published what it recorded, once"
    assert await first.commitment_published(key)
    assert await second.commitment_published(key)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for ``condition`` to hold, checking every 50 ms, failing after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def test_the_cli_worker_commits_and_stops_cleanly_on_sigterm(
    deployment: HubDeployment, tmp_path: Path
) -> None:
    d = deployment
    key = d.anvil.private_keys[4]
    signer = EvmSigner(key, chain=WORKER_CHAIN)
    key_file = tmp_path / "worker.key"
    key_file.write_text(key)
    state_file = tmp_path / "cli-worker.json"
    coordinator = LocalCoordinator()
    deadline = max(d.chain_time(), int(time.time())) + 600
    job = JOB + 1
    model_hash, config_hash = asyncio.run(
        coordinator.open_round(job, [signer.worker], initial_model(mlp, seed=4), CONFIG, deadline)
    )
    with served(coordinator) as url:
        argv = [
            sys.executable,
            "-m",
            "fedrelay.cli",
            "worker",
            "run",
            "--chain",
            "evm",
            "--key-file",
            str(key_file),
            "--coordinator-url",
            url,
            "--rpc-url",
            d.anvil.rpc_url,
            "--hub-address",
            d.hub.address,
            "--device",
            "cpu",
            "--stake",
            str(2 * 10**18),
            "--state-file",
            str(state_file),
            "--poll-interval",
            "0.2",
        ]  # fmt: skip
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
        try:
            address = d.anvil.addresses[4]
            wait_until(lambda: d.hub.staker(address).registered, 120, "the worker to register")
            d.assign(job, deadline, (model_hash, config_hash), (Task(signer.worker.key, 0),))
            wait_until(
                lambda: d.hub.task(job, 0, signer.worker.key).state is HubTaskState.COMMITTED,
                120,
                "the worker's commitment",
            )
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    assert key.removeprefix("0x") not in text
    assert "stopped; state saved" in text
    saved = json.loads(state_file.read_text())
    assert saved["tasks"][f"{job}:0"]["stage"] == "committed"


def _relay(
    source: MessageCoreContract,
    source_chain: int,
    first_block: int,
    guardians: Sequence[GuardianSigner],
) -> list[bytes]:
    """What the guardians and the relayer do: sign every message published since ``first_block``."""
    w3 = source.chain.w3
    signed = []
    for message in source.published_between(first_block, w3.eth.block_number):
        body = VaaBody(
            timestamp=int(w3.eth.get_block(message.block_number)["timestamp"]),
            nonce=message.nonce,
            emitter_chain=source_chain,
            emitter_address=message.emitter_address,
            sequence=message.sequence,
            consistency_level=message.consistency_level,
            payload=message.payload,
        )
        quorum = len(guardians) * 2 // 3 + 1
        signed.append(sign_vaa(body, 0, list(enumerate(guardians))[:quorum]).to_bytes())
    return signed


async def test_a_worker_is_paid_on_the_coordinator_chain_and_withdraws(
    forge_project: Forge, coordinator_chain: Anvil, worker_chain: Anvil, tmp_path: Path
) -> None:
    guardians = guardian_signers(GUARDIANS)
    addresses = ["0x" + g.address.hex() for g in guardians]
    c_chain, w_chain = EvmChain(coordinator_chain.rpc_url), EvmChain(worker_chain.rpc_url)
    c_owner, w_owner = (
        Signer(coordinator_chain.private_keys[0]),
        Signer(worker_chain.private_keys[0]),
    )
    c_core = deploy_message_core(c_chain, c_owner, COORDINATOR_CHAIN, addresses)
    w_core = deploy_message_core(w_chain, w_owner, WORKER_CHAIN, addresses)
    aggregator = Signer(coordinator_chain.private_keys[1])
    market = deploy_job_market(
        c_chain, c_owner, c_core.address, aggregator.address, aggregator.address, 60
    )
    hub = deploy_worker_hub(w_chain, w_owner, w_core.address, COORDINATOR_CHAIN, 10**18, 3600)
    link(market, c_owner, hub, w_owner, Link(COORDINATOR_CHAIN, WORKER_CHAIN, max_batch=8))
    relayer_c, relayer_w = (
        Signer(coordinator_chain.private_keys[6]),
        Signer(worker_chain.private_keys[7]),
    )

    key = worker_chain.private_keys[5]
    signer = EvmSigner(key, chain=WORKER_CHAIN)
    payout_key = coordinator_chain.private_keys[8]
    payout = Signer(payout_key)
    coordinator = LocalCoordinator()
    node = WorkerNode(
        EvmWorkerChain(worker_chain.rpc_url, hub.address, key),
        coordinator.client(signer),
        DigitsShards(4),
        StateStore(tmp_path / "paid.json"),
        poll_interval=0.01,
        publish_after=0.0,
    )
    w_block = w_chain.w3.eth.block_number + 1
    await node.register(stake=2 * 10**18, payout=address_to_bytes32(payout.address))
    for vaa in _relay(w_core, WORKER_CHAIN, w_block, guardians):
        market.receive_message(relayer_c, vaa)
    assert market.worker(WORKER_CHAIN, signer.worker.key).registered

    model = initial_model(mlp, seed=5)
    spec = JobSpec(
        model_hash=blob_hash(encode_blob(model)),
        config_hash=blob_hash(CONFIG.to_bytes()),
        num_rounds=1,
        workers_per_round=1,
        reward_per_round=10**18,
        min_stake=10**8,
        worker_chains=(WORKER_CHAIN,),
        slash_recipients=(address_to_bytes32(Signer(coordinator_chain.private_keys[4]).address),),
    )
    job_id = market.post_job(Signer(coordinator_chain.private_keys[4]), spec).job_id
    # Other tests move the shared coordinator chain's clock forward: take the later of all clocks.
    deadline = (
        max(
            int(time.time()),
            int(w_chain.w3.eth.get_block("latest")["timestamp"]),
            int(c_chain.w3.eth.get_block("latest")["timestamp"]),
        )
        + 600
    )
    hashes = await coordinator.open_round(job_id, [signer.worker], model, CONFIG, deadline)
    assert hashes == (spec.model_hash, spec.config_hash)
    c_block = c_chain.w3.eth.block_number + 1
    market.assign_tasks(aggregator, job_id, WORKER_CHAIN, deadline, [Task(signer.worker.key, 0)])
    for vaa in _relay(c_core, COORDINATOR_CHAIN, c_block, guardians):
        hub.receive_message(relayer_w, vaa)

    w_block = w_chain.w3.eth.block_number + 1
    assert (await node.step()).committed == (TaskKey(job_id, 0),)
    for vaa in _relay(w_core, WORKER_CHAIN, w_block, guardians):
        market.receive_message(relayer_c, vaa)
    record = node.state.task(TaskKey(job_id, 0))
    assert record is not None
    commitment = market.commitment(job_id, 0, WORKER_CHAIN, signer.worker.key)
    assert commitment.update_hash.hex() == record.update_hash
    assert commitment.transcript_root.hex() == record.transcript_root

    reward = 7 * 10**17
    market.finalize_round(
        aggregator,
        job_id,
        0,
        b"\x51" * 32,
        [RoundResult(WORKER_CHAIN, signer.worker.key, Outcome.ACCEPTED, reward=reward)],
    )
    coordinator_chain.rpc("evm_increaseTime", [61])
    coordinator_chain.rpc("evm_mine")
    c_block = c_chain.w3.eth.block_number + 1
    market.settle_round(relayer_c, job_id, 0)
    for vaa in _relay(c_core, COORDINATOR_CHAIN, c_block, guardians):
        hub.receive_message(relayer_w, vaa)
    assert (await node.step()).settled == (TaskKey(job_id, 0),)

    rewards = RewardAccount(coordinator_chain.rpc_url, market.address, payout_key)
    before = c_chain.w3.eth.get_balance(payout.address)
    assert await rewards.withdraw() == reward
    assert c_chain.w3.eth.get_balance(payout.address) > before + reward - 10**16  # minus gas
    assert await rewards.claimable() == 0
    assert await rewards.withdraw() == 0


async def test_a_task_whose_log_the_node_served_late_is_polled_all_the_same(
    deployment: HubDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that answers for its newest block before it serves that block's logs (a fake log
    reader leaves the newest block out of one poll): the next poll reads the blocks before its
    cursor again and finds the task."""
    d = deployment
    chain = EvmWorkerChain(d.anvil.rpc_url, d.hub.address, funded_evm_key(d.anvil))
    await chain.stake_and_register(10**18, bytes(32), 0)
    cursor = (await chain.poll(0)).cursor
    job_id = 4242
    d.assign(
        job_id, d.chain_time() + 3600, (b"\x01" * 32, b"\x02" * 32), [Task(chain.worker_key, 0)]
    )
    newest = d.chain.w3.eth.block_number
    real_events = chain.hub.events

    def lagging(start: int, end: int) -> list[ContractEvent]:
        return [e for e in real_events(start, end) if e.block_number != newest]

    monkeypatch.setattr(chain.hub, "events", lagging)
    behind = await chain.poll(cursor)
    assert behind.assigned == ()
    assert behind.cursor == newest + 1
    monkeypatch.setattr(chain.hub, "events", real_events)
    caught_up = await chain.poll(behind.cursor)
    assert [t.key for t in caught_up.assigned] == [TaskKey(job_id, 0)]
    assert caught_up.cursor == newest + 1


async def test_an_evm_worker_frees_its_settled_locks_when_they_cost_it_a_task(
    deployment: HubDeployment,
) -> None:
    """A settlement without a slash leaves the task's lock on the WorkerHub until the job's task
    two rounds on takes it over; a job's last round never has one. A worker whose free stake
    those locks used up is refused its next job's task (LockUnavailable): its next poll frees
    them, and the job after that finds the stake."""
    d = deployment
    key = funded_evm_key(d.anvil)
    chain = EvmWorkerChain(d.anvil.rpc_url, d.hub.address, key)
    address = Signer(key).address
    await chain.stake_and_register(10**18, address_to_bytes32(d.anvil.addresses[5]), 0)
    worker_key = chain.worker_key
    deadline = d.chain_time() + 600

    def assign(job_id: int) -> None:
        hashes = (b"\x11" * 32, b"\x22" * 32)
        d.assign(job_id, deadline, hashes, (Task(worker_key, 0),), stake_lock=10**8)  # all of it

    assign(901)
    d.settle(901, [Settlement(worker_key, Outcome.ACCEPTED, 0)])
    assert d.hub.staker(address).locked == 10**18, "the settled task still holds its lock"
    cursor = d.chain.w3.eth.block_number + 1
    assign(902)
    assert d.hub.task(902, 0, worker_key).state is HubTaskState.NONE, "refused: no free stake"

    poll = await chain.poll(cursor)
    assert all(task.key.job_id != 902 for task in poll.assigned), "job 902 assigned nothing"
    assert d.hub.staker(address).locked == 0, "the poll that saw the refusal freed the lock"
    assert d.hub.staker(address).active_tasks == 0
    assign(903)
    assert d.hub.task(903, 0, worker_key).state is HubTaskState.ASSIGNED


async def test_an_evm_worker_reads_its_tasks_and_outcomes_from_the_hubs_batch_events(
    deployment: HubDeployment,
) -> None:
    """The WorkerHub logs each TASK_ASSIGNED and ROUND_SETTLED it applies as one event carrying
    the payload. A poll reports this worker's entries only: a settlement that reached the hub
    before its task (skipped, UnknownTask) settles nothing, the task then assigned is reported,
    and the settlement that meets it is reported with its outcome."""
    d = deployment
    chain = EvmWorkerChain(d.anvil.rpc_url, d.hub.address, funded_evm_key(d.anvil))
    await chain.stake_and_register(10**18, bytes(32), 0)
    other = evm_address("a worker the hub never registered")
    cursor = (await chain.poll(0)).cursor
    job_id = 5151

    def settle(outcome: Outcome) -> None:
        mine = Settlement(chain.worker_key, outcome, 0)
        d.settle(job_id, [Settlement(other, Outcome.ACCEPTED, 0), mine])

    settle(Outcome.ACCEPTED)  # before the task exists: skipped
    early = await chain.poll(cursor)
    assert early.assigned == ()
    assert early.settled == ()

    deadline = d.chain_time() + 3600
    d.assign(
        job_id, deadline, (b"\x01" * 32, b"\x02" * 32), [Task(other, 1), Task(chain.worker_key, 3)]
    )
    assigned = await chain.poll(early.cursor)
    assert [(t.key, t.shard, t.deadline) for t in assigned.assigned] == [
        (TaskKey(job_id, 0), 3, deadline)
    ], "its own entry only (the other key is no registered worker: refused, and not its own)"
    assert assigned.settled == ()

    settle(Outcome.DROPPED)
    settled = await chain.poll(assigned.cursor)
    tid = task_id(job_id, 0, WORKER_CHAIN, chain.worker_key)
    assert settled.settled == (SettledTask(tid, Outcome.DROPPED),)
    assert assigned.assigned[0].task_id == tid
