"""`fedrelay worker rewards|claim|stake|unstake|withdraw-stake` against real chains.

Rewards: a JobMarket on the coordinator anvil credits a reward the way the protocol does (a
guardian-signed WORKER_REGISTERED and UPDATE_COMMITTED, then assignment, proposal and settlement
with a zero challenge window). Stakes: a WorkerHub on the worker anvil and the worker program on
the Solana devnet; this module has a worker anvil and a Solana devnet of its own, since it moves
their clocks past the unbonding delay. The CLI runs in process, in a worker thread (it runs its
own event loop).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from support.coordinator import LocalCoordinator, served
from support.market import Emitter, funded_evm_key
from support.wormhole import evm_address, guardian_signers
from typer.testing import CliRunner, Result

from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.devnet.solana_rpc import SolanaDevnet, serve_devnet
from fedrelay.adapters.evm import (
    EvmChain,
    JobMarketContract,
    JobSpec,
    RoundResult,
    Signer,
    WorkerHubContract,
    address_to_bytes32,
    deploy_job_market,
    deploy_message_core,
    deploy_reward_distributor,
    deploy_worker_hub,
)
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR
from fedrelay.adapters.evm.hub import HubTaskState
from fedrelay.adapters.evm.worker_chain import EvmWorkerChain
from fedrelay.adapters.solana.testing import LAMPORTS_PER_SOL, Deployment
from fedrelay.adapters.solana.worker_chain import SolanaWorkerChain
from fedrelay.cli import app
from fedrelay.ports.blobs import COORDINATOR
from fedrelay.ports.worker_chain import ChainRejected, TaskKey
from fedrelay.protocol.api.signing import EvmSigner
from fedrelay.protocol.wormhole import (
    Commitment,
    Outcome,
    Task,
    TaskAssigned,
    UpdateCommitted,
    WorkerRegistered,
)
from fedrelay.protocol.wormhole.payloads import Payload

pytestmark = pytest.mark.integration

COORDINATOR_CHAIN = 2
WORKER_CHAIN = 4
WORKER_EMITTER = evm_address("worker cli hub")
UNBONDING_DELAY = 3600
ETH = 10**18
REWARD = 7 * 10**17


@pytest.fixture(scope="module")
def worker_chain() -> Iterator[Anvil]:
    """A worker chain of this module's own: its clock is moved past the unbonding delay."""
    with Anvil(chain_id=31338) as chain:
        yield chain


@pytest.fixture(scope="module")
def solana_devnet() -> Iterator[SolanaDevnet]:
    """A Solana devnet of this module's own: its clock is moved past the unbonding delay."""
    with serve_devnet() as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def solana_rpc(solana_devnet: SolanaDevnet) -> AsyncIterator[AsyncClient]:
    """A client of this module's devnet."""
    async with AsyncClient(solana_devnet.url) as rpc:
        yield rpc


@pytest.fixture(scope="module")
def contracts() -> Forge:
    """The contracts' Foundry project, built (or found built) once per module."""
    forge = Forge(Path(CONTRACTS_DIR))
    forge.build()
    return forge


async def fedrelay(*args: str) -> Result:
    """Run ``fedrelay ARGS`` in process, off the test's event loop."""
    runner = CliRunner()
    return await asyncio.to_thread(lambda: runner.invoke(app, list(args), env={"COLUMNS": "200"}))


def chain_time(chain: EvmChain) -> int:
    return int(chain.w3.eth.get_block("latest")["timestamp"])


# --- rewards -------------------------------------------------------------------------------------


