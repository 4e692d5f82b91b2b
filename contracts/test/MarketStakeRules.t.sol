// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {JobMarket} from "../src/JobMarket.sol";
import {ProposalChecker} from "../src/ProposalChecker.sol";
import {MessageCore} from "../src/MessageCore.sol";
import {PayloadCodec} from "../src/libraries/PayloadCodec.sol";
import {MarketFixture} from "./utils/MarketFixture.sol";
import {Vm} from "./utils/Vm.sol";

/// The coordinator chain's rules of issue 15: current stake, slash policy, disputes, liveness.
contract MarketStakeRulesTest is MarketFixture {
    bytes32 internal constant PUBLISHED = keccak256("LogMessagePublished(address,uint64,uint32,bytes,uint8)");

    function setUp() public {
        setUpMarket();
    }

    function idOf(uint256 i) internal view returns (bytes32) {
        return market.workerIdOf(EVM_WORKERS, workerKey(i));
    }

    function taskOf(uint64 jobId, uint32 round, uint256 i) internal view returns (bytes32) {
        return market.taskIdOf(jobId, round, EVM_WORKERS, workerKey(i));
    }

    function lastPayload() internal returns (bytes memory payload) {
        Vm.Log[] memory logs = vm.getRecordedLogs();
        for (uint256 i = 0; i < logs.length; ++i) {
            if (logs[i].topics[0] == PUBLISHED) {
                (,, payload,) = abi.decode(logs[i].data, (uint64, uint32, bytes, uint8));
            }
        }
    }

    function decodeAssigned(bytes memory p) external pure returns (PayloadCodec.TaskAssigned memory) {
        return PayloadCodec.decodeTaskAssigned(p);
    }

    function decodeSettled(bytes memory p) external pure returns (PayloadCodec.RoundSettled memory) {
        return PayloadCodec.decodeRoundSettled(p);
    }

    /// A one-worker round on EVM worker chain 4 proposed with worker 0 SLASHED for `fault`.
    function slashedRound(uint8 fault) internal returns (uint64 jobId) {
        jobId = postNative(1, 1, 1 ether);
        if (fault == 2) {
            // Missed: assigned, never committed (a committed task cannot be slashed as MISSED).
            registerWorker(EVM_WORKERS, workerKey(0), MIN_STAKE, payoutOf(0));
            assign(jobId, EVM_WORKERS, 0, 1);
        } else {
            prepareRound(jobId, 0, EVM_WORKERS, 0, 1);
        }
        JobMarket.Result[] memory r = acceptedResults(EVM_WORKERS, 0, 1, 0);
        r[0].outcome = PayloadCodec.OUTCOME_SLASHED;
        r[0].fault = fault;
        r[0].evidence = EVIDENCE;
        finalize(jobId, 0, r);
    }

    // ------------------------------------------------------------------ stake

    function test_stakeAfterSlashUnbondAndWithdrawal_followsStakeChanged() public {
        uint64 jobId = postNative(2, 4, 1 ether);
        registerWorker(EVM_WORKERS, workerKey(0), 500, payoutOf(0));
        changeStake(EVM_WORKERS, workerKey(0), 440, 1, PayloadCodec.STAKE_SLASHED);
        assertEq(market.getWorker(idOf(0)).stake, 440, "after the slash");
        changeStake(EVM_WORKERS, workerKey(0), 140, 2, PayloadCodec.STAKE_UNBONDING);
        assertEq(market.getWorker(idOf(0)).stake, 140, "after the unbond");
        changeStake(EVM_WORKERS, workerKey(0), 40, 3, PayloadCodec.STAKE_UNBONDING);
        changeStake(EVM_WORKERS, workerKey(0), 40, 4, PayloadCodec.STAKE_WITHDRAWN);
        assertEq(market.getWorker(idOf(0)).stake, 40, "after the withdrawal");
        // An older report arriving late is ignored, not reverted.
        vm.expectEmit(true, false, false, true);
        emit JobMarket.StakeUpdateIgnored(idOf(0), 2, 4);
        changeStake(EVM_WORKERS, workerKey(0), 140, 2, PayloadCodec.STAKE_UNBONDING);
        assertEq(market.getWorker(idOf(0)).stake, 40, "older nonce ignored");
        // Registering again updates payout and capabilities, never the stake.
        registerWorker(EVM_WORKERS, workerKey(0), 500, payoutOf(7));
        JobMarket.Worker memory w = market.getWorker(idOf(0));
        assertEq(w.stake, 40, "stake kept");
        assertEq(w.payout, payoutOf(7), "payout updated");
        bytes32 id0 = idOf(0);
        vm.prank(aggregator, aggregator);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.InsufficientStake.selector, id0, 40, MIN_STAKE));
        market.assignTasks(jobId, EVM_WORKERS, uint64(block.timestamp + 1 days), assignments(0, 1));
        changeStake(EVM_WORKERS, workerKey(0), 100, 5, PayloadCodec.STAKE_STAKED);
        assign(jobId, EVM_WORKERS, 0, 1);
    }

    function test_stakeChangedBeforeRegistration_isKept() public {
        changeStake(EVM_WORKERS, workerKey(0), 10, 1, PayloadCodec.STAKE_UNBONDING);
        registerWorker(EVM_WORKERS, workerKey(0), 500, payoutOf(0));
        assertEq(market.getWorker(idOf(0)).stake, 10, "a late WORKER_REGISTERED does not restore stake");
    }

    function test_assignTasks_publishesTheJobsStakePolicy() public {
        uint64 jobId = postNative(1, 4, 1 ether);
        registerWorker(EVM_WORKERS, workerKey(0), MIN_STAKE, payoutOf(0));
        uint64 deadline = uint64(block.timestamp + 1 days);
        vm.recordLogs();
        vm.prank(aggregator, aggregator);
        market.assignTasks(jobId, EVM_WORKERS, deadline, assignments(0, 1));
        PayloadCodec.TaskAssigned memory m = this.decodeAssigned(lastPayload());
        assertEq(m.minStake, MIN_STAKE, "min stake");
        assertEq(m.stakeLock, REJECTED_SLASH, "the largest slash of the policy");
        assertEq(m.releaseAt, deadline + RELEASE_AFTER, "release time");
        assertEq(market.getJob(jobId).lastProgress, block.timestamp, "progress");
    }

    function test_refusedTask_mustBeDroppedWithoutFault() public {
        uint64 jobId = postNative(1, 1, 1 ether);
        registerWorker(EVM_WORKERS, workerKey(0), MIN_STAKE, payoutOf(0));
        assign(jobId, EVM_WORKERS, 0, 1);
        bytes32 taskId = taskOf(jobId, 0, 0);
        bytes memory refused =
            signed(EVM_WORKERS, HUB, stakeChangedPayload(workerKey(0), 0, 1, PayloadCodec.STAKE_TASK_REFUSED, taskId));
        vm.expectEmit(true, true, false, true);
        emit JobMarket.TaskRefused(taskId, idOf(0));
        market.receiveMessage(refused);
        assertEq(market.getWorker(idOf(0)).stake, 0, "and its stake");
        // The task was never created on the worker chain: no commitment, so it cannot be
        // accepted, and the refusal keeps it from being slashed.
        // Either proposed unchecked is voided by a disproof.
        JobMarket.Result[] memory r = acceptedResults(EVM_WORKERS, 0, 1, 0);
        expectRefusedAndVoided(
            jobId, 0, r, abi.encodeWithSelector(ProposalChecker.AcceptedWithoutCommitment.selector, taskId)
        );
        r[0].outcome = PayloadCodec.OUTCOME_SLASHED;
        r[0].fault = 2;
        r[0].evidence = EVIDENCE;
        expectRefusedAndVoided(
            jobId, 0, r, abi.encodeWithSelector(ProposalChecker.RefusedTaskNotDropped.selector, taskId)
        );
        r[0].outcome = PayloadCodec.OUTCOME_DROPPED;
        r[0].fault = 0;
        r[0].evidence = 0;
        finalize(jobId, 0, r);
    }

    function test_releasedTask_cannotBeSlashed() public {
        uint64 jobId = postNative(1, 1, 1 ether);
        prepareRound(jobId, 0, EVM_WORKERS, 0, 1);
        bytes32 taskId = taskOf(jobId, 0, 0);
        bytes memory released = signed(
            EVM_WORKERS, HUB, stakeChangedPayload(workerKey(0), 100, 1, PayloadCodec.STAKE_TASK_RELEASED, taskId)
        );
        vm.expectEmit(true, true, false, true);
        emit JobMarket.TaskReleased(taskId, idOf(0));
        market.receiveMessage(released);
        JobMarket.Result[] memory r = acceptedResults(EVM_WORKERS, 0, 1, 0);
        r[0].outcome = PayloadCodec.OUTCOME_SLASHED;
        r[0].fault = 1;
        r[0].evidence = EVIDENCE;
        bytes memory slashed = abi.encodeWithSelector(ProposalChecker.ReleasedTaskSlashed.selector, taskId);
        expectRefusedAndVoided(jobId, 0, r, slashed);
        // For a missed commitment, too; dropped, it is proposed.
        r[0].fault = 2;
        expectRefusedAndVoided(jobId, 0, r, slashed);
        r[0].outcome = PayloadCodec.OUTCOME_DROPPED;
        r[0].fault = 0;
        r[0].evidence = 0;
        finalize(jobId, 0, r);
        assertEq(uint8(market.getRound(jobId, 0).phase), uint8(JobMarket.RoundPhase.Proposed), "proposed");
    }

    // ------------------------------------------------------------------ slash policy

    function test_postJob_enforcesTheSlashPolicyAndTimeouts() public {
        JobMarket.JobSpec memory s = spec(1, 1, 1);
        s.rejectedSlash = MIN_STAKE + 1;
        _expectInvalid(s, abi.encodeWithSelector(JobMarket.SlashAboveMinStake.selector, MIN_STAKE + 1, MIN_STAKE));
        s = spec(1, 1, 1);
        s.missedSlash = MIN_STAKE + 2;
        _expectInvalid(s, abi.encodeWithSelector(JobMarket.SlashAboveMinStake.selector, MIN_STAKE + 2, MIN_STAKE));
        s = spec(1, 1, 1);
        s.slashMode = 2;
        _expectInvalid(s, abi.encodeWithSelector(JobMarket.UnknownSlashMode.selector, 2));
        s = spec(1, 1, 1);
        s.slashRecipients = new bytes32[](1);
        _expectInvalid(s, abi.encodeWithSelector(JobMarket.InvalidSlashRecipients.selector));
        s = spec(1, 1, 1);
        s.slashRecipients[1] = 0;
        _expectInvalid(s, abi.encodeWithSelector(JobMarket.InvalidSlashRecipients.selector));
        s = spec(1, 1, 1);
        s.releaseAfter = 0;
        _expectInvalid(s, abi.encodeWithSelector(JobMarket.ReleaseAfterOutOfRange.selector, 0, 30 days));
        s.releaseAfter = 30 days + 1;
        _expectInvalid(s, abi.encodeWithSelector(JobMarket.ReleaseAfterOutOfRange.selector, 30 days + 1, 30 days));
        s = spec(1, 1, 1);
        s.progressTimeout = 0;
        _expectInvalid(s, abi.encodeWithSelector(JobMarket.ProgressTimeoutOutOfRange.selector, 0, 365 days));
        s.progressTimeout = 365 days + 1;
        _expectInvalid(s, abi.encodeWithSelector(JobMarket.ProgressTimeoutOutOfRange.selector, 365 days + 1, 365 days));
        // The limits themselves are allowed.
        s = spec(1, 1, 1);
        s.rejectedSlash = MIN_STAKE;
        s.missedSlash = MIN_STAKE;
        s.slashMode = 1;
        s.releaseAfter = 30 days;
        s.progressTimeout = 365 days;
        vm.prank(poster);
        market.postJob{value: 1}(s);
    }

    function _expectInvalid(JobMarket.JobSpec memory s, bytes memory error) internal {
        vm.prank(poster);
        vm.expectRevert(error);
        market.postJob{value: 1}(s);
    }

    function test_settlement_carriesThePolicysAmountForTheFault() public {
        uint64 jobId = slashedRound(2);
        vm.warp(block.timestamp + WINDOW);
        vm.recordLogs();
        settle(jobId, 0);
        PayloadCodec.RoundSettled memory m = this.decodeSettled(lastPayload());
        assertEq(m.settlements[0].slash, MISSED_SLASH, "missed");
        assertEq(m.slashRecipient, bytes32(uint256(uint160(poster))), "poster on the EVM worker chain");
        assertEq(market.getJob(jobId).rejectedSlash, REJECTED_SLASH, "the policy for a rejected update");
    }

    // ------------------------------------------------------------------ disputes

    function test_dispute_answeredKeepsTheSlash() public {
        uint64 jobId = slashedRound(1);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NotWorkerPayout.selector, address(this)));
        dispute(jobId, 0, EVM_WORKERS, workerKey(0), address(this));
        dispute(jobId, 0, EVM_WORKERS, workerKey(0), payoutOf(0));
        bytes32 taskId = taskOf(jobId, 0, 0);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.AlreadyDisputed.selector, taskId));
        dispute(jobId, 0, EVM_WORKERS, workerKey(0), payoutOf(0));
        vm.warp(block.timestamp + WINDOW);
        vm.expectRevert(
            abi.encodeWithSelector(JobMarket.DisputeOpen.selector, taskOf(jobId, 0, 0), uint64(block.timestamp))
        );
        settle(jobId, 0);
        vm.prank(aggregator, aggregator);
        market.answerDispute(jobId, 0, EVM_WORKERS, workerKey(0), keccak256("answer blob"));
        vm.recordLogs();
        settle(jobId, 0);
        PayloadCodec.RoundSettled memory m = this.decodeSettled(lastPayload());
        assertEq(m.settlements[0].outcome, PayloadCodec.OUTCOME_SLASHED, "slash stands");
        assertEq(m.settlements[0].slash, REJECTED_SLASH, "amount");
    }

    function test_dispute_unansweredReversesTheSlash() public {
        uint64 jobId = slashedRound(1);
        dispute(jobId, 0, EVM_WORKERS, workerKey(0), payoutOf(0));
        uint64 answerBy = market.getDispute(taskOf(jobId, 0, 0)).answerBy;
        vm.warp(answerBy + 1);
        vm.prank(aggregator, aggregator);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.AnswerWindowClosed.selector, answerBy));
        market.answerDispute(jobId, 0, EVM_WORKERS, workerKey(0), keccak256("late"));
        vm.recordLogs();
        settle(jobId, 0);
        PayloadCodec.RoundSettled memory m = this.decodeSettled(lastPayload());
        assertEq(m.settlements[0].outcome, PayloadCodec.OUTCOME_DROPPED, "dropped");
        assertEq(m.settlements[0].slash, 0, "no slash");
        assertEq(market.claimable(payoutOf(0), address(0)), 0, "and no reward");
    }

    function test_dispute_onlyForSlashedResultsWithinTheWindow() public {
        uint64 jobId = postNative(1, 1, 1 ether);
        prepareRound(jobId, 0, EVM_WORKERS, 0, 1);
        finalize(jobId, 0, acceptedResults(EVM_WORKERS, 0, 1, 1 ether));
        bytes32 taskId = taskOf(jobId, 0, 0);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NotSlashed.selector, taskId));
        dispute(jobId, 0, EVM_WORKERS, workerKey(0), payoutOf(0));
        uint64 other = slashedRound(1);
        vm.warp(block.timestamp + WINDOW);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.ChallengeWindowClosed.selector, uint64(block.timestamp)));
        dispute(other, 0, EVM_WORKERS, workerKey(0), payoutOf(0));
    }

    // ------------------------------------------------------------------ liveness

    function test_cancel_afterTheTimeoutWithTheAggregatorGone() public {
        uint64 jobId = postNative(2, 1, 1 ether);
        prepareRound(jobId, 0, EVM_WORKERS, 0, 1);
        uint64 last = market.getJob(jobId).lastProgress;
        vm.warp(last + PROGRESS_TIMEOUT);
        vm.prank(poster);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.RoundInProgress.selector, jobId, 0));
        market.cancelJob(jobId);
        vm.warp(last + PROGRESS_TIMEOUT + 1);
        uint256 before = poster.balance;
        vm.prank(poster);
        market.cancelJob(jobId);
        assertEq(poster.balance - before, 2 ether, "the whole unspent escrow");
        assertEq(uint8(market.getJob(jobId).status), uint8(JobMarket.JobStatus.Cancelled), "cancelled");
    }

    function test_cancel_underRepeatedChallenges() public {
        uint64 jobId = postNative(1, 1, 1 ether);
        prepareRound(jobId, 0, EVM_WORKERS, 0, 1);
        finalize(jobId, 0, acceptedResults(EVM_WORKERS, 0, 1, 1 ether));
        uint64 last = market.getJob(jobId).lastProgress;
        for (uint256 i = 0; i < 3; ++i) {
            vm.warp(block.timestamp + WINDOW / 2);
            vm.prank(challenger);
            market.challengeRound(jobId, 0, bytes32("again"));
            finalize(jobId, 0, acceptedResults(EVM_WORKERS, 0, 1, 1 ether));
            last = market.getJob(jobId).lastProgress;
        }
        vm.prank(challenger);
        market.challengeRound(jobId, 0, bytes32("and again"));
        assertEq(market.getJob(jobId).lastProgress, last, "a challenge is not progress");
        vm.warp(last + PROGRESS_TIMEOUT + 1);
        uint256 before = poster.balance;
        vm.prank(poster);
        market.cancelJob(jobId);
        assertEq(poster.balance - before, 1 ether, "escrow recovered");
    }

    function test_cancelledJob_cannotBeSettled() public {
        uint64 jobId = postNative(1, 1, 1 ether);
        prepareRound(jobId, 0, EVM_WORKERS, 0, 1);
        finalize(jobId, 0, acceptedResults(EVM_WORKERS, 0, 1, 1 ether));
        vm.warp(block.timestamp + PROGRESS_TIMEOUT + 1);
        vm.prank(poster);
        market.cancelJob(jobId);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobNotOpen.selector, jobId));
        settle(jobId, 0);
    }
}

