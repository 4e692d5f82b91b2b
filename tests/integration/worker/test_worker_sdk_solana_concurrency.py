"""Solana workers sending at the same time through the LiteSVM devnet's JSON-RPC.

The worker program writes every published message to the account of the next sequence, read
just before sending, and the devnet accepts only its latest blockhash: workers that register,
commit or publish the round's commitments together race, and all but one are refused at
preflight. The SDK sends a lost race again with fresh state, so every registration and
commitment lands, each exactly once, and every commitment is published once; a refusal that no
race explains is still reported at once as ChainRejected.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair

from fedrelay.adapters.solana.testing import LAMPORTS_PER_SOL, Deployment, task_assigned
from fedrelay.adapters.solana.worker_chain import SolanaWorkerChain
from fedrelay.ports.worker_chain import TaskKey, UpdateCommitment
from fedrelay.protocol.wormhole import UpdateCommitted, WorkerRegistered, decode_payload
from fedrelay.worker.sdk.errors import ChainRejected

pytestmark = pytest.mark.integration

WORKERS = 4
JOB = 21


def _commitment(number: int, round_number: int) -> UpdateCommitment:
    return UpdateCommitment(
        TaskKey(JOB, round_number),
        update_hash=bytes([number + 1]) * 32,
        transcript_root=bytes([number + 101]) * 32,
        data_root=bytes([number + 151]) * 32,
        num_samples=100 + number,
        train_loss=1000 + number,
    )


async def _registered_workers(
    d: Deployment, rpc: AsyncClient
) -> tuple[list[Keypair], list[SolanaWorkerChain]]:
    keypairs = [await d.funded_keypair(sol=10) for _ in range(WORKERS)]
    chains = [await SolanaWorkerChain.connect(rpc, d.program_id, k) for k in keypairs]
    await asyncio.gather(
        *(c.stake_and_register(2 * LAMPORTS_PER_SOL, bytes([7]) * 32, 1) for c in chains)
    )
    return keypairs, chains


async def _assign(d: Deployment, keys: list[bytes], round_number: int) -> None:
    deadline = max(d.devnet.chain.unix_time(), int(time.time())) + 600
    assigned = task_assigned(
        d.program_id, keys, job_id=JOB, round_number=round_number, deadline=deadline
    )
    await d.client.receive_vaa(d.admin, d.sign(assigned).to_bytes())


async def test_concurrent_registrations_and_commitments_all_land_once(
    deployment: Deployment, solana_rpc: AsyncClient
) -> None:
    d = deployment
    keypairs, chains = await _registered_workers(d, solana_rpc)
    for keypair, chain in zip(keypairs, chains, strict=True):
        status = await chain.stake_status()
        assert status.registered, f"{keypair.pubkey()} is not registered"
        assert status.staked == 2 * LAMPORTS_PER_SOL

    keys = [c.worker_key for c in chains]
    for round_number in (0, 1):
        await _assign(d, keys, round_number)
        receipts = await asyncio.gather(
            *(c.commit(_commitment(n, round_number)) for n, c in enumerate(chains))
        )
        # Each commitment landed by its own transaction (none was taken for another's).
        assert all(r.transaction for r in receipts)
        assert len({r.transaction for r in receipts}) == WORKERS
        for chain in chains:
            assert await chain.is_committed(TaskKey(JOB, round_number))
        # Every worker publishes the round's commitments at once: each goes out once.
        counts = await asyncio.gather(
            *(c.publish_commitments(TaskKey(JOB, round_number)) for c in chains)
        )
        assert sum(counts) == WORKERS
        for chain in chains:
            assert await chain.commitment_published(TaskKey(JOB, round_number))

    payloads = [decode_payload(m.payload) for m in await d.client.all_messages()]
    registered = [p for p in payloads if isinstance(p, WorkerRegistered)]
    assert sorted(p.worker_key for p in registered) == sorted(keys)
    commits = [p for p in payloads if isinstance(p, UpdateCommitted)]
    published = sorted(
        (p.round, c.worker_key, c.update_hash) for p in commits for c in p.commitments
    )
    expected = sorted(
        (r, key, _commitment(n, r).update_hash) for r in (0, 1) for n, key in enumerate(keys)
    )
    assert published == expected


async def test_a_commitment_already_on_chain_is_not_sent_again(
    deployment: Deployment, solana_rpc: AsyncClient
) -> None:
    d = deployment
    _, chains = await _registered_workers(d, solana_rpc)
    await _assign(d, [c.worker_key for c in chains], 0)
    await asyncio.gather(*(c.commit(_commitment(n, 0)) for n, c in enumerate(chains)))

    # A second commitment of the same task is refused by the program for good: not a race.
    with pytest.raises(ChainRejected, match="refused the commitment"):
        await chains[0].commit(_commitment(0, 0))
    # A task that was never assigned is refused too, without retrying for ever.
    with pytest.raises(ChainRejected):
        await chains[1].commit(_commitment(1, 5))
    assert await chains[2].publish_commitments(TaskKey(JOB, 0)) == WORKERS
    assert await chains[3].publish_commitments(TaskKey(JOB, 0)) == 0
    payloads = [decode_payload(m.payload) for m in await d.client.all_messages()]
    commits = [p for p in payloads if isinstance(p, UpdateCommitted)]
    assert len(commits) == 1
    assert len(commits[0].commitments) == WORKERS