@dataclass
class Market:
    anvil: Anvil
    chain: EvmChain
    market: JobMarketContract
    owner: Signer
    aggregator: Signer
    emitter: Emitter = field(default_factory=lambda: Emitter(WORKER_CHAIN, WORKER_EMITTER))

    def deliver(self, payload: Payload) -> None:
        """Sign ``payload`` as the worker hub's emitter and deliver it, as the relayer does."""
        self.market.receive_message(self.owner, self.emitter.vaa(payload))

    def credit(self, payout: str, worker_key: bytes, reward: int) -> None:
        """Run one job round for ``worker_key`` to settlement; ``payout`` is credited ``reward``."""
        target = address_to_bytes32(self.market.address)
        self.deliver(
            WorkerRegistered(
                target_chain=COORDINATOR_CHAIN,
                target_address=target,
                job_id=0,
                worker_key=worker_key,
                stake=2 * ETH,
                payout_address=address_to_bytes32(payout),
                capabilities=2,
            )
        )
        spec = JobSpec(
            model_hash=b"\x01" * 32,
            config_hash=b"\x02" * 32,
            num_rounds=1,
            workers_per_round=1,
            reward_per_round=ETH,
            min_stake=ETH,
            worker_chains=(WORKER_CHAIN,),
            slash_recipients=(address_to_bytes32(self.owner.address),),
        )
        job_id = self.market.post_job(self.owner, spec).job_id
        deadline = max(chain_time(self.chain), int(time.time())) + 600
        self.market.assign_tasks(
            self.aggregator, job_id, WORKER_CHAIN, deadline, [Task(worker_key, 0)]
        )
        self.deliver(
            UpdateCommitted(
                target_chain=COORDINATOR_CHAIN,
                target_address=target,
                job_id=job_id,
                round=0,
                commitments=(
                    Commitment(worker_key, b"\x03" * 32, b"\x04" * 32, b"\x06" * 32, 100, 1000),
                ),
            )
        )
        results = [RoundResult(WORKER_CHAIN, worker_key, Outcome.ACCEPTED, reward=reward)]
        self.market.finalize_round(self.aggregator, job_id, 0, b"\x05" * 32, results)
        self.market.settle_round(self.aggregator, job_id, 0)  # the window is 0 s


@pytest.fixture(scope="module")
def market(contracts: Forge, coordinator_chain: Anvil) -> Market:
    chain = EvmChain(coordinator_chain.rpc_url)
    owner = Signer(funded_evm_key(coordinator_chain))
    aggregator = Signer(funded_evm_key(coordinator_chain))
    guardian = "0x" + guardian_signers(1)[0].address.hex()
    core = deploy_message_core(chain, owner, COORDINATOR_CHAIN, [guardian])
    market = deploy_job_market(
        chain, owner, core.address, aggregator.address, aggregator.address, 0
    )
    market.set_peer(owner, WORKER_CHAIN, WORKER_EMITTER)
    market.set_max_batch(owner, WORKER_CHAIN, 8)
    return Market(coordinator_chain, chain, market, owner, aggregator)


