"""Gas per contract operation, measured from real transactions on an anvil chain.

Both Wormhole "chains" run on one anvil: a MessageCore for chain 2 carries the JobMarket and one
for chain 4 the WorkerHub, so VAAs signed by the Python guardians (13 of 19) move between them.
Figures are each transaction's `gasUsed` (21,000 intrinsic and calldata included); the view
`parseAndVerifyVM` is measured with `eth_estimateGas`, also for the version-2 VAA of the same
body on MessageCore, for the v1 VAA on Wormhole's own core (its published bytecode), and on a
ThresholdVerifier beside that core for the v2 VAA and for the v1 VAA it hands to the core. Batch
operations also report per worker; `finalize_round_k*` also gives the gas of settling that
round (`settle_total`: credits and ROUND_SETTLED publication) and of checking its proposal
against the rules (`check_total`, `ProposalChecker.checkProposal` by `eth_estimateGas`: the work
a disproof does, which the market no longer does per round). `receive_batch_*` compares 32
messages delivered one transaction each with the same kind of 32 messages in one
`receiveMessages` batch, per message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from web3.types import RPCEndpoint

from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.guardians import append_key_vaa, guardian_signers, threshold_key
from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.devnet.wormhole_core import deploy_wormhole_core
from fedrelay.adapters.evm import (
    EvmChain,
    JobMarketContract,
    JobSpec,
    Link,
    RoundResult,
    Signer,
    WorkerHubContract,
    address_to_bytes32,
    deploy_job_market,
    deploy_message_core,
    deploy_threshold_verifier,
    deploy_worker_hub,
    link,
)
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR
from fedrelay.adapters.evm.market import in_lane_order, results_root
from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.wormhole import (
    MAX_BATCH,
    Commitment,
    GuardianSigner,
    Outcome,
    Task,
    TaskAssigned,
    UpdateCommitted,
    VaaBody,
    WorkerRegistered,
    parse_vaa,
    sign_vaa,
)
from fedrelay.protocol.wormhole.threshold import DealtKey, sign_threshold_vaa

COORDINATOR, WORKERS = 2, 4
GUARDIANS, QUORUM = 19, 13


class Guardians:
    """Signs message bodies as the first `QUORUM` of 19 guardians, numbering sequences."""

    def __init__(
        self, signers: Sequence[GuardianSigner], threshold: DealtKey | None = None
    ) -> None:
        self.signers = list(enumerate(signers))
        self.threshold = threshold
        self.sequence = 0

    def vaa(self, chain: int, emitter: str | bytes, payload: bytes, count: int = QUORUM) -> bytes:
        """A VAA of `payload` from `emitter` (an EVM address or a bytes32) on `chain`: version
        1, or with a threshold key version 2 signed by `count` of its shares (key index 0)."""
        self.sequence += 1
        address = emitter if isinstance(emitter, bytes) else address_to_bytes32(emitter)
        body = VaaBody(1, 0, chain, address, self.sequence, 202, payload)
        return self.sign(body, count)

    def sign(self, body: VaaBody, count: int = QUORUM) -> bytes:
        """`body` signed as :meth:`vaa` signs it."""
        if self.threshold is not None:
            return sign_threshold_vaa(body, 0, self.threshold, range(count)).to_bytes()
        return sign_vaa(body, 0, self.signers[:count]).to_bytes()


def _key(i: int) -> bytes:
    return address_to_bytes32("0x" + (0x7000 + i).to_bytes(20, "big").hex())


def _hub_worker(i: int) -> Signer:
    """The ``i``-th worker of :func:`_hub_workers`."""
    return Signer("0x" + keccak256(f"gas bench worker {i}".encode()).hex())


def _commit_signed(
    hub: WorkerHubContract, submitter: Signer, job_id: int, k: int, *, publish: bool = False
) -> dict[str, int]:
    """The first ``k`` hub workers, assigned in ``job_id`` round 0, sign their commitments; one
    ``commitSigned`` by ``submitter`` records them all (``commitSignedAndPublish`` with
    ``publish``: and publishes them as one UPDATE_COMMITTED)."""
    entries = []
    for i in range(k):
        worker = _hub_worker(i)
        commitment = Commitment(
            address_to_bytes32(worker.address),
            keccak256(b"update %d" % i),
            keccak256(b"transcript %d" % i),
            keccak256(b"data %d" % i),
            100 + i,
            1_000 + i,
        )
        entries.append(hub.sign_commitment(worker, job_id, 0, commitment))
    if publish:
        batch = hub.commit_signed_and_publish(submitter, job_id, 0, (), entries)
    else:
        batch = hub.commit_signed(submitter, job_id, 0, entries)
    if batch.recorded != k:
        raise RuntimeError(f"commitSigned recorded {batch.recorded} of {k}: {batch.skipped}")
    return {"total": batch.gas_used, "per_worker": batch.gas_used // k}


def _hub_workers(chain: EvmChain, hub: WorkerHubContract, count: int) -> list[bytes]:
    """`count` workers staked and registered on the hub (a task goes to registered workers
    only), funded through anvil; their bytes32 keys."""
    keys = []
    for i in range(count):
        worker = _hub_worker(i)
        chain.w3.provider.make_request(
            RPCEndpoint("anvil_setBalance"), [worker.address, hex(10**20)]
        )
        hub.stake(worker, 10**18)
        hub.register(worker, address_to_bytes32(worker.address), 0)
        keys.append(address_to_bytes32(worker.address))
    return keys


def _assignment(hub: WorkerHubContract, job_id: int, workers: Sequence[bytes]) -> bytes:
    """TASK_ASSIGNED of ``job_id`` round 0 to ``workers`` (shard i to the i-th)."""
    return TaskAssigned(
        WORKERS,
        address_to_bytes32(hub.address),
        job_id=job_id,
        round=0,
        deadline=2**40,
        model_hash=b"\x01" * 32,
        config_hash=b"\x02" * 32,
        min_stake=0,
        stake_lock=0,
        release_at=2**40 + 86_400,
        tasks=tuple(Task(key, i) for i, key in enumerate(workers)),
    ).to_bytes()


def _receive_batches(
    hub: WorkerHubContract,
    market: str,
    relayer: Signer,
    guardians: Guardians,
    workers: Sequence[bytes],
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for k in (1, 8, 32):
        vaa = guardians.vaa(COORDINATOR, market, _assignment(hub, 100 + k, workers[:k]))
        used = int(hub.receive_message(relayer, vaa)["gasUsed"])
        figures[f"receive_task_assigned_k{k}"] = {"total": used, "per_worker": used // k}
    return figures


def _registered(market: JobMarketContract, key: bytes, payout: str) -> bytes:
    return WorkerRegistered(
        COORDINATOR,
        address_to_bytes32(market.address),
        0,
        key,
        10**8,
        address_to_bytes32(payout),
        0,
    ).to_bytes()


def _single_versus_batch(
    receiver: WorkerHubContract | JobMarketContract,
    owner: Signer,
    singles: Sequence[bytes],
    batch: Sequence[bytes],
) -> dict[str, int]:
    """Gas per message of `singles` delivered one transaction each and of `batch` in one."""
    single_gas = sum(int(receiver.receive_message(owner, v)["gasUsed"]) for v in singles)
    delivery = receiver.receive_batch(owner, batch)
    if len(delivery.applied) != len(batch):
        raise RuntimeError(f"the batch applied {len(delivery.applied)} of {len(batch)}")
    batch_gas = int(delivery.receipt["gasUsed"])
    return {
        "single_per_message": single_gas // len(singles),
        "batch_total": batch_gas,
        "batch_per_message": batch_gas // len(batch),
    }


def _batch_versus_single(
    hub: WorkerHubContract,
    market: JobMarketContract,
    owner: Signer,
    guardians: Guardians,
    workers: Sequence[bytes],
) -> dict[str, Any]:
    """32 one-task TASK_ASSIGNED (and 32 WORKER_REGISTERED) singly, then 32 more in a batch."""

    def assigned(i: int) -> bytes:
        payload = _assignment(hub, 5_000 + i, [workers[i % len(workers)]])
        return guardians.vaa(COORDINATOR, market.address, payload)

    def registered(i: int) -> bytes:
        payload = _registered(market, _key(6_000 + i), owner.address)
        return guardians.vaa(WORKERS, hub.address, payload)

    return {
        "receive_batch_task_assigned_k32": _single_versus_batch(
            hub, owner, [assigned(i) for i in range(32)], [assigned(100 + i) for i in range(32)]
        ),
        "receive_batch_worker_registered_k32": _single_versus_batch(
            market,
            owner,
            [registered(i) for i in range(32)],
            [registered(100 + i) for i in range(32)],
        ),
    }


def _finalize(
    market: JobMarketContract, hub: str, owner: Signer, guardians: Guardians, k: int
) -> dict[str, int]:
    recipients = (address_to_bytes32(owner.address),)  # where slashes would go
    spec = JobSpec(
        b"\x03" * 32, b"\x04" * 32, 1, k, 10**18, 0, (WORKERS,), slash_recipients=recipients
    )
    job_id = market.post_job(owner, spec).job_id
    tasks = [Task(_key(i), i) for i in range(k)]
    market.assign_tasks(owner, job_id, WORKERS, 2**40, tasks)
    commitments = [
        Commitment(t.worker_key, b"\x05" * 32, b"\x06" * 32, b"\x07" * 32, 100, 1) for t in tasks
    ]
    for start in range(0, k, MAX_BATCH):
        payload = UpdateCommitted(
            COORDINATOR,
            address_to_bytes32(market.address),
            job_id=job_id,
            round=0,
            commitments=tuple(commitments[start : start + MAX_BATCH]),
        )
        market.receive_message(owner, guardians.vaa(WORKERS, hub, payload.to_bytes()))
    results = [
        RoundResult(WORKERS, t.worker_key, Outcome.ACCEPTED, reward=10**18 // k) for t in tasks
    ]
    used = int(market.finalize_round(owner, job_id, 0, b"\x07" * 32, results)["gasUsed"])
    # What checking the rules costs, which the market no longer does per round: the work of a
    # disproof (ProposalChecker.checkProposal over the proposal, as an estimate).
    chains = market.worker_chains(job_id)
    ordered = in_lane_order(chains, results)
    check = market.proposal_checker().functions.checkProposal(
        job_id,
        0,
        sum(r.reward for r in ordered),
        results_root(job_id, 0, ordered),
        [r.entry() for r in ordered],
        market.round_tasks(job_id, 0).proposal_commits(chains),
    )
    checked = int(check.estimate_gas())
    settled = int(market.settle_round(owner, job_id, 0)["gasUsed"])  # challenge window is 0
    return {
        "total": used,
        "per_worker": used // k,
        "check_total": checked,
        "settle_total": settled,
    }


def measure() -> dict[str, Any]:
    """Deploy on a fresh anvil, perform each operation once, return gas figures."""
    Forge(CONTRACTS_DIR).build()
    signers = guardian_signers(GUARDIANS)
    addresses = ["0x" + s.address.hex() for s in signers]
    with Anvil(chain_id=31337) as anvil:
        chain = EvmChain(anvil.rpc_url)
        owner, worker = Signer(anvil.private_keys[0]), Signer(anvil.private_keys[1])
        guardians = Guardians(signers)
        core2 = deploy_message_core(chain, owner, COORDINATOR, addresses)
        core4 = deploy_message_core(chain, owner, WORKERS, addresses)
        single = deploy_message_core(chain, owner, COORDINATOR, addresses[:1])
        market = deploy_job_market(chain, owner, core2.address, owner.address, owner.address, 0)
        hub = deploy_worker_hub(chain, owner, core4.address, COORDINATOR, 0, 60)
        link(market, owner, hub, owner, Link(COORDINATOR, WORKERS, 32))

        figures: dict[str, Any] = {
            "publish_message": int(core2.publish_message(owner, 0, bytes(152), 202)["gasUsed"]),
        }
        one = guardians.vaa(WORKERS, hub.address, bytes(120), count=1)
        quorum = guardians.vaa(WORKERS, hub.address, bytes(120))
        figures["parse_and_verify_vm_1_of_1"] = single.contract.functions.parseAndVerifyVM(
            one
        ).estimate_gas()
        figures["parse_and_verify_vm_13_of_19"] = core2.contract.functions.parseAndVerifyVM(
            quorum
        ).estimate_gas()
        # The same body as a version-2 VAA on MessageCore (key 0 appended by governance), and
        # the v1 VAA on Wormhole's own core (its published bytecode).
        core2.append_threshold_key(owner, append_key_vaa(GUARDIANS).to_bytes())
        v2 = sign_threshold_vaa(parse_vaa(quorum).body, 0, threshold_key(GUARDIANS), range(QUORUM))
        figures["parse_and_verify_vm_threshold"] = core2.contract.functions.parseAndVerifyVM(
            v2.to_bytes()
        ).estimate_gas()
        wormhole = deploy_wormhole_core(chain, owner, COORDINATOR, addresses)
        figures["parse_and_verify_vm_13_of_19_wormhole_core"] = (
            wormhole.contract.functions.parseAndVerifyVM(quorum).estimate_gas()
        )
        # A ThresholdVerifier beside Wormhole's core (what receivers on that core verify
        # through to take version 2): the v2 VAA, and the v1 VAA it hands on to the core.
        beside = deploy_threshold_verifier(chain, owner, wormhole.address)
        beside.append_threshold_key(owner, append_key_vaa(GUARDIANS).to_bytes())
        figures["parse_and_verify_vm_threshold_beside_wormhole_core"] = (
            beside.contract.functions.parseAndVerifyVM(v2.to_bytes()).estimate_gas()
        )
        figures["parse_and_verify_vm_13_of_19_handed_to_wormhole_core"] = (
            beside.contract.functions.parseAndVerifyVM(quorum).estimate_gas()
        )
        workers = _hub_workers(chain, hub, 32)
        figures |= _receive_batches(hub, market.address, owner, guardians, workers)
        # _receive_batches assigned job 132 (100 + 32) to the 32 workers.
        figures["commit_signed_k32"] = _commit_signed(hub, owner, 132, 32)

        worker_key = address_to_bytes32(worker.address)
        assigned = TaskAssigned(
            WORKERS,
            address_to_bytes32(hub.address),
            7,
            0,
            2**40,
            b"\x01" * 32,
            b"\x02" * 32,
            0,
            0,
            2**40 + 86_400,
            (Task(worker_key, 0),),
        )
        hub.stake(worker, 10**18)
        hub.register(worker, worker_key, 0)
        hub.receive_message(owner, guardians.vaa(COORDINATOR, market.address, assigned.to_bytes()))
        receipt = hub.commit_update(worker, 7, 0, b"\x08" * 32, b"\x09" * 32, b"\x0a" * 32, 100, 1)
        figures["commit_update"] = int(receipt["gasUsed"])
        pending = hub.pending_commitments(7, 0)
        receipt = hub.publish_commitments(worker, 7, 0, pending)
        figures["publish_commitments_k1"] = int(receipt["gasUsed"])

        for i in range(32):
            registered = WorkerRegistered(
                COORDINATOR,
                address_to_bytes32(market.address),
                0,
                _key(i),
                10**8,
                address_to_bytes32(owner.address),
                0,
            )
            market.receive_message(
                owner, guardians.vaa(WORKERS, hub.address, registered.to_bytes())
            )
        for k in (8, 32):
            figures[f"finalize_round_k{k}"] = _finalize(market, hub.address, owner, guardians, k)
        figures |= _batch_versus_single(hub, market, owner, guardians, workers)
        # Last: its publication moves the core's sequences, which the rows above depend on.
        hub.receive_message(
            owner, guardians.vaa(COORDINATOR, market.address, _assignment(hub, 133, workers))
        )
        figures["commit_signed_and_publish_k32"] = _commit_signed(hub, owner, 133, 32, publish=True)
    return figures


def run() -> None:
    """Print the gas figures as one JSON line."""
    print(json.dumps({"benchmark": "gas", "unit": "gas", **measure()}))
