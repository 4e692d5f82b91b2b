"""The proposal watch: every round proposal of a JobMarket checked inside its challenge window, and
one that breaks a rule voided.

JobMarket takes a proposal optimistically: it checks the count and the budget, and the rules
(no reward without a commitment, no MISSED for a committed task, the total and the root, ...) bind
only when somebody checks the proposal before its window closes and disproves it when it breaks
one (docs/contracts.md, "JobMarket"). One honest watch per market is enough. Workers run it for
the jobs they train (their pay and stake depend on the outcome), posters for theirs, operators for
every job (``fedrelay worker watch-proposals``; the chart's ``proposalWatch``).

The watch reads ``ResultsProposed`` from the first block of the current challenge window on (a
proposal older than that can no longer be disproved), checks each new proposal at once, and
checks a valid one again every ``recheck_interval`` seconds until its window closes: a late
TASK_REFUSED or TASK_RELEASED can make a proposal that was valid break a rule. With a disproof
key it voids a broken proposal (``ProposalChecker.disprove``); without one it reports it. It acts
on the chain only through the :class:`~fedrelay.ports.proposals.ProposalBoard` port.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from opentelemetry import trace

from fedrelay.ports.proposals import ChainTime, ProposalBoard, ProposalMade
from fedrelay.ports.worker_chain import ChainRejected, ChainUnavailable

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)
_TRACER = trace.get_tracer("fedrelay.worker.proposal_watch")

#: Blocks read per ``ResultsProposed`` query (an RPC provider's usual log-range limit or below).
DEFAULT_MAX_SPAN = 2000


class Verdict(StrEnum):
    """What the watch found of one proposal."""

    VALID = "valid"  # keeps every rule (checked again until its window closes)
    BROKEN = "broken"  # breaks a rule and stands: no disproof key
    VOIDED = "voided"  # broke a rule; this watch's disproof voided it
    GONE = "gone"  # no longer pending when first checked (settled, challenged, voided, replaced)
    MISSED = "missed"  # its window closed before any check of it succeeded


@dataclass(frozen=True)
class Finding:
    """One verdict on one proposal; ``rule`` names the broken rule, ``detail`` adds context."""

    made: ProposalMade
    verdict: Verdict
    rule: str | None = None
    detail: str = ""

    def describe(self) -> str:
        where = f"job {self.made.job_id} round {self.made.round} proposal {self.made.proposal}"
        text = {
            Verdict.VALID: f"{where} keeps every rule",
            Verdict.BROKEN: f"{where} breaks a rule: {self.rule}; it stands",
            Verdict.VOIDED: f"{where} broke a rule: {self.rule}; voided",
            Verdict.GONE: f"{where} is no longer pending"
            + ("" if self.rule is None else f" (it broke {self.rule})"),
            Verdict.MISSED: f"{where}: its challenge window closed before it could be checked",
        }[self.verdict]
        return f"{text} ({self.detail})" if self.detail else text


class WatchMetrics:
    """The watch's Prometheus families (docs/operations.md, "Metrics"); prometheus-client is
    not in the worker's extra, so it is imported only when metrics are wanted."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge

        registry = REGISTRY if registry is None else registry
        self.findings = Counter(
            "fedrelay_proposal_watch_findings",
            "Verdicts on round proposals: valid, broken (stands), voided, gone, missed.",
            ["verdict"],
            registry=registry,
        )
        self.failures = Counter(
            "fedrelay_proposal_watch_failures",
            "Checks and disproofs that failed and will be tried again, by step and error class.",
            ["step", "error"],
            registry=registry,
        )
        self.block = Gauge(
            "fedrelay_proposal_watch_block",
            "The last coordinator-chain block whose proposals the watch has read.",
            registry=registry,
        )
        self.open = Gauge(
            "fedrelay_proposal_watch_open",
            "Proposals the watch follows: seen, their challenge window not closed yet.",
            registry=registry,
        )


@dataclass
class _Followed:
    made: ProposalMade
    due: float = 0.0  # monotonic time of the next check
    checked: bool = False  # a check succeeded at least once
    broken: str | None = None  # the rule a check found broken, while its disproof has not landed