async def test_rewards_shows_the_claimable_reward_and_withdraw_takes_it(
    market: Market, tmp_path: Path
) -> None:
    m = market
    payout_key = funded_evm_key(m.anvil, ETH)
    payout = Signer(payout_key).address
    key_file = tmp_path / "payout.key"
    key_file.write_text(payout_key + "\n")
    m.credit(payout, b"\x11" * 32, REWARD)
    where = ["--payout-key-file", str(key_file), "--rpc-url", m.anvil.rpc_url]
    where += ["--job-market", m.market.address]

    shown = await fedrelay("worker", "rewards", *where)
    assert shown.exit_code == 0, shown.output
    assert f"{REWARD} wei (0.7 ETH)" in shown.output
    assert payout in shown.output
    as_json = await fedrelay("worker", "rewards", *where, "--json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == {
        "payout": payout,
        "claimable_wei": REWARD,
        "claimable_eth": "0.7",
    }

    before = m.chain.w3.eth.get_balance(payout)
    withdrawn = await fedrelay("worker", "rewards", *where, "--withdraw")
    assert withdrawn.exit_code == 0, withdrawn.output
    assert f"withdrew   {REWARD} wei" in withdrawn.output
    assert m.chain.w3.eth.get_balance(payout) > before + REWARD - 10**16  # minus gas
    assert m.market.claimable(payout) == 0

    again = await fedrelay("worker", "rewards", *where, "--withdraw", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["withdrawn_wei"] == 0
    plain = await fedrelay("worker", "rewards", *where, "--withdraw")
    assert "nothing to withdraw" in plain.output
    for result in (shown, as_json, withdrawn, again, plain):
        assert payout_key not in result.output


async def test_claim_pays_the_live_root_s_amount_once_from_the_coordinator_s_leaves(
    market: Market, tmp_path: Path
) -> None:
    m = market
    distributor = deploy_reward_distributor(
        m.chain, m.owner, m.market.address, m.aggregator.address, m.owner.address, 0
    )
    m.market.set_rewards_account(m.owner, distributor.address)
    try:
        payout_key = funded_evm_key(m.anvil, ETH)
        payout = Signer(payout_key).address
        m.credit(payout, b"\x12" * 32, REWARD)  # settled: the round's total to the distributor
    finally:
        m.market.set_rewards_account(m.owner, "0x" + "00" * 20)
    assert m.market.claimable(distributor.address) == REWARD
    # What the coordinator does: the tree of the earnings, its leaves published, its root
    # proposed (a window of 0 s: live from its block).
    tree = distributor.tree({(bytes.fromhex(payout[2:]), bytes(20)): REWARD})
    coordinator = LocalCoordinator()
    worker_key = funded_evm_key(m.anvil, 0)
    worker = EvmSigner(worker_key, chain=WORKER_CHAIN).worker
    await coordinator.repository.register_worker(worker)
    name = await coordinator.blobs.put(tree.content(), domain=COORDINATOR)
    await coordinator.repository.publish_blob(name)
    distributor.propose_root(m.aggregator, tree)
    payout_file, worker_file = tmp_path / "payout.key", tmp_path / "worker.key"
    payout_file.write_text(payout_key + "\n")
    worker_file.write_text(worker_key + "\n")
    with served(coordinator) as url:
        where = ["--payout-key-file", str(payout_file), "--rpc-url", m.anvil.rpc_url]
        where += ["--distributor", distributor.address, "--coordinator-url", url]
        where += ["--chain", "evm", "--key-file", str(worker_file)]
        looked = await fedrelay("worker", "claim", *where, "--dry-run", "--json")
        assert looked.exit_code == 0, looked.output
        assert json.loads(looked.stdout) == {
            "payout": payout,
            "epoch": 1,
            "cumulative_wei": REWARD,
            "claimed_wei": 0,
            "claimable_wei": REWARD,
            "paid_wei": 0,
            "pending_root_live_at": None,
        }
        assert distributor.claimed(payout) == 0
        claimed = await fedrelay("worker", "claim", *where)
        assert claimed.exit_code == 0, claimed.output
        assert f"paid        {REWARD} wei (0.7 ETH)" in claimed.output
        assert distributor.claimed(payout) == REWARD
        again = await fedrelay("worker", "claim", *where)
        assert again.exit_code == 0, again.output
        assert "nothing to claim" in again.output
        stranger = tmp_path / "stranger.key"
        stranger.write_text(funded_evm_key(m.anvil, 0))
        refused = await fedrelay(
            "worker", "claim", *where[:-2], "--key-file", str(stranger), "--dry-run"
        )
        assert refused.exit_code == 2
        assert "coordinator answered 403 UnregisteredWorker" in refused.stderr
    for result in (looked, claimed, again, refused):
        assert payout_key not in result.output
        assert worker_key not in result.output


async def test_rewards_reports_an_unreachable_rpc_and_a_bad_key_file(
    market: Market, tmp_path: Path
) -> None:
    key_file = tmp_path / "payout.key"
    key_file.write_text("not a key\n")
    bad_key = await fedrelay(
        "worker", "rewards", "--payout-key-file", str(key_file),
        "--rpc-url", market.anvil.rpc_url, "--job-market", market.market.address,
    )  # fmt: skip
    assert bad_key.exit_code == 2
    assert f"key file {key_file} does not hold an EVM private key" in bad_key.stderr
    key_file.write_text(funded_evm_key(market.anvil, 0))
    unreachable = await fedrelay(
        "worker", "rewards", "--payout-key-file", str(key_file),
        "--rpc-url", "http://127.0.0.1:1", "--job-market", market.market.address,
    )  # fmt: skip
    assert unreachable.exit_code == 2
    assert "the coordinator chain does not answer" in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1


# --- stake on EVM --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(contracts: Forge, worker_chain: Anvil) -> WorkerHubContract:
    chain = EvmChain(worker_chain.rpc_url)
    owner = Signer(funded_evm_key(worker_chain))
    guardian = "0x" + guardian_signers(1)[0].address.hex()
    core = deploy_message_core(chain, owner, WORKER_CHAIN, [guardian])
    hub = deploy_worker_hub(chain, owner, core.address, COORDINATOR_CHAIN, ETH, UNBONDING_DELAY)
    hub.set_peer(owner, COORDINATOR_CHAIN, evm_address("worker cli market"))
    return hub


async def test_evm_stake_unstake_and_withdraw_after_the_delay(
    hub: WorkerHubContract, worker_chain: Anvil, tmp_path: Path
) -> None:
    key = funded_evm_key(worker_chain)
    worker = Signer(key)
    hub.stake(worker, 3 * ETH)
    hub.register(worker, address_to_bytes32(worker.address), 2)
    key_file = tmp_path / "worker.key"
    key_file.write_text(key)
    where = ["--chain", "evm", "--key-file", str(key_file), "--rpc-url", worker_chain.rpc_url]
    where += ["--hub-address", hub.address]

    status = await fedrelay("worker", "stake", *where, "--json")
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout) == {
        "chain": "evm",
        "worker": worker.address,
        "registered": True,
        "staked": 3 * ETH,
        "unbonding": 0,
        "unlocks_at": None,
        "open_tasks": 0,
    }
    shown = await fedrelay("worker", "stake", *where)
    assert f"staked      {3 * ETH} wei" in shown.output
    assert "registered  yes" in shown.output

    too_much = await fedrelay("worker", "unstake", *where, "--amount", str(4 * ETH))
    assert too_much.exit_code == 2
    assert f"more than the bonded {3 * ETH}" in too_much.stderr
    unstaked = await fedrelay("worker", "unstake", *where, "--amount", str(ETH), "--json")
    assert unstaked.exit_code == 0, unstaked.output
    after = json.loads(unstaked.stdout)
    staker = hub.staker(worker.address)
    assert (after["staked"], after["unbonding"]) == (2 * ETH, ETH)
    assert after["unlocks_at"] == staker.unbonding_ready_at
    assert staker.unbonding_ready_at >= chain_time(hub.chain) + UNBONDING_DELAY - 5

    early = await fedrelay("worker", "withdraw-stake", *where)
    assert early.exit_code == 2
    assert "the WorkerHub refused" in early.stderr
    assert "UnbondingPending" in early.stderr
    assert "withdrawable from" in early.stderr
    assert hub.staker(worker.address).unbonding == ETH

    worker_chain.rpc("evm_increaseTime", [UNBONDING_DELAY + 1])
    worker_chain.rpc("evm_mine")
    before = hub.chain.w3.eth.get_balance(worker.address)
    withdrawn = await fedrelay("worker", "withdraw-stake", *where)
    assert withdrawn.exit_code == 0, withdrawn.output
    assert f"withdrew {ETH} wei of stake" in withdrawn.output
    assert hub.chain.w3.eth.get_balance(worker.address) > before + ETH - 10**16  # minus gas
    assert hub.staker(worker.address).unbonding == 0
    nothing = await fedrelay("worker", "withdraw-stake", *where)
    assert nothing.exit_code == 2
    assert "nothing is unbonding" in nothing.stderr
    for result in (status, unstaked, early, withdrawn):
        assert key not in result.output


