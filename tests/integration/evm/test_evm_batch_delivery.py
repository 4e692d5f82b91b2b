"""Batched delivery (``receiveMessages``) on anvil, through the relayer's EVM destination adapter
and the synchronous bindings.

- 32 TASK_ASSIGNED in one transaction, one of them delivered before and one signed below quorum:
  the others are applied, the consumed one is skipped, the invalid one is refused with its reason,
  and every message is consumed exactly once on chain, also when the whole batch is sent again;
- the batch size follows the destination's block gas limit at the gas per message the estimates
  show;
- a batch's gas limit, taken from one execution of the call (``eth_createAccessList``), covers
  what ``eth_estimateGas``'s search finds, with the policy's margin, for 1 and 32 VAAs; a batch
  measured ahead (``preflight_batch``) is prepared with that gas, without measuring again;
- JobMarket's batch entry point through ``JobMarketContract.receive_batch``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import support.wormhole as wormhole_testing
from support.relayer_evm import mined

from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.evm import Signer, address_to_bytes32
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR
from fedrelay.adapters.evm.batch import BatchResult
from fedrelay.adapters.evm.relay import BatchPolicy, BatchTooLarge, EvmDestination
from fedrelay.adapters.evm.rpc import connect
from fedrelay.adapters.evm.testing import EvmDeployment, deploy_pair
from fedrelay.ports.relay import BatchDestination, FailureKind, TxState
from fedrelay.protocol.wormhole import Task, TaskAssigned, VaaBody, WorkerRegistered, sign_vaa

pytestmark = pytest.mark.integration

COORDINATOR, WORKERS = 2, 4
GUARDIANS = 3
RELAYER_KEY = 7


@pytest.fixture(scope="module")
def evm(coordinator_chain: Anvil, worker_chain: Anvil) -> EvmDeployment:
    """Fresh contracts on both chains (the contracts are compiled first; forge caches)."""
    Forge(Path(CONTRACTS_DIR)).build()
    guardians = ["0x" + g.address.hex() for g in wormhole_testing.guardian_signers(GUARDIANS)]
    return deploy_pair(coordinator_chain, worker_chain, guardians, 60)


class Vaas:
    """TASK_ASSIGNED VAAs from the coordinator chain's JobMarket to the WorkerHub."""

    def __init__(self, evm: EvmDeployment, first_sequence: int) -> None:
        self.evm = evm
        self.sequence = first_sequence
        self.deadline = int(evm.worker_chain.w3.eth.get_block("latest")["timestamp"]) + 3600

    def body(self, job_id: int) -> VaaBody:
        assigned = TaskAssigned(
            target_chain=WORKERS, target_address=address_to_bytes32(self.evm.hub.address),
            job_id=job_id, round=0, deadline=self.deadline, model_hash=bytes(32),
            config_hash=bytes(32), min_stake=0, stake_lock=0, release_at=self.deadline + 86_400,
            tasks=(Task(address_to_bytes32(f"0x{job_id:040x}"), 0),),
        )  # fmt: skip
        self.sequence += 1
        return VaaBody(
            timestamp=self.deadline, nonce=0, emitter_chain=COORDINATOR,
            emitter_address=address_to_bytes32(self.evm.market.address), sequence=self.sequence,
            consistency_level=1, payload=assigned.to_bytes(),
        )  # fmt: skip

    def signed(self, job_id: int, guardians: int = GUARDIANS) -> bytes:
        signers = list(enumerate(wormhole_testing.guardian_signers(GUARDIANS)))[:guardians]
        return sign_vaa(self.body(job_id), 0, signers).to_bytes()


@pytest.fixture
async def destination(evm: EvmDeployment) -> AsyncIterator[EvmDestination]:
    w3 = connect(evm.workers.rpc_url)
    key = evm.workers.private_keys[RELAYER_KEY]
    yield EvmDestination(w3, WORKERS, evm.hub.address, key, evm.workers.chain_id)
    await w3.provider.disconnect()


