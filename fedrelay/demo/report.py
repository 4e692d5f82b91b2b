"""The demo's outcome and its report: what each worker got, whether the run passed, the files.

:class:`DemoResult` is everything the run found (accuracy per round, each worker's rewards and
stake from the chains, deliveries per route, costs); :meth:`DemoResult.problems` turns it into
the acceptance verdict. :func:`write_summary` writes ``summary.json``, ``summary.md`` and the
accuracy plot. Nothing here starts or reads a chain, so the verdict and the report are tested
without one.

A workload's job (:mod:`fedrelay.demo.workloads`) reports its own metric (accuracy, or
perplexity for the text workloads) where the digits job reports accuracy: ``accuracy_per_round``
then holds that metric, and the acceptance condition is the workload's target in place of
``min_accuracy``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedrelay.demo.costs import DemoCosts, markdown_lines, per_worker_round
from fedrelay.demo.plot import plot_accuracy
from fedrelay.demo.settings import DemoSettings
from fedrelay.demo.workloads import workload as workload_named


@dataclass(frozen=True)
class CoordinatorRestart:
    """One restart of the coordinator during the job.

    Attributes:
        round: The round it happened in.
        phase: The round's phase when the coordinator was stopped.
        down_s: Seconds from the stop to the new coordinator's API answering.
    """

    round: int
    phase: str
    down_s: float


@dataclass(frozen=True)
class WorkerOutcome:
    """One worker at the end of the demo, from the coordinator's ledger and from the chains.

    Attributes:
        name: ``worker-N``.
        chain: ``worker-evm`` or ``worker-solana``.
        address: Its address on that chain.
        payout_address: Where its rewards go on the coordinator chain.
        dishonest: Whether it tampered (and with what), or empty.
        tasks: Rounds it was assigned.
        accepted: Rounds whose update was accepted.
        slashed_rounds: Rounds in which the coordinator slashed it.
        reason: Why it was slashed (the first reason), or empty.
        reward: Reward the coordinator decided for it, summed over rounds (wei).
        claimable: What its payout address can withdraw from JobMarket now (wei); with
            rewards through a RewardDistributor, what its claim from the live root paid.
        stake_before: Its stake on its chain after registering (wei or lamports).
        stake_after: Its stake on its chain at the end.
    """

    name: str
    chain: str
    address: str
    payout_address: str
    dishonest: str
    tasks: int
    accepted: int
    slashed_rounds: tuple[int, ...]
    reason: str
    reward: int
    claimable: int
    stake_before: int
    stake_after: int

    @property
    def slashed_on_chain(self) -> int:
        """Stake taken on its chain (wei or lamports)."""
        return max(0, self.stake_before - self.stake_after)

    def to_json(self) -> dict[str, Any]:
        """The worker's entry in ``summary.json``."""
        return {**asdict(self), "slashed_on_chain": self.slashed_on_chain}


@dataclass(frozen=True)
class Detection:
    """A worker the coordinator slashed in a round, and why.

    Attributes:
        worker: ``worker-N``.
        chain: ``worker-evm`` or ``worker-solana``.
        round: The round.
        reason: The coordinator's reason.
        dishonest: The worker's cheat, or empty for a worker the demo started honest.
    """

    worker: str
    chain: str
    round: int
    reason: str
    dishonest: str = ""


