"""fedrelay's contracts on two anvil chains, deployed and linked as peers, for local runs.

The coordinator chain (Wormhole chain 2) gets a MessageCore and a JobMarket, the worker chain
(Wormhole chain 4) a MessageCore and a WorkerHub; both cores trust the given guardians. The
relayer benchmark (``fedrelay bench relayer``) deploys with it, and the relayer's integration
tests through :mod:`fedrelay.adapters.evm.testing`. Keys and guardians are the anvils' and the
devnet's public test keys: nothing here is for a real network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedrelay.adapters.devnet.guardians import append_key_vaa
from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.evm.chain import EvmChain, Signer
from fedrelay.adapters.evm.deploy import (
    Link,
    deploy_job_market,
    deploy_message_core,
    deploy_worker_hub,
    link,
)
from fedrelay.adapters.evm.hub import WorkerHubContract
from fedrelay.adapters.evm.market import JobMarketContract

COORDINATOR_CHAIN = 2
WORKER_CHAIN = 4


@dataclass(frozen=True)
class EvmDeployment:
    """Both chains with their contracts, linked as peers."""

    coordinator: Anvil
    workers: Anvil
    coordinator_chain: EvmChain
    worker_chain: EvmChain
    market: JobMarketContract
    hub: WorkerHubContract

    def chains_yaml(self, *, coordinator_rpc: str | None = None, worker_rpc: str | None = None,
                    worker_finality: str | int = 0) -> str:  # fmt: skip
        """The relayer's chains file for both chains (docs/operations.md, section 1).

        Args:
            coordinator_rpc: The coordinator chain's RPC URL (default: its anvil).
            worker_rpc: The worker chain's RPC URL (default: its anvil).
            worker_finality: The worker chain's finality (the coordinator's is ``latest``).
        """
        return (
            "chains:\n"
            f"  - name: coordinator\n    wormhole_chain_id: {COORDINATOR_CHAIN}\n    kind: evm\n"
            f'    rpc_url: "{coordinator_rpc or self.coordinator.rpc_url}"\n'
            f'    address: "{self.market.address}"\n    finality: latest\n'
            f"  - name: worker-evm\n    wormhole_chain_id: {WORKER_CHAIN}\n    kind: evm\n"
            f'    rpc_url: "{worker_rpc or self.workers.rpc_url}"\n'
            f'    address: "{self.hub.address}"\n    finality: {worker_finality}\n'
        )


def deploy_pair(
    coordinator: Anvil,
    workers: Anvil,
    guardians: Sequence[str],
    challenge_window: int = 60,
    threshold_key: bool = False,
) -> EvmDeployment:
    """Deploy and link the contracts on both chains (owner: each anvil's account 0).

    The aggregator is the coordinator chain's account 1 and the challenger its account 2. With
    `threshold_key`, both cores also take the devnet threshold key of the devnet guardians
    ``0..len(guardians)-1`` as key 0 (:func:`~fedrelay.adapters.devnet.guardians.append_key_vaa`),
    so that version-2 VAAs verify.
    """
    c_chain, w_chain = EvmChain(coordinator.rpc_url), EvmChain(workers.rpc_url)
    c_owner, w_owner = Signer(coordinator.private_keys[0]), Signer(workers.private_keys[0])
    c_core = deploy_message_core(c_chain, c_owner, COORDINATOR_CHAIN, guardians)
    w_core = deploy_message_core(w_chain, w_owner, WORKER_CHAIN, guardians)
    if threshold_key:
        governance = append_key_vaa(len(guardians)).to_bytes()
        c_core.append_threshold_key(c_owner, governance)
        w_core.append_threshold_key(w_owner, governance)
    market = deploy_job_market(
        c_chain, c_owner, c_core.address,
        aggregator=coordinator.addresses[1], challenger=coordinator.addresses[2],
        challenge_window=challenge_window,
    )  # fmt: skip
    hub = deploy_worker_hub(
        w_chain, w_owner, w_core.address, coordinator_chain=COORDINATOR_CHAIN, min_stake=10**18,
        unbonding_delay=3600,
    )  # fmt: skip
    link(market, c_owner, hub, w_owner, Link(COORDINATOR_CHAIN, WORKER_CHAIN, max_batch=16))
    return EvmDeployment(coordinator, workers, c_chain, w_chain, market, hub)
