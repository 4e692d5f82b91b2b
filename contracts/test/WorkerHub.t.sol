// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {WorkerHub} from "../src/WorkerHub.sol";
import {MessageReceiver} from "../src/base/MessageReceiver.sol";
import {PayloadCodec} from "../src/libraries/PayloadCodec.sol";
import {HubFixture} from "./utils/HubFixture.sol";
import {Vm} from "./utils/Vm.sol";

contract WorkerHubTest is HubFixture {
    bytes32 internal constant PUBLISHED = keccak256("LogMessagePublished(address,uint64,uint32,bytes,uint8)");

    function setUp() public {
        setUpHub();
    }

    function lastPublished() internal returns (bytes memory payload) {
        Vm.Log[] memory logs = vm.getRecordedLogs();
        for (uint256 i = 0; i < logs.length; ++i) {
            if (logs[i].topics[0] == PUBLISHED) {
                (,, payload,) = abi.decode(logs[i].data, (uint64, uint32, bytes, uint8));
            }
        }
    }

    function taskOf(uint64 jobId, uint32 round, address w) internal view returns (bytes32) {
        return hub.taskIdOf(jobId, round, toBytes32(w));
    }

    // ------------------------------------------------------------------ stake

    function test_stake_accumulatesAndRejectsZero() public {
        vm.expectEmit(true, false, false, true);
        emit WorkerHub.Staked(worker(1), 2 ether, 2 ether);
        stakeAs(worker(1), 2 ether);
        stakeAs(worker(1), 1 ether);
        assertEq(hub.getStaker(worker(1)).staked, 3 ether, "staked");
        assertEq(hub.totalStaked(), 3 ether, "total");
        vm.prank(worker(1));
        vm.expectRevert(WorkerHub.ZeroAmount.selector);
        hub.stake();
    }

    function test_stake_beyondItsSlotIsRefusedAndTheSlotLeftAsItWas() public {
        uint256 limit = type(uint104).max;
        stakeAs(worker(1), limit - 1);
        vm.deal(worker(1), 2);
        vm.prank(worker(1));
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.StakeTooLarge.selector, limit + 1, limit));
        hub.stake{value: 2}();
        stakeAs(worker(1), 1); // up to the limit itself
        assertEq(hub.getStaker(worker(1)).staked, limit, "staked");
        assertEq(hub.totalStaked(), limit, "total");
    }

    function test_unbond_thenWithdrawAfterDelay() public {
        stakeAs(worker(1), 3 ether);
        vm.startPrank(worker(1));
        vm.expectRevert(WorkerHub.ZeroAmount.selector);
        hub.requestUnbond(0);
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.UnbondExceedsFreeStake.selector, 3 ether, 4 ether, 0));
        hub.requestUnbond(4 ether);
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.NothingUnbonding.selector, worker(1)));
        hub.withdrawStake();
        hub.requestUnbond(2 ether);
        uint64 readyAt = uint64(block.timestamp + UNBONDING);
        assertEq(hub.getStaker(worker(1)).unbondingReadyAt, readyAt, "ready at");
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.UnbondingPending.selector, readyAt));
        hub.withdrawStake();
        vm.warp(readyAt);
        hub.withdrawStake();
        vm.stopPrank();
        assertEq(worker(1).balance, 2 ether, "withdrawn");
        assertEq(hub.getStaker(worker(1)).staked, 1 ether, "remaining");
        assertEq(hub.totalUnbonding(), 0, "nothing unbonding");
    }

    function test_requestUnbond_refusedForLockedStakeUntilSettled() public {
        stakeAs(worker(1), 2 ether);
        assignTo(9, 0, one(worker(1)));
        assertEq(hub.getStaker(worker(1)).locked, 1 ether, "task locks its stake");
        vm.prank(worker(1));
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.UnbondExceedsFreeStake.selector, 2 ether, 1.5 ether, 1 ether));
        hub.requestUnbond(1.5 ether);
        vm.prank(worker(1));
        hub.requestUnbond(1 ether); // the unlocked part may leave
        settle(9, 0, worker(1), 0, 0);
        assertEq(hub.getStaker(worker(1)).locked, 1 ether, "a settlement without a slash leaves the lock");
        vm.prank(worker(1));
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.UnbondExceedsFreeStake.selector, 1 ether, 1 ether, 1 ether));
        hub.requestUnbond(1 ether);
        assertEq(hub.releaseSettled(9, one(worker(1))), 1, "anyone frees it once the round settled");
        assertEq(hub.getStaker(worker(1)).locked, 0, "freed");
        assertEq(hub.releaseSettled(9, one(worker(1))), 0, "once");
        vm.prank(worker(1));
        hub.requestUnbond(1 ether);
        vm.warp(block.timestamp + UNBONDING);
        vm.prank(worker(1));
        hub.withdrawStake();
        assertEq(worker(1).balance, 2 ether, "everything withdrawn after settlement");
    }

    function test_withdrawStake_revertsWhenRecipientRefuses() public {
        Refusing refusing = new Refusing(hub);
        vm.deal(address(refusing), 1 ether);
        refusing.stakeAndUnbond();
        vm.warp(block.timestamp + UNBONDING);
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.TransferFailed.selector, address(refusing), 1 ether));
        refusing.withdraw();
    }

    // ------------------------------------------------------------------ register

    function test_register_publishesWorkerRegistered() public {
        stakeAs(worker(1), 1.5 ether);
        vm.recordLogs();
        vm.prank(worker(1));
        uint64 sequence = hub.register(toBytes32(address(0xFA)), 1);
        assertEq(sequence, 0, "sequence");
        PayloadCodec.WorkerRegistered memory expected = PayloadCodec.WorkerRegistered(
            PayloadCodec.Header(1, COORDINATOR, MARKET, 0), toBytes32(worker(1)), 1.5e8, toBytes32(address(0xFA)), 1
        );
        assertEq(lastPublished(), PayloadCodec.encode(expected), "payload bytes");
        assertTrue(hub.getStaker(worker(1)).registered, "registered");
    }

    function test_register_requiresMinimumStakeFeeAndPeer() public {
        stakeAs(worker(1), 0.5 ether);
        vm.prank(worker(1));
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.InsufficientStake.selector, 0.5 ether, MIN_STAKE));
        hub.register(bytes32(0), 0);
        stakeAs(worker(1), 0.5 ether);
        setCoreFee(2);
        vm.deal(worker(1), 2);
        vm.prank(worker(1));
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.WrongMessageFee.selector, 0, 2));
        hub.register(bytes32(0), 0);
        vm.prank(worker(1));
        hub.register{value: 2}(bytes32(0), 0);
        hub.setPeer(COORDINATOR, bytes32(0));
        vm.deal(worker(1), 2);
        vm.prank(worker(1));
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.UnknownEmitter.selector, COORDINATOR, bytes32(0)));
        hub.register{value: 2}(bytes32(0), 0);
    }

    // ------------------------------------------------------------------ assignments

    function test_receive_taskAssignedRecordsEveryWorker() public {
        address[] memory ws = new address[](3);
        for (uint256 i = 0; i < 3; ++i) {
            ws[i] = worker(i);
            ensureRegistered(ws[i]);
        }
        bytes memory payload = taskAssignedPayload(5, 2, uint64(block.timestamp + 1 days), ws);
        vm.expectEmit(true, true, true, true);
        emit WorkerHub.TasksAssigned(5, 2, payload);
        hub.receiveMessage(signedFromMarket(payload));
        for (uint256 i = 0; i < 3; ++i) {
            WorkerHub.Task memory t = hub.getTask(5, 2, toBytes32(ws[i]));
            assertEq(uint8(t.state), uint8(WorkerHub.TaskState.Assigned), "assigned");
            assertEq(t.lock, 1 ether, "lock");
            assertEq(hub.getStaker(ws[i]).activeTasks, 1, "active");
        }
    }

    function test_receive_taskAssignedSkipsDuplicateAndInvalidEntries() public {
        ensureRegistered(worker(1));
        address[] memory ws = new address[](2);
        ws[0] = worker(1);
        ws[1] = worker(1);
        vm.expectEmit(true, true, false, true);
        emit WorkerHub.TaskRefused(
            taskOf(5, 0, worker(1)), toBytes32(worker(1)), WorkerHub.RefusalReason.AlreadyAssigned
        );
        hub.receiveMessage(signedFromMarket(taskAssignedPayload(5, 0, 1, ws)));
        assertEq(hub.getStaker(worker(1)).activeTasks, 1, "one task, the repeat skipped");
        bytes memory p = taskAssignedPayload(6, 0, 1, one(worker(1)));
        p[145] = 0x01; // worker key no longer a left-padded EVM address
        bytes32 badKey = toBytes32(worker(1)) | bytes32(uint256(1) << 248);
        vm.expectEmit(true, true, false, true);
        emit WorkerHub.TaskRefused(hub.taskIdOf(6, 0, badKey), badKey, WorkerHub.RefusalReason.InvalidWorkerKey);
        hub.receiveMessage(signedFromMarket(p));
        bytes memory vaa;
        PayloadCodec.UpdateCommitted memory u;
        u.header = PayloadCodec.Header(3, WORKERS, toBytes32(address(hub)), 5);
        u.commitments = new PayloadCodec.Commitment[](1);
        u.commitments[0].workerKey = toBytes32(worker(1));
        vaa = signedFromMarket(PayloadCodec.encode(u));
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.UnexpectedPayload.selector, 3));
        hub.receiveMessage(vaa);
    }

    function test_attack_replayWrongEmitterAndWrongTargetRejected() public {
        bytes memory vaa = signedFromMarket(taskAssignedPayload(5, 0, 1, one(worker(1))));
        hub.receiveMessage(vaa);
        bytes32 digest = core.parseVM(vaa).hash;
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.AlreadyConsumed.selector, digest));
        hub.receiveMessage(vaa);

        bytes memory payload = taskAssignedPayload(6, 0, 1, one(worker(1)));
        vaa = signVaa(0, 0, firstIndices(3), vaaBody(COORDINATOR, bytes32(uint256(0xBAD)), 1, payload));
        vm.expectRevert(
            abi.encodeWithSelector(MessageReceiver.UnknownEmitter.selector, COORDINATOR, bytes32(uint256(0xBAD)))
        );
        hub.receiveMessage(vaa);

        payload[3] = 0x02; // addressed to chain 2
        vaa = signedFromMarket(payload);
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.WrongTargetChain.selector, 2));
        hub.receiveMessage(vaa);

        payload = taskAssignedPayload(6, 0, 1, one(worker(1)));
        payload[20] = 0xFF;
        bytes32 target;
        assembly {
            target := mload(add(payload, 36))
        }
        vaa = signedFromMarket(payload);
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.WrongTargetAddress.selector, target));
        hub.receiveMessage(vaa);
    }

    function test_attack_belowQuorumRejectedHighSByMessageCore() public {
        bytes memory vaa = signVaa(
            0, 0, firstIndices(2), vaaBody(COORDINATOR, MARKET, 1, taskAssignedPayload(5, 0, 1, one(worker(1))))
        );
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.InvalidVaa.selector, "no quorum"));
        hub.receiveMessage(vaa);
        vaa = signVaa(
            0, 0, firstIndices(3), vaaBody(COORDINATOR, MARKET, 1, taskAssignedPayload(5, 0, 1, one(worker(1))))
        );
        vaa = highSTwin(vaa, 0);
        if (requireStyleCore) {
            hub.receiveMessage(vaa); // accepted: replay protection is the digest, not the signature
            return;
        }
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.InvalidVaa.selector, "signature s value too high"));
        hub.receiveMessage(vaa);
    }

    // ------------------------------------------------------------------ commitments

    function test_commitUpdate_recordsTheLogAndPublishesNothing() public {
        assignTo(5, 1, one(worker(1)));
        uint64 sequence = core.nextSequence(address(hub));
        vm.roll(1234);
        vm.recordLogs();
        vm.expectEmit(true, true, true, true);
        emit WorkerHub.UpdateCommitted(
            5, 1, worker(1), keccak256("update"), keccak256("root"), keccak256("data"), 640, 123_456
        );
        vm.prank(worker(1));
        hub.commitUpdate(5, 1, keccak256("update"), keccak256("root"), keccak256("data"), 640, 123_456);
        assertEq(lastPublished().length, 0, "no message");
        assertEq(core.nextSequence(address(hub)), sequence, "no sequence taken");
        bytes32 commitment = keccak256(
            abi.encodePacked(keccak256("update"), keccak256("root"), keccak256("data"), uint32(640), uint32(123_456))
        );
        WorkerHub.CommitLog memory log = hub.getCommitLog(5, 1);
        assertEq(log.head, keccak256(abi.encode(bytes32(0), toBytes32(worker(1)), commitment)), "head");
        assertEq(log.publishedHead, bytes32(0), "nothing published");
        assertEq(log.firstBlock, 1234, "first block");
        assertEq(hub.getCommitLog(5, 0).head, bytes32(0), "another round's log untouched");
        WorkerHub.Task memory t = hub.getTask(5, 1, toBytes32(worker(1)));
        assertEq(uint8(t.state), uint8(WorkerHub.TaskState.Committed), "committed");
        assertEq(t.lock, 1 ether, "the lock, in the task's one slot");
    }

    function test_attack_commitmentByUnassignedWorkerRejected() public {
        assignTo(5, 1, one(worker(1)));
        bytes32 strangerTask = taskOf(5, 1, worker(2));
        bytes32 otherRound = taskOf(5, 2, worker(1));
        vm.prank(worker(2));
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.NotAssignedWorker.selector, strangerTask, worker(2)));
        hub.commitUpdate(5, 1, bytes32(0), bytes32(0), bytes32(0), 0, 0);
        vm.prank(worker(1));
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.NotAssignedWorker.selector, otherRound, worker(1)));
        hub.commitUpdate(5, 2, bytes32(0), bytes32(0), bytes32(0), 0, 0);
    }

    function test_attack_lateCommitmentRejected() public {
        assignTo(5, 1, one(worker(1)));
        uint64 deadline = uint64(block.timestamp + 1 days);
        bytes32 taskId = taskOf(5, 1, worker(1));
        vm.warp(deadline + 1);
        vm.prank(worker(1));
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.CommitmentTooLate.selector, taskId, deadline));
        hub.commitUpdate(5, 1, bytes32(0), bytes32(0), bytes32(0), 0, 0);
        vm.warp(deadline);
        vm.prank(worker(1));
        hub.commitUpdate(5, 1, bytes32(0), bytes32(0), bytes32(0), 0, 0); // at the deadline is still in time
    }

    function test_commitUpdate_onceOnlyAndNotAfterSettlement() public {
        assignTo(5, 1, one(worker(1)));
        bytes32 first = taskOf(5, 1, worker(1));
        bytes32 settledTask = taskOf(6, 1, worker(1));
        vm.startPrank(worker(1));
        hub.commitUpdate(5, 1, bytes32(0), bytes32(0), bytes32(0), 0, 0);
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.AlreadyCommitted.selector, first));
        hub.commitUpdate(5, 1, bytes32(0), bytes32(0), bytes32(0), 0, 0);
        vm.stopPrank();
        stakeAs(worker(1), 1 ether); // the lock of a second open task
        assignTo(6, 1, one(worker(1)));
        settle(6, 1, worker(1), 1, 0);
        vm.prank(worker(1));
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.TaskAlreadySettled.selector, settledTask));
        hub.commitUpdate(6, 1, bytes32(0), bytes32(0), bytes32(0), 0, 0);
    }

    // ------------------------------------------------------------------ settlement

    function test_roundSettled_releasesAndSlashes() public {
        stakeAs(worker(1), 3 ether);
        address[] memory ws = new address[](2);
        ws[0] = worker(1);
        ws[1] = worker(2);
        assignTo(5, 0, ws);
        bytes memory accepted = settledPayload(5, 0, worker(2), 0, 0);
        vm.expectEmit(true, true, true, true);
        emit WorkerHub.TasksSettled(5, 0, accepted);
        hub.receiveMessage(signedFromMarket(accepted));
        assertEq(hub.getStaker(worker(2)).activeTasks, 1, "no slash: the lock stays for now");
        assertEq(
            uint8(hub.getTask(5, 0, toBytes32(worker(2))).state), uint8(WorkerHub.TaskState.Assigned), "round open"
        );
        assertFalse(hub.isRoundSettled(5, 0), "one entry of two");
        vm.expectEmit(true, true, false, true);
        emit WorkerHub.Slashed(taskOf(5, 0, worker(1)), worker(1), 0.5 ether);
        settle(5, 0, worker(1), 2, 0.5e8);
        assertEq(hub.getStaker(worker(1)).staked, 2.5 ether, "slashed stake");
        assertEq(hub.getStaker(worker(1)).activeTasks, 0, "a slash frees the lock at once");
        assertEq(hub.claimableOf(POSTER), 0.5 ether, "credited to the job's recipient");
        assertEq(uint8(hub.getTask(5, 0, toBytes32(worker(1))).state), uint8(WorkerHub.TaskState.Settled), "settled");
        assertTrue(hub.isRoundSettled(5, 0), "every task had its entry");
        assertEq(
            uint8(hub.getTask(5, 0, toBytes32(worker(2))).state), uint8(WorkerHub.TaskState.Settled), "reads settled"
        );
        assertEq(hub.releaseSettled(5, ws), 1, "worker 2's lock: worker 1's went with its slash");
        assertEq(hub.getStaker(worker(2)).activeTasks, 0, "released");
    }

    function test_roundSettled_slashIsCappedAtTheTaskLock() public {
        stakeAs(worker(1), 2 ether);
        assignTo(5, 0, one(worker(1)));
        vm.prank(worker(1));
        hub.requestUnbond(1 ether);
        settle(5, 0, worker(1), 2, 10e8);
        WorkerHub.Staker memory s = hub.getStaker(worker(1));
        assertEq(s.staked, 0, "the locked ether is taken");
        assertEq(s.unbonding, 1 ether, "unbonding stake never backed the task");
        assertEq(hub.claimableOf(POSTER), 1 ether, "capped at the lock");
        assertEq(
            address(hub).balance,
            hub.totalStaked() + hub.totalUnbonding() + hub.totalClaimable() + hub.feeReserve(),
            "accounting"
        );
    }

    function test_roundSettled_skipsUnknownAndSettledTasks() public {
        vm.expectEmit(true, true, false, true);
        emit WorkerHub.SettlementSkipped(
            taskOf(5, 0, worker(1)), toBytes32(worker(1)), WorkerHub.SkipReason.UnknownTask
        );
        settle(5, 0, worker(1), 0, 0);
        assignTo(5, 0, one(worker(1)));
        settle(5, 0, worker(1), 2, 1e8);
        uint256 staked = hub.getStaker(worker(1)).staked;
        vm.expectEmit(true, true, false, true);
        emit WorkerHub.SettlementSkipped(
            taskOf(5, 0, worker(1)), toBytes32(worker(1)), WorkerHub.SkipReason.AlreadySettled
        );
        settle(5, 0, worker(1), 2, 1e8);
        assertEq(hub.getStaker(worker(1)).staked, staked, "no second slash");
    }

    function test_views_configuration() public view {
        assertEq(hub.chainId(), WORKERS, "chain");
        assertEq(hub.coordinatorChain(), COORDINATOR, "coordinator");
        assertEq(hub.minStake(), MIN_STAKE, "min stake");
        assertEq(hub.unbondingDelay(), UNBONDING, "delay");
        assertEq(hub.peers(COORDINATOR), MARKET, "peer");
        assertEq(hub.consistencyLevel(), 202, "consistency");
    }
}

/// A staker whose contract refuses incoming payments.
contract Refusing {
    WorkerHub internal immutable hub;

    constructor(WorkerHub hub_) {
        hub = hub_;
    }

    function stakeAndUnbond() external {
        hub.stake{value: 1 ether}();
        hub.requestUnbond(1 ether);
    }

    function withdraw() external {
        hub.withdrawStake();
    }
}

/// The same tests against a core that behaves like Wormhole's (see `RequireStyleCore`).
contract WorkerHubOnRequireStyleCoreTest is WorkerHubTest {
    constructor() {
        requireStyleCore = true;
    }
}
