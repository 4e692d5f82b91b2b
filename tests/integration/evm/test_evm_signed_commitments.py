"""Workers sign their commitments and one transaction records them all (``commitSigned``).

On the two anvil chains of ``test_evm_cross_chain`` (MessageCore + JobMarket, MessageCore +
WorkerHub), with VAAs signed by Python guardians and carried by hand: three workers are
assigned; one commits with its own transaction, the two others sign and a third party submits
their signatures, with the first worker's signature again (skipped: already committed). The
round's commit log then holds the three in the order recorded, publishes as one UPDATE_COMMITTED
and the JobMarket's lane takes it.
"""

from __future__ import annotations

import pytest
from test_evm_cross_chain import Deployment, deployment, latest_time, observe

from fedrelay.adapters.evm import JobSpec, TaskState, address_to_bytes32
from fedrelay.adapters.evm.signed_commitments import CommitSkip, commitment_digest
from fedrelay.protocol.wormhole import Commitment, Task, UpdateCommitted, decode_payload

pytestmark = pytest.mark.integration

__all__ = ["deployment"]  # the module-scoped deployment fixture, used here

WORKERS = 4


def _commitment(key: bytes, n: int) -> Commitment:
    return Commitment(key, bytes([n]) * 32, bytes([n + 1]) * 32, bytes([n + 2]) * 32, 100 + n, n)


def test_signed_commitments_are_recorded_in_one_transaction_and_published(
    deployment: Deployment,
) -> None:
    d = deployment
    coordinator, workers, market, hub = d.coordinator, d.workers, d.market, d.hub
    crew = [workers.signer(i) for i in (7, 8, 9)]
    keys = [address_to_bytes32(w.address) for w in crew]
    relayer_c, submitter = coordinator.signer(6), workers.signer(6)
    for i, worker in enumerate(crew):
        hub.stake(worker, 2 * 10**18)
        payout = bytes(12) + bytes([0x60 + i]) * 20  # an address nobody needs to sign for
        registered = observe(workers, hub.register(worker, payout, 0), d.guardians)
        market.receive_message(relayer_c, registered.to_bytes())
    spec = JobSpec(
        model_hash=b"\x11" * 32, config_hash=b"\x22" * 32, num_rounds=1, workers_per_round=3,
        reward_per_round=3 * 10**18, min_stake=10**8, worker_chains=(WORKERS,),
        slash_recipients=(address_to_bytes32(coordinator.signer(4).address),),
    )  # fmt: skip
    job_id = market.post_job(coordinator.signer(4), spec).job_id
    deadline = max(latest_time(coordinator.chain), latest_time(workers.chain)) + 3600
    tasks = sorted((Task(k, i) for i, k in enumerate(keys)), key=lambda t: t.worker_key)
    assigned = observe(
        coordinator,
        market.assign_tasks(coordinator.signer(1), job_id, WORKERS, deadline, tasks),
        d.guardians,
    )
    hub.receive_message(submitter, assigned.to_bytes())

    entries = [_commitment(k, 0x30 + 8 * i) for i, k in enumerate(keys)]
    # The hub's digest is the one Python signs.
    assert hub.commitment_digest(job_id, 0, entries[0].digest()) == commitment_digest(
        workers.chain.chain_id, hub.address, job_id, 0, entries[0].digest()
    )
    # Worker 2 commits with its own transaction first.
    own = entries[2]
    hub.commit_update(
        crew[2], job_id, 0, own.update_hash, own.transcript_root, own.data_root,
        own.num_samples, own.train_loss,
    )  # fmt: skip
    signed = [hub.sign_commitment(w, job_id, 0, c) for w, c in zip(crew, entries, strict=True)]
    batch = hub.commit_signed(submitter, job_id, 0, signed)
    assert batch.recorded == 2
    assert [(s.worker, s.reason) for s in batch.skipped] == [
        (crew[2].address, CommitSkip.ALREADY_COMMITTED)
    ]

    pending = hub.pending_commitments(job_id, 0)
    assert pending == (entries[2], entries[0], entries[1])
    published = observe(
        workers, hub.publish_commitments(submitter, job_id, 0, pending), d.guardians
    )
    message = decode_payload(published.body.payload)
    assert isinstance(message, UpdateCommitted)
    assert message.commitments == pending
    market.receive_message(relayer_c, published.to_bytes())
    for key, entry in zip(keys, entries, strict=True):
        found = market.commitment(job_id, 0, WORKERS, key)
        assert found.state is TaskState.COMMITTED
        assert found.update_hash == entry.update_hash