@dataclass(frozen=True)
class DemoResult:
    """What the demo did and found.

    ``accuracy_per_round`` is the job's metric per round: accuracy for the digits job, the
    workload's ``metric`` otherwise. ``initial_metric`` is the initial model's (a workload's
    perplexity factor counts from it); ``update_bytes_per_round`` the size of each committed
    update blob per round; ``base_model_bytes`` the LoRA base weights' blob size.
    ``detections`` is every slash the coordinator decided, round by round; ``privacy_cost``
    each worker's expected fraction of its examples revealed per round, by name (a job on the
    workers' own digits only); ``proposal_watch`` how many proposals the demo's proposal watch
    found of each verdict (``valid``, ``voided``, ...).
    """

    job_id: int
    rounds: int
    accuracy_per_round: tuple[float, ...]
    workers: tuple[WorkerOutcome, ...]
    messages_per_route: dict[str, dict[str, int]]
    wall_time_s: float
    settings: DemoSettings
    timings_s: dict[str, float] = field(default_factory=dict)
    backends: dict[str, str] = field(default_factory=dict)
    restarts: tuple[CoordinatorRestart, ...] = ()
    costs: DemoCosts = field(default_factory=DemoCosts)
    workload: str = "digits"
    metric: str = "accuracy"
    initial_metric: float | None = None
    update_bytes_per_round: tuple[tuple[int, ...], ...] = ()
    base_model_bytes: int | None = None
    detections: tuple[Detection, ...] = ()
    privacy_cost: dict[str, float] = field(default_factory=dict)
    proposal_watch: dict[str, int] = field(default_factory=dict)

    @property
    def final_accuracy(self) -> float:
        """Held-out accuracy of the last round's model (0 when no round finished)."""
        return self.accuracy_per_round[-1] if self.accuracy_per_round else 0.0

    @property
    def dishonest(self) -> WorkerOutcome:
        """The first dishonest worker (the one the settings' ``dishonest`` names)."""
        return self.cheats[0]

    @property
    def cheats(self) -> tuple[WorkerOutcome, ...]:
        """Every dishonest worker."""
        return tuple(w for w in self.workers if w.dishonest)

    def problems(self) -> list[str]:
        """Every acceptance condition that failed, in words (empty when the demo passed)."""
        found = []
        if len(self.accuracy_per_round) != self.rounds:
            found.append(f"{len(self.accuracy_per_round)} of {self.rounds} rounds finished")
        wanted = self.settings.restart_coordinator_in_round
        if wanted is not None and [r.round for r in self.restarts] != [wanted]:
            found.append(f"the coordinator was to be restarted in round {wanted}, was not")
        found += self._metric_problems()
        paid_where = (
            "claimable on JobMarket"
            if self.settings.rewards == "credit"
            else "paid by the RewardDistributor"
        )
        for worker in self.workers:
            if worker.dishonest:
                continue
            if worker.reward <= 0 or worker.claimable <= 0:
                found.append(
                    f"honest {worker.name} ({worker.chain}) was not paid: coordinator reward "
                    f"{worker.reward}, {paid_where} {worker.claimable}"
                )
            if worker.slashed_rounds or worker.slashed_on_chain:
                found.append(f"honest {worker.name} ({worker.chain}) was slashed: {worker.reason}")
        for cheat in self.cheats:
            if not cheat.slashed_rounds:
                found.append(f"the dishonest {cheat.name} was never caught by the coordinator")
            if cheat.slashed_on_chain <= 0:
                found.append(
                    f"the dishonest {cheat.name}'s stake on {cheat.chain} was not slashed "
                    f"({cheat.stake_before} before, {cheat.stake_after} after)"
                )
        found += self._watch_problems()
        found += [
            f"the privacy cost of {name} is {cost:.4f}: a round may reveal all its examples"
            for name, cost in self.privacy_cost.items()
            if cost >= 1
        ]
        return found

    def _watch_problems(self) -> list[str]:
        """The coordinator is honest: the watch checks its proposals and finds none broken."""
        broken = sum(self.proposal_watch.get(v, 0) for v in ("voided", "broken"))
        if broken:
            return [f"the proposal watch found {broken} proposal(s) breaking a rule"]
        if not self.proposal_watch.get("valid"):
            return ["the proposal watch checked no proposal inside its window"]
        return []

    def _metric_problems(self) -> list[str]:
        if self.settings.workload is None:
            if self.final_accuracy < self.settings.min_accuracy:
                return [
                    f"final accuracy {self.final_accuracy:.4f} is below "
                    f"{self.settings.min_accuracy}"
                ]
            return []
        target = workload_named(self.settings.workload).target
        initial = self.initial_metric
        if initial is None:
            return [f"the initial model's {self.metric} is unknown: the target cannot be judged"]
        if not target.reached(initial, self.final_accuracy):
            return [
                f"final {self.metric} {self.final_accuracy:.4f} (initial {initial:.4f}) misses "
                f"the {self.workload} target: {target.describe()}"
            ]
        return []

    def workload_json(self) -> dict[str, Any]:
        """The workload's part of ``summary.json``: its name, metric per round (and the
        initial model's), target and the update blobs' sizes."""
        entry: dict[str, Any] = {
            "workload": self.workload,
            "metric": self.metric,
            "initial_metric": self.initial_metric,
            "metric_per_round": list(self.accuracy_per_round),
            "update_bytes_per_round": [list(r) for r in self.update_bytes_per_round],
            "base_model_bytes": self.base_model_bytes,
        }
        if self.settings.workload is not None:
            target = workload_named(self.settings.workload).target
            entry["target"] = {"metric": target.metric, "value": target.value,
                               "rounds": target.rounds, "text": target.describe()}  # fmt: skip
        return entry

    def privacy_json(self) -> dict[str, Any] | None:
        """What a job on the workers' own data reveals: each worker's privacy cost (the
        expected fraction of its examples opened per round), the largest, and the challenge
        terms it follows from; None for a job on published data."""
        if not self.settings.private_data:
            return None
        config = self.settings.job_config()
        return {
            "cost_per_worker": dict(self.privacy_cost),
            "max_cost": max(self.privacy_cost.values(), default=None),
            "challenge_rate": config.challenge_rate,
            "challenge_segments": config.challenge_segments,
            "segments": config.training.segments,
        }

    def gas_per_worker_round(self) -> dict[str, Any]:
        """Gas per worker-round on each EVM chain, compute units per worker-round on Solana:
        a worker chain's spend over the tasks its workers were assigned, the coordinator
        chain's over every task."""
        worker_rounds: dict[str, int] = {}
        for worker in self.workers:
            worker_rounds[worker.chain] = worker_rounds.get(worker.chain, 0) + worker.tasks
        return per_worker_round(self.costs, worker_rounds)

    def to_json(self) -> dict[str, Any]:
        """The content of ``summary.json``."""
        cheat = self.dishonest
        return {
            **self.workload_json(),
            "job_id": self.job_id,
            "rounds": self.rounds,
            "final_accuracy": self.final_accuracy,
            "accuracy_per_round": list(self.accuracy_per_round),
            "workers": [w.to_json() for w in self.workers],
            "dishonest_worker": _cheat_json(cheat),
            "dishonest_workers": [_cheat_json(c) for c in self.cheats],
            "detections": [asdict(d) for d in self.detections],
            "data": self.settings.mode,
            "secure_aggregation": self.settings.secure_aggregation,
            "attestation": self.settings.attestation,
            "rewards": self.settings.rewards,
            "privacy": self.privacy_json(),
            "messages_per_route": self.messages_per_route,
            "wall_time_s": round(self.wall_time_s, 1),
            "timings_s": {k: round(v, 1) for k, v in self.timings_s.items()},
            "settings": asdict(self.settings),
            "backends": self.backends,
            "coordinator_restarts": [asdict(r) for r in self.restarts],
            "proposal_watch": dict(self.proposal_watch),
            **self.costs.to_json(),
            "gas_per_worker_round": self.gas_per_worker_round(),
            "problems": self.problems(),
        }


