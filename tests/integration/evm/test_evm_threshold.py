"""Version-2 (threshold-signed) VAAs on anvil: MessageCore verifies them itself, so a receiver
pointed at it takes them with no change of its own.

- a governance VAA appends the devnet threshold key (anyone may submit it; a replay is refused);
- a v2 TASK_ASSIGNED is applied by the WorkerHub (its task exists), and the v1 VAA of the same
  body is then refused as already consumed: one digest, one effect, whichever version lands;
- a v2 VAA signed under a key the core does not hold, or with its signature changed, is refused
  with the core's reason, through a whole batch as through a single delivery;
- v1 and v2 copies of the same bodies, shuffled, alone and in batches: each body takes effect once.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from pathlib import Path

import pytest
import support.wormhole as wormhole_testing

from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.guardians import append_key_vaa, threshold_key
from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.evm import ContractRevert, Signer, address_to_bytes32
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR
from fedrelay.adapters.evm.batch import BatchResult
from fedrelay.adapters.evm.core import MessageCoreContract
from fedrelay.adapters.evm.hub import HubTaskState
from fedrelay.adapters.evm.testing import EvmDeployment, deploy_pair
from fedrelay.protocol.wormhole import Task, TaskAssigned, VaaBody, sign_vaa
from fedrelay.protocol.wormhole.threshold import sign_threshold_vaa

pytestmark = pytest.mark.integration

COORDINATOR, WORKERS = 2, 4
GUARDIANS = 3


@pytest.fixture(scope="module")
def evm(coordinator_chain: Anvil, worker_chain: Anvil) -> EvmDeployment:
    Forge(Path(CONTRACTS_DIR)).build()
    guardians = ["0x" + g.address.hex() for g in wormhole_testing.guardian_signers(GUARDIANS)]
    return deploy_pair(coordinator_chain, worker_chain, guardians, 60)


def _core(evm: EvmDeployment) -> MessageCoreContract:
    address = evm.worker_chain.call(evm.hub.contract.functions.core())
    return MessageCoreContract(evm.worker_chain, str(address))


def _worker(evm: EvmDeployment) -> Signer:
    """A staked, registered worker (the hub creates tasks for registered workers only)."""
    signer = Signer(evm.workers.private_keys[8])
    if not evm.hub.staker(signer.address).registered:
        evm.hub.stake(signer, 2 * 10**18)
        evm.hub.register(signer, address_to_bytes32(signer.address), 1)
    return signer


def _body(evm: EvmDeployment, worker: Signer, job_id: int, sequence: int) -> VaaBody:
    deadline = int(evm.worker_chain.w3.eth.get_block("latest")["timestamp"]) + 3600
    assigned = TaskAssigned(
        target_chain=WORKERS, target_address=address_to_bytes32(evm.hub.address),
        job_id=job_id, round=0, deadline=deadline, model_hash=bytes(32), config_hash=bytes(32),
        min_stake=0, stake_lock=0, release_at=deadline + 86_400,
        tasks=(Task(address_to_bytes32(worker.address), 0),),
    )  # fmt: skip
    return VaaBody(
        timestamp=deadline, nonce=0, emitter_chain=COORDINATOR,
        emitter_address=address_to_bytes32(evm.market.address), sequence=sequence,
        consistency_level=1, payload=assigned.to_bytes(),
    )  # fmt: skip


def _appended(evm: EvmDeployment) -> MessageCoreContract:
    core = _core(evm)
    if core.threshold_key_count() == 0:
        anyone = Signer(evm.workers.private_keys[5])
        core.append_threshold_key(anyone, append_key_vaa(GUARDIANS).to_bytes())
    assert core.threshold_key_count() == 1
    return core


def test_a_governance_vaa_appends_the_key_once(evm: EvmDeployment) -> None:
    core = _appended(evm)
    with pytest.raises(ContractRevert) as replayed:
        core.append_threshold_key(Signer(evm.workers.private_keys[5]), append_key_vaa(3).to_bytes())
    assert replayed.value.name == "WrongKeyIndex"
    assert core.threshold_key_count() == 1


def test_a_v2_vaa_is_applied_and_its_v1_twin_is_already_consumed(evm: EvmDeployment) -> None:
    core = _appended(evm)
    worker = _worker(evm)
    body = _body(evm, worker, job_id=71, sequence=7_100)
    v2 = sign_threshold_vaa(body, 0, threshold_key(GUARDIANS), range(GUARDIANS)).to_bytes()
    verified = core.parse_and_verify(v2)
    assert (verified.valid, verified.reason, verified.digest) == (True, "", body.digest)

    relayer = Signer(evm.workers.private_keys[6])
    evm.hub.receive_message(relayer, v2)
    assert evm.hub.is_consumed(body.message_id)
    assigned = evm.hub.task(71, 0, address_to_bytes32(worker.address))
    assert assigned.state is HubTaskState.ASSIGNED

    signers = list(enumerate(wormhole_testing.guardian_signers(GUARDIANS)))
    v1 = sign_vaa(body, 0, signers).to_bytes()
    with pytest.raises(ContractRevert) as twin:
        evm.hub.receive_message(relayer, v1)
    assert twin.value.name == "AlreadyConsumed"


def test_a_v2_vaa_under_an_unknown_key_or_a_changed_signature_is_refused(
    evm: EvmDeployment,
) -> None:
    _appended(evm)
    worker = _worker(evm)
    dealt = threshold_key(GUARDIANS)
    unknown = sign_threshold_vaa(_body(evm, worker, 72, 7_200), 1, dealt, range(GUARDIANS))
    good = sign_threshold_vaa(_body(evm, worker, 73, 7_300), 0, dealt, range(GUARDIANS))
    changed = bytearray(good.to_bytes())
    changed[30] ^= 0x01  # a byte of s
    relayer = Signer(evm.workers.private_keys[6])
    with pytest.raises(ContractRevert) as refused:
        evm.hub.receive_message(relayer, unknown.to_bytes())
    assert (refused.value.name, refused.value.arguments) == (
        "InvalidVaa",
        ("unknown threshold key",),
    )
    delivery = evm.hub.receive_batch(relayer, [bytes(changed), good.to_bytes()])
    first, second = delivery.entries
    assert first.result is BatchResult.INVALID
    assert first.reason is not None
    assert (first.reason.name, first.reason.arguments) == ("InvalidVaa", ("VM signature invalid",))
    assert second.result is BatchResult.APPLIED


def test_v1_and_v2_of_the_same_bodies_in_any_order_take_effect_once(evm: EvmDeployment) -> None:
    """Six bodies, each sent as v1 and as v2, alone and inside batches, in a shuffled order
    (fixed seed): every body is consumed exactly once, whichever version lands first."""
    _appended(evm)
    worker = _worker(evm)
    relayer = Signer(evm.workers.private_keys[6])
    dealt = threshold_key(GUARDIANS)
    signers = list(enumerate(wormhole_testing.guardian_signers(GUARDIANS)))
    bodies = [_body(evm, worker, job_id=100 + i, sequence=10_000 + i) for i in range(6)]
    copies = [sign_vaa(b, 0, signers).to_bytes() for b in bodies] + [
        sign_threshold_vaa(b, 0, dealt, range(GUARDIANS)).to_bytes() for b in bodies
    ]
    random.Random(18).shuffle(copies)
    start = evm.worker_chain.w3.eth.block_number + 1
    sends = [copies[:3], copies[3:4], copies[4:9], copies[9:10], copies[10:]]
    for send in sends:
        if len(send) == 1:
            with contextlib.suppress(ContractRevert):  # AlreadyConsumed when its twin landed
                evm.hub.receive_message(relayer, send[0])
        else:
            evm.hub.receive_batch(relayer, send)
    consumed = Counter(
        bytes(e.args["digest"])
        for e in evm.hub.events(start, evm.worker_chain.w3.eth.block_number)
        if e.name == "MessageConsumed"
    )
    assert consumed == Counter(b.digest for b in bodies)
    for i in range(len(bodies)):
        task = evm.hub.task(100 + i, 0, address_to_bytes32(worker.address))
        assert task.state is HubTaskState.ASSIGNED
