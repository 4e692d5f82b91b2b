"""The proposal watch's rules, on a fake board: which proposals it reads, when it checks them,
what it voids and what it reports. The watch against a real JobMarket on anvil is in
``tests/integration/evm/test_evm_proposal_watch.py``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry

from fedrelay.ports.proposals import ChainTime, ProposalCheck, ProposalMade
from fedrelay.ports.worker_chain import ChainRejected, ChainUnavailable
from fedrelay.worker.proposal_watch import Finding, ProposalWatch, Verdict, WatchMetrics

WINDOW = 100


@dataclass
class _Proposal:
    made: ProposalMade
    broken: str | None = None
    pending: bool = True


@dataclass
class FakeProposalBoard:
    """A fake market: proposals, their verdicts and the chain's clock are set by the test;
    failures to inject are queued per method."""

    block: int = 10
    timestamp: int = 1_000
    proposals_made: list[_Proposal] = field(default_factory=list)
    fail: dict[str, list[Exception]] = field(default_factory=dict)
    reads: list[tuple[int, int]] = field(default_factory=list)
    checks: list[ProposalMade] = field(default_factory=list)
    disproved: list[ProposalMade] = field(default_factory=list)

    def propose(
        self, job: int, round_number: int, proposal: int = 1, broken: str | None = None
    ) -> ProposalMade:
        self.block += 1
        made = ProposalMade(job, round_number, proposal, self.block, self.timestamp + WINDOW)
        self.proposals_made.append(_Proposal(made, broken))
        return made

    def advance(self, blocks: int, seconds: int) -> None:
        self.block += blocks
        self.timestamp += seconds

    def _maybe_fail(self, method: str) -> None:
        queued = self.fail.get(method)
        if queued:
            raise queued.pop(0)

    def _find(self, made: ProposalMade) -> _Proposal:
        return next(p for p in self.proposals_made if p.made == made)

    async def now(self) -> ChainTime:
        self._maybe_fail("now")
        return ChainTime(self.block, self.timestamp)

    async def challenge_window(self) -> int:
        return WINDOW

    async def first_block_since(self, timestamp: int) -> int:
        return 3 if timestamp > 0 else 0

    async def proposals(self, from_block: int, to_block: int) -> Sequence[ProposalMade]:
        self._maybe_fail("proposals")
        self.reads.append((from_block, to_block))
        return [p.made for p in self.proposals_made if from_block <= p.made.block <= to_block]

    async def check(self, made: ProposalMade) -> ProposalCheck:
        self._maybe_fail("check")
        self.checks.append(made)
        found = self._find(made)
        if not found.pending:
            return ProposalCheck(pending=False)
        return ProposalCheck(True, found.broken)

    async def disprove(self, made: ProposalMade) -> None:
        self._maybe_fail("disprove")
        found = self._find(made)
        if not found.pending or found.broken is None:
            raise ChainRejected("the market refused: ProposalValid()")
        found.pending = False
        self.disproved.append(made)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _watch(
    board: FakeProposalBoard, *, disprove: bool = True, **options: object
) -> tuple[ProposalWatch, list[Finding], _Clock]:
    found: list[Finding] = []
    clock = _Clock()
    chosen: dict[str, object] = {"recheck_interval": 15.0, "poll_interval": 2.0, **options}
    watch = ProposalWatch(
        board,
        disprove=disprove,
        report=found.append,
        clock=clock,
        **chosen,  # type: ignore[arg-type]
    )
    return watch, found, clock


async def test_it_starts_at_the_current_challenge_window_and_reads_the_newest_blocks_again() -> (
    None
):
    board = FakeProposalBoard()
    watch, _, _ = _watch(board, max_span=4)
    assert await watch.start() == 3  # first_block_since(now - window)
    await watch.step()
    board.advance(blocks=5, seconds=10)
    await watch.step()
    await watch.step()  # no new block: the newest two are read again all the same
    assert ProposalWatch.REREAD_BLOCKS == 2
    assert board.reads == [(3, 6), (7, 10), (9, 12), (13, 15), (14, 15)]
    assert watch.cursor == 16


async def test_a_proposal_whose_logs_the_node_served_late_is_checked_once() -> None:
    """A node that answers for its newest block before it serves that block's logs (the fake
    board leaves the proposal out of the first read): the next step's re-read finds it, and
    later re-reads of a proposal already voided do not bring it back."""
    board = FakeProposalBoard()
    watch, found, _ = _watch(board)
    await watch.start()
    made = board.propose(6, 0, broken="TotalMismatch(2, 1)")
    shown = board.proposals_made.pop()  # not served yet
    await watch.step()
    assert watch.following == ()
    board.proposals_made.append(shown)
    await watch.step()
    assert [(f.made, f.verdict) for f in found] == [(made, Verdict.VOIDED)]
    await watch.step()
    await watch.step()
    assert board.disproved == [made]
    assert [(f.made, f.verdict) for f in found] == [(made, Verdict.VOIDED)]  # reported once


async def test_a_valid_proposal_is_reported_once_then_rechecked_until_its_window_closes() -> None:
    board = FakeProposalBoard()
    made = board.propose(7, 0)
    watch, found, clock = _watch(board)
    await watch.start()
    await watch.step()
    assert [(f.made, f.verdict) for f in found] == [(made, Verdict.VALID)]
    assert (
        found[0].describe() == "job 7 round 0 proposal 1 keeps every rule (window open 100 s more)"
    )

    clock.now = 10.0  # before the recheck interval: not checked again
    await watch.step()
    assert board.checks == [made]
    clock.now = 16.0
    board.advance(blocks=1, seconds=20)
    await watch.step()
    assert board.checks == [made, made]
    assert len(found) == 1  # still valid: nothing new to report

    board.advance(blocks=1, seconds=WINDOW)  # its window closed
    clock.now = 40.0
    await watch.step()
    assert watch.following == ()
    assert len(board.checks) == 2
    assert board.disproved == []


async def test_a_broken_proposal_is_voided_with_the_rule_it_breaks() -> None:
    board = FakeProposalBoard()
    honest = board.propose(1, 0)
    broken = board.propose(2, 3, broken="AcceptedWithoutCommitment(0x41)")
    registry = CollectorRegistry()
    watch, found, _ = _watch(board, metrics=WatchMetrics(registry))
    await watch.start()
    await watch.step()
    assert board.disproved == [broken]
    assert [(f.made, f.verdict, f.rule) for f in found] == [
        (honest, Verdict.VALID, None),
        (broken, Verdict.VOIDED, "AcceptedWithoutCommitment(0x41)"),
    ]
    assert watch.following == (honest,)
    voided = registry.get_sample_value(
        "fedrelay_proposal_watch_findings_total", {"verdict": "voided"}
    )
    assert voided == 1.0
    assert registry.get_sample_value("fedrelay_proposal_watch_open") == 1.0


async def test_a_proposal_that_becomes_broken_before_its_window_closes_is_voided() -> None:
    """A late TASK_REFUSED can make a valid proposal break a rule: the recheck catches it."""
    board = FakeProposalBoard()
    made = board.propose(1, 0)
    watch, found, clock = _watch(board)
    await watch.start()
    await watch.step()
    board.proposals_made[0].broken = "RefusedTaskRewarded(0x42)"
    clock.now = 15.0
    await watch.step()
    assert board.disproved == [made]
    assert [f.verdict for f in found] == [Verdict.VALID, Verdict.VOIDED]


async def test_without_a_key_a_broken_proposal_is_reported_and_left_standing() -> None:
    board = FakeProposalBoard()
    made = board.propose(1, 0, broken="TotalMismatch(2, 1)")
    watch, found, _ = _watch(board, disprove=False)
    await watch.start()
    await watch.step()
    assert board.disproved == []
    assert [(f.made, f.verdict, f.detail) for f in found] == [
        (made, Verdict.BROKEN, "no disproof key")
    ]
    assert "breaks a rule: TotalMismatch(2, 1); it stands" in found[0].describe()
    assert watch.following == ()


async def test_a_failed_disproof_is_tried_again_and_a_proposal_voided_by_another_is_reported() -> (
    None
):
    board = FakeProposalBoard()
    made = board.propose(1, 0, broken="TotalMismatch(2, 1)")
    board.fail["disprove"] = [ChainUnavailable("connection refused")]
    watch, found, clock = _watch(board)
    await watch.start()
    await watch.step()
    assert found == []
    assert watch.following == (made,)

    clock.now = 2.0  # one poll interval on: tried again, and it lands
    await watch.step()
    assert board.disproved == [made]
    assert [f.verdict for f in found] == [Verdict.VOIDED]

    # Another proposal whose disproof is refused because somebody voided it first.
    other = board.propose(1, 0, proposal=2, broken="ResultsRootMismatch(0x01)")
    board.fail["disprove"] = [ChainRejected("the market refused: RoundNotProposed(1, 0)")]
    await watch.step()
    board.proposals_made[-1].pending = False
    clock.now = 4.0
    await watch.step()
    assert [(f.made, f.verdict, f.rule) for f in found[1:]] == [
        (other, Verdict.GONE, "ResultsRootMismatch(0x01)")
    ]


async def test_a_check_that_never_succeeds_inside_the_window_is_reported_missed() -> None:
    board = FakeProposalBoard()
    made = board.propose(1, 0)
    board.fail["check"] = [ChainRejected("commitments do not rebuild the lanes")]
    watch, found, clock = _watch(board)
    await watch.start()
    await watch.step()
    board.fail["check"] = [ChainUnavailable("timeout")]
    clock.now = 2.0
    await watch.step()
    assert found == []
    assert watch.following == (made,)
    board.advance(blocks=1, seconds=WINDOW)
    clock.now = 4.0
    await watch.step()
    assert watch.following == ()
    assert [(f.made, f.verdict) for f in found] == [(made, Verdict.MISSED)]
    assert len(board.checks) == 0  # both failed before the fake recorded a check


async def test_a_proposal_whose_window_closed_before_it_was_read_is_history() -> None:
    board = FakeProposalBoard()
    board.propose(1, 0, broken="TotalMismatch(2, 1)")
    board.advance(blocks=1, seconds=WINDOW)
    watch, found, _ = _watch(board)
    await watch.start(from_block=0)
    await watch.step()
    assert board.checks == []
    assert board.disproved == []
    assert found == []
    assert watch.following == ()


async def test_only_the_chosen_jobs_are_watched_and_a_settled_proposal_is_gone() -> None:
    board = FakeProposalBoard()
    board.propose(1, 0, broken="TotalMismatch(2, 1)")
    mine = board.propose(2, 0)
    board.proposals_made[-1].pending = False  # settled before the watch looked
    watch, found, _ = _watch(board, jobs={2})
    await watch.start()
    await watch.step()
    assert board.checks == [mine]
    assert [(f.made, f.verdict) for f in found] == [(mine, Verdict.GONE)]
    assert board.disproved == []


async def test_a_failed_read_loses_no_block_and_run_stops_on_request() -> None:
    board = FakeProposalBoard()
    made = board.propose(4, 1, broken="TotalMismatch(2, 1)")
    board.fail["proposals"] = [ChainUnavailable("connection refused")]

    def stop_when_voided(finding: Finding) -> None:
        if finding.verdict is Verdict.VOIDED:
            watch.request_stop()

    watch = ProposalWatch(board, disprove=True, poll_interval=0.01, report=stop_when_voided)
    await watch.start()
    with pytest.raises(ChainUnavailable):
        await watch.step()
    assert watch.cursor == 3
    await watch.run()
    assert board.disproved == [made]


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        ProposalWatch(FakeProposalBoard(), disprove=False, poll_interval=0)
    with pytest.raises(ValueError, match="max_span"):
        ProposalWatch(FakeProposalBoard(), disprove=False, max_span=0)


async def test_step_before_start_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match="start"):
        await ProposalWatch(FakeProposalBoard(), disprove=False).step()