async def test_an_evm_worker_releases_its_task_left_unsettled(
    hub: WorkerHubContract, worker_chain: Anvil
) -> None:
    """Through the SDK's binding: not before the release time, never another worker's, and
    then the lock is freed, the task released and the coordinator chain told (STAKE_CHANGED)."""
    keys = [funded_evm_key(worker_chain) for _ in range(2)]
    workers = [Signer(k) for k in keys]
    for worker in workers:
        hub.stake(worker, 2 * ETH)
        hub.register(worker, address_to_bytes32(worker.address), 2)
    worker_key = address_to_bytes32(workers[0].address)
    now = chain_time(hub.chain)
    job_id, release_at = 77, now + 120
    assigned = TaskAssigned(
        target_chain=WORKER_CHAIN,
        target_address=address_to_bytes32(hub.address),
        job_id=job_id,
        round=0,
        deadline=now + 60,
        model_hash=b"\x01" * 32,
        config_hash=b"\x02" * 32,
        min_stake=10**8,
        stake_lock=10**8,  # 1 ETH at 8 decimals
        release_at=release_at,
        tasks=(Task(worker_key, 0),),
    )
    emitter = Emitter(COORDINATOR_CHAIN, evm_address("worker cli market"))
    hub.receive_message(workers[1], emitter.vaa(assigned))
    assert hub.staker(workers[0].address).locked == ETH
    mine, other = (EvmWorkerChain(worker_chain.rpc_url, hub.address, k) for k in keys)
    key = TaskKey(job_id, 0)

    with pytest.raises(ChainRejected, match="ReleaseTooEarly"):
        await mine.release_expired_task(key)
    worker_chain.rpc("evm_increaseTime", [release_at - chain_time(hub.chain) + 1])
    worker_chain.rpc("evm_mine")
    with pytest.raises(ChainRejected, match="UnknownTask"):
        await other.release_expired_task(key)  # it can only name its own task: none
    first = hub.chain.w3.eth.block_number + 1
    await mine.release_expired_task(key)

    assert hub.task(job_id, 0, worker_key).state is HubTaskState.RELEASED
    assert hub.staker(workers[0].address).locked == 0
    names = [e.name for e in hub.events(first, hub.chain.w3.eth.block_number)]
    assert "TaskExpiredReleased" in names
    with pytest.raises(ChainRejected, match="TaskAlreadyReleased"):
        await mine.release_expired_task(key)


