"""The cost of a round at commit 703c947, recorded as `fedrelay bench cost`'s baseline.

Run from a checkout of 703c947 (its `adapters` package and its built contracts and program),
with this branch's `fedrelay/bench/l1fee.py` given by path::

    git worktree add /tmp/fr-703c947 703c947   # then link .venv and tools/, build as its Makefile
    cd /tmp/fr-703c947 && PYTHONPATH=$PWD .venv/bin/python BRANCH/bench/baseline/cost_703c947.py \\
        --l1fee BRANCH/fedrelay/bench/l1fee.py --params BRANCH/bench/l1-fee-params.json \\
        --workers 32 --rounds 10 --workers 256 --rounds 2 > BRANCH/bench/baseline/cost-703c947.json

It plays the same rounds as `fedrelay bench cost` on 703c947's API: an anvil for the coordinator
chain, one for the EVM worker chain, the LiteSVM devnet, 13 of 19 guardians, job E on the EVM
worker chain then job S on Solana, one VAA per delivery transaction, `maxBatch` 16 (EVM) and 8
(Solana) as that commit's devnet sets them, and one claim per payout account at the end. Its
figures are read back from the chains with that commit's `fedrelay.demo_costs`. It is kept as
the record of how the baseline was measured; it does not run on later commits.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from solana.rpc.async_api import AsyncClient
from solders.pubkey import Pubkey
from web3.types import RPCEndpoint

from adapters import evm
from adapters.devnet.forge import Forge
from adapters.devnet.network import EVM_MAX_BATCH, SOLANA_MAX_BATCH
from adapters.devnet.services import Anvil
from adapters.devnet.toolchain import foundry_binary
from adapters.evm.artifacts import CONTRACTS_DIR
from adapters.solana import instructions as ix
from adapters.solana.client import WorkerProgramClient
from adapters.solana.devnet import serve_devnet
from adapters.solana.layout import SOLANA_CHAIN
from adapters.solana.program import program_bytes
from adapters.solana.testing import LAMPORTS_PER_SOL, Deployment
from adapters.wormhole import Outcome, Task, VaaBody, keccak256, sign_vaa
from adapters.wormhole.testing import filler, guardian_signers
from fedrelay.demo_costs import evm_gas, solana_compute

COMMIT = "703c947"
C_CHAIN, W_CHAIN, GUARDIANS, QUORUM = 2, 4, 19, 13
T0, DEADLINE, STAKE, MIN_STAKE, REWARD = 1_767_225_600, 2**40, 10**18, 10**6, 10**18


class Bench:
    """The chains, contracts and accounts of one measurement, and the relayer's deliveries."""

    def __init__(self, l1fee: Any, params: Any) -> None:
        self.l1fee, self.params = l1fee, params
        self.signers = list(enumerate(guardian_signers(GUARDIANS)))[:QUORUM]
        self.sequence = 0
        self.roles: dict[str, str] = {}
        self.cursor = 0

    def vaa(self, chain: int, emitter: bytes, payload: bytes) -> bytes:
        self.sequence += 1
        body = VaaBody(1, 0, chain, emitter, self.sequence, 202, payload)
        return sign_vaa(body, 0, self.signers).to_bytes()

    async def start(self, c: Anvil, w: Anvil, devnet: Any, rpc: AsyncClient) -> None:
        c_url, w_url = c.rpc_url, w.rpc_url
        self.urls, self.devnet = (c_url, w_url), devnet
        self.c, self.w = evm.EvmChain(c_url), evm.EvmChain(w_url)
        for chain in (self.c, self.w):
            chain.w3.provider.make_request(RPCEndpoint("evm_setNextBlockTimestamp"), [T0])
            chain.w3.provider.make_request(RPCEndpoint("anvil_setBlockTimestampInterval"), [1])
        keys = [g.address for _, g in self.signers] + [
            g.address for g in guardian_signers(GUARDIANS)[QUORUM:]
        ]
        addresses = ["0x" + k.hex() for k in keys]
        # anvil's first development accounts (the same mnemonic on both chains)
        self.owner, self.aggregator, self.relayer = (evm.Signer(k) for k in c.private_keys[:3])
        owner = self.owner
        self.core2 = evm.deploy_message_core(self.c, owner, C_CHAIN, addresses)
        self.core4 = evm.deploy_message_core(self.w, owner, W_CHAIN, addresses)
        self.market = evm.deploy_job_market(
            self.c, owner, self.core2.address, self.aggregator.address, owner.address, 0
        )
        self.hub = evm.deploy_worker_hub(self.w, owner, self.core4.address, C_CHAIN, MIN_STAKE, 60)
        evm.link(self.market, owner, self.hub, owner, evm.Link(C_CHAIN, W_CHAIN, EVM_MAX_BATCH))
        program = Pubkey(filler("cost bench program"))
        client = WorkerProgramClient(rpc, program)
        devnet.add_program(program, program_bytes())
        admin = await self._keypair(client, "cost bench admin")
        args = ix.InitializeArgs(
            C_CHAIN, evm.address_to_bytes32(self.market.address), 0, tuple(keys),
            unbonding_delay=3600, min_stake=LAMPORTS_PER_SOL, consistency_level=1,
        )  # fmt: skip
        await client.initialize(admin, args)
        self.solana = Deployment(devnet, client, admin, [g for _, g in self.signers])
        self.market.set_peer(owner, SOLANA_CHAIN, bytes(program))
        self.market.set_max_batch(owner, SOLANA_CHAIN, SOLANA_MAX_BATCH)
        self.solana_relayer = await self._keypair(client, "cost bench relayer")
        self.roles |= {
            self.aggregator.address.lower(): "aggregator",
            self.relayer.address.lower(): "relayer",
            str(self.solana_relayer.pubkey()): "relayer",
        }

    async def _keypair(self, client: WorkerProgramClient, seed: str) -> Any:
        from solders.keypair import Keypair

        keypair = Keypair.from_seed(keccak256(seed.encode()))
        await client.airdrop(keypair.pubkey(), 1000 * LAMPORTS_PER_SOL)
        return keypair

    def fund(self, chain: evm.EvmChain, address: str) -> None:
        chain.w3.provider.make_request(RPCEndpoint("anvil_setBalance"), [address, hex(10**22)])

    # --- deliveries: one VAA per transaction ---------------------------------------------------

    def to_hub(self, receipt: Any) -> None:
        for m in self.core2.published_messages(receipt):
            vaa = self.vaa(C_CHAIN, m.emitter_address, m.payload)
            self.to_market(self.hub.receive_message(self.relayer, vaa))

    def to_market(self, receipt: Any) -> None:
        for m in self.core4.published_messages(receipt):
            self.market.receive_message(
                self.relayer, self.vaa(W_CHAIN, m.emitter_address, m.payload)
            )

    async def to_program(self, receipt: Any) -> None:
        for m in self.core2.published_messages(receipt):
            vaa = self.vaa(C_CHAIN, m.emitter_address, m.payload)
            await self.solana.client.receive_vaa(self.solana_relayer, vaa)
            await self.from_program()

    async def from_program(self) -> None:
        client = self.solana.client
        for m in await client.messages_from(self.cursor):
            vaa = self.vaa(SOLANA_CHAIN, bytes(client.program_id), m.payload)
            self.market.receive_message(self.relayer, vaa)
            self.cursor = m.sequence + 1

    # --- a measurement -------------------------------------------------------------------------

    async def measure(self, workers: int, rounds: int) -> dict[str, Any]:
        evm_crew, solana_crew = [], []
        for i in range(workers):
            worker = evm.Signer("0x" + keccak256(f"cost bench worker {i}".encode()).hex())
            payout = evm.Signer("0x" + keccak256(f"cost bench payout evm {i}".encode()).hex())
            self.fund(self.w, worker.address)
            self.fund(self.c, payout.address)
            self.hub.stake(worker, STAKE)
            self.to_market(self.hub.register(worker, evm.address_to_bytes32(payout.address), 0))
            self.roles |= {worker.address.lower(): "workers", payout.address.lower(): "claims"}
            evm_crew.append((worker, payout))
        for i in range(workers):
            keypair = await self._keypair(self.solana.client, f"cost bench solana worker {i}")
            payout = evm.Signer("0x" + keccak256(f"cost bench payout solana {i}".encode()).hex())
            self.fund(self.c, payout.address)
            await self.solana.client.register(
                keypair, stake_lamports=LAMPORTS_PER_SOL,
                payout=evm.address_to_bytes32(payout.address), capabilities=0,
            )  # fmt: skip
            await self.from_program()
            self.roles |= {str(keypair.pubkey()): "workers", payout.address.lower(): "claims"}
            solana_crew.append((keypair, payout))
        spent = []
        for chain, crew in ((W_CHAIN, evm_crew), (SOLANA_CHAIN, solana_crew)):
            spec = evm.JobSpec(
                filler("cost bench model"), filler("cost bench config"), rounds, workers,
                REWARD, MIN_STAKE, (chain,),
            )  # fmt: skip
            job = self.market.post_job(self.owner, spec).job_id
            starts = await self.heads()
            for number in range(rounds):
                print(f"{COMMIT}: W={workers} chain {chain} round {number}", file=sys.stderr)
                await self.round(job, number, chain, [w for w, _ in crew])
            for _, payout in crew:
                self.market.withdraw(payout)
            spent.append(await self.spent(starts, chain == SOLANA_CHAIN))
        return figures(workers, rounds, spent[0], spent[1])

    async def heads(self) -> tuple[int, int, int]:
        async with AsyncClient(self.devnet.url) as rpc:
            slot = (await rpc.get_slot()).value
        return self.c.w3.eth.block_number + 1, self.w.w3.eth.block_number + 1, slot + 1

    async def round(self, job: int, number: int, chain: int, crew: list[Any]) -> None:
        solana = chain == SOLANA_CHAIN
        keys = [bytes(w.pubkey()) if solana else evm.address_to_bytes32(w.address) for w in crew]
        tasks = [Task(k, i) for i, k in enumerate(keys)]
        size = SOLANA_MAX_BATCH if solana else EVM_MAX_BATCH
        for start in range(0, len(tasks), size):
            chunk = tasks[start : start + size]
            receipt = self.market.assign_tasks(self.aggregator, job, chain, DEADLINE, chunk)
            await self.to_program(receipt) if solana else self.to_hub(receipt)
        for worker, key in zip(crew, keys, strict=True):
            label = f"{job}/{number}/{key.hex()}"
            update, transcript = filler(f"update {label}"), filler(f"transcript {label}")
            if solana:
                commitment = ix.Commitment(job, number, update, transcript, 100, 1)
                await self.solana.client.commit_update(worker, commitment)
                await self.from_program()
            else:
                receipt = self.hub.commit_update(worker, job, number, update, transcript, 100, 1)
                self.to_market(receipt)
        reward = REWARD // len(keys)
        results = [evm.RoundResult(chain, k, Outcome.ACCEPTED, reward=reward) for k in keys]
        model = filler(f"cost bench model {job}/{number + 1}")
        self.market.finalize_round(self.aggregator, job, number, model, results)
        settled = self.market.settle_round(self.aggregator, job, number)
        await self.to_program(settled) if solana else self.to_hub(settled)

    async def spent(self, starts: tuple[int, int, int], solana: bool) -> dict[str, Any]:
        c_gas = await evm_gas(self.urls[0], "coordinator", self.roles, starts[0])
        w_gas = await evm_gas(self.urls[1], "worker-evm", self.roles, starts[1])
        program = str(self.solana.client.program_id)
        units = await solana_compute(self.devnet.url, "solana", program, self.roles, starts[2])
        raws, calldata = [], 0
        async with httpx.AsyncClient(timeout=60.0) as client:
            for url, first in zip(self.urls, starts[:2], strict=True):
                last = int(await rpc(client, url, "eth_blockNumber", []), 16)
                for number in range(first, last + 1):
                    block = await rpc(client, url, "eth_getBlockByNumber", [hex(number), True])
                    for tx in block["transactions"]:
                        calldata += len(tx["input"]) // 2 - 1
                        raw = await rpc(client, url, "eth_getRawTransactionByHash", [tx["hash"]])
                        raws.append(bytes.fromhex(raw[2:]))
        l1 = self.l1fee.l1_cost(raws, self.params)
        by_step: dict[str, Any] = {
            "coordinator_gas_by_role": {r: s.units for r, s in sorted(c_gas.by_role.items())},
            "worker_chain_gas_by_role": {r: s.units for r, s in sorted(w_gas.by_role.items())},
            "coordinator_transactions": c_gas.total.transactions,
            "worker_chain_transactions": w_gas.total.transactions,
        }
        if solana:
            by_step["solana_cu_by_instruction"] = {
                k: u.compute_units for k, u in sorted(units.by_instruction.items())
            }
            by_step["solana_transactions"] = units.total.transactions
        return {
            "coordinator": c_gas.total.units, "worker_chain": w_gas.total.units,
            "solana": units.total.units if solana else 0, "calldata": calldata,
            "l1_gas": l1.data_gas, "l1_fee": l1.fee_wei, "by_step": by_step,
        }  # fmt: skip


