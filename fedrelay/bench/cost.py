"""What a federated round costs on every chain, per worker-round, from real transactions.

`fedrelay bench cost` plays whole rounds of the current design against real chains: an anvil for
the coordinator chain (MessageCore + JobMarket, Wormhole chain 2), an anvil for the EVM worker
chain (MessageCore + WorkerHub, chain 4) and the LiteSVM devnet with the worker program (chain
1), with VAAs signed by 13 of 19 guardians. Two jobs run one after the other, each with W workers
in every round: job E on the EVM worker chain, job S on Solana.

Deployment, staking, registration and posting the jobs happen before a start block; from there
every transaction of the rounds is counted, read back from the chains as
:mod:`fedrelay.demo.costs` reads the demo's: the aggregator's `assignTasks` (one TASK_ASSIGNED
per batch of `maxBatch` tasks), the relayer's deliveries (one VAA a transaction, the relayer's
default, or with `Design.deliver_batch` the JobMarket's in `receiveMessages` batches; on Solana
with its buffer and `apply_batch` transactions), each worker's
`commitUpdate`, one `publishCommitments` per round (UPDATE_COMMITTED of up to 32 commitments),
their deliveries, `finalizeRound`, `settleRound` (ROUND_SETTLED
batches) and their deliveries, and at the end one `withdraw` per worker's payout account (the
claims, amortised over the rounds measured), or with `Design.rewards` a RewardDistributor: each
round's total credited to it once, one cumulative root proposed per job and the claims submitted
in `claimBatch` transactions.

Figures per worker-round (W x rounds of a job):

- ``coordinator_gas_per_worker_round``: coordinator-chain gas of both jobs / (2 W rounds);
- ``worker_chain_gas_per_worker_round``: EVM worker-chain gas of job E / (W rounds);
- ``solana_cu_per_worker_round``: compute units of job S's Solana transactions / (W rounds);
- ``calldata_bytes_per_worker_round``: the input bytes of every EVM transaction (both chains,
  both jobs) / (2 W rounds), with the L1 data gas and fee an OP-stack chain would charge for
  the signed transactions (:mod:`fedrelay.bench.l1fee`).

With them, ``gas_per_worker_round_by_call``: each EVM chain's figure split by the contract
function each transaction called (:mod:`fedrelay.bench.calls`), so the figure says where it goes.

What is measured is a :class:`Design`: the attestation (version-1 VAAs, or version-2 threshold
VAAs signed here), the batch sizes and the core (MessageCore or Wormhole's own).

Every key is fixed, signatures are RFC 6979 and the Solana clock is stopped, so gas and compute
units repeat from run to run.
"""

from __future__ import annotations

import asyncio
import enum
import json
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from hexbytes import HexBytes
from rich.console import Console
from rich.table import Table
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from web3.types import RPCEndpoint

from fedrelay.adapters import evm
from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.guardians import append_key_vaa, guardian_signers, threshold_key
from fedrelay.adapters.devnet.network import EVM_MAX_BATCH, SOLANA_MAX_BATCH
from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.devnet.solana_rpc import serve_devnet
from fedrelay.adapters.devnet.toolchain import foundry_binary
from fedrelay.adapters.devnet.worker_program import LAMPORTS_PER_SOL, Deployment, deploy
from fedrelay.adapters.devnet.wormhole_core import deploy_wormhole_core, pinned
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR
from fedrelay.adapters.evm.batch import BatchDelivery, BatchResult
from fedrelay.adapters.evm.core import AnyCore, CoreKind, MessageCoreContract
from fedrelay.adapters.solana import instructions as ix
from fedrelay.adapters.solana.client import WorkerProgramClient
from fedrelay.adapters.solana.layout import SOLANA_CHAIN
from fedrelay.adapters.solana.program import program_bytes
from fedrelay.bench import calls, l1fee
from fedrelay.bench.gas import COORDINATOR, GUARDIANS, QUORUM, Guardians
from fedrelay.bench.gas import WORKERS as WORKER_EVM
from fedrelay.demo.costs import evm_gas, solana_compute
from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.wormhole import Commitment, Outcome, Task
from fedrelay.protocol.wormhole.samples import filler

#: The goals per worker-round: coordinator and EVM worker-chain gas, and Solana compute units
#: as a fraction of the baseline's.
GOAL_COORDINATOR_GAS = 10_000
GOAL_WORKER_CHAIN_GAS = 30_000
GOAL_SOLANA_FRACTION = 0.25
BENCH_TIME = 1_767_225_600
DEADLINE = 2**40
STAKE = 10**18
MIN_STAKE = 10**6
SLASH = 10**5
REWARD_PER_ROUND = 10**18
REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "bench" / "baseline" / "cost-703c947.json"
BUDGET = REPO / "bench" / "cost-budget.json"
#: What the committed budget bounds, and its margin over the measured value.
BUDGET_KEYS = (
    "coordinator_gas_per_worker_round",
    "worker_chain_gas_per_worker_round",
    "solana_cu_per_worker_round",
    "calldata_bytes_per_worker_round",
)
BUDGET_MARGIN = 0.02

_console = Console(stderr=True)