async def test_a_missing_contract_or_key_or_rpc_is_one_clear_error(
    hub: WorkerHubContract, worker_chain: Anvil, tmp_path: Path
) -> None:
    key_file = tmp_path / "worker.key"
    key_file.write_text(funded_evm_key(worker_chain, 0))
    where = ["--key-file", str(key_file), "--rpc-url", worker_chain.rpc_url]
    cases = [
        (["stake", "--chain", "evm", *where], "--hub-address is required with --chain evm"),
        (["unstake", "--chain", "solana", *where, "--amount", "all"], "--program-id is required"),
        (
            ["stake", "--chain", "evm", "--key-file", str(tmp_path / "absent.key"),
             "--rpc-url", worker_chain.rpc_url, "--hub-address", hub.address],
            "absent.key: it does not exist",
        ),
        (
            ["withdraw-stake", "--chain", "evm", "--key-file", str(key_file),
             "--rpc-url", "http://127.0.0.1:1", "--hub-address", hub.address],
            "the EVM RPC endpoint http://127.0.0.1:1 does not answer",
        ),
        (["unstake", "--chain", "evm", *where, "--amount", "-3"], "--amount must be positive"),
        (
            ["stake", "--chain", "evm", *where, "--hub-address", "0x12"],
            "--hub-address must be an EVM address",
        ),
    ]  # fmt: skip
    for args, message in cases:
        result = await fedrelay("worker", *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# --- stake on Solana -----------------------------------------------------------------------------


def keypair_file(path: Path, keypair: Keypair) -> Path:
    path.write_text(json.dumps(list(bytes(keypair))))
    return path


async def test_solana_stake_unstake_and_withdraw_after_the_delay(
    deployment: Deployment, solana_rpc: AsyncClient, tmp_path: Path
) -> None:
    d = deployment
    keypair = await d.funded_keypair(sol=10)
    chain = await SolanaWorkerChain.connect(solana_rpc, d.program_id, keypair)
    await chain.stake_and_register(2 * LAMPORTS_PER_SOL, b"\x05" * 32, 2)
    key_file = keypair_file(tmp_path / "worker.json", keypair)
    where = ["--chain", "solana", "--key-file", str(key_file), "--rpc-url", d.devnet.url]
    where += ["--program-id", str(d.program_id)]

    status = await fedrelay("worker", "stake", *where, "--json")
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout) == {
        "chain": "solana",
        "worker": str(keypair.pubkey()),
        "registered": True,
        "staked": 2 * LAMPORTS_PER_SOL,
        "unbonding": 0,
        "unlocks_at": None,
        "open_tasks": 0,
    }

    part = await fedrelay("worker", "unstake", *where, "--amount", "5")
    assert part.exit_code == 2
    assert "INVALID_ARGUMENT" in part.stderr or "multiple of 10 lamports" in part.stderr
    assert (await chain.stake_status()).unbonding == 0
    unstaked = await fedrelay("worker", "unstake", *where, "--amount", "all", "--json")
    assert unstaked.exit_code == 0, unstaked.output
    after = json.loads(unstaked.stdout)
    assert after["unbonding"] == 2 * LAMPORTS_PER_SOL
    assert after["unlocks_at"] >= d.devnet.chain.unix_time() + UNBONDING_DELAY - 5
    shown = await fedrelay("worker", "stake", *where)
    assert f"unbonding   {2 * LAMPORTS_PER_SOL} lamports, withdrawable from" in shown.output

    early = await fedrelay("worker", "withdraw-stake", *where)
    assert early.exit_code == 2
    assert "the worker program refused the withdrawal" in early.stderr
    assert "UNBONDING_NOT_OVER" in early.stderr
    assert (await chain.stake_status()).registered

    d.devnet.chain.advance_time(UNBONDING_DELAY + 1)
    withdrawn = await fedrelay("worker", "withdraw-stake", *where, "--json")
    assert withdrawn.exit_code == 0, withdrawn.output
    assert json.loads(withdrawn.stdout) == {"chain": "solana", "withdrawn": 2 * LAMPORTS_PER_SOL}
    after_withdrawal = json.loads((await fedrelay("worker", "stake", *where, "--json")).stdout)
    # The record stays (its stake nonce keeps counting for the coordinator chain), unbonded.
    assert (after_withdrawal["registered"], after_withdrawal["staked"]) == (True, 0)
