"""The devnet in process: three chains deployed and linked, state files, a real delivery each way.

One devnet serves the module (it starts in a few seconds once the contracts and the program are
built). The cross-chain check signs a TASK_ASSIGNED with the guardian keys the devnet wrote and
delivers it by hand, as the relayer would, to the WorkerHub and to the Solana worker program.
"""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from web3 import Web3

from fedrelay.adapters.devnet.network import (
    COORDINATOR_WORMHOLE_CHAIN,
    EVM_MAX_BATCH,
    SOLANA_MAX_BATCH,
    SOLANA_WORMHOLE_CHAIN,
    WORKER_EVM_WORMHOLE_CHAIN,
    Devnet,
    DevnetPorts,
    DevnetSettings,
    iter_key_files,
)
from fedrelay.adapters.devnet.process import free_port
from fedrelay.adapters.devnet.state import DevnetError, DevnetInfo, read_state
from fedrelay.adapters.evm import (
    EvmChain,
    HubTaskState,
    MessageCoreContract,
    Signer,
    address_to_bytes32,
)
from fedrelay.adapters.solana.client import WorkerProgramClient
from fedrelay.protocol.wormhole import Task, TaskAssigned, Vaa, VaaBody, keccak256, sign_vaa
from fedrelay.relayer.chains_file import load_chains
from fedrelay.relayer.process import read_signer_key
from fedrelay.relayer.stages.attest import load_guardian_signer, load_threshold_share
from fedrelay.worker.sdk.keys import load_evm_key, load_solana_keypair

pytestmark = pytest.mark.integration

GUARDIANS = 4  # quorum 3
LAMPORTS = 1_000_000_000


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """A devnet on free ports with four guardians, two EVM and two Solana workers."""
    ports = DevnetPorts(free_port(), free_port(), free_port())
    state_dir = tmp_path_factory.mktemp("devnet") / "state"
    with Devnet(state_dir, DevnetSettings(guardians=GUARDIANS, ports=ports)) as running:
        running.fund_workers(2, 2)
        yield running


def _has_code(chain: EvmChain, address: str) -> bool:
    return len(chain.w3.eth.get_code(chain.w3.to_checksum_address(address))) > 0


def test_contracts_are_deployed_on_both_evm_chains_with_the_guardian_set(devnet: Devnet) -> None:
    info = devnet.info
    guardians = [a.lower() for a in info.guardian_addresses]
    assert len(guardians) == GUARDIANS
    for name, wormhole_id, evm_id in (("coordinator", 2, 31337), ("worker-evm", 4, 31338)):
        chain_info = info.chain(name)
        chain = devnet.evm_chain(name)
        assert (chain_info.wormhole_chain_id, chain_info.evm_chain_id) == (wormhole_id, evm_id)
        assert chain.chain_id == evm_id
        assert chain_info.message_core is not None
        assert _has_code(chain, chain_info.address)
        core = MessageCoreContract(chain, chain_info.message_core)
        assert core.wormhole_chain_id() == wormhole_id
        assert [k.lower() for k in core.guardian_set(0).keys] == guardians


async def test_the_worker_program_is_deployed_and_initialized(devnet: Devnet) -> None:
    async with AsyncClient(devnet.info.chain("worker-solana").rpc_url) as rpc:
        account = (await rpc.get_account_info(devnet.program_id)).value
        assert account is not None
        assert account.executable
        client = WorkerProgramClient(rpc, devnet.program_id)
        config = await client.fetch_config()
        guardian_set = await client.fetch_guardian_set(0)
    assert config.peer_chain == COORDINATOR_WORMHOLE_CHAIN
    assert config.peer_emitter == address_to_bytes32(devnet.info.chain("coordinator").address)
    assert ["0x" + a.hex() for a in guardian_set.addresses] == [
        a.lower() for a in devnet.info.guardian_addresses
    ]


def test_peers_are_linked_across_the_three_chains(devnet: Devnet) -> None:
    market, hub = devnet.job_market(), devnet.worker_hub()
    peers = market.contract.functions.peers
    assert bytes(peers(WORKER_EVM_WORMHOLE_CHAIN).call()) == address_to_bytes32(hub.address)
    assert bytes(peers(SOLANA_WORMHOLE_CHAIN).call()) == bytes(devnet.program_id)
    batch = market.contract.functions.maxBatch
    assert batch(WORKER_EVM_WORMHOLE_CHAIN).call() == EVM_MAX_BATCH
    assert batch(SOLANA_WORMHOLE_CHAIN).call() == SOLANA_MAX_BATCH
    hub_peer = bytes(hub.contract.functions.peers(COORDINATOR_WORMHOLE_CHAIN).call())
    assert hub_peer == address_to_bytes32(market.address)