async def deliver_batch(destination: EvmDestination, vaas: list[bytes]) -> list[Any]:
    signed = await destination.prepare_batch(vaas, None, 0)
    await destination.broadcast(signed)
    assert (await mined(destination, signed.tx_id)).state is TxState.CONFIRMED
    entries = await destination.batch_results(signed.tx_id, len(vaas))
    outcome = await destination.batch_outcome(signed.tx_id, vaas)
    assert outcome.applied == tuple(e.result is BatchResult.APPLIED for e in entries)
    assert [r is None for r in outcome.reasons] == list(outcome.applied)
    assert outcome.invalid == tuple(e.result is BatchResult.INVALID for e in entries)
    return entries


def consumed_counts(evm: EvmDeployment, from_block: int) -> Counter[bytes]:
    """How often each digest was consumed on the worker chain since `from_block`."""
    latest = evm.worker_chain.w3.eth.block_number
    events = evm.hub.events(from_block, latest)
    return Counter(bytes(e.args["digest"]) for e in events if e.name == "MessageConsumed")


async def test_a_batch_of_32_with_a_consumed_and_an_invalid_vaa_applies_each_once(
    evm: EvmDeployment, destination: EvmDestination
) -> None:
    vaas = Vaas(evm, 200_000)
    batch = [vaas.signed(2_000 + i) for i in range(32)]
    batch[9] = vaas.signed(2_009, guardians=1)  # below quorum
    start = evm.worker_chain.w3.eth.block_number
    before = await destination.prepare(batch[5], None, 0)  # delivered on its own first
    await destination.broadcast(before)
    assert (await mined(destination, before.tx_id)).state is TxState.CONFIRMED
    assert isinstance(destination, BatchDestination)
    assert destination.max_batch() == 32

    entries = await deliver_batch(destination, batch)

    assert [e.index for e in entries] == list(range(32))
    expected = [BatchResult.APPLIED] * 32
    expected[5], expected[9] = BatchResult.CONSUMED, BatchResult.INVALID
    assert [e.result for e in entries] == expected
    assert entries[9].reason is not None
    assert entries[9].reason.name == "InvalidVaa"
    assert entries[9].reason.arguments == ("no quorum",)
    assert destination.entry_failure(entries[0]) is None
    consumed = destination.entry_failure(entries[5])
    assert consumed is not None
    assert consumed.kind is FailureKind.ALREADY_CONSUMED
    refused = destination.entry_failure(entries[9])
    assert refused is not None
    assert refused.kind is FailureKind.REVERTED
    assert "no quorum" in refused.reason
    for index, vaa in enumerate(batch):
        assert await destination.is_consumed(vaa) is (index != 9), index

    # The same batch again: nothing is applied twice, the invalid entry is refused again.
    assert await destination.simulate_batch(batch) == [
        BatchResult.INVALID if i == 9 else BatchResult.CONSUMED for i in range(32)
    ]
    again = await deliver_batch(destination, batch)
    assert [e.result for e in again] == [
        BatchResult.INVALID if i == 9 else BatchResult.CONSUMED for i in range(32)
    ]
    counts = consumed_counts(evm, start + 1)
    assert len(counts) == 31
    assert set(counts.values()) == {1}, "every message consumed exactly once"


async def test_the_batch_size_follows_the_block_gas_limit(
    evm: EvmDeployment, destination: EvmDestination
) -> None:
    limit = int(evm.worker_chain.w3.eth.get_block("latest")["gasLimit"])
    budget = 800_000  # a few messages' worth: a small share of anvil's block gas limit
    policy = BatchPolicy(block_gas_share=budget / limit, initial_gas_per_message=400_000)
    small = EvmDestination(
        destination.w3, WORKERS, evm.hub.address, evm.workers.private_keys[RELAYER_KEY],
        evm.workers.chain_id, batch=policy,
    )  # fmt: skip
    assert small.max_batch() == 1  # 400,000 x 1.25 per message before any estimate
    vaas = Vaas(evm, 300_000)
    batch = [vaas.signed(3_000 + i) for i in range(8)]
    with pytest.raises(BatchTooLarge) as too_large:
        await small.prepare_batch(batch, None, 0)
    assert 1 < too_large.value.fits < 8
    size = small.max_batch()
    assert 1 < size < 8, "sized by the gas per message the estimate showed"
    entries = await deliver_batch(small, batch[:size])
    assert [e.result for e in entries] == [BatchResult.APPLIED] * size
    with pytest.raises(ValueError, match=r"1\.\.32"):
        await destination.prepare_batch([], None, 0)