class ProposalWatch:
    """Checks a market's proposals as they are made; voids the broken ones when it may.

    Drive it with :meth:`run` (until :meth:`request_stop`), or with :meth:`start` and then
    :meth:`step` for one pass at a time.
    """

    #: The newest blocks already read that each step reads again: a node may answer
    #: ``eth_getLogs`` for its newest block before it serves that block's logs, and a proposal
    #: it left out then would go unchecked.
    REREAD_BLOCKS = 2

    def __init__(
        self,
        board: ProposalBoard,
        *,
        disprove: bool,
        jobs: Collection[int] | None = None,
        poll_interval: float = 2.0,
        recheck_interval: float = 15.0,
        max_span: int = DEFAULT_MAX_SPAN,
        metrics: WatchMetrics | None = None,
        report: Callable[[Finding], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Args:
        board: The market's proposals.
        disprove: Void a proposal that breaks a rule (the board holds the sender's key).
        jobs: Only these jobs' proposals; None: every job's.
        poll_interval: Seconds between looks at the chain, and before a failed step is retried.
        recheck_interval: Seconds between checks of a valid proposal still open.
        max_span: Blocks per ``ResultsProposed`` query.
        metrics: Where to count; None: nowhere.
        report: Called with each finding (besides the log line every finding gets).
        clock: Monotonic seconds (tests pass their own).
        """
        if poll_interval <= 0 or recheck_interval <= 0:
            raise ValueError("poll_interval and recheck_interval must be positive")
        if max_span < 1:
            raise ValueError(f"max_span must be at least 1, got {max_span}")
        self._board = board
        self._disprove = disprove
        self._jobs = None if jobs is None else frozenset(jobs)
        self._poll = poll_interval
        self._recheck = recheck_interval
        self._span = max_span
        self._metrics = metrics
        self._report = report
        self._clock = clock
        self._cursor: int | None = None
        self._floor = 0  # the first block read (re-reading never goes below it)
        self._followed: dict[tuple[int, int, int], _Followed] = {}
        # Proposals no longer followed, by key, with their deadlines: a re-read block does not
        # bring them back (forgotten once their windows close, when reading passes them over).
        self._done: dict[tuple[int, int, int], int] = {}
        self._stop = asyncio.Event()

    @property
    def cursor(self) -> int | None:
        """The next block whose proposals the watch reads (None before :meth:`start`)."""
        return self._cursor

    @property
    def following(self) -> tuple[ProposalMade, ...]:
        """The proposals whose windows are still open, in the order they were made."""
        return tuple(f.made for f in self._followed.values())

    async def start(self, from_block: int | None = None) -> int:
        """Set where reading starts: ``from_block``, or the first block of the current challenge
        window (no proposal made before it can still be disproved). Returns that block.

        Raises:
            ChainUnavailable: The chain does not answer.
        """
        if from_block is None:
            now = await self._board.now()
            window = await self._board.challenge_window()
            from_block = await self._board.first_block_since(max(0, now.timestamp - window))
        self._cursor = self._floor = max(0, from_block)
        log.info("proposal watch reads from block %d", self._cursor)
        return self._cursor

    async def step(self) -> list[Finding]:
        """Read the proposals made since the last step, and check those that are due.

        Raises:
            ChainUnavailable: The chain does not answer while reading new proposals (nothing
                is lost: the next step reads from the same block).
            ChainRejected: The chain refused to list proposals (a log-range limit below
                ``max_span``?).
        """
        if self._cursor is None:
            raise RuntimeError("call start() before step()")
        now = await self._board.now()
        await self._read_until(now)
        findings: list[Finding] = []
        for key, followed in list(self._followed.items()):
            if now.timestamp >= followed.made.deadline:
                self._drop(key)
                if not followed.checked:
                    findings.append(self._found(Finding(followed.made, Verdict.MISSED)))
                continue
            if self._clock() < followed.due:
                continue
            finding = await self._check(followed, now)
            if finding is not None:
                findings.append(self._found(finding))
        if self._metrics is not None:
            self._metrics.open.set(len(self._followed))
        return findings

    async def run(self, from_block: int | None = None) -> None:
        """Watch until :meth:`request_stop`; a step that fails is retried after the poll
        interval (a proposal is dropped only when its window closes)."""
        while self._cursor is None:
            try:
                await self.start(from_block)
            except ChainUnavailable as exc:
                self._failed("start", exc)
                if await self._wait():
                    return
        while not self._stop.is_set():
            try:
                await self.step()
            except (ChainUnavailable, ChainRejected) as exc:
                self._failed("read", exc)
            if await self._wait():
                return

    async def chain_answers(self) -> bool:
        """A readiness check: the chain answers."""
        try:
            await self._board.now()
        except ChainUnavailable:
            return False
        return True

    def request_stop(self) -> None:
        """Stop :meth:`run` after its current step."""
        self._stop.set()

    async def _wait(self) -> bool:
        """Sleep one poll interval or until stopped; True when stopped."""
        try:
            await asyncio.wait_for(self._stop.wait(), self._poll)
        except TimeoutError:
            return False
        return True

    async def _read_until(self, now: ChainTime) -> None:
        """Follow the proposals made up to block ``now``, reading the last
        :attr:`REREAD_BLOCKS` blocks read before again; one whose window had already closed is
        history (settled or about to be), not something to check."""
        assert self._cursor is not None
        self._done = {k: d for k, d in self._done.items() if now.timestamp < d}
        start = max(self._floor, self._cursor - self.REREAD_BLOCKS)
        while start <= now.block:
            to = min(now.block, start + self._span - 1)
            for made in await self._board.proposals(start, to):
                if self._jobs is not None and made.job_id not in self._jobs:
                    continue
                if now.timestamp >= made.deadline:
                    continue
                key = (made.job_id, made.round, made.proposal)
                if key not in self._done:
                    self._followed.setdefault(key, _Followed(made))
            start = to + 1
            self._cursor = max(self._cursor, start)
            if self._metrics is not None:
                self._metrics.block.set(to)

    def _drop(self, key: tuple[int, int, int]) -> None:
        """Stop following a proposal, for good."""
        self._done[key] = self._followed.pop(key).made.deadline

    async def _check(self, followed: _Followed, now: ChainTime) -> Finding | None:
        made = followed.made
        key = (made.job_id, made.round, made.proposal)
        with _TRACER.start_as_current_span(
            "proposal_watch.check",
            attributes={"job_id": made.job_id, "round": made.round, "proposal": made.proposal},
        ) as span:
            try:
                check = await self._board.check(made)
            except (ChainUnavailable, ChainRejected) as exc:
                followed.due = self._clock() + self._poll
                self._failed("check", exc, made)
                return None
            span.set_attribute("broken", check.broken or "")
            if not check.pending:
                self._drop(key)
                if followed.broken is not None:  # somebody voided it first, or it settled
                    return Finding(made, Verdict.GONE, followed.broken, "after a failed disproof")
                return None if followed.checked else Finding(made, Verdict.GONE)
            first = not followed.checked
            followed.checked = True
            if check.broken is None:
                followed.due = self._clock() + self._recheck
                if not first:
                    return None
                left = made.deadline - now.timestamp
                return Finding(made, Verdict.VALID, detail=f"window open {left} s more")
            if not self._disprove:
                self._drop(key)
                return Finding(made, Verdict.BROKEN, check.broken, "no disproof key")
            followed.broken = check.broken
            try:
                await self._board.disprove(made)
            except (ChainUnavailable, ChainRejected) as exc:
                # Perhaps somebody else voided it first, or it settled: the next check tells.
                followed.due = self._clock() + self._poll
                self._failed("disprove", exc, made)
                return None
            self._drop(key)
            return Finding(made, Verdict.VOIDED, check.broken)

    def _found(self, finding: Finding) -> Finding:
        level = {
            Verdict.VALID: logging.INFO,
            Verdict.GONE: logging.INFO,
            Verdict.VOIDED: logging.WARNING,
            Verdict.BROKEN: logging.ERROR,
            Verdict.MISSED: logging.ERROR,
        }[finding.verdict]
        log.log(level, "%s", finding.describe())
        if self._metrics is not None:
            self._metrics.findings.labels(finding.verdict.value).inc()
        if self._report is not None:
            self._report(finding)
        return finding

    def _failed(self, step: str, exc: Exception, made: ProposalMade | None = None) -> None:
        where = "" if made is None else f" of job {made.job_id} round {made.round}"
        log.warning("proposal watch: %s%s failed, trying again: %s", step, where, exc)
        if self._metrics is not None:
            self._metrics.failures.labels(step, type(exc).__name__).inc()