class Attestation(enum.StrEnum):
    """How the guardians attest the rounds' messages."""

    #: Version 1: 13 of 19 guardian signatures in each VAA (what the relayer produces by default).
    V1 = "v1"
    #: Version 2: one threshold signature made by 13 of 19 shares (docs/protocol.md, 2a).
    THRESHOLD = "threshold"


_ATTESTED = {
    Attestation.V1: (
        "version-1 VAAs: 13 of 19 guardian signatures each (what the relayer produces by default)"
    ),
    Attestation.THRESHOLD: (
        "version-2 VAAs: one threshold signature of 13 of 19 guardian shares each, verified by "
        "MessageCore (or a ThresholdVerifier beside Wormhole's core) and the worker program "
        "(signed by the benchmark; the relayer's guardians produce them under threshold "
        "attestation)"
    ),
}


def _wormhole_package() -> str:
    pin = pinned()
    return f"the core's bytecode from {pin['package']}@{pin['version']}"


class CommitPath(enum.StrEnum):
    """How the EVM worker chain's commitments are recorded."""

    OWN = "own"
    SIGNED = "signed"


SIGNED_PER_TRANSACTION = 32
"""Signed commitments per ``commitSignedAndPublish`` transaction in the benchmark."""


class RewardsPath(enum.StrEnum):
    """How settled rewards reach the workers' payout accounts."""

    #: Each rewarded worker's payout address credited at settlement; each withdraws.
    CREDIT = "credit"
    #: Each round's total credited once to a RewardDistributor; cumulative roots, batch claims.
    DISTRIBUTOR = "distributor"


CLAIMS_PER_TRANSACTION = 32
"""Claims per ``claimBatch`` transaction in the benchmark."""

RELEASES_PER_TRANSACTION = 256
"""Workers whose settled tasks' locks one ``releaseSettled`` frees at the end of job E."""


@dataclass(frozen=True)
class Design:
    """What the rounds run with: the attestation and the largest TASK_ASSIGNED / ROUND_SETTLED
    batch per message on each worker chain (JobMarket's `maxBatch`; by default the devnet's)."""

    attestation: Attestation = Attestation.V1
    evm_max_batch: int = EVM_MAX_BATCH
    solana_max_batch: int = SOLANA_MAX_BATCH
    deliver_batch: int = 1
    core: CoreKind = CoreKind.MESSAGE_CORE
    commit: CommitPath = CommitPath.OWN
    rewards: RewardsPath = RewardsPath.CREDIT

    @property
    def beside_the_core(self) -> bool:
        """Whether a ThresholdVerifier beside each EVM core verifies the receivers' VAAs:
        version 2 on Wormhole's core, which takes version 1 only."""
        return self.core is CoreKind.WORMHOLE and self.attestation is Attestation.THRESHOLD

    def describe(self) -> dict[str, Any]:
        core = (
            "messagecore"
            if self.core is CoreKind.MESSAGE_CORE
            else f"wormhole ({_wormhole_package()})"
        )
        if self.beside_the_core:
            core += "; receivers verify through a ThresholdVerifier beside it"
        return {
            "core": core,
            "attestation": str(self.attestation),
            "attested_by": _ATTESTED[self.attestation],
            "max_batch": {"evm": self.evm_max_batch, "solana": self.solana_max_batch},
            "deliveries": "one VAA per transaction (the relayer's default batch size, 1)"
            if self.deliver_batch == 1
            else "VAAs to the JobMarket and to the WorkerHub, each in receiveMessages batches of "
            f"up to {self.deliver_batch} (the relayer's FEDRELAY_DELIVER_BATCH_MAX)",
            "commit": "each EVM worker's own commitUpdate transaction"
            if self.commit is CommitPath.OWN
            else f"EVM workers' signed commitments, {SIGNED_PER_TRANSACTION} to a "
            "commitSignedAndPublish transaction (recorded and published as one UPDATE_COMMITTED)",
            "rewards": "each rewarded worker's payout address credited at settlement; each "
            "payout account withdraws once at the end"
            if self.rewards is RewardsPath.CREDIT
            else "each round's total credited once to a RewardDistributor; at the end the "
            "aggregator proposes one cumulative root (dispute window 0 here) and one payout "
            f"account submits the claims, {CLAIMS_PER_TRANSACTION} to a claimBatch transaction",
        }


