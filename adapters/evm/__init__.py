"""fedrelay's EVM contracts from Python: artifacts, deployment, typed wrappers, decoded reverts.

Public surface:

- :class:`EvmChain` (a web3 connection with revert decoding) and :class:`Signer` (a key).
- :class:`MessageCoreContract`, :class:`ThresholdVerifierContract`, :class:`JobMarketContract`,
  :class:`WorkerHubContract`.
- ``deploy_*`` functions and :func:`link` in :mod:`fedrelay.adapters.evm.deploy`.
- Errors: :class:`EvmError`, :class:`ContractRevert`, :class:`AlreadyConsumed`, :class:`InvalidVaa`.
"""

from fedrelay.adapters.evm.artifacts import ContractArtifact, load_artifact
from fedrelay.adapters.evm.chain import EvmChain, Signer
from fedrelay.adapters.evm.core import (
    GuardianSetInfo,
    MessageCoreContract,
    PublishedMessage,
    ThresholdVerifierContract,
    VerifiedVm,
    address_to_bytes32,
)
from fedrelay.adapters.evm.deploy import (
    Link,
    deploy_job_market,
    deploy_message_core,
    deploy_reward_distributor,
    deploy_threshold_verifier,
    deploy_worker_hub,
    link,
)
from fedrelay.adapters.evm.distributor import DistributorRoot, RewardDistributorContract
from fedrelay.adapters.evm.errors import (
    AlreadyConsumed,
    ArtifactNotFound,
    ContractRevert,
    EvmError,
    InvalidVaa,
    TransactionFailed,
)
from fedrelay.adapters.evm.events import ContractEvent
from fedrelay.adapters.evm.hub import (
    HubAssignment,
    HubSettlement,
    HubTask,
    HubTaskState,
    Staker,
    WorkerHubContract,
    hub_assignments,
    hub_settlements,
)
from fedrelay.adapters.evm.market import (
    NATIVE,
    Commitment,
    Job,
    JobMarketContract,
    JobSpec,
    JobStatus,
    PostedJob,
    RegisteredWorker,
    Round,
    RoundPhase,
    RoundResult,
    TaskState,
)
from fedrelay.adapters.evm.reverts import RevertDecoder

__all__ = [
    "NATIVE",
    "AlreadyConsumed",
    "ArtifactNotFound",
    "Commitment",
    "ContractArtifact",
    "ContractEvent",
    "ContractRevert",
    "DistributorRoot",
    "EvmChain",
    "EvmError",
    "GuardianSetInfo",
    "HubAssignment",
    "HubSettlement",
    "HubTask",
    "HubTaskState",
    "InvalidVaa",
    "Job",
    "JobMarketContract",
    "JobSpec",
    "JobStatus",
    "Link",
    "MessageCoreContract",
    "PostedJob",
    "PublishedMessage",
    "RegisteredWorker",
    "RevertDecoder",
    "RewardDistributorContract",
    "Round",
    "RoundPhase",
    "RoundResult",
    "Signer",
    "Staker",
    "TaskState",
    "ThresholdVerifierContract",
    "TransactionFailed",
    "VerifiedVm",
    "WorkerHubContract",
    "address_to_bytes32",
    "deploy_job_market",
    "deploy_message_core",
    "deploy_reward_distributor",
    "deploy_threshold_verifier",
    "deploy_worker_hub",
    "hub_assignments",
    "hub_settlements",
    "link",
    "load_artifact",
]
