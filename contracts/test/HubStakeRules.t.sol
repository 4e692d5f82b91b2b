// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {WorkerHub} from "../src/WorkerHub.sol";
import {PayloadCodec} from "../src/libraries/PayloadCodec.sol";
import {HubFixture} from "./utils/HubFixture.sol";
import {Vm} from "./utils/Vm.sol";

/// The worker chain's stake rules (issue 15): stake backs open tasks, refusals and releases are
/// reported, slashes are bounded by the task's lock and reach the job's destination.
contract HubStakeRulesTest is HubFixture {
    bytes32 internal constant PUBLISHED = keccak256("LogMessagePublished(address,uint64,uint32,bytes,uint8)");

    function setUp() public {
        setUpHub();
    }

    function taskOf(uint64 jobId, uint32 round, address w) internal view returns (bytes32) {
        return hub.taskIdOf(jobId, round, toBytes32(w));
    }

    /// Every STAKE_CHANGED published since `vm.recordLogs()`, decoded.
    function stakeChanges() internal returns (PayloadCodec.StakeChanged[] memory found) {
        Vm.Log[] memory logs = vm.getRecordedLogs();
        found = new PayloadCodec.StakeChanged[](logs.length);
        uint256 n = 0;
        for (uint256 i = 0; i < logs.length; ++i) {
            if (logs[i].topics[0] != PUBLISHED) continue;
            (,, bytes memory payload,) = abi.decode(logs[i].data, (uint64, uint32, bytes, uint8));
            if (uint8(payload[0]) == PayloadCodec.STAKE_CHANGED) found[n++] = this.decodeStakeChanged(payload);
        }
        assembly ("memory-safe") {
            mstore(found, n)
        }
    }

    function decodeStakeChanged(bytes memory p) external pure returns (PayloadCodec.StakeChanged memory) {
        return PayloadCodec.decodeStakeChanged(p);
    }

    function withdrawAll(address w) internal {
        uint256 staked = hub.getStaker(w).staked;
        vm.prank(w);
        hub.requestUnbond(staked);
        vm.warp(block.timestamp + UNBONDING);
        vm.prank(w);
        hub.withdrawStake();
    }

    // ------------------------------------------------------------------ withdrawn workers

    function test_withdrawnWorker_isNeitherAssignedNorAbleToCommit() public {
        ensureRegistered(worker(1));
        withdrawAll(worker(1));
        bytes32 taskId = taskOf(5, 0, worker(1));
        vm.recordLogs();
        vm.expectEmit(true, true, false, true);
        emit WorkerHub.TaskRefused(taskId, toBytes32(worker(1)), WorkerHub.RefusalReason.BelowMinStake);
        deliverAssigned(5, 0, one(worker(1)));
        PayloadCodec.StakeChanged[] memory changes = stakeChanges();
        assertEq(changes.length, 1, "one report");
        assertEq(changes[0].reason, PayloadCodec.STAKE_TASK_REFUSED, "refused");
        assertEq(changes[0].taskId, taskId, "names the task");
        assertEq(changes[0].stake, 0, "no stake left");
        assertEq(changes[0].nonce, 3, "after unbond (1) and withdrawal (2)");
        assertEq(uint8(hub.getTask(5, 0, toBytes32(worker(1))).state), uint8(WorkerHub.TaskState.None), "no task");
        vm.prank(worker(1));
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.NotAssignedWorker.selector, taskId, worker(1)));
        hub.commitUpdate(5, 0, keccak256("update"), keccak256("root"), keccak256("data"), 1, 1);
    }

    function test_batchNamingAWithdrawnWorker_appliesForEveryOtherWorker() public {
        address[] memory ws = new address[](3);
        for (uint256 i = 0; i < 3; ++i) {
            ws[i] = worker(i);
            ensureRegistered(ws[i]);
        }
        withdrawAll(worker(1));
        deliverAssigned(5, 0, ws);
        assertEq(uint8(hub.getTask(5, 0, toBytes32(worker(0))).state), uint8(WorkerHub.TaskState.Assigned), "w0");
        assertEq(uint8(hub.getTask(5, 0, toBytes32(worker(1))).state), uint8(WorkerHub.TaskState.None), "w1 skipped");
        assertEq(uint8(hub.getTask(5, 0, toBytes32(worker(2))).state), uint8(WorkerHub.TaskState.Assigned), "w2");
    }

    function test_unregisteredAndOverlockedWorkers_areRefused() public {
        stakeAs(worker(1), 5 ether);
        vm.expectEmit(true, true, false, true);
        emit WorkerHub.TaskRefused(taskOf(5, 0, worker(1)), toBytes32(worker(1)), WorkerHub.RefusalReason.NotRegistered);
        deliverAssigned(5, 0, one(worker(1)));
        ensureRegistered(worker(2)); // exactly 1 ether: one task's lock
        assignTo(6, 0, one(worker(2)));
        vm.expectEmit(true, true, false, true);
        emit WorkerHub.TaskRefused(
            taskOf(7, 0, worker(2)), toBytes32(worker(2)), WorkerHub.RefusalReason.LockUnavailable
        );
        deliverAssigned(7, 0, one(worker(2)));
    }

    function test_slashAfterWithdrawal_cannotComeOutToZero() public {
        stakeAs(worker(1), 2 ether);
        assignTo(5, 0, one(worker(1)));
        vm.startPrank(worker(1));
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.UnbondExceedsFreeStake.selector, 2 ether, 2 ether, 1 ether));
        hub.requestUnbond(2 ether);
        hub.requestUnbond(1 ether);
        vm.warp(block.timestamp + UNBONDING);
        hub.withdrawStake();
        vm.stopPrank();
        vm.recordLogs();
        settle(5, 0, worker(1), PayloadCodec.OUTCOME_SLASHED, 1e8);
        assertEq(hub.getStaker(worker(1)).staked, 0, "the locked stake was there to take");
        assertEq(hub.claimableOf(POSTER), 1 ether, "the whole slash reached the recipient");
        PayloadCodec.StakeChanged[] memory changes = stakeChanges();
        assertEq(changes.length, 1, "slash reported");
        assertEq(changes[0].reason, PayloadCodec.STAKE_SLASHED, "reason");
        assertEq(changes[0].stake, 0, "stake after the slash");
    }

    // ------------------------------------------------------------------ stake messages

    function test_stakeUnbondWithdrawAndSlash_publishStakeChangedInNonceOrder() public {
        ensureRegistered(worker(1));
        vm.recordLogs();
        stakeAs(worker(1), 2 ether);
        vm.prank(worker(1));
        hub.requestUnbond(0.5 ether);
        vm.warp(block.timestamp + UNBONDING);
        vm.prank(worker(1));
        hub.withdrawStake();
        PayloadCodec.StakeChanged[] memory changes = stakeChanges();
        assertEq(changes.length, 3, "three changes");
        assertEq(changes[0].reason, PayloadCodec.STAKE_STAKED, "staked");
        assertEq(changes[0].stake, 3e8, "3 ether bonded");
        assertEq(changes[1].reason, PayloadCodec.STAKE_UNBONDING, "unbonding");
        assertEq(changes[1].stake, 2.5e8, "unbonding is not bonded");
        assertEq(changes[2].reason, PayloadCodec.STAKE_WITHDRAWN, "withdrawn");
        assertEq(changes[2].stake, 2.5e8, "bonded unchanged by the withdrawal");
        for (uint256 i = 0; i < 3; ++i) {
            assertEq(changes[i].nonce, i + 1, "nonce from 1");
            assertEq(changes[i].header.targetAddress, MARKET, "to the coordinator chain");
            assertEq(changes[i].header.jobId, 0, "job 0");
        }
    }

    function test_stakeChanges_payTheMessageFee() public {
        ensureRegistered(worker(1));
        setCoreFee(3);
        stakeAs(worker(1), 1 ether + 3);
        assertEq(hub.getStaker(worker(1)).staked, 2 ether, "the fee is not stake");
        vm.prank(worker(1));
        vm.expectRevert();
        hub.requestUnbond(1 ether);
        vm.deal(worker(1), 3);
        vm.prank(worker(1));
        hub.requestUnbond{value: 3}(1 ether);
        assertEq(hub.getStaker(worker(1)).unbonding, 1 ether, "unbonding");
    }

    function test_refusalsDrawOnTheFeeReserve() public {
        ensureRegistered(worker(1));
        withdrawAll(worker(1));
        setCoreFee(5);
        bytes memory vaa = signedFromMarket(taskAssignedPayload(5, 0, uint64(block.timestamp + 1 days), one(worker(1))));
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.InsufficientFeeReserve.selector, 5, 0));
        hub.receiveMessage(vaa);
        vm.deal(address(this), 7);
        hub.receiveMessage{value: 7}(vaa);
        assertEq(hub.feeReserve(), 2, "one refusal paid");
    }

    // ------------------------------------------------------------------ release

    function test_releaseExpiredTask_freesTheLockOnlyForItsWorkerAfterReleaseAt() public {
        stakeAs(worker(1), 1 ether);
        assignTo(5, 0, one(worker(1)));
        bytes32 taskId = taskOf(5, 0, worker(1));
        uint64 releaseAt = hub.getTask(5, 0, toBytes32(worker(1))).releaseAt;
        assertEq(releaseAt, uint64(block.timestamp + 1 days + RELEASE_AFTER), "release time from the message");
        vm.prank(worker(1));
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.ReleaseTooEarly.selector, taskId, releaseAt));
        hub.releaseExpiredTask(5, 0);
        vm.warp(releaseAt + 1);
        bytes32 othersTask = taskOf(5, 0, worker(2)); // (a call: before the prank)
        vm.prank(worker(2)); // another worker names only its own task of that round: there is none
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.UnknownTask.selector, othersTask));
        hub.releaseExpiredTask(5, 0);
        vm.recordLogs();
        vm.prank(worker(1));
        hub.releaseExpiredTask(5, 0);
        PayloadCodec.StakeChanged[] memory changes = stakeChanges();
        assertEq(changes[0].reason, PayloadCodec.STAKE_TASK_RELEASED, "reported");
        assertEq(changes[0].taskId, taskId, "names the task");
        assertEq(hub.getStaker(worker(1)).locked, 0, "lock freed");
        vm.prank(worker(1));
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.TaskAlreadyReleased.selector, taskId));
        hub.commitUpdate(5, 0, bytes32(0), bytes32(0), bytes32(0), 0, 0);
        vm.expectEmit(true, true, false, true);
        emit WorkerHub.SettlementSkipped(taskId, toBytes32(worker(1)), WorkerHub.SkipReason.Released);
        settle(5, 0, worker(1), PayloadCodec.OUTCOME_SLASHED, 1e8);
        assertEq(hub.getStaker(worker(1)).staked, 1 ether, "a late slash does not apply");
        vm.prank(worker(1));
        hub.requestUnbond(1 ether); // nothing is locked any more
    }

    // ------------------------------------------------------------------ destinations

    function test_toHonest_splitsAmongAcceptedAndSendsTheRemainderToTheRecipient() public {
        address[] memory ws = new address[](4);
        for (uint256 i = 0; i < 4; ++i) {
            ws[i] = worker(i);
        }
        assignTo(5, 0, ws);
        PayloadCodec.Settlement[] memory entries = new PayloadCodec.Settlement[](4);
        entries[0] = PayloadCodec.Settlement(toBytes32(ws[0]), PayloadCodec.OUTCOME_SLASHED, 1e8);
        entries[1] = PayloadCodec.Settlement(toBytes32(ws[1]), PayloadCodec.OUTCOME_ACCEPTED, 0);
        entries[2] = PayloadCodec.Settlement(toBytes32(ws[2]), PayloadCodec.OUTCOME_ACCEPTED, 0);
        entries[3] = PayloadCodec.Settlement(toBytes32(ws[3]), PayloadCodec.OUTCOME_ACCEPTED, 0);
        hub.receiveMessage(signedFromMarket(settledBatch(5, 0, PayloadCodec.SLASH_TO_HONEST, entries)));
        uint256 share = uint256(1 ether) / 3;
        for (uint256 i = 1; i < 4; ++i) {
            assertEq(hub.claimable(ws[i]), share, "honest share");
        }
        assertEq(hub.claimableOf(POSTER), 1 ether - 3 * share, "remainder");
        assertEq(hub.claimable(ws[0]), 0, "the slashed worker gets nothing");
        vm.prank(ws[1]);
        hub.claim();
        assertEq(ws[1].balance, share, "claimed");
        vm.prank(ws[1]);
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.NothingToClaim.selector, ws[1]));
        hub.claim();
    }

    function test_toHonest_withNoAcceptedEntryGoesToTheRecipient() public {
        assignTo(5, 0, one(worker(1)));
        PayloadCodec.Settlement[] memory entries = new PayloadCodec.Settlement[](1);
        entries[0] = PayloadCodec.Settlement(toBytes32(worker(1)), PayloadCodec.OUTCOME_SLASHED, 0.4e8);
        hub.receiveMessage(signedFromMarket(settledBatch(5, 0, PayloadCodec.SLASH_TO_HONEST, entries)));
        assertEq(hub.claimableOf(POSTER), 0.4 ether, "everything to the recipient");
        address poster = address(uint160(uint256(POSTER)));
        vm.prank(poster);
        hub.claim();
        assertEq(poster.balance, 0.4 ether, "the recipient withdrew it itself");
        assertEq(hub.totalClaimable(), 0, "nothing left");
    }
}

/// The same tests against a core that behaves like Wormhole's (see `RequireStyleCore`).
contract HubStakeRulesOnRequireStyleCoreTest is HubStakeRulesTest {
    constructor() {
        requireStyleCore = true;
    }
}