@dataclass
class _Rig:
    """The three chains, the contracts and program, and the accounts that act on them."""

    coordinator: evm.EvmChain
    worker_chain: evm.EvmChain
    core2: AnyCore
    core4: AnyCore
    market: evm.JobMarketContract
    hub: evm.WorkerHubContract
    solana: Deployment
    owner: evm.Signer
    aggregator: evm.Signer
    relayer: evm.Signer
    solana_relayer: Keypair
    guardians: Guardians
    urls: tuple[str, str] = ("", "")
    #: The ThresholdVerifiers beside the two EVM cores, when the design has them.
    verifiers: tuple[evm.ThresholdVerifierContract, ...] = ()
    roles: dict[str, str] = field(default_factory=dict)
    #: The RewardDistributor the JobMarket credits, when the design has one, and what each
    #: (payout, token) earned through it so far.
    distributor: evm.RewardDistributorContract | None = None
    earned: dict[tuple[bytes, bytes], int] = field(default_factory=dict)
    solana_cursor: int = 0
    design: Design = Design()
    pending: list[bytes] = field(default_factory=list)
    hub_pending: list[bytes] = field(default_factory=list)

    def fund(self, chain: evm.EvmChain, address: str) -> None:
        chain.w3.provider.make_request(RPCEndpoint("anvil_setBalance"), [address, hex(10**22)])

    # --- relaying, as the relayer does it: one VAA per delivery transaction, or with
    # `deliver_batch` > 1 the VAAs for each EVM receiver (the JobMarket, the WorkerHub) held and
    # sent in `receiveMessages` batches (the relayer's FEDRELAY_DELIVER_BATCH_MAX) -------------

    def to_hub(self, receipt: Any) -> None:
        """Deliver what a coordinator-chain transaction published for the EVM worker chain."""
        for message in self.core2.published_messages(receipt):
            vaa = self.guardians.vaa(COORDINATOR, message.emitter_address, message.payload)
            if self.design.deliver_batch == 1:
                self.relay_to_market(self.hub.receive_message(self.relayer, vaa))
                continue
            self.hub_pending.append(vaa)
            if len(self.hub_pending) == self.design.deliver_batch:
                self.flush_hub()

    def flush_hub(self) -> None:
        """Deliver the VAAs held for the WorkerHub in one batch (each entry must apply), and
        relay what the batch published."""
        if not self.hub_pending:
            return
        vaas, self.hub_pending = self.hub_pending, []
        self.relay_to_market(_applied(self.hub.receive_batch(self.relayer, vaas), "WorkerHub"))

    async def to_program(self, receipt: Any) -> None:
        """Deliver what a coordinator-chain transaction published for the Solana program."""
        client = self.solana.client
        for message in self.core2.published_messages(receipt):
            vaa = self.solana.sign(
                message.payload, signers=range(QUORUM), emitter=message.emitter_address
            )
            await client.receive_vaa(self.solana_relayer, self.guardians.sign(vaa.body))
            await self.relay_from_program()

    def relay_to_market(self, receipt: Any) -> None:
        """Deliver what a worker-chain transaction published to the JobMarket."""
        for message in self.core4.published_messages(receipt):
            vaa = self.guardians.vaa(WORKER_EVM, message.emitter_address, message.payload)
            self._to_market(vaa)

    async def relay_from_program(self) -> None:
        """Deliver every message the program published since the last call to the JobMarket."""
        client = self.solana.client
        for message in await client.messages_from(self.solana_cursor):
            vaa = self.guardians.vaa(SOLANA_CHAIN, bytes(client.program_id), message.payload)
            self._to_market(vaa)
            self.solana_cursor = message.sequence + 1

    def _to_market(self, vaa: bytes) -> None:
        if self.design.deliver_batch == 1:
            self.market.receive_message(self.relayer, vaa)
            return
        self.pending.append(vaa)
        if len(self.pending) == self.design.deliver_batch:
            self.flush()

    def flush(self) -> None:
        """Deliver the VAAs held for the WorkerHub, then those held for the JobMarket, each in
        one batch (each entry must apply)."""
        self.flush_hub()
        if not self.pending:
            return
        vaas, self.pending = self.pending, []
        _applied(self.market.receive_batch(self.relayer, vaas), "JobMarket")


def _applied(delivery: BatchDelivery, receiver: str) -> Any:
    """The receipt of a batch delivery whose every entry applied."""
    refused = [e for e in delivery.entries if e.result is not BatchResult.APPLIED]
    if refused:
        raise RuntimeError(f"{receiver} batch entries not applied: {refused}")
    return delivery.receipt


def _stop_the_clock(chain: evm.EvmChain) -> None:
    """Blocks from BENCH_TIME on, one second apart whatever the wall clock says: what a
    transaction writes (and so every signature over it, and its calldata gas) repeats."""
    provider = chain.w3.provider
    provider.make_request(RPCEndpoint("evm_setNextBlockTimestamp"), [BENCH_TIME])
    provider.make_request(RPCEndpoint("anvil_setBlockTimestampInterval"), [1])


def _evm_worker(index: int) -> evm.Signer:
    return evm.Signer("0x" + keccak256(f"cost bench worker {index}".encode()).hex())


def _payout(chain: str, index: int) -> evm.Signer:
    return evm.Signer("0x" + keccak256(f"cost bench payout {chain} {index}".encode()).hex())


def _commitment(job_id: int, round_number: int, key: bytes) -> tuple[bytes, bytes, bytes]:
    label = f"{job_id}/{round_number}/{key.hex()}"
    return filler(f"update {label}"), filler(f"transcript {label}"), filler(f"data {label}")


def _spec(workers: int, rounds: int, chain: int) -> evm.JobSpec:
    return evm.JobSpec(
        filler("cost bench model"),
        filler("cost bench config"),
        rounds,
        workers,
        REWARD_PER_ROUND,
        MIN_STAKE,
        (chain,),
        rejected_slash=SLASH,
        missed_slash=SLASH,
        slash_recipients=(filler("slash recipient"),),
    )


