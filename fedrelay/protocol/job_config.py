"""A job's configuration blob: strategy, secure aggregation, verification, model, data, training.

The job poster uploads the canonical JSON of :class:`JobConfig` to the blob store and puts its
keccak256 on chain as the job's ``config_hash``; TASK_ASSIGNED carries the same hash to every
worker. This is the one definition of the
job configuration: the coordinator, the worker SDK and the CLI all parse it with
:meth:`JobConfig.from_bytes`, which refuses unknown keys (a worker must not train under a field
it does not understand, or its replayed transcript would differ). The
:class:`~fedrelay.protocol.training_config.TrainingConfig` fields sit at the top level; every task
of a job trains with that one configuration on its own shard, and the coordinator replays a
challenged segment with it (:attr:`JobConfig.training`).

The slash policy is not here: it is part of the job on chain (``rejectedSlash`` and
``missedSlash`` in JobMarket's JobSpec, set by ``fedrelay job post``), which alone decides the
amounts, so there is one source of truth. A blob that still names ``rejected_slash``,
``slash_missing`` or ``missing_slash`` is refused with a message saying where they went.

The model (:mod:`fedrelay.protocol.model_spec`) and the local training recipe (``optimizer``,
``schedule``, ``grad_clip_norm``, ``proximal_mu``, ``local_epochs``;
:mod:`fedrelay.protocol.training_config`) are declared here too. The top-level ``momentum`` of
earlier blobs is refused with a message: it is ``optimizer.momentum`` now.

Example (JSON)::

    {"version": 1, "seed": 7, "steps": 8, "checkpoint_every": 4, "batch_size": 16,
     "learning_rate": 0.1, "optimizer": {"name": "sgd", "momentum": 0.9},
     "schedule": {"kind": "cosine", "warmup_steps": 2}, "strategy": "fedavg",
     "challenge_rate": 0.5, "model": {"kind": "mlp", "hidden": 64},
     "data": {"dataset": "digits", "shards": 4}}
"""

from __future__ import annotations

import json
from typing import Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fedrelay.protocol.challenges import cheating_pays
from fedrelay.protocol.data_spec import (
    DataSource,
    EvaluationSpec,
    PublishedData,
    WorkerData,
    default_source,
)
from fedrelay.protocol.data_spec import (  # the published data spec's older name, kept
    DataSpec as DataSpec,
)
from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.model_spec import MlpSpec, ModelSpec, with_default_kind
from fedrelay.protocol.randomness import DEFAULT_RANDOMNESS, LEGACY_RANDOMNESS, RandomnessSource
from fedrelay.protocol.rounds import RoundPolicy
from fedrelay.protocol.training_config import (
    ConstantSchedule,
    OptimizerSpec,
    ScheduleSpec,
    SgdSpec,
    TrainingConfig,
)

StrategyName = Literal[
    "fedavg", "fedavgm", "fedadam", "fedyogi", "median", "trimmed_mean", "krum", "multi_krum"
]
_SECURE_STRATEGIES = {"fedavg", "fedavgm", "fedadam", "fedyogi"}


_MOVED_TO_CHAIN = ("rejected_slash", "slash_missing", "missing_slash")
_MOVED_TO_OPTIMIZER = {"momentum": "optimizer.momentum"}
_DEFAULT_STEPS = 10
_BLOB = "blob"  # validation context: parsing a posted blob (JobConfig.from_bytes)

__all__ = ["DataSpec", "InvalidJobConfig", "JobConfig", "MlpSpec", "ModelSpec"]


