"""Compute units the worker program spends per instruction, measured on the LiteSVM devnet.

Everything goes through the production path: solana-py's AsyncClient, the JSON-RPC devnet,
the program built by `programs/build.py`. Figures are the runtime's own compute-unit counts
(deterministic), not wall time.
"""

from __future__ import annotations

import asyncio
import json

from solana.rpc.async_api import AsyncClient
from solders.pubkey import Pubkey

from fedrelay.adapters.devnet.solana_rpc import serve_devnet
from fedrelay.adapters.devnet.worker_program import (
    LAMPORTS_PER_SOL,
    Deployment,
    deploy,
    task_assigned,
)
from fedrelay.adapters.solana import instructions as ix
from fedrelay.adapters.solana.client import Receipt, WorkerProgramClient
from fedrelay.adapters.solana.layout import SOLANA_CHAIN
from fedrelay.adapters.solana.program import program_bytes
from fedrelay.protocol.wormhole import Outcome, RoundSettled, Settlement, SlashMode
from fedrelay.protocol.wormhole import samples as wormhole_testing

BENCH_TIME = 1_767_225_600


def _fixed_pubkey(label: str) -> Pubkey:
    return Pubkey(wormhole_testing.filler(label))


def _program_units(receipt: Receipt, program_id: Pubkey) -> int:
    """Units consumed by the worker program itself (excludes the compute-budget instruction)."""
    marker = f"Program {program_id} consumed "
    for line in receipt.logs:
        if line.startswith(marker):
            return int(line[len(marker) :].split()[0])
    return receipt.compute_units


async def _receive(
    deployment: Deployment, signatures: int, batch: int, round_number: int
) -> dict[str, object]:
    crew = []
    for i in range(batch):
        worker = await deployment.funded_keypair(seed=f"bench worker {round_number}/{i}")
        await deployment.client.register(
            worker, stake_lamports=LAMPORTS_PER_SOL, payout=bytes(32), capabilities=0
        )
        crew.append(bytes(worker.pubkey()))
    payload = task_assigned(deployment.program_id, crew, round_number=round_number, deadline=2**40)
    vaa = deployment.sign(payload, signers=range(signatures))
    delivered = await deployment.client.receive_vaa(deployment.admin, vaa.to_bytes())
    units = [_program_units(r, deployment.program_id) for r in delivered.receipts]
    return {
        "compute_units": units[0],
        "path": delivered.path,
        "vaa_bytes": len(vaa.to_bytes()),
        "apply_batch_compute_units": units[1:],
        "entries_per_transaction": [len(r.applied_keys) for r in delivered.receipts],
    }


async def _stake_rules(deployment: Deployment) -> dict[str, object]:
    """stake, begin_unstake, withdraw, release_expired_task, a refusal, a slash and its claim."""
    client, program = deployment.client, deployment.program_id
    chain = deployment.devnet.chain
    now = chain.unix_time()
    crew = [await deployment.funded_keypair(seed=f"bench stake {i}") for i in range(3)]
    for worker in crew:
        await client.register(
            worker, stake_lamports=2 * LAMPORTS_PER_SOL, payout=bytes(32), capabilities=0
        )
    staked = await client.stake(crew[0], LAMPORTS_PER_SOL)
    unbonding = await client.begin_unstake(crew[2], 2 * LAMPORTS_PER_SOL)
    lock = LAMPORTS_PER_SOL // 10
    keys = [bytes(w.pubkey()) for w in crew]
    assign = task_assigned(
        program, keys, round_number=9, deadline=now + 60, min_stake=lock, stake_lock=lock,
        release_after=60,
    )  # fmt: skip
    assigned = await client.receive_vaa(deployment.admin, deployment.sign(assign).to_bytes())
    settle = RoundSettled(
        target_chain=SOLANA_CHAIN,
        target_address=bytes(program),
        job_id=7,
        round=9,
        model_hash=wormhole_testing.filler("bench model"),
        slash_mode=SlashMode.TO_HONEST,
        slash_recipient=bytes(deployment.admin.pubkey()),
        settlements=(
            Settlement(keys[0], Outcome.SLASHED, lock),
            Settlement(keys[1], Outcome.ACCEPTED, 0),
        ),
    )
    settled_vaa = deployment.sign(settle)
    settled = await client.receive_vaa(deployment.admin, settled_vaa.to_bytes())
    claimed = await client.claim_slashed(deployment.admin, settled_vaa.digest, crew[1].pubkey(), 1)
    chain.set_time(now + 3600 * 24 * 30)
    withdrawn = await client.withdraw(crew[2])
    again = task_assigned(
        program, keys[:1], round_number=10, deadline=now + 60, min_stake=lock, stake_lock=lock,
        release_after=60,
    )  # fmt: skip
    await client.receive_vaa(deployment.admin, deployment.sign(again).to_bytes())
    chain.set_time(now + 3600 * 24 * 31)
    released = await client.release_expired_task(crew[0], 7, 10)
    chain.set_time(BENCH_TIME)
    return {
        "stake": _program_units(staked, program),
        "begin_unstake": _program_units(unbonding, program),
        "withdraw": _program_units(withdrawn, program),
        "release_expired_task": _program_units(released, program),
        "claim_slashed": _program_units(claimed, program),
        "task_assigned_3_one_refused": _program_units(assigned.receive, program),
        "round_settled_2_one_slashed": _program_units(settled.receive, program),
    }


async def _measure() -> dict[str, object]:
    elf = program_bytes()
    with serve_devnet() as devnet:
        # A stopped clock, fixed keys and fixed program ids make every PDA bump search, and so
        # every figure, the same from run to run.
        devnet.chain.set_time(BENCH_TIME)
        async with AsyncClient(devnet.url) as rpc:
            client = WorkerProgramClient(rpc, _fixed_pubkey("bench program 1"))
            deployment = await deploy(devnet, client, elf, guardian_count=1)
            three = WorkerProgramClient(rpc, _fixed_pubkey("bench program 3"))
            deployment3 = await deploy(devnet, three, elf, guardian_count=3)

            worker = await deployment.funded_keypair(seed="bench worker")
            registered = await client.register(
                worker, stake_lamports=LAMPORTS_PER_SOL, payout=bytes(32), capabilities=1
            )
            deadline = devnet.chain.unix_time() + 3600
            payload = task_assigned(client.program_id, [bytes(worker.pubkey())], deadline=deadline)
            await client.receive_vaa(deployment.admin, deployment.sign(payload).to_bytes())
            commitment = ix.Commitment(
                7,
                1,
                wormhole_testing.filler("u"),
                wormhole_testing.filler("t"),
                wormhole_testing.filler("d"),
                600,
                1000,
            )
            committed = await client.commit_update(worker, commitment)
            published = await client.publish_commitments(worker, 7, 1, [bytes(worker.pubkey())])
            stake_rules = await _stake_rules(deployment)

            return {
                "benchmark": "solana",
                "unit": "compute_units",
                "register": _program_units(registered, client.program_id),
                "commit_update": _program_units(committed, client.program_id),
                "publish_commitments_1": _program_units(published, client.program_id),
                **stake_rules,
                "receive_message_1_signature_batch_1": await _receive(deployment, 1, 1, 2),
                "receive_message_3_signatures_batch_1": await _receive(deployment3, 3, 1, 3),
                "receive_message_1_signature_batch_8": await _receive(deployment, 1, 8, 4),
                "receive_message_3_signatures_batch_8": await _receive(deployment3, 3, 8, 5),
            }


def run() -> None:
    """Print one JSON line of compute units per instruction."""
    print(json.dumps(asyncio.run(_measure())))
