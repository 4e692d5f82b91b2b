// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {WorkerHub} from "../src/WorkerHub.sol";
import {PayloadCodec} from "../src/libraries/PayloadCodec.sol";
import {HubFixture} from "./utils/HubFixture.sol";
import {Vm} from "./utils/Vm.sol";

/// A worker's tasks in a job take turns in two storage slots (by the round's parity): a later
/// round takes over a finished task's slot, never an open one's, and nothing addressed to the
/// round that left a slot reaches the round that took it.
contract HubTaskSlotsTest is HubFixture {
    bytes32 internal constant PUBLISHED = keccak256("LogMessagePublished(address,uint64,uint32,bytes,uint8)");

    function setUp() public {
        setUpHub();
    }

    function taskOf(uint64 jobId, uint32 round, address w) internal view returns (bytes32) {
        return hub.taskIdOf(jobId, round, toBytes32(w));
    }

    function stateOf(uint64 jobId, uint32 round, address w) internal view returns (uint8) {
        return uint8(hub.getTask(jobId, round, toBytes32(w)).state);
    }

    function refusalsPublished() internal returns (uint256 n) {
        Vm.Log[] memory logs = vm.getRecordedLogs();
        for (uint256 i = 0; i < logs.length; ++i) {
            if (logs[i].topics[0] != PUBLISHED) continue;
            (,, bytes memory payload,) = abi.decode(logs[i].data, (uint64, uint32, bytes, uint8));
            if (
                uint8(payload[0]) == PayloadCodec.STAKE_CHANGED && uint8(payload[92]) == PayloadCodec.STAKE_TASK_REFUSED
            ) {
                ++n;
            }
        }
    }

    function test_laterRound_takesOverTheSettledTasksSlot() public {
        assignTo(5, 0, one(worker(1)));
        settle(5, 0, worker(1), PayloadCodec.OUTCOME_ACCEPTED, 0);
        assertEq(stateOf(5, 0, worker(1)), uint8(WorkerHub.TaskState.Settled), "round 0 settled");
        assignTo(5, 2, one(worker(1)));
        WorkerHub.Task memory task = hub.getTask(5, 2, toBytes32(worker(1)));
        assertEq(uint8(task.state), uint8(WorkerHub.TaskState.Assigned), "round 2 assigned");
        assertEq(task.round, 2, "the slot holds round 2");
        assertEq(task.lock, 1 ether, "its lock");
        assertEq(stateOf(5, 0, worker(1)), uint8(WorkerHub.TaskState.None), "round 0 is no longer kept");
        WorkerHub.Staker memory s = hub.getStaker(worker(1));
        assertEq(s.locked, 1 ether, "one open task's lock");
        assertEq(s.activeTasks, 1, "one open task");
    }

    function test_consecutiveRounds_useBothSlotsAndSettleApart() public {
        stakeAs(worker(1), 2 ether); // two locks
        assignTo(5, 0, one(worker(1)));
        assignTo(5, 1, one(worker(1)));
        assertEq(stateOf(5, 0, worker(1)), uint8(WorkerHub.TaskState.Assigned), "round 0 open");
        assertEq(stateOf(5, 1, worker(1)), uint8(WorkerHub.TaskState.Assigned), "round 1 open beside it");
        settle(5, 1, worker(1), PayloadCodec.OUTCOME_ACCEPTED, 0);
        assertEq(stateOf(5, 0, worker(1)), uint8(WorkerHub.TaskState.Assigned), "round 0 untouched");
        settle(5, 0, worker(1), PayloadCodec.OUTCOME_SLASHED, 0.5e8);
        assertEq(stateOf(5, 0, worker(1)), uint8(WorkerHub.TaskState.Settled), "round 0 settled late");
        assertEq(hub.getStaker(worker(1)).locked, 1 ether, "the slash freed round 0's lock; round 1's is held");
        assertEq(hub.getStaker(worker(1)).staked, 1.5 ether, "round 0's slash taken");
        assertEq(hub.releaseSettled(5, one(worker(1))), 1, "round 1's lock");
        assertEq(hub.getStaker(worker(1)).locked, 0, "both locks freed");
    }

    function test_settledTask_passesItsLockToTheSlotsNextTask() public {
        stakeAs(worker(1), 1 ether); // one lock
        assignTo(5, 0, one(worker(1)));
        settle(5, 0, worker(1), PayloadCodec.OUTCOME_ACCEPTED, 0);
        WorkerHub.Staker memory before = hub.getStaker(worker(1));
        assertEq(before.locked, 1 ether, "held past the settlement");
        vm.recordLogs();
        assignTo(5, 2, one(worker(1)));
        assertEq(refusalsPublished(), 0, "not refused: round 0's lock passes to round 2");
        assertEq(stateOf(5, 2, worker(1)), uint8(WorkerHub.TaskState.Assigned), "round 2 in the slot");
        WorkerHub.Staker memory later = hub.getStaker(worker(1));
        assertEq(later.locked, 1 ether, "one lock");
        assertEq(later.activeTasks, 1, "one task holds it");
        assertEq(later.stakeNonce, before.stakeNonce, "nothing reported");
    }

    function test_settledTaskWithAnotherLock_passesTheDifference() public {
        stakeAs(worker(1), 1 ether);
        assignTo(5, 0, one(worker(1)));
        settle(5, 0, worker(1), PayloadCodec.OUTCOME_DROPPED, 0);
        // The same job's round 2 with a smaller lock.
        PayloadCodec.TaskAssigned memory m;
        m.header = PayloadCodec.Header(2, WORKERS, toBytes32(address(hub)), 5);
        m.round = 2;
        m.deadline = uint64(block.timestamp + 1 days);
        m.minStake = TASK_MIN_STAKE;
        m.stakeLock = 0.25e8;
        m.releaseAt = m.deadline + RELEASE_AFTER;
        m.assignments = new PayloadCodec.Assignment[](1);
        m.assignments[0] = PayloadCodec.Assignment(toBytes32(worker(1)), 0);
        hub.receiveMessage(signedFromMarket(PayloadCodec.encode(m)));
        assertEq(hub.getStaker(worker(1)).locked, 0.25 ether, "the new task's lock only");
        assertEq(hub.getStaker(worker(1)).activeTasks, 1, "one task");
    }

    function test_roundSettledOnlyOnceEveryTaskHadItsEntry() public {
        address[] memory ws = new address[](2);
        (ws[0], ws[1]) = (worker(1), worker(2));
        assignTo(5, 0, ws);
        settle(5, 0, worker(1), PayloadCodec.OUTCOME_ACCEPTED, 0);
        assertFalse(hub.isRoundSettled(5, 0), "worker 2's entry is missing");
        assertEq(hub.releaseSettled(5, ws), 0, "nothing to free yet");
        // Worker 1's round 2 must wait for worker 2's entry.
        vm.expectEmit(true, true, false, true);
        emit WorkerHub.TaskRefused(
            taskOf(5, 2, worker(1)), toBytes32(worker(1)), WorkerHub.RefusalReason.PreviousTaskOpen
        );
        deliverAssigned(5, 2, one(worker(1)));
        // An entry for a worker with no task in the round does not count.
        settle(5, 0, worker(3), PayloadCodec.OUTCOME_ACCEPTED, 0);
        assertFalse(hub.isRoundSettled(5, 0), "still missing");
        settle(5, 0, worker(2), PayloadCodec.OUTCOME_ACCEPTED, 0);
        assertTrue(hub.isRoundSettled(5, 0), "both entries");
        WorkerHub.CommitLog memory log = hub.getCommitLog(5, 0);
        assertEq(log.created, 2, "two tasks");
        assertEq(log.closed, 2, "two entries");
        assertEq(hub.releaseSettled(5, ws), 2, "both locks");
    }

    function test_releasedTask_countsItsLateEntryButFreesNothingTwice() public {
        address[] memory ws = new address[](2);
        (ws[0], ws[1]) = (worker(1), worker(2));
        assignTo(5, 0, ws);
        vm.warp(hub.getTask(5, 0, toBytes32(worker(1))).releaseAt + 1);
        vm.prank(worker(1));
        hub.releaseExpiredTask(5, 0);
        assertEq(hub.getStaker(worker(1)).locked, 0, "released");
        settle(5, 0, worker(1), PayloadCodec.OUTCOME_ACCEPTED, 0);
        settle(5, 0, worker(2), PayloadCodec.OUTCOME_ACCEPTED, 0);
        assertTrue(hub.isRoundSettled(5, 0), "the released task's entry counts");
        assertEq(hub.releaseSettled(5, ws), 1, "worker 2's lock only");
        assertEq(hub.getStaker(worker(1)).locked, 0, "nothing freed twice");
        // Worker 2's task cannot be released after its round settled.
        bytes32 settledTask = taskOf(5, 0, worker(2));
        vm.prank(worker(2));
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.TaskAlreadySettled.selector, settledTask));
        hub.releaseExpiredTask(5, 0);
    }

    function test_slotHeldByAnOpenTask_refusesTheLaterRoundAndReportsIt() public {
        stakeAs(worker(1), 1 ether);
        assignTo(5, 0, one(worker(1)));
        vm.recordLogs();
        vm.expectEmit(true, true, false, true);
        emit WorkerHub.TaskRefused(
            taskOf(5, 2, worker(1)), toBytes32(worker(1)), WorkerHub.RefusalReason.PreviousTaskOpen
        );
        deliverAssigned(5, 2, one(worker(1)));
        assertEq(refusalsPublished(), 1, "the coordinator chain learns of the refusal");
        WorkerHub.Task memory task = hub.getTask(5, 0, toBytes32(worker(1)));
        assertEq(uint8(task.state), uint8(WorkerHub.TaskState.Assigned), "round 0 kept");
        assertEq(task.lock, 1 ether, "with its lock");
        assertEq(stateOf(5, 2, worker(1)), uint8(WorkerHub.TaskState.None), "no round 2 task");
        assertEq(hub.getStaker(worker(1)).locked, 1 ether, "only round 0's lock");
        // A committed task is open too.
        vm.prank(worker(1));
        hub.commitUpdate(5, 0, keccak256("u"), keccak256("t"), keccak256("d"), 1, 1);
        vm.expectEmit(true, true, false, true);
        emit WorkerHub.TaskRefused(
            taskOf(5, 4, worker(1)), toBytes32(worker(1)), WorkerHub.RefusalReason.PreviousTaskOpen
        );
        deliverAssigned(5, 4, one(worker(1)));
        // Once released, the slot is free.
        vm.warp(hub.getTask(5, 0, toBytes32(worker(1))).releaseAt + 1);
        vm.prank(worker(1));
        hub.releaseExpiredTask(5, 0);
        deliverAssigned(5, 6, one(worker(1)));
        assertEq(stateOf(5, 6, worker(1)), uint8(WorkerHub.TaskState.Assigned), "round 6 in the freed slot");
    }

    function test_attack_nothingForTheRoundThatLeftTheSlotReachesItsSuccessor() public {
        assignTo(5, 0, one(worker(1)));
        settle(5, 0, worker(1), PayloadCodec.OUTCOME_ACCEPTED, 0);
        assignTo(5, 2, one(worker(1)));
        bytes32 oldTask = taskOf(5, 0, worker(1));
        // A second settlement of round 0 (another batch naming it) is skipped, not applied to round 2.
        vm.expectEmit(true, true, false, true);
        emit WorkerHub.SettlementSkipped(oldTask, toBytes32(worker(1)), WorkerHub.SkipReason.UnknownTask);
        settle(5, 0, worker(1), PayloadCodec.OUTCOME_SLASHED, 1e8);
        assertEq(stateOf(5, 2, worker(1)), uint8(WorkerHub.TaskState.Assigned), "round 2 untouched");
        assertEq(hub.getStaker(worker(1)).staked, 1 ether, "nothing slashed");
        vm.startPrank(worker(1));
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.NotAssignedWorker.selector, oldTask, worker(1)));
        hub.commitUpdate(5, 0, bytes32(0), bytes32(0), bytes32(0), 0, 0);
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.UnknownTask.selector, oldTask));
        hub.releaseExpiredTask(5, 0);
        vm.stopPrank();
        // Round 2 itself works as any task.
        vm.prank(worker(1));
        hub.commitUpdate(5, 2, keccak256("u"), keccak256("t"), keccak256("d"), 1, 1);
        assertEq(stateOf(5, 2, worker(1)), uint8(WorkerHub.TaskState.Committed), "round 2 committed");
    }

    function test_attack_settlementKeyAbove160BitsDoesNotReachTheLowBitsWorker() public {
        assignTo(5, 0, one(worker(1)));
        bytes32 forged = bytes32(uint256(1) << 200 | uint256(uint160(worker(1))));
        PayloadCodec.Settlement[] memory entries = new PayloadCodec.Settlement[](1);
        entries[0] = PayloadCodec.Settlement(forged, PayloadCodec.OUTCOME_SLASHED, 1e8);
        vm.expectEmit(true, true, false, true);
        emit WorkerHub.SettlementSkipped(hub.taskIdOf(5, 0, forged), forged, WorkerHub.SkipReason.UnknownTask);
        hub.receiveMessage(signedFromMarket(settledBatch(5, 0, PayloadCodec.SLASH_TO_RECIPIENT, entries)));
        assertEq(stateOf(5, 0, worker(1)), uint8(WorkerHub.TaskState.Assigned), "the real task untouched");
        assertEq(uint8(hub.getTask(5, 0, forged).state), uint8(WorkerHub.TaskState.None), "no task for the forged key");
    }

    function test_sameRoundDeliveredTwice_isStillRefusedAsAlreadyAssigned() public {
        assignTo(5, 3, one(worker(1)));
        vm.expectEmit(true, true, false, true);
        emit WorkerHub.TaskRefused(
            taskOf(5, 3, worker(1)), toBytes32(worker(1)), WorkerHub.RefusalReason.AlreadyAssigned
        );
        deliverAssigned(5, 3, one(worker(1)));
        assertEq(hub.getStaker(worker(1)).activeTasks, 1, "one task");
    }

    function test_timestampsBeyond48Bits_areClamped() public {
        ensureRegistered(worker(1));
        hub.receiveMessage(
            signedFromMarket(taskAssignedPayload(5, 0, type(uint64).max - RELEASE_AFTER, one(worker(1))))
        );
        WorkerHub.Task memory task = hub.getTask(5, 0, toBytes32(worker(1)));
        assertEq(task.deadline, type(uint48).max, "deadline clamped");
        assertEq(task.releaseAt, type(uint48).max, "release time clamped");
        vm.prank(worker(1));
        hub.commitUpdate(5, 0, keccak256("u"), keccak256("t"), keccak256("d"), 1, 1); // still in time
    }
}
