// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {JobMarket} from "../src/JobMarket.sol";
import {ProposalChecker} from "../src/ProposalChecker.sol";
import {PayloadCodec} from "../src/libraries/PayloadCodec.sol";
import {ResultsHash} from "../src/libraries/ResultsHash.sol";
import {MarketFixture} from "./utils/MarketFixture.sol";

/// Optimistic proposals: `finalizeRound` takes what keeps its own few rules, `ProposalChecker`
/// holds the rest, and anyone voids a proposal that breaks one with `disprove` within its window.
contract ProposalDisproofTest is MarketFixture {
    uint256 internal constant BUDGET = 5 ether;

    function setUp() public {
        setUpMarket();
    }

    /// A job of two rounds whose round 0 has workers 0, 1 and 2 on the EVM worker chain (2 never
    /// commits) and 10 and 11 on Solana, all others committed.
    function openRound() internal returns (uint64 jobId) {
        jobId = postNative(2, 5, BUDGET);
        prepareRound(jobId, 0, EVM_WORKERS, 0, 2);
        registerWorker(EVM_WORKERS, workerKey(2), MIN_STAKE, payoutOf(2));
        assign(jobId, EVM_WORKERS, 2, 1);
        prepareRound(jobId, 0, SOLANA, 10, 2);
    }

    /// `openRound`'s honest results in lane order: the committed workers accepted (1 ether
    /// each), worker 2 dropped.
    function honestResults() internal pure returns (JobMarket.Result[] memory r) {
        r = new JobMarket.Result[](5);
        JobMarket.Result[] memory evm = acceptedResults(EVM_WORKERS, 0, 3, 1 ether);
        JobMarket.Result[] memory sol = acceptedResults(SOLANA, 10, 2, 1 ether);
        (r[0], r[1], r[2], r[3], r[4]) = (evm[0], evm[1], evm[2], sol[0], sol[1]);
        r[2].outcome = PayloadCodec.OUTCOME_DROPPED;
        r[2].reward = 0;
    }

    /// `honest` with worker 2, who never committed, accepted and paid 1 ether.
    function uncommittedPaid(JobMarket.Result[] memory honest) internal pure returns (JobMarket.Result[] memory bad) {
        bad = copyOf(honest);
        bad[2].outcome = PayloadCodec.OUTCOME_ACCEPTED;
        bad[2].reward = 1 ether;
    }

    function copyOf(JobMarket.Result[] memory a) internal pure returns (JobMarket.Result[] memory b) {
        b = new JobMarket.Result[](a.length);
        for (uint256 i = 0; i < a.length; ++i) {
            b[i] = JobMarket.Result(
                a[i].workerKey, a[i].workerChain, a[i].outcome, a[i].fault, a[i].reward, a[i].evidence
            );
        }
    }

    function taskAt(uint64 jobId, JobMarket.Result memory r) internal pure returns (bytes32) {
        return taskOf(jobId, 0, r.workerChain, r.workerKey);
    }

    function phaseOf(uint64 jobId, uint32 round) internal view returns (uint8) {
        return uint8(market.getRound(jobId, round).phase);
    }

    // ------------------------------------------------------------------ valid proposals stand

    function test_disprove_validProposalCannotBeDisproved() public {
        uint64 jobId = openRound();
        JobMarket.Result[] memory r = honestResults();
        finalize(jobId, 0, r);
        JobMarket.Round memory before = market.getRound(jobId, 0);
        JobMarket.Commit[] memory c = commitsFor(jobId, 0, r);
        vm.prank(DISPROVER);
        vm.expectRevert(abi.encodeWithSelector(ProposalChecker.ProposalValid.selector, jobId, 0));
        checker.disprove(jobId, 0, r, c);
        JobMarket.Round memory after_ = market.getRound(jobId, 0);
        assertEq(uint8(after_.phase), uint8(JobMarket.RoundPhase.Proposed), "still proposed");
        assertEq(after_.proposal, before.proposal, "the same proposal");
        assertEq(after_.challengeDeadline, before.challengeDeadline, "the same window");
        assertEq(after_.resultsRoot, before.resultsRoot, "the same root");
        assertEq(after_.proposedTotal, 4 ether, "the same total");
        vm.warp(before.challengeDeadline);
        settle(jobId, 0);
        assertEq(market.claimable(payoutOf(11), address(0)), 1 ether, "paid");
        assertEq(market.claimable(payoutOf(2), address(0)), 0, "the dropped worker is not");
    }

    // ------------------------------------------------------------------ each rule, voided

    function test_disprove_voidsResultsThatAreNotTheAssignedSetInLaneOrder() public {
        uint64 jobId = openRound();
        JobMarket.Result[] memory honest = honestResults();
        // An unassigned worker in place of an assigned one.
        JobMarket.Result[] memory r = copyOf(honest);
        r[2].workerKey = workerKey(7);
        expectRefusedAndVoided(
            jobId, 0, r, abi.encodeWithSelector(ProposalChecker.AssignmentMismatch.selector, EVM_WORKERS)
        );
        // A task named twice (one left out).
        r = copyOf(honest);
        r[4] = JobMarket.Result(workerKey(10), SOLANA, PayloadCodec.OUTCOME_DROPPED, 0, 0, bytes32(0));
        expectRefusedAndVoided(jobId, 0, r, abi.encodeWithSelector(ProposalChecker.AssignmentMismatch.selector, SOLANA));
        // The lanes in the other order.
        r = copyOf(honest);
        (r[0], r[1], r[2], r[3], r[4]) = (honest[3], honest[4], honest[0], honest[1], honest[2]);
        expectRefusedAndVoided(jobId, 0, r, abi.encodeWithSelector(ProposalChecker.ResultsOutOfOrder.selector, 0));
        // A result on a chain that is not the job's.
        r = copyOf(honest);
        r[4].workerChain = 9;
        expectRefusedAndVoided(jobId, 0, r, abi.encodeWithSelector(ProposalChecker.ResultsOutOfOrder.selector, 4));
    }

    function test_disprove_voidsEachBrokenResultRule() public {
        uint64 jobId = openRound();
        JobMarket.Result[] memory honest = honestResults();
        bytes32 task0 = taskAt(jobId, honest[0]);
        bytes32 task2 = taskAt(jobId, honest[2]);

        JobMarket.Result[] memory r = copyOf(honest);
        r[0].outcome = 3;
        expectRefusedAndVoided(jobId, 0, r, abi.encodeWithSelector(ProposalChecker.InvalidOutcome.selector, task0, 3));
        // Worker 2 never committed: accepted (paid or not) it is voided.
        r = copyOf(honest);
        r[2].outcome = PayloadCodec.OUTCOME_ACCEPTED;
        r[2].reward = 1 ether;
        expectRefusedAndVoided(
            jobId, 0, r, abi.encodeWithSelector(ProposalChecker.AcceptedWithoutCommitment.selector, task2)
        );
        r = copyOf(honest);
        r[2].reward = 1;
        expectRefusedAndVoided(
            jobId, 0, r, abi.encodeWithSelector(ProposalChecker.RewardWithoutAcceptance.selector, task2, 1)
        );
        r = copyOf(honest);
        (r[2].fault, r[2].evidence) = (1, EVIDENCE);
        expectRefusedAndVoided(jobId, 0, r, abi.encodeWithSelector(ProposalChecker.InvalidFault.selector, task2, 1, 1));
        r = copyOf(honest);
        r[0].evidence = EVIDENCE;
        expectRefusedAndVoided(jobId, 0, r, abi.encodeWithSelector(ProposalChecker.InvalidEvidence.selector, task0, 0));
        // Slashes: a fault the policy does not know, none, or no evidence.
        r = copyOf(honest);
        (r[2].outcome, r[2].fault, r[2].evidence) = (PayloadCodec.OUTCOME_SLASHED, 3, EVIDENCE);
        expectRefusedAndVoided(jobId, 0, r, abi.encodeWithSelector(ProposalChecker.InvalidFault.selector, task2, 2, 3));
        r[2].fault = 0;
        expectRefusedAndVoided(jobId, 0, r, abi.encodeWithSelector(ProposalChecker.InvalidFault.selector, task2, 2, 0));
        (r[2].fault, r[2].evidence) = (2, bytes32(0));
        expectRefusedAndVoided(jobId, 0, r, abi.encodeWithSelector(ProposalChecker.InvalidEvidence.selector, task2, 2));
        // A committed worker slashed as MISSED.
        r = copyOf(honest);
        (r[0].outcome, r[0].fault, r[0].reward, r[0].evidence) = (PayloadCodec.OUTCOME_SLASHED, 2, 0, EVIDENCE);
        expectRefusedAndVoided(jobId, 0, r, abi.encodeWithSelector(ProposalChecker.CommittedTaskMissed.selector, task0));

        // After all of them, the honest proposal is taken and settles.
        finalize(jobId, 0, honest);
        assertEq(market.getRound(jobId, 0).proposal, 10, "the tenth proposal");
        vm.warp(block.timestamp + WINDOW);
        settle(jobId, 0);
        assertEq(market.claimable(payoutOf(0), address(0)), 1 ether, "paid once, as proposed honestly");
    }

    function test_disprove_voidsASlashOfARefusedOrReleasedTask() public {
        uint64 jobId = openRound();
        JobMarket.Result[] memory honest = honestResults();
        bytes32 task2 = taskAt(jobId, honest[2]);
        bytes32 task11 = taskAt(jobId, honest[4]);
        // Worker 2's chain refused its task; worker 11 released its own (after committing).
        market.receiveMessage(
            signed(EVM_WORKERS, HUB, stakeChangedPayload(workerKey(2), 0, 1, PayloadCodec.STAKE_TASK_REFUSED, task2))
        );
        market.receiveMessage(
            signed(
                SOLANA,
                SOLANA_PROGRAM,
                stakeChangedPayload(workerKey(11), MIN_STAKE, 1, PayloadCodec.STAKE_TASK_RELEASED, task11)
            )
        );
        JobMarket.Result[] memory r = copyOf(honest);
        (r[2].outcome, r[2].fault, r[2].evidence) = (PayloadCodec.OUTCOME_SLASHED, 2, EVIDENCE);
        expectRefusedAndVoided(
            jobId, 0, r, abi.encodeWithSelector(ProposalChecker.RefusedTaskNotDropped.selector, task2)
        );
        r = copyOf(honest);
        (r[4].outcome, r[4].fault, r[4].reward, r[4].evidence) = (PayloadCodec.OUTCOME_SLASHED, 1, 0, EVIDENCE);
        expectRefusedAndVoided(
            jobId, 0, r, abi.encodeWithSelector(ProposalChecker.ReleasedTaskSlashed.selector, task11)
        );
    }

    function test_disprove_voidsAStatedTotalOrRootThatIsNotTheResults() public {
        uint64 jobId = openRound();
        JobMarket.Result[] memory r = honestResults();
        JobMarket.Commit[] memory c = commitsFor(jobId, 0, r);
        bytes32 root = resultsRootOf(jobId, 0, r);
        // A total below the rewards' sum (a budget overrun hidden from the market's own check)...
        JobMarket.Result[] memory over = copyOf(r);
        over[0].reward = 2 ether;
        over[1].reward = 2 ether; // 6 ether in all, stated as the budget
        bytes32 overRoot = resultsRootOf(jobId, 0, over);
        bytes memory reason = abi.encodeWithSelector(ProposalChecker.TotalMismatch.selector, BUDGET, 6 ether);
        vm.expectRevert(reason);
        checker.checkProposal(jobId, 0, BUDGET, overRoot, over, c);
        finalizeUnchecked(jobId, 0, over, BUDGET, overRoot);
        expectVoided(jobId, 0, reason);
        // ... or above it.
        reason = abi.encodeWithSelector(ProposalChecker.TotalMismatch.selector, 4 ether + 1, 4 ether);
        vm.expectRevert(reason);
        checker.checkProposal(jobId, 0, 4 ether + 1, root, r, c);
        finalizeUnchecked(jobId, 0, r, 4 ether + 1, root);
        expectVoided(jobId, 0, reason);
        // A root that is not the results' (disputes would be read against it), or their root in
        // another job or round.
        bytes32[3] memory wrong = [keccak256("a root"), resultsRootOf(jobId, 1, r), resultsRootOf(jobId + 1, 0, r)];
        for (uint256 i = 0; i < wrong.length; ++i) {
            reason = abi.encodeWithSelector(ProposalChecker.ResultsRootMismatch.selector, wrong[i]);
            vm.expectRevert(reason);
            checker.checkProposal(jobId, 0, 4 ether, wrong[i], r, c);
            finalizeUnchecked(jobId, 0, r, 4 ether, wrong[i]);
            assertEq(market.getRound(jobId, 0).resultsRoot, wrong[i], "the root as proposed");
            expectVoided(jobId, 0, reason);
        }
        // The market's own check refuses a stated total above the budget; the checker's, a sum
        // above it stated as such (unreachable by a disproof, refused when proposed).
        vm.prank(aggregator, aggregator);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.RewardExceedsBudget.selector, 6 ether, BUDGET));
        market.finalizeRound(jobId, 0, MODEL, 6 ether, overRoot, over);
        vm.expectRevert(abi.encodeWithSelector(ProposalChecker.RewardExceedsBudget.selector, 6 ether, BUDGET));
        checker.checkProposal(jobId, 0, 6 ether, overRoot, over, c);
    }

    // ------------------------------------------------------------------ what a disproof needs

    function test_disprove_wrongEvidenceRevertsAndVoidsNothing() public {
        uint64 jobId = openRound();
        JobMarket.Result[] memory r = honestResults();
        r[2].outcome = PayloadCodec.OUTCOME_ACCEPTED; // worker 2 never committed
        finalizeUnchecked(jobId, 0, r, 4 ether, resultsRootOf(jobId, 0, r));
        JobMarket.Commit[] memory honest = commitsFor(jobId, 0, r);
        assertEq(honest.length, 4, "four commitments");
        // Evidence that does not rebuild the lanes' chains proves nothing: a commitment left out,
        // changed, or the lanes swapped.
        JobMarket.Commit[] memory c = new JobMarket.Commit[](3);
        (c[0], c[1], c[2]) = (honest[0], honest[2], honest[3]);
        vm.prank(DISPROVER);
        vm.expectRevert(abi.encodeWithSelector(ProposalChecker.CommitsMismatch.selector, EVM_WORKERS));
        checker.disprove(jobId, 0, r, c);
        c = new JobMarket.Commit[](4);
        (c[0], c[1], c[2], c[3]) = (honest[0], honest[1], honest[2], honest[3]);
        c[1] = JobMarket.Commit(c[1].workerKey, keccak256("another update"));
        vm.expectRevert(abi.encodeWithSelector(ProposalChecker.CommitsMismatch.selector, EVM_WORKERS));
        checker.disprove(jobId, 0, r, c);
        c = new JobMarket.Commit[](4);
        (c[0], c[1], c[2], c[3]) = (honest[2], honest[3], honest[0], honest[1]);
        vm.expectRevert(abi.encodeWithSelector(ProposalChecker.CommitsMismatch.selector, EVM_WORKERS));
        checker.disprove(jobId, 0, r, c);
        assertEq(phaseOf(jobId, 0), uint8(JobMarket.RoundPhase.Proposed), "nothing voided");
        // The right evidence voids it.
        expectVoided(
            jobId, 0, abi.encodeWithSelector(ProposalChecker.AcceptedWithoutCommitment.selector, taskAt(jobId, r[2]))
        );
    }

    function test_disprove_onlyWithinTheWindowOfAPendingProposal() public {
        uint64 jobId = openRound();
        JobMarket.Result[] memory r = honestResults();
        r[2].outcome = PayloadCodec.OUTCOME_ACCEPTED;
        JobMarket.Commit[] memory c = commitsFor(jobId, 0, r);
        // Nothing proposed yet, or another round.
        vm.expectRevert(abi.encodeWithSelector(ProposalChecker.RoundNotProposed.selector, jobId, 0));
        checker.disprove(jobId, 0, r, c);
        finalizeUnchecked(jobId, 0, r, 4 ether, resultsRootOf(jobId, 0, r));
        vm.expectRevert(abi.encodeWithSelector(ProposalChecker.RoundNotProposed.selector, jobId, 1));
        checker.disprove(jobId, 1, r, c);
        vm.expectRevert(abi.encodeWithSelector(ProposalChecker.RoundNotProposed.selector, jobId + 1, 0));
        checker.disprove(jobId + 1, 0, r, c);
        // Challenged: no longer pending.
        vm.prank(challenger);
        market.challengeRound(jobId, 0, bytes32("challenged"));
        vm.expectRevert(abi.encodeWithSelector(ProposalChecker.RoundNotProposed.selector, jobId, 0));
        checker.disprove(jobId, 0, r, c);
        // Proposed again: once its window closes, the disproof comes too late (the market says so).
        finalizeUnchecked(jobId, 0, r, 4 ether, resultsRootOf(jobId, 0, r));
        uint64 deadline = market.getRound(jobId, 0).challengeDeadline;
        vm.warp(deadline);
        vm.prank(DISPROVER);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.ChallengeWindowClosed.selector, deadline));
        checker.disprove(jobId, 0, r, c);
        assertEq(phaseOf(jobId, 0), uint8(JobMarket.RoundPhase.Proposed), "stands");
        // Unchallenged and undisproved through its window, it settles; then there is nothing to
        // disprove.
        settle(jobId, 0);
        vm.expectRevert(abi.encodeWithSelector(ProposalChecker.RoundNotProposed.selector, jobId, 0));
        checker.disprove(jobId, 0, r, c);
    }

    /// A proposal whose rewards sum to more than its stated total, that nobody disproved in its
    /// window, cannot settle: crediting its rewards would pay from other jobs' escrow.
    function test_settleRound_rewardsAboveTheStatedTotalNeverSettleUndisproved() public {
        uint64 jobId = openRound();
        JobMarket.Result[] memory r = honestResults(); // 4 ether of rewards
        finalizeUnchecked(jobId, 0, r, 1 ether, resultsRootOf(jobId, 0, r));
        vm.warp(market.getRound(jobId, 0).challengeDeadline);
        (, uint256 escrowedBefore,,,) = market.ledgers(address(0));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.RewardsNotTotal.selector, 4 ether, 1 ether));
        settle(jobId, 0);
        (, uint256 escrowedAfter, uint256 claimable,,) = market.ledgers(address(0));
        assertEq(escrowedAfter, escrowedBefore, "escrow untouched");
        assertEq(claimable, 0, "nothing credited");
        assertEq(market.claimable(payoutOf(0), address(0)), 0, "no worker credited");
        assertEq(phaseOf(jobId, 0), uint8(JobMarket.RoundPhase.Proposed), "still pending");
    }

    function test_disprove_resultsThatAreNotTheProposalsVoidNothing() public {
        uint64 jobId = openRound();
        JobMarket.Result[] memory honest = honestResults();
        finalize(jobId, 0, honest);
        JobMarket.Commit[] memory c = commitsFor(jobId, 0, honest);
        bytes memory mismatch = abi.encodeWithSelector(JobMarket.ResultsMismatch.selector, jobId, 0);
        // Results that break a rule, but are not the ones proposed: the market refuses to void the
        // honest proposal with them.
        JobMarket.Result[] memory other = copyOf(honest);
        other[2].outcome = PayloadCodec.OUTCOME_ACCEPTED;
        vm.prank(DISPROVER);
        vm.expectRevert(mismatch);
        checker.disprove(jobId, 0, other, c);
        other = copyOf(honest);
        other[0].reward = 2 ether; // TotalMismatch against the stated total
        vm.expectRevert(mismatch);
        checker.disprove(jobId, 0, other, c);
        JobMarket.Result[] memory fewer = new JobMarket.Result[](4);
        for (uint256 i = 0; i < 4; ++i) {
            fewer[i] = honest[i];
        }
        vm.expectRevert(mismatch); // ResultCountMismatch, for results that are not the proposal's
        checker.disprove(jobId, 0, fewer, c);
        assertEq(phaseOf(jobId, 0), uint8(JobMarket.RoundPhase.Proposed), "nothing voided");
        vm.warp(block.timestamp + WINDOW);
        settle(jobId, 0);
    }

    function test_voidProposal_onlyTheChecker() public {
        uint64 jobId = openRound();
        JobMarket.Result[] memory r = honestResults();
        r[2].outcome = PayloadCodec.OUTCOME_ACCEPTED;
        finalizeUnchecked(jobId, 0, r, 4 ether, resultsRootOf(jobId, 0, r));
        bytes32 hash = resultsHashOf(r);
        address[4] memory callers = [address(this), aggregator, challenger, poster];
        for (uint256 i = 0; i < callers.length; ++i) {
            vm.prank(callers[i]);
            vm.expectRevert(abi.encodeWithSelector(JobMarket.NotProposalChecker.selector, callers[i]));
            market.voidProposal(jobId, 0, hash, callers[i], "");
        }
        assertEq(phaseOf(jobId, 0), uint8(JobMarket.RoundPhase.Proposed), "nothing voided");
        // The checker itself may (it does so only for a disproof that holds).
        vm.prank(address(checker));
        market.voidProposal(jobId, 0, hash, DISPROVER, "");
        assertEq(phaseOf(jobId, 0), uint8(JobMarket.RoundPhase.Collecting), "voided by the checker");
    }

    // ------------------------------------------------------------------ what the market stores

    /// `finalizeRound`'s calldata for `results` (their own total and root) with word `word` of
    /// result `index` set to `value`.
    function malformed(uint64 jobId, JobMarket.Result[] memory results, uint256 index, uint256 word, uint256 value)
        internal
        pure
        returns (bytes memory data)
    {
        data = abi.encodeWithSelector(
            JobMarket.finalizeRound.selector,
            jobId,
            uint32(0),
            MODEL,
            totalOf(results),
            resultsRootOf(jobId, 0, results),
            results
        );
        // selector, five arguments, the array's offset and length, then six words per result.
        uint256 at = 4 + 7 * 32 + index * 192 + word * 32;
        assembly ("memory-safe") {
            mstore(add(add(data, 32), at), value)
        }
    }

    function test_finalizeRound_malformedResultRefused() public {
        uint64 jobId = openRound();
        JobMarket.Result[] memory r = honestResults();
        // workerChain, outcome, fault and reward one above their types' maxima.
        uint256[4] memory above = [uint256(0x10000), 0x100, 0x100, uint256(1) << 128];
        for (uint256 w = 0; w < 4; ++w) {
            for (uint256 i = 0; i < r.length; i += 2) {
                vm.prank(aggregator, aggregator);
                (bool ok, bytes memory reason) = address(market).call(malformed(jobId, r, i, w + 1, above[w]));
                assertFalse(ok, "malformed result proposed");
                assertEq(reason, abi.encodeWithSelector(ResultsHash.MalformedResult.selector, i), "the result named");
            }
        }
        // A high bit far above the type, on the last result.
        vm.prank(aggregator, aggregator);
        (bool taken, bytes memory why) = address(market).call(malformed(jobId, r, 4, 1, 1 << 255));
        assertFalse(taken, "high bit proposed");
        assertEq(why, abi.encodeWithSelector(ResultsHash.MalformedResult.selector, 4), "the last result");
        assertEq(phaseOf(jobId, 0), uint8(JobMarket.RoundPhase.Collecting), "nothing proposed");
        // A word at its type's maximum is well formed: proposed (and disprovable: no such chain).
        vm.prank(aggregator, aggregator);
        (taken,) = address(market).call(malformed(jobId, r, 2, 1, 0xffff));
        assertTrue(taken, "well formed");
        assertEq(phaseOf(jobId, 0), uint8(JobMarket.RoundPhase.Proposed), "proposed");
    }

    /// The results are read back from the proposing transaction's input: a proposal made inside
    /// another call (a contract wallet, a delegated EOA) would hide them, so it is refused.
    function test_finalizeRound_onlyAsItsOwnTransactionFromAnAccountWithoutCode() public {
        uint64 jobId = openRound();
        JobMarket.Result[] memory r = honestResults();
        bytes32 root = resultsRootOf(jobId, 0, r);
        uint256 total = totalOf(r);
        // The aggregator's call inside another account's transaction (tx.origin differs).
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.ProposerNotExternallyOwned.selector, aggregator));
        market.finalizeRound(jobId, 0, MODEL, total, root, r);
        // The aggregator's own transaction, but its account has code: an EIP-7702 delegation
        // designator (0xef0100 and the delegate's address) lets it run any code around the call.
        vm.etch(aggregator, abi.encodePacked(hex"ef0100", address(0xDE1E)));
        vm.prank(aggregator, aggregator);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.ProposerNotExternallyOwned.selector, aggregator));
        market.finalizeRound(jobId, 0, MODEL, total, root, r);
        assertEq(phaseOf(jobId, 0), uint8(JobMarket.RoundPhase.Collecting), "nothing proposed");
        // Without code, in its own transaction: proposed.
        vm.etch(aggregator, "");
        vm.prank(aggregator, aggregator);
        market.finalizeRound(jobId, 0, MODEL, total, root, r);
        assertEq(phaseOf(jobId, 0), uint8(JobMarket.RoundPhase.Proposed), "proposed");
    }

    function test_settleRound_withOtherResultsRejected() public {
        uint64 jobId = openRound();
        JobMarket.Result[] memory honest = honestResults();
        // A voided proposal's results do not settle the next proposal.
        JobMarket.Result[] memory bad = uncommittedPaid(honest);
        expectRefusedAndVoided(
            jobId,
            0,
            bad,
            abi.encodeWithSelector(ProposalChecker.AcceptedWithoutCommitment.selector, taskAt(jobId, bad[2]))
        );
        finalize(jobId, 0, honest);
        vm.warp(block.timestamp + WINDOW);
        bytes memory mismatch = abi.encodeWithSelector(JobMarket.ResultsMismatch.selector, jobId, 0);
        vm.expectRevert(mismatch);
        market.settleRound(jobId, 0, bad);
        // Nor do the honest results with one evidence word changed.
        JobMarket.Result[] memory other = copyOf(honest);
        other[4].evidence = bytes32(uint256(1));
        vm.expectRevert(mismatch);
        market.settleRound(jobId, 0, other);
        settle(jobId, 0);
        assertEq(market.claimable(payoutOf(2), address(0)), 0, "the voided reward was never paid");
        assertEq(market.getJob(jobId).escrow, 2 * BUDGET - 4 ether, "the honest total spent");
    }

    function test_getRound_showsTheProposalOnlyWhileProposed() public {
        uint64 jobId = openRound();
        JobMarket.Round memory r = market.getRound(jobId, 0);
        assertEq(r.proposedModelHash, bytes32(0), "nothing proposed: no model");
        assertEq(r.proposedTotal, 0, "no total");
        assertEq(r.resultsRoot, bytes32(0), "no root");
        JobMarket.Result[] memory results = honestResults();
        finalize(jobId, 0, results);
        r = market.getRound(jobId, 0);
        assertEq(r.proposedModelHash, modelOf(0), "model");
        assertEq(r.proposedTotal, 4 ether, "total");
        assertEq(r.resultsRoot, resultsRootOf(jobId, 0, results), "root");
        // Challenged: gone.
        vm.prank(challenger);
        market.challengeRound(jobId, 0, bytes32(0));
        r = market.getRound(jobId, 0);
        assertEq(r.proposedModelHash, bytes32(0), "challenged: no model");
        assertEq(r.proposedTotal, 0, "challenged: no total");
        assertEq(r.resultsRoot, bytes32(0), "challenged: no root");
        assertEq(r.proposal, 1, "the proposal count stays");
        // Proposed again (another total), then settled: gone, the job's model advanced.
        results[0].reward = 0.5 ether;
        finalize(jobId, 0, results);
        r = market.getRound(jobId, 0);
        assertEq(r.proposedTotal, 3.5 ether, "the second proposal's total");
        assertEq(r.resultsRoot, resultsRootOf(jobId, 0, results), "the second proposal's root");
        vm.warp(block.timestamp + WINDOW);
        settle(jobId, 0);
        r = market.getRound(jobId, 0);
        assertEq(uint8(r.phase), uint8(JobMarket.RoundPhase.Settled), "settled");
        assertEq(r.proposedModelHash, bytes32(0), "settled: no model");
        assertEq(r.proposedTotal, 0, "settled: no total");
        assertEq(r.resultsRoot, bytes32(0), "settled: no root");
        assertEq(r.proposal, 2, "two proposals");
        assertEq(market.getJob(jobId).modelHash, modelOf(0), "the job's model");
        // The next round's proposal uses the same record; round 0 still shows none.
        prepareRound(jobId, 1, EVM_WORKERS, 0, 1);
        finalize(jobId, 1, acceptedResults(EVM_WORKERS, 0, 1, 1 ether));
        assertEq(market.getRound(jobId, 1).proposedTotal, 1 ether, "round 1's");
        assertEq(market.getRound(jobId, 0).proposedTotal, 0, "round 0 shows none");
    }

    function test_disprove_thenReproposedCorrectlyAndSettled() public {
        uint64 jobId = openRound();
        JobMarket.Result[] memory honest = honestResults();
        JobMarket.Result[] memory bad = uncommittedPaid(honest);
        finalizeUnchecked(jobId, 0, bad);
        assertEq(market.getRound(jobId, 0).proposal, 1, "first proposal");
        vm.warp(block.timestamp + WINDOW - 1); // the window's last second
        expectVoided(
            jobId, 0, abi.encodeWithSelector(ProposalChecker.AcceptedWithoutCommitment.selector, taskAt(jobId, bad[2]))
        );
        // A late commitment may still arrive while the round collects again: worker 2's.
        commit(jobId, 0, EVM_WORKERS, workerKey(2));
        honest[2].outcome = PayloadCodec.OUTCOME_ACCEPTED;
        honest[2].reward = 1 ether;
        vm.expectEmit(true, true, false, true);
        emit JobMarket.ResultsProposed(jobId, 0, 2, resultsRootOf(jobId, 0, honest));
        finalize(jobId, 0, honest);
        vm.expectRevert(abi.encodeWithSelector(ProposalChecker.ProposalValid.selector, jobId, 0));
        checker.disprove(jobId, 0, honest, commitsFor(jobId, 0, honest));
        vm.warp(block.timestamp + WINDOW);
        settle(jobId, 0);
        assertEq(market.claimable(payoutOf(2), address(0)), 1 ether, "worker 2 paid by the honest proposal");
        assertEq(market.getJob(jobId).currentRound, 1, "next round");
        (uint256 deposited, uint256 escrowed, uint256 claimable,,) = market.ledgers(address(0));
        assertEq(claimable, 5 ether, "the honest total credited once");
        assertEq(deposited, escrowed + claimable, "conserved");
    }

    /// One field of a valid proposal corrupted (a result's, the stated total or the root): either
    /// the proposal still keeps every rule and no disproof voids it, or a disproof voids it for
    /// the rule `checkProposal` names.
    function testFuzz_disprove_corruptedProposal(uint8 field, uint8 index, uint256 value) public {
        uint64 jobId = openRound();
        JobMarket.Result[] memory r = honestResults();
        uint256 total = totalOf(r);
        uint256 i = index % r.length;
        field %= 8;
        if (field == 0) r[i].workerKey = bytes32(value % 16 < 8 ? 0x1000 + value % 16 : value);
        if (field == 1) r[i].workerChain = uint16(value % 4 == 0 ? SOLANA : value % 4 == 1 ? EVM_WORKERS : value);
        if (field == 2) r[i].outcome = uint8(value % 5);
        if (field == 3) r[i].fault = uint8(value % 4);
        if (field == 4) r[i].reward = uint128(value % BUDGET);
        if (field == 4 && value % 3 == 0) r[i].reward = 0;
        if (field == 4 && value % 3 == 1) r[i].reward = 1 ether;
        if (field == 5) r[i].evidence = value % 2 == 0 ? bytes32(0) : EVIDENCE;
        if (field == 6) total = value % (BUDGET + 1);
        bytes32 root = resultsRootOf(jobId, 0, r);
        if (field == 7) root = value % 2 == 0 ? root : bytes32(value);
        finalizeUnchecked(jobId, 0, r, total, root);
        JobMarket.Commit[] memory c = commitsFor(jobId, 0, r);
        try checker.checkProposal(jobId, 0, total, root, r, c) {
            vm.expectRevert(abi.encodeWithSelector(ProposalChecker.ProposalValid.selector, jobId, 0));
            checker.disprove(jobId, 0, r, c);
            assertEq(phaseOf(jobId, 0), uint8(JobMarket.RoundPhase.Proposed), "a valid proposal stands");
        } catch (bytes memory reason) {
            expectVoided(jobId, 0, reason);
        }
    }
}