def test_state_files_describe_the_devnet_and_keys_are_private(devnet: Devnet) -> None:
    info = devnet.info
    state_dir = Path(info.state_dir)
    assert read_state(state_dir) == info
    assert DevnetInfo.from_json(info.to_json()) == info
    chains = load_chains(Path(info.chains_file))
    for chain in info.chains:
        loaded = chains.named(chain.name)
        assert (loaded.wormhole_chain_id, loaded.kind, loaded.rpc_url, loaded.address) == (
            chain.wormhole_chain_id, chain.kind, chain.rpc_url, chain.address,
        )  # fmt: skip
    assert stat.S_IMODE((state_dir / "keys").stat().st_mode) == 0o700
    files = list(iter_key_files(info))
    assert len(files) == 2 * GUARDIANS + len(info.key_files) + 2 * len(info.workers)
    assert len(info.workers) == 4
    state_text = (state_dir / "devnet.json").read_text() + Path(info.chains_file).read_text()
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        secret = path.read_text().strip()
        assert secret not in state_text
    # The guardian key files are what the attest stage loads, in guardian-index order.
    for index, guardian_file in enumerate(info.guardian_key_files):
        signer = load_guardian_signer(Path(guardian_file))
        assert "0x" + signer.address.hex() == info.guardian_addresses[index]
    # Each guardian's threshold share is its share of the key devnet.json names.
    group_key = bytes.fromhex(info.threshold_group_key)
    for index, share_file in enumerate(info.threshold_share_files):
        expected = bytes.fromhex(info.threshold_verification_shares[index])
        share = load_threshold_share(index, group_key, expected, Path(share_file))
        assert share.guardian_index == index
    # Each role's key file holds the key of the address devnet.json names.
    for role, key_file in info.key_files.items():
        if key_file.endswith(".json"):
            assert str(load_solana_keypair(Path(key_file)).pubkey()) == info.accounts[role]
        else:
            assert Signer(load_evm_key(Path(key_file))).address == info.accounts[role]
    # Each deliverer's key file is what the deliver stage loads for its chain.
    for config in chains.chains:
        signer_key = read_signer_key(config, Path(info.key_files[f"relayer-{config.name}"]))
        assert isinstance(signer_key, bytes if config.kind == "solana" else str)
    env = (state_dir / "devnet.env").read_text()
    assert f"FEDRELAY_CHAINS_FILE='{info.chains_file}'" in env
    assert json.dumps(list(info.guardian_addresses)) in env
    assert f"FEDRELAY_THRESHOLD_GROUP_KEY='{info.threshold_group_key}'" in env


async def test_every_receiver_holds_the_devnet_threshold_key(devnet: Devnet) -> None:
    info = devnet.info
    for name in ("coordinator", "worker-evm"):
        chain = info.chain(name)
        assert chain.message_core is not None
        core = MessageCoreContract(devnet.evm_chain(name), chain.message_core)
        assert core.threshold_key_count() == 1
    async with AsyncClient(info.chain("worker-solana").rpc_url) as rpc:
        key = await WorkerProgramClient(rpc, devnet.program_id).fetch_threshold_key(0)
    assert key.public_key.hex() == info.threshold_group_key


async def test_funded_workers_hold_funds_on_their_chains(devnet: Devnet) -> None:
    workers = devnet.info.workers
    assert [w.chain for w in workers] == ["worker-evm"] * 2 + ["worker-solana"] * 2
    coordinator, worker_chain = devnet.evm_chain("coordinator"), devnet.evm_chain("worker-evm")
    for worker in workers:
        assert coordinator.w3.eth.get_balance(Web3.to_checksum_address(worker.payout_address)) > 0
        if worker.chain == "worker-evm":
            assert Signer(load_evm_key(Path(worker.key_file))).address == worker.address
            assert worker_chain.w3.eth.get_balance(Web3.to_checksum_address(worker.address)) > 0
    async with AsyncClient(devnet.info.chain("worker-solana").rpc_url) as rpc:
        for worker in workers[2:]:
            keypair = load_solana_keypair(Path(worker.key_file))
            assert str(keypair.pubkey()) == worker.address
            assert (await rpc.get_balance(keypair.pubkey())).value > 0
    with pytest.raises(DevnetError, match="must not be negative"):
        devnet.fund_workers(-1, 0)