@pytest.mark.parametrize("size", [1, 32])
async def test_a_batch_gas_limit_from_one_execution_covers_the_estimate(
    evm: EvmDeployment, destination: EvmDestination, size: int
) -> None:
    vaas = Vaas(evm, 400_000 + 100 * size)
    batch = [vaas.signed(5_000 + 100 * size + i) for i in range(size)]
    data = destination._contract.encode_abi("receiveMessages", args=[batch])
    searched = int(
        await destination.w3.eth.estimate_gas(
            {"from": destination.signer, "to": destination.receiver, "data": data}
        )
    )
    signed = await destination.prepare_batch(batch, None, 0)
    await destination.broadcast(signed)
    assert (await mined(destination, signed.tx_id)).state is TxState.CONFIRMED
    limit = int((await destination.w3.eth.get_transaction(signed.tx_id))["gas"])
    assert limit >= searched * destination.gas.gas_margin * 0.98  # the margin, over the search
    used = int((await destination.w3.eth.get_transaction_receipt(signed.tx_id))["gasUsed"])
    assert used < limit
    entries = await destination.batch_results(signed.tx_id, size)
    assert [e.result for e in entries] == [BatchResult.APPLIED] * size


async def test_a_batch_measured_ahead_is_prepared_with_that_gas_without_measuring_again(
    evm: EvmDeployment, destination: EvmDestination, monkeypatch: pytest.MonkeyPatch
) -> None:
    vaas = Vaas(evm, 500_000)
    batch = [vaas.signed(7_000 + i) for i in range(4)]
    await destination.preflight_batch(batch)
    measured: list[str] = []
    measure = destination._batch_gas

    async def counted(data: str) -> int:
        measured.append(data)
        return await measure(data)

    monkeypatch.setattr(destination, "_batch_gas", counted)
    entries = await deliver_batch(destination, batch)
    assert measured == [], "the gas measured ahead served the prepare"
    assert [e.result for e in entries] == [BatchResult.APPLIED] * 4
    again = [vaas.signed(7_100 + i) for i in range(2)]
    await deliver_batch(destination, again)  # not measured ahead: measured at its prepare
    assert len(measured) == 1


def test_job_market_receive_batch_reports_each_entry(evm: EvmDeployment) -> None:
    hub_emitter = address_to_bytes32(evm.hub.address)
    signers = list(enumerate(wormhole_testing.guardian_signers(GUARDIANS)))

    def registered(sequence: int, key: int, emitter: bytes = hub_emitter) -> bytes:
        payload = WorkerRegistered(
            target_chain=COORDINATOR, target_address=address_to_bytes32(evm.market.address),
            job_id=0, worker_key=address_to_bytes32(f"0x{key:040x}"), stake=10**8,
            payout_address=address_to_bytes32(f"0x{key:040x}"), capabilities=0,
        )  # fmt: skip
        body = VaaBody(
            timestamp=1, nonce=0, emitter_chain=WORKERS, emitter_address=emitter,
            sequence=sequence, consistency_level=1, payload=payload.to_bytes(),
        )  # fmt: skip
        return sign_vaa(body, 0, signers).to_bytes()

    first, second = registered(400_000, 0x4001), registered(400_001, 0x4002)
    wrong_emitter = registered(400_002, 0x4003, emitter=bytes(31) + b"\x01")
    relayer = Signer(evm.coordinator.private_keys[RELAYER_KEY])
    delivery = evm.market.receive_batch(relayer, [first, first, wrong_emitter, second])
    assert [e.result for e in delivery.entries] == [
        BatchResult.APPLIED, BatchResult.CONSUMED, BatchResult.INVALID, BatchResult.APPLIED
    ]  # fmt: skip
    assert delivery.applied == [0, 3]
    reason = delivery.entries[2].reason
    assert reason is not None
    assert reason.name == "UnknownEmitter"
    assert evm.market.worker(WORKERS, address_to_bytes32(f"0x{0x4002:040x}")).registered