/// Guardian-set expiry arithmetic near the uint32 boundary.
contract MessageCoreExpiryTest is MarketFixture {
    function test_expiryOfUint32MaxDoesNotOverflow() public {
        vm.warp(1_800_000_000);
        MessageCore c = new MessageCore(2, guardianAddresses(4, 0), type(uint32).max, address(this));
        c.submitNewGuardianSet(guardianAddresses(4, 4));
        assertEq(c.getGuardianSet(0).expirationTime, type(uint32).max, "saturates");
        c.submitNewGuardianSet(guardianAddresses(4, 8));
        assertEq(c.getCurrentGuardianSetIndex(), 2, "rotations keep working");
    }

    function test_expiryNearTheBoundary() public {
        vm.warp(uint256(type(uint32).max) - 10);
        MessageCore c = new MessageCore(2, guardianAddresses(4, 0), 10, address(this));
        c.submitNewGuardianSet(guardianAddresses(4, 4));
        assertEq(c.getGuardianSet(0).expirationTime, type(uint32).max, "exactly the boundary");
        MessageCore d = new MessageCore(2, guardianAddresses(4, 0), 11, address(this));
        d.submitNewGuardianSet(guardianAddresses(4, 4));
        assertEq(d.getGuardianSet(0).expirationTime, type(uint32).max, "one past saturates");
    }
}

/// The same tests against a core that behaves like Wormhole's (see `RequireStyleCore`).
contract MarketStakeRulesOnRequireStyleCoreTest is MarketStakeRulesTest {
    constructor() {
        requireStyleCore = true;
    }
}
