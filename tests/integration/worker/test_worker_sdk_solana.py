"""The worker SDK on the Solana devnet (LiteSVM behind JSON-RPC) with the real coordinator API.

As in the EVM test, the test plays the coordinator and the relayer (guardian-signed
TASK_ASSIGNED and ROUND_SETTLED VAAs delivered to the worker program); the worker finds its task
account, trains, uploads, commits, answers a challenge and does not commit twice after a
restart. Fixtures follow tests/integration/solana/conftest.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from solana.rpc.async_api import AsyncClient
from support.coordinator import LocalCoordinator

from fedrelay.adapters.solana.layout import SOLANA_CHAIN
from fedrelay.adapters.solana.testing import LAMPORTS_PER_SOL, SLASH_RECIPIENT, Deployment
from fedrelay.adapters.solana.worker_chain import SolanaWorkerChain
from fedrelay.protocol.api.signing import SolanaSigner
from fedrelay.protocol.challenges import Challenge
from fedrelay.protocol.merkle import decode_proof
from fedrelay.protocol.wormhole import (
    Outcome,
    RoundSettled,
    Settlement,
    SlashMode,
    Task,
    TaskAssigned,
    UpdateCommitted,
    decode_payload,
)
from fedrelay.training import blob_hash, verify_proof
from fedrelay.training.torch_trainer import initial_model, mlp
from fedrelay.worker.sdk import DigitsShards, JobConfig, StateStore, TaskKey, TaskStage, WorkerNode
from fedrelay.worker.sdk import Outcome as SdkOutcome

pytestmark = pytest.mark.integration

JOB = 12
CONFIG = JobConfig(seed=9, steps=6, checkpoint_every=2, batch_size=16)


async def test_a_solana_worker_trains_commits_answers_and_resumes(
    deployment: Deployment, solana_rpc: AsyncClient, tmp_path: Path
) -> None:
    d = deployment
    keypair = await d.funded_keypair(sol=10)
    signer = SolanaSigner(keypair)
    coordinator = LocalCoordinator()
    state_path = tmp_path / "worker.json"

    async def node_with(path: Path) -> WorkerNode:
        chain = await SolanaWorkerChain.connect(solana_rpc, d.program_id, keypair)
        return WorkerNode(
            chain, coordinator.client(signer), DigitsShards(4), StateStore(path), poll_interval=0.01
        )

    node = await node_with(state_path)
    status = await node.register(stake=2 * LAMPORTS_PER_SOL, payout=b"\x05" * 32)
    assert status.registered
    assert status.staked == 2 * LAMPORTS_PER_SOL
    worker_key = signer.worker.key
    assert node.chain.worker_key == worker_key

    deadline = max(d.devnet.chain.unix_time(), int(time.time())) + 600
    model_hash, config_hash = await coordinator.open_round(
        JOB, [signer.worker], initial_model(mlp, seed=3), CONFIG, deadline
    )
    assigned = TaskAssigned(
        target_chain=SOLANA_CHAIN,
        target_address=bytes(d.program_id),
        job_id=JOB,
        round=0,
        deadline=deadline,
        model_hash=model_hash,
        config_hash=config_hash,
        min_stake=LAMPORTS_PER_SOL // 10,
        stake_lock=LAMPORTS_PER_SOL // 20,
        release_at=deadline + 3600,
        tasks=(Task(worker_key, 2),),
    )
    await d.client.receive_vaa(d.admin, d.sign(assigned).to_bytes())

    report = await node.step()
    assert report.committed == (TaskKey(JOB, 0),)

    # On chain: the task account holds the commitment; published once per round (by the node
    # or, if it has not yet, here), UPDATE_COMMITTED carries the uploaded update's hash and the
    # transcript root.
    task = await d.client.fetch_task(JOB, 0, worker_key)
    assert task.committed
    record = node.state.task(TaskKey(JOB, 0))
    assert record is not None
    uploads = await coordinator.repository.updates(JOB, 0)
    assert uploads == {signer.worker: record.update_hash}
    await node.chain.publish_commitments(TaskKey(JOB, 0))
    assert await node.chain.commitment_published(TaskKey(JOB, 0))
    assert await node.chain.publish_commitments(TaskKey(JOB, 0)) == 0
    payloads = [decode_payload(m.payload) for m in await d.client.all_messages()]
    commits = [p for p in payloads if isinstance(p, UpdateCommitted)]
    assert len(commits) == 1
    [published] = commits[0].commitments
    assert published.worker_key == worker_key
    assert published.update_hash.hex() == record.update_hash
    assert published.transcript_root.hex() == record.transcript_root
    assert published.num_samples == len(DigitsShards(4).dataset(2))

    # A challenge on segment 0 is answered with proofs against the committed root.
    now = int(time.time())
    challenge = Challenge(JOB, 0, signer.worker, segment=0, issued_at=now, answer_by=now + 60)
    await coordinator.repository.save_challenge(challenge)
    assert (await node.step()).answered == (challenge.challenge_id,)
    [answered] = await coordinator.repository.challenges(challenge_id=challenge.challenge_id)
    assert answered.answer is not None
    start = await coordinator.blobs.get(answered.answer.start_checkpoint)
    assert verify_proof(
        blob_hash(start), decode_proof(answered.answer.start_proof), published.transcript_root
    )

    # A restart with the state file, and one without it, commit nothing again.
    for path, recovered in ((state_path, ()), (tmp_path / "lost.json", (TaskKey(JOB, 0),))):
        restarted = await node_with(path)
        again = await restarted.step()
        assert again.committed == ()
        assert again.recovered == recovered
        resumed = restarted.state.task(TaskKey(JOB, 0))
        assert resumed is not None
        assert resumed.stage is TaskStage.COMMITTED
    payloads = [decode_payload(m.payload) for m in await d.client.all_messages()]
    assert sum(isinstance(p, UpdateCommitted) for p in payloads) == 1

    # ROUND_SETTLED: the worker records the outcome; its stake has no open task left.
    settled_payload = RoundSettled(
        target_chain=SOLANA_CHAIN,
        target_address=bytes(d.program_id),
        job_id=JOB,
        round=0,
        model_hash=b"\x43" * 32,
        slash_mode=SlashMode.TO_RECIPIENT,
        slash_recipient=SLASH_RECIPIENT,
        settlements=(Settlement(worker_key, Outcome.ACCEPTED, 0),),
    )
    await d.client.receive_vaa(d.admin, d.sign(settled_payload).to_bytes())
    assert (await node.step()).settled == (TaskKey(JOB, 0),)
    settled = node.state.task(TaskKey(JOB, 0))
    assert settled is not None
    assert settled.outcome == SdkOutcome.ACCEPTED
    assert (await node.chain.stake_status()).open_tasks == 0
    await node.begin_unstake((await node.chain.stake_status()).staked)
    assert (await d.client.fetch_worker(keypair.pubkey())).unbonding_at > 0