async def rpc(client: httpx.AsyncClient, url: str, method: str, params: list[Any]) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    return (await client.post(url, json=body)).json()["result"]


def figures(workers: int, rounds: int, e: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    one, both = workers * rounds, 2 * workers * rounds
    return {
        "rounds": rounds,
        "claim_every_rounds": rounds,
        "coordinator_gas_per_worker_round": round((e["coordinator"] + s["coordinator"]) / both),
        "worker_chain_gas_per_worker_round": round(e["worker_chain"] / one),
        "solana_cu_per_worker_round": round(s["solana"] / one),
        "calldata_bytes_per_worker_round": round((e["calldata"] + s["calldata"]) / both),
        "l1_data_gas_per_worker_round": round((e["l1_gas"] + s["l1_gas"]) / both),
        "l1_data_fee_wei_per_worker_round": round((e["l1_fee"] + s["l1_fee"]) / both),
        "coordinator_gas_per_worker_round_evm_job": round(e["coordinator"] / one),
        "coordinator_gas_per_worker_round_solana_job": round(s["coordinator"] / one),
        "by_step": {"job_evm": e["by_step"], "job_solana": s["by_step"]},
    }


def version(*command: str) -> str:
    found = subprocess.run(command, capture_output=True, text=True, check=False)
    return (found.stdout or found.stderr).strip().splitlines()[0]


async def main_async(args: argparse.Namespace, l1fee: Any) -> dict[str, Any]:
    params = l1fee.load_params(Path(args.params))
    by_workers: dict[str, Any] = {}
    for workers, rounds in zip(args.workers, args.rounds, strict=True):
        with Anvil(chain_id=31337) as c, Anvil(chain_id=31338) as w, serve_devnet() as devnet:
            devnet.chain.set_time(T0)
            async with AsyncClient(devnet.url) as rpc_client:
                bench = Bench(l1fee, params)
                await bench.start(c, w, devnet, rpc_client)
                by_workers[str(workers)] = await bench.measure(workers, rounds)
    return {
        "benchmark": "cost",
        "commit": subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip(),
        "design": "703c947 (protocol v1: one VAA per task message and per commitment)",
        "guardians": GUARDIANS,
        "quorum": QUORUM,
        "core": "messagecore",
        "deliveries": "one VAA per transaction (703c947 has no batch delivery on JobMarket)",
        "max_batch": {"evm": EVM_MAX_BATCH, "solana": SOLANA_MAX_BATCH},
        "workers_per_round": by_workers,
        "l1_fee": l1fee.describe(params),
        "command": "cd /tmp/fr-703c947 && PYTHONPATH=$PWD .venv/bin/python "
        + " ".join(sys.argv).replace(str(Path(__file__).resolve().parents[2]), "BRANCH"),
        "measured": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tools": {
            "python": sys.version.split()[0],
            "anvil": version(str(foundry_binary("anvil")), "--version"),
            "solc": "0.8.30 (solcjs, as 703c947's Makefile builds)",
            "platform": version("uname", "-srm"),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--l1fee", required=True, help="this branch's fedrelay/bench/l1fee.py")
    parser.add_argument("--params", required=True, help="this branch's bench/l1-fee-params.json")
    parser.add_argument("--workers", type=int, action="append", required=True)
    parser.add_argument("--rounds", type=int, action="append", required=True)
    args = parser.parse_args()
    if len(args.workers) != len(args.rounds):
        parser.error("give one --rounds per --workers")
    spec = importlib.util.spec_from_file_location("l1fee", args.l1fee)
    if spec is None or spec.loader is None:
        parser.error(f"cannot load {args.l1fee}")
    l1fee = importlib.util.module_from_spec(spec)
    sys.modules["l1fee"] = l1fee
    spec.loader.exec_module(l1fee)
    Forge(CONTRACTS_DIR).build()
    print(json.dumps(asyncio.run(main_async(args, l1fee)), indent=1))


if __name__ == "__main__":
    main()