def _signed_task_assigned(devnet: Devnet, payload: TaskAssigned, sequence: int) -> Vaa:
    """What the guardians do for a message JobMarket published: sign with the devnet's keys."""
    info = devnet.info
    signers = [load_guardian_signer(Path(p)) for p in info.guardian_key_files]
    quorum = len(signers) * 2 // 3 + 1
    body = VaaBody(
        timestamp=int(devnet.evm_chain("coordinator").w3.eth.get_block("latest")["timestamp"]),
        nonce=0,
        emitter_chain=COORDINATOR_WORMHOLE_CHAIN,
        emitter_address=address_to_bytes32(info.chain("coordinator").address),
        sequence=sequence,
        consistency_level=1,
        payload=payload.to_bytes(),
    )
    return sign_vaa(body, info.guardian_set_index, list(enumerate(signers))[:quorum])


def _assignment(target_chain: int, target: bytes, worker_key: bytes, deadline: int) -> TaskAssigned:
    return TaskAssigned(
        target_chain=target_chain, target_address=target, job_id=1, round=0, deadline=deadline,
        model_hash=keccak256(b"model"), config_hash=keccak256(b"config"),
        min_stake=0, stake_lock=0, release_at=deadline + 86_400, tasks=(Task(worker_key, shard=0),),
    )  # fmt: skip


def test_a_task_assigned_signed_by_the_devnet_guardians_is_accepted_by_the_worker_hub(
    devnet: Devnet,
) -> None:
    hub = devnet.worker_hub()
    worker = devnet.info.workers[0]
    worker_key = address_to_bytes32(worker.address)
    # WorkerHub takes tasks for registered workers holding the task's stake only.
    signer = Signer(load_evm_key(Path(worker.key_file)))
    if not hub.staker(signer.address).registered:
        hub.stake(signer, 2 * 10**18)
        hub.register(signer, address_to_bytes32(worker.payout_address), 1)
    deadline = int(hub.chain.w3.eth.get_block("latest")["timestamp"]) + 3600
    payload = _assignment(
        WORKER_EVM_WORMHOLE_CHAIN, address_to_bytes32(hub.address), worker_key, deadline
    )
    vaa = _signed_task_assigned(devnet, payload, sequence=0)
    relayer = Signer(load_evm_key(devnet.key_file("relayer-worker-evm")))
    hub.receive_message(relayer, vaa.to_bytes())
    task = hub.task(1, 0, worker_key)
    assert task.state is HubTaskState.ASSIGNED
    assert task.deadline == deadline
    # The task is found under the worker's own key only (its id is derived from the key).
    assert hub.task(1, 0, address_to_bytes32(relayer.address)).state is HubTaskState.NONE
    assert hub.is_consumed(vaa.body.message_id)


async def test_a_task_assigned_signed_by_the_devnet_guardians_is_accepted_by_the_program(
    devnet: Devnet,
) -> None:
    worker = devnet.info.workers[2]
    keypair = load_solana_keypair(Path(worker.key_file))
    worker_key = bytes(keypair.pubkey())
    payer = Keypair.from_json(devnet.key_file("relayer-worker-solana").read_text())
    deadline = int(time.time()) + 3600  # the cluster clock follows wall time
    async with AsyncClient(devnet.info.chain("worker-solana").rpc_url) as rpc:
        client = WorkerProgramClient(rpc, devnet.program_id)
        # The program takes tasks for registered workers only; the funded worker can stake.
        payout = address_to_bytes32(worker.payout_address)
        await client.register(keypair, stake_lamports=2 * LAMPORTS, payout=payout, capabilities=1)
        payload = _assignment(SOLANA_WORMHOLE_CHAIN, bytes(devnet.program_id), worker_key, deadline)
        vaa = _signed_task_assigned(devnet, payload, sequence=1)
        await client.receive_vaa(payer, vaa.to_bytes())
        task = await client.fetch_task(1, 0, worker_key)
        assert await client.is_consumed(vaa.body.digest)
    assert (task.worker_key, task.job_id, task.round, task.deadline) == (
        worker_key, 1, 0, deadline,
    )  # fmt: skip
