"""A JobMarket on anvil with registered workers and a proposed round, for the tests of what
follows a proposal (settling, disputes, the rewards it credits)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.evm import (
    EvmChain,
    JobMarketContract,
    JobSpec,
    RoundResult,
    Signer,
    address_to_bytes32,
    deploy_job_market,
    deploy_message_core,
)
from fedrelay.adapters.evm.market import in_lane_order, results_root
from fedrelay.protocol.wormhole import (
    Commitment,
    Outcome,
    Task,
    UpdateCommitted,
    WorkerRegistered,
)
from fedrelay.protocol.wormhole.payloads import Payload
from support.market import Emitter, funded_evm_key
from support.wormhole import evm_address, guardian_signers

COORDINATOR_CHAIN = 2
WORKER_CHAIN = 4
WORKER_EMITTER = evm_address("results root hub")
ETH = 10**18
WORKERS = 5
EVIDENCE = b"\xee" * 32
MAX_BATCH = 2
MODEL = b"\x05" * 32  # the model hash the tests propose


def funded(anvil: Anvil) -> Signer:
    return Signer(funded_evm_key(anvil))


@dataclass
class Market:
    anvil: Anvil
    chain: EvmChain
    market: JobMarketContract
    owner: Signer
    aggregator: Signer
    payouts: list[Signer]
    emitter: Emitter = field(default_factory=lambda: Emitter(WORKER_CHAIN, WORKER_EMITTER))

    def deliver(self, payload: Payload) -> None:
        """Sign ``payload`` as the worker hub's emitter and deliver it, as the relayer does."""
        self.market.receive_message(self.owner, self.emitter.vaa(payload))

    def key(self, i: int) -> bytes:
        return bytes([0x40 + i]) * 32

    def collecting_round(self, committed: int = WORKERS) -> int:
        """A job whose round 0 assigned every worker and received the commitments of the first
        ``committed``; not proposed yet."""
        target = address_to_bytes32(self.market.address)
        spec = JobSpec(
            model_hash=b"\x01" * 32,
            config_hash=b"\x02" * 32,
            num_rounds=1,
            workers_per_round=WORKERS,
            reward_per_round=WORKERS * ETH,
            min_stake=ETH,
            worker_chains=(WORKER_CHAIN,),
            slash_recipients=(address_to_bytes32(self.owner.address),),
        )
        job_id = self.market.post_job(self.owner, spec).job_id
        deadline = int(self.chain.w3.eth.get_block("latest")["timestamp"]) + 600
        tasks = [Task(self.key(i), i) for i in range(WORKERS)]
        for start in range(0, WORKERS, MAX_BATCH):
            chunk = tasks[start : start + MAX_BATCH]
            self.market.assign_tasks(self.aggregator, job_id, WORKER_CHAIN, deadline, chunk)
        commitments = [
            Commitment(self.key(i), bytes([i + 1]) * 32, b"\x04" * 32, b"\x06" * 32, 100, 1000)
            for i in range(committed)
        ]
        # Several batches, as a worker chain publishes them while commitments keep coming.
        for start in range(0, committed, 7):
            self.deliver(
                UpdateCommitted(
                    target_chain=COORDINATOR_CHAIN,
                    target_address=target,
                    job_id=job_id,
                    round=0,
                    commitments=tuple(commitments[start : start + 7]),
                )
            )
        return job_id

    def honest_results(self) -> list[RoundResult]:
        """Worker 1 slashed, the others accepted."""
        results = [
            RoundResult(WORKER_CHAIN, self.key(i), Outcome.ACCEPTED, reward=ETH // 2)
            for i in range(WORKERS)
        ]
        results[1] = RoundResult(
            WORKER_CHAIN, self.key(1), Outcome.SLASHED, fault=1, evidence=EVIDENCE
        )
        return results

    def propose_unchecked(
        self,
        job_id: int,
        results: list[RoundResult],
        total: int | None = None,
        root: bytes | None = None,
    ) -> None:
        """What a dishonest aggregator sends: ``finalizeRound`` of round 0 without the
        binding's check."""
        ordered = in_lane_order((WORKER_CHAIN,), results)
        function = self.market.contract.functions.finalizeRound(
            job_id,
            0,
            MODEL,
            sum(r.reward for r in ordered) if total is None else total,
            results_root(job_id, 0, ordered) if root is None else root,
            [r.entry() for r in ordered],
        )
        self.chain.transact(self.aggregator, function)

    def proposed_round(self) -> tuple[int, list[RoundResult]]:
        """A job whose round 0 is proposed: worker 1 slashed, the others accepted."""
        job_id = self.collecting_round()
        results = self.honest_results()
        self.market.finalize_round(self.aggregator, job_id, 0, MODEL, results)
        return job_id, results


def build_market(coordinator_chain: Anvil) -> Market:
    """A JobMarket (challenge window one hour) with WORKERS registered workers on chain 4."""
    chain = EvmChain(coordinator_chain.rpc_url)
    owner, aggregator = funded(coordinator_chain), funded(coordinator_chain)
    guardian = "0x" + guardian_signers(1)[0].address.hex()
    core = deploy_message_core(chain, owner, COORDINATOR_CHAIN, [guardian])
    # A challenge window of an hour: disputes happen inside it, settling waits for its end.
    market = deploy_job_market(
        chain, owner, core.address, aggregator.address, aggregator.address, 3600
    )
    market.set_peer(owner, WORKER_CHAIN, WORKER_EMITTER)
    market.set_max_batch(owner, WORKER_CHAIN, MAX_BATCH)
    m = Market(coordinator_chain, chain, market, owner, aggregator, [])
    target = address_to_bytes32(market.address)
    for i in range(WORKERS):
        payout = funded(coordinator_chain)
        m.payouts.append(payout)
        m.deliver(
            WorkerRegistered(
                target_chain=COORDINATOR_CHAIN,
                target_address=target,
                job_id=0,
                worker_key=m.key(i),
                stake=2 * ETH,
                payout_address=address_to_bytes32(payout.address),
                capabilities=2,
            )
        )
    return m


def past_window(m: Market) -> None:
    m.anvil.rpc("evm_increaseTime", [3601])
    m.anvil.rpc("evm_mine", [])
