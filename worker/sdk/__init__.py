"""The worker SDK: what a GPU owner runs to earn rewards by training fedrelay jobs.

::

    chain = EvmWorkerChain(rpc_url, hub_address, private_key)
    async with CoordinatorClient(url, EvmSigner(private_key, chain=4)) as api:
        node = WorkerNode(chain, api, FileSource(Path("my-data")), StateStore(Path("worker.json")))
        await node.register(stake=10**18, payout=payout_bytes32)
        await node.run()  # until node.request_stop()

A task on published data trains the shard its task names of the job's partition; the node's data
source (``None``, :class:`FileSource`, your own :class:`ExampleSource`) is the worker's own data
for jobs that train on it, checked against the job's schema.

Public surface: :class:`WorkerNode`, the :class:`WorkerChain` protocol it drives, data sources,
the state store, progress reporters, key loading and the errors. The SDK names no chain
backend: :mod:`fedrelay.worker.process` (the worker's composition root) builds one
(:class:`~fedrelay.adapters.evm.worker_chain.EvmWorkerChain`,
:class:`~fedrelay.adapters.solana.worker_chain.SolanaWorkerChain`) and the coordinator chain's
:class:`~fedrelay.adapters.evm.rewards.RewardAccount`, so an embedder that brings its own chain
imports neither web3 nor solana through the SDK. Importing the SDK does not load torch either;
training loads it.
"""

from fedrelay.ports.worker_chain import (
    CAPABILITY_CPU_REPLAY,
    CAPABILITY_CUDA,
    AssignedTask,
    ChainPoll,
    CommitReceipt,
    OfferRecording,
    Outcome,
    SettledTask,
    StakeStatus,
    TaskKey,
    UpdateCommitment,
    WorkerChain,
)
from fedrelay.protocol.merkle import decode_proof, encode_proof
from fedrelay.protocol.offers import CommitmentOffer
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
from fedrelay.worker.sdk.shards import (
    DigitsShards,
    ExampleSource,
    FileSource,
    FixedShard,
    InMemorySource,
    ShardSource,
)
from fedrelay.worker.sdk.state import StateStore, TaskRecord, TaskStage, WorkerState

__all__ = [
    "CAPABILITY_CPU_REPLAY",
    "CAPABILITY_CUDA",
    "AssignedTask",
    "ChainPoll",
    "ChainRejected",
    "ChainUnavailable",
    "CommitReceipt",
    "CommitmentOffer",
    "DigitsShards",
    "ExampleSource",
    "FileSource",
    "FixedShard",
    "InMemorySource",
    "JobConfig",
    "JobConfigError",
    "KeyFileError",
    "OfferRecording",
    "Outcome",
    "ProgressReporter",
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
]