def _cheat_json(cheat: WorkerOutcome) -> dict[str, Any]:
    return {
        "name": cheat.name,
        "chain": cheat.chain,
        "tampered": cheat.dishonest,
        "detection_reason": cheat.reason,
        "slashed_rounds": list(cheat.slashed_rounds),
        "slashed_on_chain": cheat.slashed_on_chain,
    }


def write_summary(result: DemoResult, out_dir: Path) -> Path:
    """Write ``summary.json``, ``summary.md`` and ``accuracy.png`` into ``out_dir``.

    Returns:
        The path of ``summary.json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "summary.json"
    path.write_text(json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n")
    metric = result.metric
    plot = plot_accuracy(
        result.accuracy_per_round, _plotted_target(result), out_dir / "accuracy.png",
        title=f"job {result.job_id} ({result.workload}): test {metric} per round", metric=metric,
    )  # fmt: skip
    lines = [
        f"# fedrelay demo: job {result.job_id}",
        "",
        f"- workload: {result.workload}; rounds: {result.rounds}; final test {metric}: "
        f"{result.final_accuracy:.4f}",
        f"- wall time: {result.wall_time_s:.0f} s",
        f"- bus: {result.backends.get('bus', 'in-process')}; "
        f"ledger: {result.backends.get('ledger', 'sqlite')}",
        *(
            f"- coordinator restarted in round {r.round} ({r.phase}), down {r.down_s:.1f} s"
            for r in result.restarts
        ),
        f"- data: {result.settings.mode}; secure aggregation: "
        f"{'on' if result.settings.secure_aggregation else 'off'}",
        *(
            f"- dishonest worker: {c.name} ({c.chain}), tampered {c.dishonest}; caught: "
            f"{c.reason or 'no'}"
            for c in result.cheats
        ),
        *(
            f"- privacy cost of {name}: {cost:.4f} of its examples revealed per round"
            for name, cost in result.privacy_cost.items()
        ),
        "- proposal watch: "
        + (", ".join(f"{n} {v}" for v, n in sorted(result.proposal_watch.items())) or "nothing")
        + " (proposals checked inside their challenge windows)",
        "",
        "| detected worker | chain | round | reason |",
        "| --- | --- | --- | --- |",
        *(f"| {d.worker} | {d.chain} | {d.round} | {d.reason} |" for d in result.detections),
        "",
        f"![test {metric} per round]({plot.name})",
        "",
        f"| round | {metric} | update blobs (bytes) |",
        "| --- | --- | --- |",
        *(
            f"| {n} | {a:.4f} | {_sizes(result.update_bytes_per_round, n)} |"
            for n, a in enumerate(result.accuracy_per_round)
        ),
        "",
        "| worker | chain | reward (wei) | claimable (wei) | slashed on chain |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {w.name} | {w.chain} | {w.reward} | {w.claimable} | {w.slashed_on_chain} |"
            for w in result.workers
        ),
        "",
        "| route | deliveries |",
        "| --- | --- |",
        *(
            f"| {route} | {', '.join(f'{k}: {v}' for k, v in counts.items())} |"
            for route, counts in result.messages_per_route.items()
        ),
        "",
        *markdown_lines(result.costs, result.gas_per_worker_round()),
    ]
    problems = result.problems()
    lines += ["## Acceptance", ""] + (
        [f"- FAILED: {p}" for p in problems] if problems else ["- every condition holds"]
    )
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return path


def _sizes(per_round: tuple[tuple[int, ...], ...], number: int) -> str:
    return ", ".join(map(str, per_round[number])) if number < len(per_round) else "-"


def _plotted_target(result: DemoResult) -> float:
    """The line the plot draws: the accuracy to reach, or the perplexity the factor asks."""
    if result.settings.workload is None:
        return result.settings.min_accuracy
    target = workload_named(result.settings.workload).target
    if target.metric == "accuracy" or not result.initial_metric:
        return target.value
    return result.initial_metric / target.value