async def _register_evm(rig: _Rig, workers: int) -> list[tuple[evm.Signer, evm.Signer]]:
    crew = []
    for i in range(workers):
        worker, payout = _evm_worker(i), _payout("evm", i)
        rig.fund(rig.worker_chain, worker.address)
        rig.fund(rig.coordinator, payout.address)
        rig.hub.stake(worker, STAKE)
        rig.relay_to_market(rig.hub.register(worker, evm.address_to_bytes32(payout.address), 0))
        rig.roles[worker.address.lower()] = "workers"
        rig.roles[payout.address.lower()] = "claims"
        crew.append((worker, payout))
    return crew


async def _register_solana(rig: _Rig, workers: int) -> list[tuple[Keypair, evm.Signer]]:
    crew = []
    for i in range(workers):
        worker = await rig.solana.funded_keypair(seed=f"cost bench solana worker {i}")
        payout = _payout("solana", i)
        rig.fund(rig.coordinator, payout.address)
        await rig.solana.client.register(
            worker, stake_lamports=LAMPORTS_PER_SOL, payout=evm.address_to_bytes32(payout.address),
            capabilities=0,
        )  # fmt: skip
        await rig.relay_from_program()
        rig.roles[str(worker.pubkey())] = "workers"
        rig.roles[payout.address.lower()] = "claims"
        crew.append((worker, payout))
    return crew


def _in_key_order(tasks: Iterable[Task]) -> list[Task]:
    """A round's tasks on one chain in the order JobMarket takes them (increasing keys)."""
    return sorted(tasks, key=lambda t: t.worker_key)


def _chunks(tasks: Sequence[Task], size: int) -> list[Sequence[Task]]:
    return [tasks[i : i + size] for i in range(0, len(tasks), size)]


async def _round_evm(rig: _Rig, job_id: int, number: int, crew: Sequence[evm.Signer]) -> None:
    keys = [evm.address_to_bytes32(w.address) for w in crew]
    tasks = _in_key_order(Task(key, i) for i, key in enumerate(keys))
    for chunk in _chunks(tasks, rig.design.evm_max_batch):
        rig.to_hub(rig.market.assign_tasks(rig.aggregator, job_id, WORKER_EVM, DEADLINE, chunk))
    rig.flush_hub()  # every task is on the worker chain before its worker commits
    if rig.design.commit is CommitPath.SIGNED:
        # Each worker signs; the last one submits the round's signatures, as many to a
        # transaction as the benchmark's batch.
        signed = [
            rig.hub.sign_commitment(
                worker, job_id, number, Commitment(key, *_commitment(job_id, number, key), 100, 1)
            )
            for worker, key in zip(crew, keys, strict=True)
        ]
        # Each transaction records its signatures and publishes them as one UPDATE_COMMITTED
        # (commitSignedAndPublish), as the worker SDK does.
        for start in range(0, len(signed), SIGNED_PER_TRANSACTION):
            batch = rig.hub.commit_signed_and_publish(
                crew[-1], job_id, number, (), signed[start : start + SIGNED_PER_TRANSACTION]
            )
            if batch.skipped:
                raise RuntimeError(f"commitSignedAndPublish skipped {batch.skipped}")
            receipt = rig.hub.chain.w3.eth.get_transaction_receipt(HexBytes(batch.transaction_hash))
            rig.relay_to_market(receipt)
    else:
        for worker, key in zip(crew, keys, strict=True):
            update, transcript, data = _commitment(job_id, number, key)
            rig.hub.commit_update(worker, job_id, number, update, transcript, data, 100, 1)
        # The last worker publishes the round's commitments (UPDATE_COMMITTED of up to 32 each).
        pending = rig.hub.pending_commitments(job_id, number)
        rig.relay_to_market(rig.hub.publish_commitments(crew[-1], job_id, number, pending))
    rig.flush()
    await _settle(rig, job_id, number, WORKER_EVM, keys)


def _release_locks(rig: _Rig, job_id: int, crew: Sequence[evm.Signer]) -> None:
    """Free the locks the job's settled tasks still hold (a settlement without a slash leaves
    each to the job's task two rounds on; the last two rounds have none): `releaseSettled`
    for every worker, sent by one account (role `lock releases`), counted in the job's cost."""
    sender = _evm_worker(-1)
    rig.fund(rig.worker_chain, sender.address)
    rig.roles[sender.address.lower()] = "lock releases"
    addresses = [w.address for w in crew]
    for start in range(0, len(addresses), RELEASES_PER_TRANSACTION):
        rig.hub.release_settled(sender, job_id, addresses[start : start + RELEASES_PER_TRANSACTION])
    held = [a for a in addresses if rig.hub.staker(a).locked]
    if held:
        raise RuntimeError(f"{len(held)} workers still hold locks after job {job_id}")


async def _round_solana(rig: _Rig, job_id: int, number: int, crew: Sequence[Keypair]) -> None:
    keys = [bytes(w.pubkey()) for w in crew]
    tasks = _in_key_order(Task(key, i) for i, key in enumerate(keys))
    for chunk in _chunks(tasks, rig.design.solana_max_batch):
        receipt = rig.market.assign_tasks(rig.aggregator, job_id, SOLANA_CHAIN, DEADLINE, chunk)
        await rig.to_program(receipt)
    client = rig.solana.client
    for worker, key in zip(crew, keys, strict=True):
        update, transcript, data = _commitment(job_id, number, key)
        commitment = ix.Commitment(job_id, number, update, transcript, data, 100, 1)
        await client.commit_update(worker, commitment)
    # Once per round: the held commitments go out in UPDATE_COMMITTED batches of as many as a
    # transaction holds, published by one of the workers (as the worker SDK does).
    per_transaction = client.commitments_per_transaction()
    ordered = sorted(keys)
    for start in range(0, len(ordered), per_transaction):
        batch = ordered[start : start + per_transaction]
        await client.publish_commitments(crew[0], job_id, number, batch)
    await rig.relay_from_program()
    rig.flush()
    await _settle(rig, job_id, number, SOLANA_CHAIN, keys)


