"""The worker SDK: what a GPU owner runs to earn rewards by training fedrelay jobs.

::

    chain = EvmWorkerChain(rpc_url, hub_address, private_key)
    async with CoordinatorClient(url, EvmSigner(private_key, chain=4)) as api:
        node = WorkerNode(chain, api, DigitsShards(8), StateStore(Path("worker.json")))
        await node.register(stake=10**18, payout=payout_bytes32)
        await node.run()  # until node.request_stop()

Public surface: :class:`WorkerNode`, the :class:`WorkerChain` protocol and its backends
(:class:`EvmWorkerChain` in :mod:`fedrelay.adapters.evm.worker_chain`, :class:`SolanaWorkerChain` in
:mod:`fedrelay.adapters.solana.worker_chain`), :class:`RewardAccount` (rewards on the coordinator
chain), shard
sources, the state store, progress reporters, key loading and the errors.
The demo's dishonest workers are in :mod:`fedrelay.demo.actors`; the in-process coordinator
that worker tests run against is in the tests' support package.
"""

from fedrelay.adapters.evm.rewards import RewardAccount
from fedrelay.ports.worker_chain import (
    CAPABILITY_CPU_REPLAY,
    CAPABILITY_CUDA,
    AssignedTask,
    ChainPoll,
    CommitReceipt,
    Outcome,
    SettledTask,
    StakeStatus,
    TaskKey,
    UpdateCommitment,
    WorkerChain,
)
from fedrelay.protocol.merkle import decode_proof, encode_proof
from fedrelay.worker.sdk.config import JobConfig, parse_job_config
from fedrelay.worker.sdk.errors import (
    ChainRejected,
    ChainUnavailable,
    JobConfigError,
    KeyFileError,
    SecureAggregationFailed,
    StateFileError,
    TaskRefused,
    WorkerChainError,
    WorkerError,
)
from fedrelay.worker.sdk.keys import load_evm_key, load_solana_keypair
from fedrelay.worker.sdk.node import StepReport, StopRequested, TrainedUpdate, WorkerNode
from fedrelay.worker.sdk.progress import ProgressReporter, RichProgress, SilentProgress
from fedrelay.worker.sdk.shards import DigitsShards, FixedShard, ShardSource, parse_shard
from fedrelay.worker.sdk.state import StateStore, TaskRecord, TaskStage, WorkerState

__all__ = [
    "CAPABILITY_CPU_REPLAY",
    "CAPABILITY_CUDA",
    "AssignedTask",
    "ChainPoll",
    "ChainRejected",
    "ChainUnavailable",
    "CommitReceipt",
    "DigitsShards",
    "FixedShard",
    "JobConfig",
    "JobConfigError",
    "KeyFileError",
    "Outcome",
    "ProgressReporter",
    "RewardAccount",
    "RichProgress",
    "SecureAggregationFailed",
    "SettledTask",
    "ShardSource",
    "SilentProgress",
    "StakeStatus",
    "StateFileError",
    "StateStore",
    "StepReport",
    "StopRequested",
    "TaskKey",
    "TaskRecord",
    "TaskRefused",
    "TaskStage",
    "TrainedUpdate",
    "UpdateCommitment",
    "WorkerChain",
    "WorkerChainError",
    "WorkerError",
    "WorkerNode",
    "WorkerState",
    "decode_proof",
    "encode_proof",
    "load_evm_key",
    "load_solana_keypair",
    "parse_job_config",
    "parse_shard",
]
