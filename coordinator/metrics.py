"""Prometheus metrics of the coordinator: rounds per job, workers per round, payouts, failures and
which replica leads (:meth:`CoordinatorMetrics.leadership`).

The service reports what it saved (:meth:`CoordinatorMetrics.observe_round`), what it settled
(:meth:`CoordinatorMetrics.round_settled`) and the job steps and chain events that failed
(:meth:`CoordinatorMetrics.job_step_failed`, :meth:`CoordinatorMetrics.event_failed`); its reward
publisher the roots it proposed or saw vetoed and the claims it paid for the workers; the names and
labels are those of the metrics table in ``docs/operations.md``. ``job_id`` (not ``job``) because
Prometheus reserves ``job``.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from fedrelay.protocol.rounds import RoundState, TaskStatus

_COMMITTED = frozenset({TaskStatus.COMMITTED, TaskStatus.ACCEPTED})
_DROPPED = frozenset({TaskStatus.DROPPED, TaskStatus.SLASHED})


class CoordinatorMetrics:
    """The coordinator's metric families in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Register the families in `registry`."""
        self.rounds = Counter(
            "fedrelay_coordinator_rounds",
            "Rounds that ended: settled, completed (the job's last) or failed (none accepted).",
            ["job_id", "outcome"],
            registry=registry,
        )
        self.round_workers = Gauge(
            "fedrelay_coordinator_round_workers",
            "Workers in each job's current round: assigned (all drawn), committed, dropped.",
            ["job_id", "state"],
            registry=registry,
        )
        self.payouts = Counter(
            "fedrelay_coordinator_payouts",
            "Payouts made claimable.",
            ["job_id"],
            registry=registry,
        )
        self.payout_amount = Counter(
            "fedrelay_coordinator_payout_amount",
            "Amount of the payouts made claimable, in base units of the job's reward token.",
            ["job_id"],
            registry=registry,
        )
        self.job_step_failures = Counter(
            "fedrelay_coordinator_job_step_failures",
            "Job steps that raised, by the exception's class; the job is tried again later.",
            ["job_id", "error"],
            registry=registry,
        )
        self.event_failures = Counter(
            "fedrelay_coordinator_event_failures",
            "Chain events passed over because handling them raised, by event and exception class.",
            ["event", "error"],
            registry=registry,
        )
        self.reward_roots = Counter(
            "fedrelay_coordinator_reward_roots",
            "Distributor reward roots: proposed by this replica, or seen vetoed (each once).",
            ["event"],
            registry=registry,
        )
        self.reward_claims = Counter(
            "fedrelay_coordinator_reward_claims",
            "Claims the coordinator sent for the workers (claim_for_workers): paid, or refused "
            "alone and left to the worker.",
            ["outcome"],
            registry=registry,
        )
        self.reward_claimed_amount = Counter(
            "fedrelay_coordinator_reward_claimed_amount",
            "Amount those paid claims paid, in base units of the token (0x0...0: native).",
            ["token"],
            registry=registry,
        )

        self.leader = Gauge(
            "fedrelay_coordinator_leader",
            "1 while this replica holds the leader lease (steps rounds and signs), else 0.",
            ["holder"],
            registry=registry,
        )
        self.fencing_token = Gauge(
            "fedrelay_coordinator_fencing_token",
            "Fencing token of the leader lease as this replica last saw it (0: not seen yet).",
            ["holder"],
            registry=registry,
        )

    def leadership(self, holder: str, leading: bool, token: int) -> None:
        """Report this replica's role (``holder``: its id) and the lease's fencing token."""
        self.leader.labels(holder).set(1 if leading else 0)
        self.fencing_token.labels(holder).set(token)

    def job_step_failed(self, job_id: int, error: str) -> None:
        """Count one failed step of job ``job_id`` (``error``: the exception's class name)."""
        self.job_step_failures.labels(str(job_id), error).inc()

    def event_failed(self, event: str, error: str) -> None:
        """Count one chain event passed over (its class name, the exception's class name)."""
        self.event_failures.labels(event, error).inc()

    def observe_round(self, state: RoundState) -> None:
        """Set the worker gauges of `state`'s job from the round's assignments."""
        job = str(state.job_id)
        statuses = [a.status for a in state.assignments]
        self.round_workers.labels(job, "assigned").set(len(statuses))
        self.round_workers.labels(job, "committed").set(sum(s in _COMMITTED for s in statuses))
        self.round_workers.labels(job, "dropped").set(sum(s in _DROPPED for s in statuses))

    def round_settled(self, state: RoundState, rewards: Mapping[str, int]) -> None:
        """Count one settled round of `state`'s job and the payouts it made claimable.

        Args:
            state: The round as settled.
            rewards: The round's reward per worker id (zero rewards are not payouts).
        """
        job = str(state.job_id)
        if not state.with_status(TaskStatus.ACCEPTED):
            outcome = "failed"
        elif state.is_last_round:
            outcome = "completed"
        else:
            outcome = "settled"
        self.rounds.labels(job, outcome).inc()
        paid = [amount for amount in rewards.values() if amount > 0]
        self.payouts.labels(job).inc(len(paid))
        self.payout_amount.labels(job).inc(sum(paid))


_METRICS: dict[int, tuple[CollectorRegistry, CoordinatorMetrics]] = {}


def coordinator_metrics(registry: CollectorRegistry = REGISTRY) -> CoordinatorMetrics:
    """The coordinator metrics registered in `registry` (created on first use)."""
    held = _METRICS.get(id(registry))
    if held is None or held[0] is not registry:
        held = (registry, CoordinatorMetrics(registry))
        _METRICS[id(registry)] = held
    return held[1]