async def _settle(rig: _Rig, job_id: int, number: int, chain: int, keys: Sequence[bytes]) -> None:
    reward = REWARD_PER_ROUND // len(keys)
    results = [evm.RoundResult(chain, key, Outcome.ACCEPTED, reward=reward) for key in keys]
    model = filler(f"cost bench model {job_id}/{number + 1}")
    rig.market.finalize_round(rig.aggregator, job_id, number, model, results)
    settled = rig.market.settle_round(rig.aggregator, job_id, number)  # the window is 0
    if chain == SOLANA_CHAIN:
        await rig.to_program(settled)
    else:
        rig.to_hub(settled)
    rig.flush()


@dataclass(frozen=True)
class _Spent:
    """What one job's rounds cost, read back from the chains."""

    coordinator_gas: int
    worker_chain_gas: int
    solana_cu: int
    calldata_bytes: int
    l1: l1fee.L1Cost
    by_step: dict[str, Any]
    #: Gas by ``Contract.function`` (:mod:`fedrelay.bench.calls`) on each EVM chain.
    coordinator_by_call: dict[str, calls.CallGas] = field(default_factory=dict)
    worker_chain_by_call: dict[str, calls.CallGas] = field(default_factory=dict)


async def _transactions(url: str, first_block: int) -> list[dict[str, Any]]:
    """Every transaction from `first_block` on: its recipient, input, signed raw bytes and the gas
    its receipt says it used."""
    found: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=60.0) as client:
        latest = (await client.post(url, json=_rpc("eth_blockNumber", []))).json()["result"]
        for number in range(first_block, int(latest, 16) + 1):
            call = _rpc("eth_getBlockByNumber", [hex(number), True])
            block = (await client.post(url, json=call)).json()["result"]
            call = _rpc("eth_getBlockReceipts", [hex(number)])
            receipts = (await client.post(url, json=call)).json()["result"] or []
            used = {r["transactionHash"]: int(r["gasUsed"], 16) for r in receipts}
            for tx in block["transactions"]:
                call = _rpc("eth_getRawTransactionByHash", [tx["hash"]])
                raw = (await client.post(url, json=call)).json()["result"]
                found.append(
                    {
                        "to": tx.get("to"),
                        "input": bytes.fromhex(tx["input"][2:]),
                        "raw": bytes.fromhex(raw[2:]),
                        "gas_used": used[tx["hash"]],
                    }
                )
    return found


def _by_call(
    transactions: Iterable[dict[str, Any]], contracts: calls.Contracts
) -> dict[str, calls.CallGas]:
    return calls.gas_by_call(
        (calls.Call(t["to"], t["input"], t["gas_used"]) for t in transactions), contracts
    )


def _contracts(rig: _Rig) -> tuple[calls.Contracts, calls.Contracts]:
    """The contracts the rounds' transactions go to, on the coordinator chain and on the EVM
    worker chain."""
    core = "MessageCore" if rig.design.core is CoreKind.MESSAGE_CORE else "Wormhole"
    Deployed = tuple[str, str, Any]
    coordinator: list[Deployed] = [
        (rig.market.address, "JobMarket", rig.market.contract.abi),
        (rig.core2.address, core, rig.core2.contract.abi),
    ]
    if rig.distributor is not None:
        d = rig.distributor
        coordinator.append((d.address, "RewardDistributor", d.contract.abi))
    worker_chain: list[Deployed] = [
        (rig.hub.address, "WorkerHub", rig.hub.contract.abi),
        (rig.core4.address, core, rig.core4.contract.abi),
    ]
    sides = (coordinator, worker_chain)
    for side, verifier in zip(sides, rig.verifiers, strict=False):
        side.append((verifier.address, "ThresholdVerifier", verifier.contract.abi))
    return calls.Contracts.of(coordinator), calls.Contracts.of(worker_chain)


def _hex(value: str) -> bytes:
    return bytes.fromhex(value.removeprefix("0x"))


