"""What the demo runs and on which backends, checked before anything starts.

The settings are plain frozen data: the command line builds them, :func:`~fedrelay.demo.run_demo`
reads them, and every check that can fail without starting a chain (worker counts, the cheat,
the job configuration) fails here, as a :class:`DemoError`, before the devnet exists.

By default the job is the digits job on published data. ``workload`` names one of
:mod:`fedrelay.demo.workloads` instead (``cnn``, ``lm``, ``lora``): a job on data each worker
owns, whose model, recipe, data and target are the workload's; only the demo's own fields
(challenges, deadlines, strategy) come from the settings here. ``private_data`` runs the digits
job on data each worker owns, replayed on the examples a challenged segment consumed
(:mod:`fedrelay.demo.private`); ``secure_aggregation`` runs the digits job with masked updates.

A run has one cheat (``dishonest`` on ``dishonest_chain``) and may have more
(``more_cheats``), each on a worker of its own; which cheats a job can catch depends on its data
and aggregation (:data:`CHEATS_BY_MODE`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedrelay.protocol.job_config import JobConfig

ETHER = 10**18
LAMPORTS_PER_SOL = 10**9
#: Stake of every worker, in its chain's whole units (ETH or SOL).
STAKE_UNITS = 10
#: What a rejected update or transcript costs, 8 decimals (1 ETH or 1 SOL).
REJECTED_SLASH = 10**8

Dishonesty = Literal["update", "transcript", "skip", "otherdata", "sum"]
ChainKind = Literal["evm", "solana"]
DataMode = Literal["digits", "workload", "private", "secure"]

#: The cheats each kind of job can catch (the first is the command's default):
#:
#: - ``digits``: a tampered ``transcript`` checkpoint (replayed on the published shard) or a
#:   tampered ``update`` (not its transcript's final model);
#: - ``workload``: the ``update`` only (its segments are not replayed);
#: - ``private``: ``skip`` (fewer steps than the transcript claims), ``otherdata`` (trained on
#:   other data than it committed), caught by replaying a segment on the examples the worker
#:   opens, and ``transcript`` and ``update`` as on digits;
#: - ``secure``: a tampered ``transcript`` (a challenge inside a secure round) or ``sum`` (a
#:   corrupted masked input, so a corrupted secure sum).
CHEATS_BY_MODE: dict[DataMode, tuple[Dishonesty, ...]] = {
    "digits": ("transcript", "update"),
    "workload": ("update",),
    "private": ("skip", "otherdata", "transcript", "update"),
    "secure": ("transcript", "sum"),
}


Attestation = Literal["guardian", "threshold"]
Rewards = Literal["distributor", "credit"]


class DemoError(Exception):
    """The demo could not be set up or did not reach its end; the message says why."""


@dataclass(frozen=True)
class Cheat:
    """One dishonest worker: what it does (``mode``) and on which worker chain."""

    mode: Dishonesty
    chain: ChainKind


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs.

    Attributes:
        rounds: Rounds of the job.
        evm_workers: Workers on the EVM worker chain (at least 2).
        solana_workers: Workers on Solana (at least 2).
        dishonest: What the dishonest worker does (:data:`CHEATS_BY_MODE` lists the cheats
            each kind of job catches): ``update``, ``transcript``, ``skip``, ``otherdata`` or
            ``sum`` (its masked input, under secure aggregation).
        dishonest_chain: The chain of the dishonest worker.
        steps: Local optimizer steps per task.
        checkpoint_every: Steps between transcript checkpoints.
        batch_size: Examples per step.
        learning_rate: Local SGD step size.
        alpha: Dirichlet concentration of the non-IID split (smaller: more skewed).
        strategy: Aggregation strategy name (see
        :class:`~fedrelay.protocol.job_config.JobConfig`).
        max_examples_per_shard: At most this many training examples per shard (None: all).
        challenge_window: JobMarket's challenge window in seconds.
        collect_seconds: Time the workers have from assignment to commitment.
        reward_per_round: Reward escrowed per round, in wei; on private data the job pays
            this times the fraction of segments a challenge replays (:attr:`posted_reward`).
        min_accuracy: The final test accuracy the demo must reach.
        timeout_s: Longest the job may take from posting to the last settlement.
        restart_coordinator_in_round: Stop the coordinator (service and API) in the middle of
            this round and start a new one on the same ledger, as a crash and restart would
            (None: never).
        workload: A workload of :mod:`fedrelay.demo.workloads` (``cnn``, ``lm``, ``lora``) in
            place of the digits job (None). Its model, recipe, data and target replace
            ``steps``, ``checkpoint_every``, ``batch_size``, ``learning_rate``, ``alpha``,
            ``max_examples_per_shard`` and ``min_accuracy``. Segments of the workers' own data
            are not replayed, so its cheat must tamper with the ``update``.
        split: How the ``cnn`` workload deals its images among the workers: ``dirichlet``
            (non-IID, the default) or ``iid``.
        private_data: Run the digits job on data each worker owns (a Parquet file of its
            digits shard in its own folder), with ``replay: "segments"``: a challenged worker
            opens the examples of the replayed segment (:mod:`fedrelay.demo.private`).
        secure_aggregation: Run the digits job with secure aggregation (masked updates).
            A secure round challenges every worker but two (the privacy cap: the sum less the
            opened updates must still hide at least two), drawn afresh each round, so a cheat
            that cheats every round goes unchallenged in all of them with probability
            ``(2 / workers) ** rounds`` (:attr:`secure_miss_probability`): 1.7e-5 for the
            command's 6 workers and 10 rounds, 1.5e-5 for 8 workers and 8 rounds. A corrupted
            sum is always found (the sum audit opens every survivor when a challenge does not).
        more_cheats: Dishonest workers besides the one ``dishonest`` names, each on a worker
            of its own (every chain keeps at least one honest worker).
        challenge_segments: Segments replayed per challenged transcript (None: every segment;
            on private data one, so that each round opens only part of a worker's examples:
            a cheat that deviates in every segment is caught by any one).
        attestation: How the guardians sign the VAAs the relayer carries: ``threshold`` (the
            default: one threshold signature of the devnet threshold key, version 2) or
            ``guardian`` (a quorum of guardian signatures, version 1).
        rewards: How the workers are paid: ``distributor`` (the default: each settled round's
            total goes once to a RewardDistributor, the coordinator proposes the cumulative
            roots and each worker claims with one proof at the end) or ``credit`` (each worker's
            payout address is credited in JobMarket at settlement).
    """

    rounds: int = 10
    evm_workers: int = 3
    solana_workers: int = 3
    dishonest: Dishonesty = "transcript"
    dishonest_chain: ChainKind = "evm"
    steps: int = 40
    checkpoint_every: int = 20
    batch_size: int = 32
    learning_rate: float = 0.1
    alpha: float = 1.0
    strategy: str = "fedavg"
    max_examples_per_shard: int | None = None
    challenge_window: int = 2
    collect_seconds: int = 240
    reward_per_round: int = ETHER
    min_accuracy: float = 0.90
    timeout_s: float = 840.0
    restart_coordinator_in_round: int | None = None
    workload: str | None = None
    split: str = "dirichlet"
    private_data: bool = False
    secure_aggregation: bool = False
    more_cheats: tuple[Cheat, ...] = ()
    challenge_segments: int | None = None
    attestation: Attestation = "threshold"
    rewards: Rewards = "distributor"

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise DemoError(f"rounds must be at least 1, got {self.rounds}")
        if self.rewards not in ("distributor", "credit"):
            raise DemoError(f"rewards must be 'distributor' or 'credit', got {self.rewards!r}")
        if self.attestation not in ("guardian", "threshold"):
            raise DemoError(
                f"attestation must be 'guardian' or 'threshold', got {self.attestation!r}"
            )
        restart = self.restart_coordinator_in_round
        if restart is not None and not 0 <= restart < self.rounds:
            raise DemoError(
                f"restart_coordinator_in_round must name one of the rounds 0..{self.rounds - 1}, "
                f"got {restart}"
            )
        if self.evm_workers < 2 or self.solana_workers < 2:
            raise DemoError(
                "the demo needs at least 2 workers on each worker chain, got "
                f"{self.evm_workers} on EVM and {self.solana_workers} on Solana"
            )
        self._check_cheats()
        if self.steps < self.checkpoint_every or self.steps % self.checkpoint_every:
            raise DemoError(
                f"steps ({self.steps}) must be a multiple of checkpoint_every "
                f"({self.checkpoint_every})"
            )
        if not 0 < self.min_accuracy <= 1:
            raise DemoError(f"min_accuracy must be in (0, 1], got {self.min_accuracy}")
        if self.timeout_s <= 0 or self.challenge_window < 1 or self.collect_seconds < 10:
            raise DemoError("timeout_s, challenge_window and collect_seconds must be positive")
        if self.workload is not None:
            self._check_workload()
            return
        config = self.job_config()  # the strategy and training fields must make a valid job
        why = config.cheating_pays(self.posted_reward, 18, REJECTED_SLASH)
        if why is not None:
            raise DemoError(f"the coordinator would refuse the demo's job: {why}")

    @property
    def posted_reward(self) -> int:
        """The reward per round the job escrows (wei): ``reward_per_round``, scaled on private
        data by the fraction of a transcript's segments a challenge replays, so that the slash
        of a rejected update (one stake token), times the odds of catching a worker that
        deviates in a single segment, still covers it (the coordinator refuses a job in which
        cheating pays)."""
        if not self.private_data:
            return self.reward_per_round
        config = self.job_config()
        return self.reward_per_round * config.challenge_segments // config.training.segments

    @property
    def secure_miss_probability(self) -> float:
        """Under secure aggregation, the probability that a worker cheating in every round is
        never challenged: each round leaves two of the workers unchallenged, in an order the
        round's seed draws, so ``(2 / workers) ** rounds``; 0 without secure aggregation (every
        transcript is challenged)."""
        if not self.secure_aggregation:
            return 0.0
        return float((2 / self.workers) ** self.rounds)

    @property
    def mode(self) -> DataMode:
        """The kind of job: ``digits``, ``workload``, ``private`` or ``secure``."""
        if self.workload is not None:
            return "workload"
        if self.private_data:
            return "private"
        return "secure" if self.secure_aggregation else "digits"

    @property
    def cheats(self) -> tuple[Cheat, ...]:
        """Every dishonest worker: ``dishonest`` on ``dishonest_chain`` first."""
        return (Cheat(self.dishonest, self.dishonest_chain), *self.more_cheats)

    def _check_cheats(self) -> None:
        chosen = [self.workload is not None, self.private_data, self.secure_aggregation]
        if sum(chosen) > 1:
            raise DemoError(
                "choose one of a workload, private_data and secure_aggregation: the demo runs "
                "one kind of job"
            )
        allowed = CHEATS_BY_MODE[self.mode]
        for cheat in self.cheats:
            if cheat.mode not in allowed:
                raise DemoError(self._refused_cheat(cheat.mode, allowed))
            if cheat.chain not in ("evm", "solana"):
                raise DemoError(f"dishonest_chain must be 'evm' or 'solana', got {cheat.chain!r}")
        for chain, count in (("evm", self.evm_workers), ("solana", self.solana_workers)):
            cheats = sum(1 for c in self.cheats if c.chain == chain)
            if cheats >= count:
                raise DemoError(
                    f"{cheats} dishonest workers on {chain} of {count}: every worker chain "
                    "keeps at least one honest worker"
                )
        skipping = any(c.mode == "skip" for c in self.cheats)
        if skipping and self.checkpoint_every < 2:
            raise DemoError(
                "a worker that skips steps trains half of each segment's steps: "
                f"checkpoint_every must be at least 2, got {self.checkpoint_every}"
            )

    def _refused_cheat(self, mode: str, allowed: tuple[str, ...]) -> str:
        listed = " or ".join(repr(a) for a in allowed)
        if self.mode == "workload":
            return (
                f"the {self.workload} workload trains on the workers' own data, whose segments "
                "the coordinator does not replay: a tampered transcript would go unnoticed; its "
                f"cheat tampers with the update (dishonest {listed}), got {mode!r}"
            )
        if self.mode == "digits" and mode in CHEATS_BY_MODE["private"]:
            return f"dishonest {mode!r} needs private_data (--private-data)"
        if self.mode == "digits" and mode in CHEATS_BY_MODE["secure"]:
            return f"dishonest {mode!r} needs secure_aggregation (--secure-aggregation)"
        return f"dishonest must be {listed} on a {self.mode} job, got {mode!r}"

    def _check_workload(self) -> None:
        from fedrelay.demo.workloads import workload

        try:
            workload(self.workload or "")
        except ValueError as exc:
            raise DemoError(str(exc)) from None
        if self.split not in ("dirichlet", "iid"):
            raise DemoError(f"split must be 'dirichlet' or 'iid', got {self.split!r}")

    def workload_fields(self) -> dict[str, object]:
        """The job fields the demo sets on a workload's configuration: every transcript
        challenged, the deadlines, the strategy (the workload decides the rest)."""
        return {
            "strategy": self.strategy,
            "challenge_rate": 1.0,
            "answer_seconds": 120,
            "reveal_seconds": 120,
            "collect_seconds": self.collect_seconds,
            "min_updates": 1,
            "secagg_threshold": max(1, self.workers - 1),
        }

    @property
    def workers(self) -> int:
        """Every worker, honest or not."""
        return self.evm_workers + self.solana_workers

    def job_config(self) -> JobConfig:
        """The job's configuration blob: every transcript challenged (a rejection is slashed
        ``REJECTED_SLASH`` by the job's on-chain policy, set when the demo posts it).

        The digits job trains on published shards (non-IID); with ``private_data`` on the
        workers' own digits (:func:`fedrelay.demo.private.private_data_fields`), replaying one
        segment per challenge on the examples the worker opens; with ``secure_aggregation``
        every update is masked.

        Raises:
            DemoError: The settings do not make a valid job configuration.
        """
        segments = -(-self.steps // self.checkpoint_every)
        data: dict[str, object] = {
            "shards": self.workers,
            "partition": "dirichlet",
            "alpha": self.alpha,
            "max_examples_per_shard": self.max_examples_per_shard,
        }
        extra: dict[str, object] = {}
        # Every segment replayed: the catch probability is 1, so the slash (one stake token)
        # covers the reward (one ether) for any steps setting.
        opened = segments
        if self.private_data:
            from fedrelay.demo.private import private_data_fields

            extra = private_data_fields()
            data = extra.pop("data")  # type: ignore[assignment]
            # One segment a challenge: a cheat deviating in every segment is caught by any
            # one, and a worker opens only the examples that segment consumed.
            opened = 1
        if self.challenge_segments is not None:
            opened = self.challenge_segments
        if self.secure_aggregation:
            extra["secure_aggregation"] = True
        try:
            return JobConfig.model_validate(
                {
                    **extra,
                    "seed": 7,
                    "steps": self.steps,
                    "checkpoint_every": self.checkpoint_every,
                    "batch_size": self.batch_size,
                    "learning_rate": self.learning_rate,
                    "strategy": self.strategy,
                    "challenge_rate": 1.0,
                    "challenge_segments": opened,
                    "answer_seconds": 120,
                    # A secure round's reveals come over the coordinator's API while it replays
                    # the round's challenges: on a loaded machine that can take a while.
                    "reveal_seconds": 120,
                    "collect_seconds": self.collect_seconds,
                    "min_updates": 1,
                    # Used under secure aggregation; without it the worker SDK still reads the
                    # configuration blob's secagg_threshold as an integer.
                    "secagg_threshold": max(1, self.workers - 1),
                    "data": data,
                }
            )
        except ValueError as exc:
            raise DemoError(f"the demo's job configuration is invalid: {exc}") from None


@dataclass(frozen=True)
class DemoBackends:
    """Where the demo's bus and ledgers live: embedded by default, or real services.

    Attributes:
        kafka_bootstrap: Kafka's bootstrap servers (None: the in-process bus). The demo's
            topics and consumer groups carry a tag of their own, so runs never share them.
        database_url: A PostgreSQL (or SQLite) SQLAlchemy URL holding both ledgers (None: a
            SQLite file each in the state folder). It must hold no fedrelay messages or
            rounds yet: a new devnet restarts every chain's sequences and job ids.
    """

    kafka_bootstrap: str | None = None
    database_url: str | None = None

    def describe(self) -> dict[str, str]:
        """What the report says about the backends (never the URL: it may hold a password)."""
        ledger = "sqlite"
        if self.database_url is not None:
            ledger = self.database_url.split(":", 1)[0].split("+", 1)[0]
        return {"bus": "kafka" if self.kafka_bootstrap else "in-process", "ledger": ledger}