class InvalidJobConfig(ValueError):
    """The configuration blob is not a valid job configuration; the message says what is wrong."""


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JobConfig(_Part):
    """Everything the coordinator and the workers need to know about a job beyond the chain.

    Attributes:
        version: Format version (1).
        seed: Training seed of every task (``TrainingConfig.seed``).
        steps: Local optimizer steps per task.
        checkpoint_every: Steps between transcript checkpoints.
        batch_size: Examples per step.
        local_epochs: When set, a task's steps are ``local_epochs * ceil(n / batch_size)``
            with ``n`` its example count (``steps`` is then unused and left at its default).
        learning_rate: Local base step size (the schedule multiplies it).
        optimizer: The local optimizer (SGD, Adam, AdamW) and its settings.
        schedule: The learning-rate schedule over a task's steps.
        grad_clip_norm: Largest global L2 norm of a local gradient (None: no clipping).
        proximal_mu: FedProx's proximal coefficient (0: plain local training).
        data_hash: keccak256 (hex) of the data every task must train on, or empty (each
            worker's shard differs, so a multi-worker job leaves it empty).
        strategy: Aggregation strategy name.
        server_learning_rate: Server step of FedAvgM, FedAdam and FedYogi.
        trim_beta: Fraction trimmed at each end by ``trimmed_mean``.
        byzantine: Assumed attackers for Krum and Multi-Krum.
        keep: Updates kept by Multi-Krum.
        clip_norm: Per-update L2 clipping (None: no clipping).
        secure_aggregation: Whether workers mask their updates (only the sum is visible).
        secagg_threshold: Shares needed to unmask (required under secure aggregation).
        challenge_rate: Fraction of committed transcripts challenged each round (0..1).
        challenge_segments: Distinct segments opened and replayed per challenged task (q,
            1..segments); checkpoint 0 and the final checkpoint are opened besides.
        answer_seconds: Time a challenged worker has to answer.
        reveal_seconds: Time workers have to send unmasking reveals under secure aggregation.
        replay_tolerance: Largest absolute replay difference accepted (None: bit-exact).
        collect_seconds: Time from assignment to the round's deadline.
        min_updates: Commitments needed to aggregate.
        sample_weight: Weight of sample counts against loss reduction in scores (0..1).
        model: The model (a zoo model or a bundle, :mod:`fedrelay.protocol.model_spec`).
        data: Published data and its shards, or the workers' own data and its schema
            (:mod:`fedrelay.protocol.data_spec`).
        evaluation: The poster's evaluation set and metric.
        randomness: Where the round's selection and challenge seeds come from: the coordinator
            chain's beacon (``prevrandao``) or its block hashes (``block_hash``, grindable by a
            single sequencer); :mod:`fedrelay.protocol.randomness`. A blob that does not name
            it was posted before it existed and keeps ``block_hash``.
        randomness_lag_seconds: How long before its block a ``PREVRANDAO`` value may be known
            (:mod:`fedrelay.protocol.randomness`): 0 only where a block's value is drawn as the
            block is made (the devnet's anvil); at least 24 on Ethereum, where a block's value
            is its parent's mix, known a slot (12 s) ahead; the sequencer drift on an OP-stack
            rollup (1,800). A seed then comes from the first block at least this long after
            the moment it must not be known before. Only with ``prevrandao``.
    """

    version: Literal[1] = 1
    seed: int = Field(default=0, ge=0, lt=2**63)
    steps: int = Field(default=10, ge=1, le=1_000_000)
    checkpoint_every: int = Field(default=5, ge=1)
    batch_size: int = Field(default=16, ge=1)
    local_epochs: int | None = Field(default=None, ge=1, le=10_000)
    learning_rate: float = Field(default=0.1, gt=0)
    optimizer: OptimizerSpec = SgdSpec()
    schedule: ScheduleSpec = ConstantSchedule()
    grad_clip_norm: float | None = Field(default=None, gt=0)
    proximal_mu: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    data_hash: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")
    strategy: StrategyName = "fedavg"
    server_learning_rate: float = Field(default=1.0, gt=0)
    trim_beta: float = Field(default=0.2, ge=0, lt=0.5)
    byzantine: int = Field(default=1, ge=0)
    keep: int = Field(default=1, ge=1)
    clip_norm: float | None = Field(default=None, gt=0)
    secure_aggregation: bool = False
    secagg_threshold: int | None = Field(default=None, ge=1)
    challenge_rate: float = Field(default=0.5, ge=0, le=1)
    challenge_segments: int = Field(default=1, ge=1)
    answer_seconds: int = Field(default=60, ge=1)
    reveal_seconds: int = Field(default=60, ge=1)
    replay_tolerance: float | None = Field(default=None, ge=0)
    collect_seconds: int = Field(default=300, ge=1)
    min_updates: int = Field(default=1, ge=1)
    sample_weight: float = Field(default=0.0, ge=0, le=1)
    model: ModelSpec = MlpSpec()
    data: DataSource = PublishedData()
    evaluation: EvaluationSpec = EvaluationSpec()
    randomness: RandomnessSource = DEFAULT_RANDOMNESS
    randomness_lag_seconds: int = Field(default=0, ge=0, le=86_400)

    @model_validator(mode="before")
    @classmethod
    def _no_slash_amounts(cls, data: object) -> object:
        if isinstance(data, dict):
            moved = sorted(k for k in _MOVED_TO_CHAIN if k in data)
            if moved:
                raise ValueError(
                    f"{', '.join(moved)} are no longer part of the job configuration: the slash "
                    "policy is the job's on chain (fedrelay job post --rejected-slash "
                    "--missed-slash)"
                )
            for old, new in _MOVED_TO_OPTIMIZER.items():
                if old in data:
                    raise ValueError(f"{old} moved to {new}")
        return data

    @model_validator(mode="before")
    @classmethod
    def _posted_randomness(cls, data: object, info: ValidationInfo) -> object:
        # A blob posted before ``randomness`` existed was drawn from block hashes.
        blob = bool(info.context and info.context.get(_BLOB))
        if blob and isinstance(data, dict) and "randomness" not in data:
            return {**data, "randomness": LEGACY_RANDOMNESS}
        return data

    @field_validator("model", mode="before")
    @classmethod
    def _model_kind(cls, value: object) -> object:
        return with_default_kind(value)

    @model_validator(mode="before")
    @classmethod
    def _data_source(cls, data: object) -> object:
        # A configuration written before worker-owned data describes published data.
        if isinstance(data, dict) and "data" in data:
            return {**data, "data": default_source(data["data"])}
        return data

    @model_validator(mode="after")
    def _evaluated(self) -> Self:
        if not self.evaluation.data_hash and not self.publishes_digits:
            raise ValueError(
                "evaluation.data_hash is required: only the published digits job is evaluated "
                "on the digits' held-out split (fedrelay job post --eval-data FILE)"
            )
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.secure_aggregation and self.strategy not in _SECURE_STRATEGIES:
            raise ValueError(
                f"strategy {self.strategy!r} needs individual updates; under secure aggregation "
                f"use one of {sorted(_SECURE_STRATEGIES)}"
            )
        if self.secure_aggregation and self.secagg_threshold is None:
            raise ValueError("secure aggregation needs secagg_threshold (shares to unmask)")
        if self.local_epochs is not None and self.steps != _DEFAULT_STEPS:
            raise ValueError(
                f"steps {self.steps} and local_epochs {self.local_epochs} both set: with "
                "local_epochs a task's steps follow from its example count; leave steps out"
            )
        if self.randomness != "prevrandao" and self.randomness_lag_seconds:
            raise ValueError(
                f"randomness_lag_seconds {self.randomness_lag_seconds} applies to a beacon: "
                f"with randomness {self.randomness!r} leave it out"
            )
        if self.local_epochs is not None:
            return self  # segments depend on each task's examples (training_config(examples))
        segments = self.training_config().segments
        if self.challenge_segments > segments:
            raise ValueError(
                f"challenge_segments {self.challenge_segments} exceeds the transcript's "
                f"{segments} segments (steps {self.steps} / checkpoint_every "
                f"{self.checkpoint_every})"
            )
        return self

    # --- the blob -------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The canonical configuration blob: compact JSON with sorted keys."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
        ).encode()

    def config_hash(self) -> bytes:
        """keccak256 of :meth:`to_bytes`, the job's ``config_hash`` on chain."""
        return keccak256(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> JobConfig:
        """Parse a configuration blob.

        Raises:
            InvalidJobConfig: The bytes are not JSON of a valid configuration.
        """
        try:
            return cls.model_validate_json(data, context={_BLOB: True})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}"
                for e in exc.errors()
            )
            raise InvalidJobConfig(f"invalid job configuration: {problems}") from None

    @property
    def publishes_digits(self) -> bool:
        """Whether the job trains on the published digits data."""
        return isinstance(self.data, PublishedData) and self.data.dataset == "digits"

    @property
    def worker_data(self) -> WorkerData | None:
        """The workers' own data spec, or None for a job on published data."""
        return self.data if isinstance(self.data, WorkerData) else None

    @property
    def published_data(self) -> PublishedData | None:
        """The published data spec, or None for a job on the workers' own data."""
        return self.data if isinstance(self.data, PublishedData) else None

    # --- what follows from it ------------------------------------------------------------------

    def policy(
        self, total_rounds: int, challenge_window: int = 0, missed_slash: int = 0
    ) -> RoundPolicy:
        """The round policy of a job with ``total_rounds`` rounds.

        Args:
            total_rounds: The job's rounds.
            challenge_window: Seconds a proposal stays open to challenge.
            missed_slash: The job's on-chain slash for a missed deadline (8 decimals): a worker
                that misses the deadline is slashed (fault MISSED) when it is above 0, else only
                dropped.
        """
        return RoundPolicy(
            total_rounds=total_rounds,
            min_updates=self.min_updates,
            challenge_window=challenge_window,
            slash_missing=missed_slash > 0,
            missing_slash=missed_slash,
        )

    def update_weight(self, examples: int) -> int:
        """The weight of an update trained on ``examples`` examples (FedAvg's, and a masked
        input's count): that number on published data, where the coordinator rebuilds the shard
        and checks it, and on the workers' own data replayed by spot reveals, where it is the
        committed count the opened examples are checked against; 1 when the poster turned
        replays of private data off (``replay: "none"``): nothing checks such a count."""
        private = self.worker_data
        return 1 if private is not None and private.replay == "none" else examples

    def task_steps(self, examples: int | None = None) -> int:
        """A task's optimizer steps: ``steps``, or with ``local_epochs`` that many passes over
        the task's ``examples`` (``ceil(examples / batch_size)`` steps each).

        Raises:
            ValueError: ``local_epochs`` is set and ``examples`` is not given (or below 1).
        """
        if self.local_epochs is None:
            return self.steps
        if examples is None or examples < 1:
            raise ValueError(
                f"local_epochs {self.local_epochs}: a task's steps follow from its example "
                f"count, which is needed (got {examples})"
            )
        return self.local_epochs * -(-examples // self.batch_size)

    def training_config(self, examples: int | None = None) -> TrainingConfig:
        """The training configuration of a task with ``examples`` examples (what a worker
        trains and the coordinator replays); ``examples`` matters only with ``local_epochs``.

        Raises:
            ValueError: ``local_epochs`` is set and ``examples`` is not given.
        """
        return TrainingConfig(
            seed=self.seed,
            steps=self.task_steps(examples),
            checkpoint_every=self.checkpoint_every,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            data_hash=self.data_hash,
            optimizer=self.optimizer,
            schedule=self.schedule,
            grad_clip_norm=self.grad_clip_norm,
            proximal_mu=self.proximal_mu,
        )

    def cheating_pays(
        self,
        reward_per_round: int,
        reward_decimals: int,
        rejected_slash: int,
        examples: int | None = None,
    ) -> str | None:
        """Why a worker would gain by cheating in a job paying ``reward_per_round``, or None.

        See :func:`fedrelay.protocol.challenges.cheating_pays` (units and the assumption that
        stake and reward are of comparable value). Under secure aggregation transcripts are
        not challenged (opening checkpoints would reveal the masked update), so there is no
        detection probability to weigh; what such a round pays is bounded by its pay rule
        instead.

        Args:
            reward_per_round: The job's reward per round, in the token's base units.
            reward_decimals: The token's decimals (18 for the native token).
            rejected_slash: The job's on-chain slash of a rejected update (8 decimals).
            examples: With ``local_epochs``, the largest task's example count (the task with
                the most segments is the least likely to have a cheat's segment drawn).
        """
        if self.secure_aggregation:
            return None
        if self.local_epochs is not None and examples is None:
            return (
                "with local_epochs a transcript's segments follow from each task's example "
                "count, and none was given: the odds of catching a cheat cannot be bounded"
            )
        return cheating_pays(
            rate=self.challenge_rate,
            segments=self.training_config(examples).segments,
            opened=self.challenge_segments,
            slash=rejected_slash,
            reward_per_round=reward_per_round,
            reward_decimals=reward_decimals,
        )

    @property
    def training(self) -> TrainingConfig:
        """The training configuration of every task (:meth:`training_config` without an
        example count: a job with ``local_epochs`` needs that method)."""
        return self.training_config()