def _rpc(method: str, params: list[Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}


async def _spent(
    rig: _Rig, starts: tuple[int, int, int], solana_job: bool, params: l1fee.FeeParams
) -> _Spent:
    c_url, w_url = rig.urls
    c_gas = await evm_gas(c_url, "coordinator", rig.roles, starts[0])
    w_gas = await evm_gas(w_url, "worker-evm", rig.roles, starts[1])
    program = str(rig.solana.program_id)
    s_url = rig.solana.devnet.url
    units = await solana_compute(s_url, "worker-solana", program, rig.roles, starts[2])
    c_transactions = await _transactions(c_url, starts[0])
    w_transactions = await _transactions(w_url, starts[1])
    transactions = [*c_transactions, *w_transactions]
    c_contracts, w_contracts = _contracts(rig)
    by_step: dict[str, Any] = {
        "coordinator_gas_by_role": {r: s.units for r, s in sorted(c_gas.by_role.items())},
        "worker_chain_gas_by_role": {r: s.units for r, s in sorted(w_gas.by_role.items())},
        "coordinator_transactions": c_gas.total.transactions,
        "worker_chain_transactions": w_gas.total.transactions,
    }
    if solana_job:
        by_step["solana_cu_by_instruction"] = {
            k: u.compute_units for k, u in sorted(units.by_instruction.items())
        }
        by_step["solana_transactions"] = units.total.transactions
    return _Spent(
        coordinator_gas=c_gas.total.units,
        worker_chain_gas=w_gas.total.units,
        solana_cu=units.total.units if solana_job else 0,
        calldata_bytes=sum(len(t["input"]) for t in transactions),
        l1=l1fee.l1_cost([t["raw"] for t in transactions], params),
        by_step=by_step,
        coordinator_by_call=_by_call(c_transactions, c_contracts),
        worker_chain_by_call=_by_call(w_transactions, w_contracts),
    )


async def _heads(rig: _Rig) -> tuple[int, int, int]:
    async with AsyncClient(rig.solana.devnet.url) as rpc:
        slot = (await rpc.get_slot()).value
    return (
        rig.coordinator.w3.eth.block_number + 1,
        rig.worker_chain.w3.eth.block_number + 1,
        slot + 1,
    )


async def _measure_on(
    rig: _Rig, workers: int, rounds: int, params: l1fee.FeeParams
) -> dict[str, Any]:
    _console.log(f"{workers} workers: staking and registering on both worker chains")
    evm_crew = await _register_evm(rig, workers)
    solana_crew = await _register_solana(rig, workers)
    rig.flush()
    job_e = rig.market.post_job(rig.owner, _spec(workers, rounds, WORKER_EVM)).job_id
    job_s = rig.market.post_job(rig.owner, _spec(workers, rounds, SOLANA_CHAIN)).job_id

    starts = await _heads(rig)
    for number in range(rounds):
        _console.log(f"{workers} workers: job E (EVM worker chain), round {number + 1}/{rounds}")
        await _round_evm(rig, job_e, number, [w for w, _ in evm_crew])
    _release_locks(rig, job_e, [w for w, _ in evm_crew])
    spent_e = await _claimed(rig, [p for _, p in evm_crew], rounds, starts, False, params)
    starts = await _heads(rig)
    for number in range(rounds):
        _console.log(f"{workers} workers: job S (Solana), round {number + 1}/{rounds}")
        await _round_solana(rig, job_s, number, [w for w, _ in solana_crew])
    spent_s = await _claimed(rig, [p for _, p in solana_crew], rounds, starts, True, params)
    return _figures(workers, rounds, spent_e, spent_s)


async def _claimed(
    rig: _Rig,
    payouts: Sequence[evm.Signer],
    rounds: int,
    starts: tuple[int, int, int],
    solana_job: bool,
    params: l1fee.FeeParams,
) -> _Spent:
    """Each payout account claims once; what the job cost from `starts` on."""
    distributor = rig.distributor
    if distributor is None:
        for payout in payouts:
            rig.market.withdraw(payout)
        return await _spent(rig, starts, solana_job, params)
    # Every round paid each worker REWARD_PER_ROUND // W (see _settle); the root is cumulative
    # over everything the distributor was credited, the earlier job's workers included.
    native = bytes(20)
    for payout in payouts:
        account = bytes.fromhex(payout.address[2:])
        earned = rig.earned.get((account, native), 0)
        rig.earned[(account, native)] = earned + rounds * (REWARD_PER_ROUND // len(payouts))
    tree = distributor.tree(rig.earned)
    distributor.propose_root(rig.aggregator, tree)  # the window is 0: live from its block
    claims = [tree.claim(bytes.fromhex(p.address[2:]), native) for p in payouts]
    for start in range(0, len(claims), CLAIMS_PER_TRANSACTION):
        distributor.claim_batch(payouts[0], claims[start : start + CLAIMS_PER_TRANSACTION])
    for payout in payouts:
        paid = distributor.claimed(payout.address)
        if paid != rig.earned[(bytes.fromhex(payout.address[2:]), native)]:
            raise RuntimeError(f"{payout.address} was paid {paid}, not what it earned")
    return await _spent(rig, starts, solana_job, params)


def _figures(workers: int, rounds: int, e: _Spent, s: _Spent) -> dict[str, Any]:
    job_rounds = workers * rounds
    both = 2 * job_rounds
    return {
        "rounds": rounds,
        "claim_every_rounds": rounds,
        "coordinator_gas_per_worker_round": round((e.coordinator_gas + s.coordinator_gas) / both),
        "worker_chain_gas_per_worker_round": round(e.worker_chain_gas / job_rounds),
        "solana_cu_per_worker_round": round(s.solana_cu / job_rounds),
        "calldata_bytes_per_worker_round": round((e.calldata_bytes + s.calldata_bytes) / both),
        "l1_data_gas_per_worker_round": round((e.l1.data_gas + s.l1.data_gas) / both),
        "l1_data_fee_wei_per_worker_round": round((e.l1.fee_wei + s.l1.fee_wei) / both),
        "coordinator_gas_per_worker_round_evm_job": round(e.coordinator_gas / job_rounds),
        "coordinator_gas_per_worker_round_solana_job": round(s.coordinator_gas / job_rounds),
        "by_step": {"job_evm": e.by_step, "job_solana": s.by_step},
        "gas_per_worker_round_by_call": {
            "coordinator": calls.per_worker_round(
                (e.coordinator_by_call, s.coordinator_by_call), both
            ),
            "worker_chain": calls.per_worker_round((e.worker_chain_by_call,), job_rounds),
        },
    }


async def _append_keys(rig: _Rig) -> None:
    """Append the devnet threshold key to both EVM cores (or the verifiers beside them) and the
    program (governance VAAs)."""
    governance = append_key_vaa(GUARDIANS).to_bytes()
    targets = rig.verifiers or (rig.core2, rig.core4)
    for target in targets:
        assert isinstance(target, MessageCoreContract | evm.ThresholdVerifierContract), target
        target.append_threshold_key(rig.owner, governance)
    await rig.solana.client.append_threshold_key(rig.solana.admin, governance)


async def _measure_async(
    workers: int, rounds: int, params: l1fee.FeeParams, design: Design
) -> dict[str, Any]:
    signers = guardian_signers(GUARDIANS)
    threshold = threshold_key(GUARDIANS) if design.attestation is Attestation.THRESHOLD else None
    addresses = ["0x" + s.address.hex() for s in signers]
    elf = program_bytes()
    with (
        Anvil(chain_id=31337) as c_anvil,
        Anvil(chain_id=31338) as w_anvil,
        serve_devnet() as devnet,
    ):
        devnet.chain.set_time(BENCH_TIME)
        coordinator, worker_chain = evm.EvmChain(c_anvil.rpc_url), evm.EvmChain(w_anvil.rpc_url)
        for chain in (coordinator, worker_chain):
            _stop_the_clock(chain)
        owner, aggregator, relayer = (evm.Signer(k) for k in c_anvil.private_keys[:3])
        deploy_core = (
            deploy_wormhole_core if design.core is CoreKind.WORMHOLE else evm.deploy_message_core
        )
        core2: AnyCore = deploy_core(coordinator, owner, COORDINATOR, addresses)
        core4: AnyCore = deploy_core(worker_chain, owner, WORKER_EVM, addresses)
        verifiers = (
            (
                evm.deploy_threshold_verifier(coordinator, owner, core2.address),
                evm.deploy_threshold_verifier(worker_chain, owner, core4.address),
            )
            if design.beside_the_core
            else ()
        )
        market = evm.deploy_job_market(
            coordinator, owner, core2.address, aggregator.address, owner.address, 0,
            verifier=verifiers[0].address if verifiers else None,
        )  # fmt: skip
        hub = evm.deploy_worker_hub(
            worker_chain, owner, core4.address, COORDINATOR, MIN_STAKE, 60,
            verifier=verifiers[1].address if verifiers else None,
        )  # fmt: skip
        evm.link(market, owner, hub, owner, evm.Link(COORDINATOR, WORKER_EVM, design.evm_max_batch))
        async with AsyncClient(devnet.url) as rpc:
            program_id = Pubkey(filler("cost bench program"))
            client = WorkerProgramClient(rpc, program_id)
            market_emitter = evm.address_to_bytes32(market.address)
            solana = await deploy(
                devnet, client, elf, guardian_count=GUARDIANS, peer_emitter=market_emitter
            )
            market.set_peer(owner, SOLANA_CHAIN, bytes(program_id))
            market.set_max_batch(owner, SOLANA_CHAIN, design.solana_max_batch)
            solana_relayer = await solana.funded_keypair(1000, seed="cost bench relayer")
            rig = _Rig(
                coordinator, worker_chain, core2, core4, market, hub, solana, owner, aggregator,
                relayer, solana_relayer, Guardians(signers, threshold),
                (c_anvil.rpc_url, w_anvil.rpc_url), verifiers, design=design,
            )  # fmt: skip
            if threshold is not None:
                await _append_keys(rig)
            if design.rewards is RewardsPath.DISTRIBUTOR:
                rig.distributor = evm.deploy_reward_distributor(
                    coordinator, owner, market.address, aggregator.address, owner.address, 0
                )
                market.set_rewards_account(owner, rig.distributor.address)
            rig.roles = {
                aggregator.address.lower(): "aggregator",
                relayer.address.lower(): "relayer",
                str(solana_relayer.pubkey()): "relayer",
            }
            return await _measure_on(rig, workers, rounds, params)


def measure(
    workers: int,
    rounds: int,
    params: l1fee.FeeParams | None = None,
    design: Design | None = None,
) -> dict[str, Any]:
    """Play `rounds` rounds of W = `workers` on each worker chain; the figures per worker-round.

    Fresh chains each call, so one measurement never sees another's state.
    """
    Forge(CONTRACTS_DIR).build()
    params = params or l1fee.load_params()
    return asyncio.run(_measure_async(workers, rounds, params, design or Design()))


def _anvil_version() -> str:
    command = [str(foundry_binary("anvil")), "--version"]
    found = subprocess.run(command, capture_output=True, text=True, check=False)
    return found.stdout.strip().splitlines()[0] if found.stdout else "unknown"


def goals(figures: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    """The goals at this W, whether the figures meet them (Solana's needs the baseline) and, for
    each goal missed, by how much: the figure over the goal (``over_goal``, two decimals)."""
    solana_goal = None
    if baseline is not None:
        solana_goal = baseline["solana_cu_per_worker_round"] * GOAL_SOLANA_FRACTION
    goal = {
        "coordinator_gas_per_worker_round": GOAL_COORDINATOR_GAS,
        "worker_chain_gas_per_worker_round": GOAL_WORKER_CHAIN_GAS,
        "solana_cu_per_worker_round": solana_goal,
    }
    met: dict[str, bool | None] = {}
    over: dict[str, float] = {}
    for name, (key, limit) in zip(
        ("coordinator", "worker_chain", "solana"), goal.items(), strict=True
    ):
        if limit is None:
            met[name] = None
            continue
        met[name] = figures[key] <= limit
        if not met[name]:
            over[name] = round(figures[key] / limit, 2)
    return {"goal": goal, "met": met, "over_goal": over}


def load_baseline(path: Path = BASELINE) -> dict[str, Any] | None:
    """The recorded baseline (bench/baseline/cost-703c947.json), or None when absent."""
    return json.loads(path.read_text()) if path.exists() else None


#: Designs besides the default one whose cost the budget also bounds (measured at its W and
#: rounds): version-2 attestation with batches of 32 per message and per delivery transaction.
_THRESHOLD_BATCHED = Design(
    Attestation.THRESHOLD, evm_max_batch=32, solana_max_batch=32, deliver_batch=32
)
BUDGET_DESIGNS: dict[str, Design] = {
    "threshold_batched": _THRESHOLD_BATCHED,
    "threshold_batched_signed": replace(_THRESHOLD_BATCHED, commit=CommitPath.SIGNED),
    "threshold_batched_signed_distributor": replace(
        _THRESHOLD_BATCHED, commit=CommitPath.SIGNED, rewards=RewardsPath.DISTRIBUTOR
    ),
}


def budget(figures: dict[str, Any], workers: int, rounds: int) -> dict[str, Any]:
    """A budget from a measurement: each bounded figure's ceiling is the measured value + 2%."""
    return {
        "workers": workers,
        "rounds": rounds,
        "margin": BUDGET_MARGIN,
        "measured": {k: figures[k] for k in BUDGET_KEYS},
        "ceilings": {k: int(figures[k] * (1 + BUDGET_MARGIN)) for k in BUDGET_KEYS},
        "command": "python -c 'from fedrelay.bench.cost import write_budget; write_budget()'",
    }


def write_budget(path: Path = BUDGET, workers: int = 32, rounds: int = 2) -> None:
    """Measure `rounds` rounds of `workers` in the default design and in each of
    `BUDGET_DESIGNS`, and write the budget CI checks to `path`."""
    written = budget(measure(workers, rounds), workers, rounds)
    designs = {}
    for name, design in BUDGET_DESIGNS.items():
        bounded = budget(measure(workers, rounds, design=design), workers, rounds)
        designs[name] = {
            "design": design.describe(),
            "measured": bounded["measured"],
            "ceilings": bounded["ceilings"],
        }
    written["designs"] = designs
    path.write_text(json.dumps(written, indent=2) + "\n")


def over_budget(figures: dict[str, Any], ceilings: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Each bounded figure above its ceiling: (measured, ceiling)."""
    return {k: (figures[k], c) for k, c in ceilings.items() if figures[k] > c}


def _by_call_table(workers: int, rounds: int, by_call: dict[str, Any]) -> Table:
    """Where each EVM chain's gas per worker-round goes, for the console."""
    table = Table(title=f"Gas per worker-round by call, {workers} workers x {rounds} rounds")
    table.add_column("chain")
    table.add_column("call", no_wrap=True)
    table.add_column("gas", justify="right")
    table.add_column("txs", justify="right")
    for side, shares in by_call.items():
        for name, share in shares.items():
            table.add_row(side, name, f"{share['gas']:,}", str(share["transactions"]))
    return table


def run(workers: Sequence[int], rounds: Sequence[int], design: Design | None = None) -> None:
    """Measure at each W with its number of rounds; print one JSON line."""
    design = design or Design()
    params = l1fee.load_params()
    baseline = load_baseline()
    by_workers: dict[str, Any] = {}
    for count, number in zip(workers, rounds, strict=True):
        figures = measure(count, number, params, design)
        _console.print(_by_call_table(count, number, figures["gas_per_worker_round_by_call"]))
        base = (baseline or {}).get("workers_per_round", {}).get(str(count))
        by_workers[str(count)] = {**figures, **goals(figures, base)}
    print(
        json.dumps(
            {
                "benchmark": "cost",
                "design": (
                    "current (protocol v4: one VAA per task message, one per up to 32 of a "
                    "round's commitments on a worker chain)"
                ),
                "guardians": GUARDIANS,
                "quorum": QUORUM,
                **design.describe(),
                "anvil": _anvil_version(),
                "hardfork": "anvil's default (latest)",
                "workers_per_round": by_workers,
                "l1_fee": l1fee.describe(params),
                "baseline_703c947": baseline,
            }
        )
    )
