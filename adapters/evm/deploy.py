"""Deploy fedrelay's contracts from forge artifacts and connect them across chains."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fedrelay.adapters.evm.artifacts import load_artifact
from fedrelay.adapters.evm.chain import EvmChain, Signer
from fedrelay.adapters.evm.core import (
    MessageCoreContract,
    ThresholdVerifierContract,
    address_to_bytes32,
)
from fedrelay.adapters.evm.distributor import RewardDistributorContract
from fedrelay.adapters.evm.errors import EvmError
from fedrelay.adapters.evm.hub import WorkerHubContract
from fedrelay.adapters.evm.market import JobMarketContract
from fedrelay.protocol.wormhole.threshold import GOVERNANCE_CHAIN, GOVERNANCE_EMITTER

FINALIZED = 202
DEFAULT_GUARDIAN_SET_EXPIRY = 24 * 60 * 60
ZERO_ADDRESS = "0x" + "00" * 20


def deploy_contract(chain: EvmChain, signer: Signer, name: str, *args: Any) -> str:
    """Deploy contract `name` with constructor `args`; return its checksummed address."""
    artifact = load_artifact(name)
    return deploy_bytecode(chain, signer, name, list(artifact.abi), artifact.bytecode, *args)


def deploy_bytecode(
    chain: EvmChain, signer: Signer, name: str, abi: list[Any], bytecode: bytes | str, *args: Any
) -> str:
    """Deploy creation `bytecode` with constructor `args` (declared in `abi`); its address."""
    factory = chain.w3.eth.contract(abi=abi, bytecode=bytecode)
    receipt = chain.transact(signer, factory.constructor(*args))  # type: ignore[arg-type]
    address = receipt["contractAddress"]
    if address is None:
        raise EvmError(f"deploying {name} produced no contract address")
    return str(address)


def deploy_message_core(
    chain: EvmChain,
    signer: Signer,
    wormhole_chain_id: int,
    guardians: Sequence[str],
    guardian_set_expiry: int = DEFAULT_GUARDIAN_SET_EXPIRY,
) -> MessageCoreContract:
    """Deploy a MessageCore owned by `signer` with guardian set 0 = `guardians`."""
    keys = [chain.w3.to_checksum_address(g) for g in guardians]
    address = deploy_contract(
        chain, signer, "MessageCore", wormhole_chain_id, keys, guardian_set_expiry, signer.address
    )
    return MessageCoreContract(chain, address)


def deploy_threshold_verifier(
    chain: EvmChain,
    signer: Signer,
    core: str,
    governance_chain: int = GOVERNANCE_CHAIN,
    governance_emitter: bytes = GOVERNANCE_EMITTER,
) -> ThresholdVerifierContract:
    """Deploy a ThresholdVerifier beside the core at `core`, which signs its governance VAAs
    (emitter `governance_chain` / `governance_emitter`: Wormhole's by default). It holds no key
    until one is appended (:meth:`ThresholdVerifierContract.append_threshold_key`)."""
    address = deploy_contract(
        chain,
        signer,
        "ThresholdVerifier",
        chain.w3.to_checksum_address(core),
        governance_chain,
        governance_emitter,
    )
    return ThresholdVerifierContract(chain, address)


def deploy_job_market(
    chain: EvmChain,
    signer: Signer,
    core: str,
    aggregator: str,
    challenger: str,
    challenge_window: int,
    consistency_level: int = FINALIZED,
    verifier: str | None = None,
) -> JobMarketContract:
    """Deploy a JobMarket owned by `signer` on top of the core at `core`; `verifier` verifies its
    incoming VAAs (None: the core; a ThresholdVerifier beside a core that takes version 1 only)."""
    w3 = chain.w3
    address = deploy_contract(
        chain,
        signer,
        "JobMarket",
        w3.to_checksum_address(core),
        w3.to_checksum_address(verifier or ZERO_ADDRESS),
        consistency_level,
        signer.address,
        w3.to_checksum_address(aggregator),
        w3.to_checksum_address(challenger),
        challenge_window,
    )
    return JobMarketContract(chain, address)


def deploy_reward_distributor(
    chain: EvmChain,
    signer: Signer,
    market: str,
    updater: str,
    disputer: str,
    dispute_window: int,
) -> RewardDistributorContract:
    """Deploy a RewardDistributor owned by `signer` that draws on the JobMarket at `market`;
    `updater` proposes roots, `disputer` may veto one within `dispute_window` seconds. The market's
    owner then points the market at it (:meth:`JobMarketContract.set_rewards_account`)."""
    w3 = chain.w3
    address = deploy_contract(
        chain,
        signer,
        "RewardDistributor",
        w3.to_checksum_address(market),
        signer.address,
        w3.to_checksum_address(updater),
        w3.to_checksum_address(disputer),
        dispute_window,
    )
    return RewardDistributorContract(chain, address)


def deploy_worker_hub(
    chain: EvmChain,
    signer: Signer,
    core: str,
    coordinator_chain: int,
    min_stake: int,
    unbonding_delay: int,
    consistency_level: int = FINALIZED,
    verifier: str | None = None,
) -> WorkerHubContract:
    """Deploy a WorkerHub owned by `signer` on top of the core at `core`; `verifier` as for
    :func:`deploy_job_market`."""
    address = deploy_contract(
        chain,
        signer,
        "WorkerHub",
        chain.w3.to_checksum_address(core),
        chain.w3.to_checksum_address(verifier or ZERO_ADDRESS),
        consistency_level,
        signer.address,
        coordinator_chain,
        min_stake,
        unbonding_delay,
    )
    return WorkerHubContract(chain, address)


@dataclass(frozen=True)
class Link:
    """A JobMarket and a WorkerHub made peers of each other."""

    coordinator_chain: int
    worker_chain: int
    max_batch: int


def link(
    market: JobMarketContract,
    market_owner: Signer,
    hub: WorkerHubContract,
    hub_owner: Signer,
    link: Link,
) -> None:
    """Make `market` and `hub` trust each other as emitter and target; set the batch size."""
    market.set_peer(market_owner, link.worker_chain, address_to_bytes32(hub.address))
    market.set_max_batch(market_owner, link.worker_chain, link.max_batch)
    hub.set_peer(hub_owner, link.coordinator_chain, address_to_bytes32(market.address))
