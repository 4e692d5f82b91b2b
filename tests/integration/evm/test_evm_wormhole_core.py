"""Receivers and bindings on Wormhole's own Ethereum core (its published bytecode, deployed on
anvil by `fedrelay.adapters.devnet.wormhole_core`), 13 of 19 guardians:

- the binding is chosen by probing (`core_kind` says WORMHOLE) and the devnet admin helpers
  rotate its guardian set and set its fee by governance VAAs;
- a WorkerHub pointed at it applies a TASK_ASSIGNED, and the high-s twin of that VAA (which this
  core accepts) is `AlreadyConsumed`, not a second delivery;
- what this core refuses by reverting `Error(string)` (unordered indices, a version other than 1,
  a guardian index out of range) reaches the relayer as `InvalidVaa` with the core's string,
  alone and as an INVALID entry of a batch whose other entries apply;
- a version-2 VAA is refused by a receiver verifying through this core, which takes version 1
  only; a receiver deployed with a ThresholdVerifier beside the core (its threshold key appended
  by a governance VAA the core verifies) applies version 2, still applies version 1 through the
  core with the core's refusals, and refuses a forged or re-targeted version-2 VAA;
- the relayer's EVM destination classifies those refusals as REVERTED with the core's words,
  in a single delivery and per batch entry, and names a VAA whose guardian set expired on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from support.relayer_evm import mined
from web3.exceptions import ContractLogicError
from web3.types import RPCEndpoint

from fedrelay.adapters.devnet.core_admin import rotate_guardian_set, set_message_fee
from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.guardians import append_key_vaa, guardian_signers, threshold_key
from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.devnet.wormhole_core import deploy_wormhole_core
from fedrelay.adapters.evm import ContractRevert, EvmChain, Signer, address_to_bytes32
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR
from fedrelay.adapters.evm.batch import BatchResult
from fedrelay.adapters.evm.core import CoreKind, WormholeCoreContract, core_kind
from fedrelay.adapters.evm.deploy import deploy_threshold_verifier, deploy_worker_hub
from fedrelay.adapters.evm.errors import InvalidVaa, core_refusal
from fedrelay.adapters.evm.hub import HubTaskState, WorkerHubContract
from fedrelay.adapters.evm.relay import EvmDestination
from fedrelay.adapters.evm.rpc import connect
from fedrelay.ports.relay import FailureKind, TxState
from fedrelay.protocol.wormhole import Task, TaskAssigned, Vaa, VaaBody, sign_vaa
from fedrelay.protocol.wormhole.guardians import SECP256K1_N
from fedrelay.protocol.wormhole.threshold import sign_threshold_vaa

pytestmark = pytest.mark.integration

COORDINATOR, WORKERS = 2, 4
GUARDIANS, QUORUM = 19, 13
MARKET = address_to_bytes32("0x" + "5a" * 20)


class Rig:
    def __init__(self, anvil: Anvil, *, threshold: bool = False) -> None:
        self.chain = EvmChain(anvil.rpc_url)
        self.owner = Signer(anvil.private_keys[0])
        self.rpc_url = anvil.rpc_url
        self.relayer_key = anvil.private_keys[6]
        self.relayer = Signer(self.relayer_key)
        self.worker = Signer(anvil.private_keys[7])
        self.signers = guardian_signers(GUARDIANS)
        keys = ["0x" + s.address.hex() for s in self.signers]
        self.core: WormholeCoreContract = deploy_wormhole_core(
            self.chain, self.owner, WORKERS, keys
        )
        self.verifier = (
            deploy_threshold_verifier(self.chain, self.owner, self.core.address)
            if threshold
            else None
        )
        self.hub: WorkerHubContract = deploy_worker_hub(
            self.chain, self.owner, self.core.address, coordinator_chain=COORDINATOR,
            min_stake=10**18, unbonding_delay=3600,
            verifier=self.verifier.address if self.verifier else None,
        )  # fmt: skip
        self.hub.set_peer(self.owner, COORDINATOR, MARKET)
        self.hub.stake(self.worker, 2 * 10**18)
        self.hub.register(self.worker, address_to_bytes32(self.worker.address), 1)
        self.sequence = 0

    def body(self, job_id: int) -> VaaBody:
        deadline = int(self.chain.w3.eth.get_block("latest")["timestamp"]) + 3600
        assigned = TaskAssigned(
            target_chain=WORKERS, target_address=address_to_bytes32(self.hub.address),
            job_id=job_id, round=0, deadline=deadline, model_hash=bytes(32),
            config_hash=bytes(32), min_stake=0, stake_lock=0, release_at=deadline + 86_400,
            tasks=(Task(address_to_bytes32(self.worker.address), 0),),
        )  # fmt: skip
        self.sequence += 1
        return VaaBody(
            timestamp=deadline, nonce=0, emitter_chain=COORDINATOR, emitter_address=MARKET,
            sequence=self.sequence, consistency_level=1, payload=assigned.to_bytes(),
        )  # fmt: skip

    def signed(self, job_id: int) -> Vaa:
        return sign_vaa(self.body(job_id), 0, list(enumerate(self.signers))[:QUORUM])

    def assigned(self, job_id: int) -> HubTaskState:
        return self.hub.task(job_id, 0, address_to_bytes32(self.worker.address)).state


@pytest.fixture(scope="module")
def rig(worker_chain: Anvil) -> Rig:
    Forge(Path(CONTRACTS_DIR)).build()
    return Rig(worker_chain)


def _refusal(error: ContractRevert) -> tuple[str, tuple[object, ...]]:
    return error.name, tuple(error.arguments)


def _high_s(vaa: Vaa, at: int) -> Vaa:
    """The same VAA with signature `at` replaced by its high-s twin (s' = n - s, v flipped)."""
    signature = vaa.signatures[at]
    s = SECP256K1_N - int.from_bytes(signature.s, "big")
    twin = replace(signature, s=s.to_bytes(32, "big"), v=signature.v ^ 1)
    signatures = (*vaa.signatures[:at], twin, *vaa.signatures[at + 1 :])
    return replace(vaa, signatures=signatures)


def test_the_real_core_is_probed_and_governed_by_governance_vaas(worker_chain: Anvil) -> None:
    chain = EvmChain(worker_chain.rpc_url)
    owner = Signer(worker_chain.private_keys[0])
    first = guardian_signers(4)
    core = deploy_wormhole_core(chain, owner, WORKERS, ["0x" + s.address.hex() for s in first])
    assert core_kind(chain, core.address) is CoreKind.WORMHOLE
    set_message_fee(chain, core.address, owner, first, 5)
    assert core.message_fee() == 5
    second = guardian_signers(5)
    rotate_guardian_set(chain, core.address, owner, first, ["0x" + s.address.hex() for s in second])
    assert core.current_guardian_set_index() == 1
    assert core.guardian_set(0).expiration_time > 0, "the replaced set expires"


def test_a_delivery_applies_and_its_high_s_twin_is_already_consumed(rig: Rig) -> None:
    vaa = rig.signed(81)
    verified = rig.core.parse_and_verify(vaa.to_bytes())
    assert (verified.valid, verified.digest) == (True, vaa.digest)
    rig.hub.receive_message(rig.relayer, vaa.to_bytes())
    task = rig.hub.task(81, 0, address_to_bytes32(rig.worker.address))
    assert task.state is HubTaskState.ASSIGNED
    twin = _high_s(vaa, 3)
    assert rig.core.parse_and_verify(twin.to_bytes()).valid, "this core accepts high s"
    with pytest.raises(ContractRevert) as again:
        rig.hub.receive_message(rig.relayer, twin.to_bytes())
    assert again.value.name == "AlreadyConsumed"


def test_the_cores_reverts_reach_the_relayer_as_invalid_vaa_with_its_string(rig: Rig) -> None:
    good = rig.signed(82)
    unordered = replace(
        good, signatures=(good.signatures[1], good.signatures[0], *good.signatures[2:])
    )
    out_of_range = replace(
        good, signatures=(*good.signatures[:-1], replace(good.signatures[-1], guardian_index=40))
    )
    version = bytearray(rig.signed(83).to_bytes())
    version[0] = 3
    threshold = sign_threshold_vaa(rig.body(84), 0, threshold_key(GUARDIANS), range(QUORUM))
    cases = {
        "unordered": (unordered.to_bytes(), "signature indices must be ascending"),
        "index out of range": (out_of_range.to_bytes(), "guardian index out of bounds"),
        "version 3": (bytes(version), "VM version incompatible"),
        "version 2": (threshold.to_bytes(), "VM version incompatible"),
    }
    for name, (vaa, reason) in cases.items():
        with pytest.raises(ContractRevert) as refused:
            rig.hub.receive_message(rig.relayer, vaa)
        assert _refusal(refused.value) == ("InvalidVaa", (reason,)), name

    batch = [case[0] for case in cases.values()] + [good.to_bytes()]
    delivery = rig.hub.receive_batch(rig.relayer, batch)
    *refused_entries, applied = delivery.entries
    for entry, (name, (_vaa, reason)) in zip(refused_entries, cases.items(), strict=True):
        assert entry.result is BatchResult.INVALID, name
        assert entry.reason is not None
        assert _refusal(entry.reason) == ("InvalidVaa", (reason,)), name
    assert applied.result is BatchResult.APPLIED
    assert rig.hub.is_consumed(good.message_id)


# ---- the relayer's EVM destination on the real core --------------------------------------------


@pytest.fixture
async def destination(rig: Rig) -> AsyncIterator[EvmDestination]:
    w3 = connect(rig.rpc_url)
    yield EvmDestination(w3, WORKERS, rig.hub.address, rig.relayer_key, rig.chain.chain_id)
    await w3.provider.disconnect()


async def test_the_relayer_classifies_the_real_cores_refusals(
    rig: Rig, destination: EvmDestination
) -> None:
    good, base = rig.signed(91), rig.signed(92)
    unordered = replace(
        base, signatures=(base.signatures[1], base.signatures[0], *base.signatures[2:])
    )
    with pytest.raises(ContractLogicError) as refused:  # web3's, as the deliverer meets it
        await destination.prepare(unordered.to_bytes(), None, 0)
    failure = destination.classify(refused.value)
    assert failure.kind is FailureKind.REVERTED
    assert "the core refused the VAA: signature indices must be ascending" in failure.reason

    signed = await destination.prepare_batch([unordered.to_bytes(), good.to_bytes()], None, 0)
    await destination.broadcast(signed)
    assert (await mined(destination, signed.tx_id)).state is TxState.CONFIRMED
    outcome = await destination.batch_outcome(signed.tx_id, [unordered.to_bytes(), good.to_bytes()])
    assert outcome.applied == (False, True)
    assert outcome.invalid == (True, False)
    reason = outcome.reasons[0]
    assert reason is not None
    assert "the core refused the VAA: signature indices must be ascending" in reason


def test_a_vaa_of_an_expired_guardian_set_is_named_so_on_the_real_core() -> None:
    """Its own chain: the test moves the clock past the core's 24 hours of grace."""
    with Anvil(chain_id=31_390) as anvil:
        rig = Rig(anvil)
        old = rig.signed(93)
        keys = ["0x" + s.address.hex() for s in rig.signers]
        rotate_guardian_set(rig.chain, rig.core.address, rig.owner, rig.signers, keys)
        rig.chain.w3.provider.make_request(RPCEndpoint("evm_increaseTime"), [86_400 + 60])
        rig.chain.w3.provider.make_request(RPCEndpoint("evm_mine"), [])
        with pytest.raises(ContractRevert) as refused:
            rig.hub.receive_message(rig.relayer, old.to_bytes())
        assert isinstance(refused.value, InvalidVaa)
        assert refused.value.guardian_set_expired
        assert "guardian set has expired" in core_refusal(refused.value)


# ---- version 2 through a ThresholdVerifier beside the real core --------------------------------


@pytest.fixture(scope="module")
def beside(rig: Rig, worker_chain: Anvil) -> Rig:
    """A second hub on the same core, verifying through a ThresholdVerifier whose key the core's
    guardians appended by governance VAA."""
    beside = Rig(worker_chain, threshold=True)
    assert beside.verifier is not None
    beside.verifier.append_threshold_key(beside.owner, append_key_vaa(GUARDIANS).to_bytes())
    assert beside.verifier.threshold_key_count() == 1
    assert beside.verifier.core() == beside.core.address
    return beside


def test_a_receiver_beside_the_real_core_applies_version_2_and_version_1(beside: Rig) -> None:
    dealt = threshold_key(GUARDIANS)
    v2 = sign_threshold_vaa(beside.body(101), 0, dealt, range(QUORUM))
    assert beside.core.parse_and_verify(beside.signed(100).to_bytes()).valid
    assert beside.verifier is not None
    assert beside.verifier.parse_and_verify(v2.to_bytes()).valid
    beside.hub.receive_message(beside.relayer, v2.to_bytes())
    assert beside.assigned(101) is HubTaskState.ASSIGNED
    # The same body signed by the guardians (version 1) is the same message: consumed once.
    again = sign_vaa(v2.body, 0, list(enumerate(beside.signers))[:QUORUM])
    assert again.digest == v2.digest
    with pytest.raises(ContractRevert) as consumed:
        beside.hub.receive_message(beside.relayer, again.to_bytes())
    assert consumed.value.name == "AlreadyConsumed"
    # Version 1 still applies, verified by the core through the verifier.
    v1 = beside.signed(102)
    beside.hub.receive_message(beside.relayer, v1.to_bytes())
    assert beside.assigned(102) is HubTaskState.ASSIGNED


def test_a_receiver_beside_the_real_core_keeps_the_cores_refusals_and_refuses_forgeries(
    beside: Rig,
) -> None:
    dealt = threshold_key(GUARDIANS)
    good = beside.signed(103)
    unordered = replace(
        good, signatures=(good.signatures[1], good.signatures[0], *good.signatures[2:])
    )
    v2 = sign_threshold_vaa(beside.body(104), 0, dealt, range(QUORUM))
    forged = replace(v2, s=(int.from_bytes(v2.s, "big") ^ 1).to_bytes(32, "big"))
    retargeted = replace(v2, body=beside.body(105))  # another job's body under v2's signature
    unknown_key = replace(v2, tss_index=1)
    cases = {
        "unordered v1": (unordered.to_bytes(), "signature indices must be ascending"),
        "forged v2": (forged.to_bytes(), "VM signature invalid"),
        "re-targeted v2": (retargeted.to_bytes(), "VM signature invalid"),
        "v2 of no key": (unknown_key.to_bytes(), "unknown threshold key"),
    }
    for name, (vaa, reason) in cases.items():
        with pytest.raises(ContractRevert) as refused:
            beside.hub.receive_message(beside.relayer, vaa)
        assert _refusal(refused.value) == ("InvalidVaa", (reason,)), name
    delivery = beside.hub.receive_batch(
        beside.relayer, [case[0] for case in cases.values()] + [v2.to_bytes()]
    )
    *refused_entries, applied = delivery.entries
    for entry, (name, (_vaa, reason)) in zip(refused_entries, cases.items(), strict=True):
        assert entry.result is BatchResult.INVALID, name
        assert entry.reason is not None
        assert _refusal(entry.reason) == ("InvalidVaa", (reason,)), name
    assert applied.result is BatchResult.APPLIED
    assert beside.assigned(104) is HubTaskState.ASSIGNED
