"""The demo's cost report read from real chains: gas on anvil, compute units on the Solana devnet.

Each test sends a few known transactions from accounts with known roles and checks the tally
against what the chain itself shows: every sender's balance loss on anvil, the compute units
and fees each Solana transaction reports through ``getTransaction``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from solana.rpc.async_api import AsyncClient
from solders.pubkey import Pubkey
from web3 import Web3

from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.devnet.solana_rpc import SolanaDevnet, serve_devnet
from fedrelay.adapters.solana import instructions as ix
from fedrelay.adapters.solana.client import WorkerProgramClient
from fedrelay.adapters.solana.program import program_bytes
from fedrelay.adapters.solana.testing import LAMPORTS_PER_SOL, deploy, task_assigned
from fedrelay.demo.costs import evm_gas, solana_compute

pytestmark = pytest.mark.integration


async def test_gas_is_counted_per_sender_role_since_the_start_block(
    coordinator_chain: Anvil,
) -> None:
    w3 = Web3(Web3.HTTPProvider(coordinator_chain.rpc_url))
    poster, relayer, stranger = (
        w3.to_checksum_address(a) for a in coordinator_chain.addresses[5:8]
    )
    roles = {poster.lower(): "owner", relayer.lower(): "relayer-coordinator"}
    start = w3.eth.block_number + 1
    before = {a: w3.eth.get_balance(a) for a in (poster, relayer, stranger)}
    sent = {poster: 2, relayer: 1, stranger: 1}
    for sender, count in sent.items():
        for _ in range(count):
            tx = w3.eth.send_transaction({"from": sender, "to": sender, "value": 0})
            w3.eth.wait_for_transaction_receipt(tx)

    gas = await evm_gas(coordinator_chain.rpc_url, "coordinator", roles, first_block=start)

    assert gas.first_block == start
    assert gas.last_block == w3.eth.block_number
    assert gas.total.transactions == 4
    assert gas.total.units == 4 * 21_000
    paid = {a: before[a] - w3.eth.get_balance(a) for a in before}
    assert gas.by_role["owner"].transactions == 2
    assert gas.by_role["owner"].units == 2 * 21_000
    assert gas.by_role["owner"].fees == paid[poster] > 0
    assert gas.by_role["relayer-coordinator"].fees == paid[relayer] > 0
    assert gas.by_role["other"].fees == paid[stranger] > 0
    assert gas.total.fees == sum(paid.values())
    entry = gas.to_json()
    assert entry["gas_used"] == 4 * 21_000
    assert entry["by_role"]["owner"]["fees_wei"] == paid[poster]


@pytest.fixture(scope="module")
def costs_devnet() -> Iterator[SolanaDevnet]:
    """A Solana devnet of its own, so that only this module's transactions name its program."""
    with serve_devnet() as devnet:
        yield devnet


async def test_compute_units_and_fees_are_counted_per_instruction_and_payer(
    costs_devnet: SolanaDevnet,
) -> None:
    async with AsyncClient(costs_devnet.url) as rpc:
        client = WorkerProgramClient(rpc, Pubkey.new_unique())
        d = await deploy(costs_devnet, client, program_bytes(), guardian_count=1)
        workers = [await d.funded_keypair(sol=10) for _ in range(2)]
        for worker in workers:
            await client.register(
                worker, stake_lamports=2 * LAMPORTS_PER_SOL, payout=b"\x01" * 32, capabilities=1
            )
        deadline = max(costs_devnet.chain.unix_time(), int(time.time())) + 600
        keys = [bytes(w.pubkey()) for w in workers]
        assigned = task_assigned(d.program_id, keys, job_id=4, round_number=0, deadline=deadline)
        await client.receive_vaa(d.admin, d.sign(assigned).to_bytes())
        commit = await client.commit_update(
            workers[0], ix.Commitment(4, 0, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32, 10, 5)
        )

    program = str(d.program_id)
    roles = {str(d.admin.pubkey()): "solana-admin"} | {str(w.pubkey()): "workers" for w in workers}
    compute = await solana_compute(costs_devnet.url, "worker-solana", program, roles)

    # What getTransaction reports for each transaction that named the program.
    signatures = [r.signature for r in costs_devnet.chain.signatures_for(program)]
    async with httpx.AsyncClient() as http:
        body = [
            {"jsonrpc": "2.0", "id": n, "method": "getTransaction", "params": [s, "json"]}
            for n, s in enumerate(signatures)
        ]
        metas = [r["result"]["meta"] for r in (await http.post(costs_devnet.url, json=body)).json()]
    assert compute.total.transactions == len(signatures) >= 5
    assert compute.total.units == sum(m["computeUnitsConsumed"] for m in metas) > 0
    assert compute.total.fees == sum(m["fee"] for m in metas) > 0

    assert compute.by_role["workers"].transactions == 3  # two registrations, one commitment
    assert compute.by_role["solana-admin"].transactions == compute.total.transactions - 3
    kinds = compute.by_instruction
    assert kinds["register"].instructions == 2
    assert kinds["commit_update"].instructions == 1
    assert kinds["commit_update"].compute_units > 0
    assert kinds["initialize"].instructions == 1
    assert sum(k.compute_units for k in kinds.values()) == compute.total.units
    # The commitment's own units are what its receipt reported.
    assert commit.compute_units >= kinds["commit_update"].compute_units > 0

    # From a later slot on, only later transactions count.
    later = await solana_compute(
        costs_devnet.url, "worker-solana", program, roles, first_slot=commit.slot
    )
    assert later.total.transactions == 1
    assert later.by_instruction["commit_update"].instructions == 1
    assert later.total.units == commit.compute_units
