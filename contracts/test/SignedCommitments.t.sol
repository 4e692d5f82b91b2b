// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {WorkerHub} from "../src/WorkerHub.sol";
import {PayloadCodec} from "../src/libraries/PayloadCodec.sol";
import {HubCommits, Published, chainFrom, publishedBy} from "./BatchedCommitments.t.sol";
import {Vm} from "./utils/Vm.sol";

/// Workers whose keys the tests hold: their commitments are signed and recorded by anyone.
abstract contract SignedCommits is HubCommits {
    uint256 internal constant KEY_BASE = 0xC0117;
    /// Half of secp256k1's order.
    uint256 internal constant HALF = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;
    address internal constant SUBMITTER = address(0x5AB317);

    function signerAddr(uint256 i) internal pure returns (address) {
        return vm.addr(KEY_BASE + i);
    }

    function commitmentOf(PayloadCodec.Commitment memory c) internal pure returns (bytes32) {
        return PayloadCodec.commitmentHash(c.updateHash, c.transcriptRoot, c.dataRoot, c.numSamples, c.trainLoss);
    }

    function signers(uint256 from, uint256 count) internal pure returns (address[] memory ws) {
        ws = new address[](count);
        for (uint256 i = 0; i < count; ++i) {
            ws[i] = signerAddr(from + i);
        }
    }

    /// Worker i's commitment in `jobId` round `round`, signed by key `signingKey` for `target`.
    function signedBy(uint256 signingKey, address w, uint64 jobId, uint32 round, WorkerHub target)
        internal
        view
        returns (WorkerHub.SignedCommitment memory s, PayloadCodec.Commitment memory c)
    {
        c = entryOf(w, jobId, round);
        bytes32 digest = target.commitmentDigest(jobId, round, commitmentOf(c));
        (uint8 v, bytes32 r, bytes32 sig) = vm.sign(signingKey, digest);
        bytes32 vs = bytes32(uint256(sig) | (uint256(v - 27) << 255));
        s = WorkerHub.SignedCommitment(c.updateHash, c.transcriptRoot, c.dataRoot, c.numSamples, c.trainLoss, r, vs);
    }

    function signed(uint256 i, uint64 jobId, uint32 round)
        internal
        view
        returns (WorkerHub.SignedCommitment memory s, PayloadCodec.Commitment memory c)
    {
        return signedBy(KEY_BASE + i, signerAddr(i), jobId, round, hub);
    }

    /// Workers [from, from+count) signed for `jobId` round `round`, in that order.
    function batchOf(uint256 from, uint256 count, uint64 jobId, uint32 round)
        internal
        view
        returns (WorkerHub.SignedCommitment[] memory batch, PayloadCodec.Commitment[] memory entries)
    {
        batch = new WorkerHub.SignedCommitment[](count);
        entries = new PayloadCodec.Commitment[](count);
        for (uint256 i = 0; i < count; ++i) {
            (batch[i], entries[i]) = signed(from + i, jobId, round);
        }
    }

    function submit(uint64 jobId, uint32 round, WorkerHub.SignedCommitment[] memory batch)
        internal
        returns (uint256 recorded)
    {
        vm.prank(SUBMITTER);
        recorded = hub.commitSigned(jobId, round, batch);
    }

    function one(WorkerHub.SignedCommitment memory s) internal pure returns (WorkerHub.SignedCommitment[] memory b) {
        b = new WorkerHub.SignedCommitment[](1);
        b[0] = s;
    }

    function skipsIn(Vm.Log[] memory logs) internal view returns (uint256 n) {
        for (uint256 i = 0; i < logs.length; ++i) {
            if (logs[i].emitter == address(hub) && logs[i].topics[0] == WorkerHub.CommitmentSkipped.selector) ++n;
        }
    }

    /// The hub's `CommitmentsRecorded` in `logs` (its `first` and payload; the last one when
    /// several), how many there are, and how many `UpdateCommitted` the hub logged beside it.
    function recordedIn(Vm.Log[] memory logs)
        internal
        view
        returns (uint256 first, bytes memory payload, uint256 batches, uint256 single)
    {
        for (uint256 i = 0; i < logs.length; ++i) {
            if (logs[i].emitter != address(hub)) continue;
            bytes32 topic = logs[i].topics[0];
            if (topic == WorkerHub.UpdateCommitted.selector) ++single;
            if (topic != WorkerHub.CommitmentsRecorded.selector) continue;
            ++batches;
            (first, payload) = abi.decode(logs[i].data, (uint256, bytes));
        }
    }
}

/// `commitSigned`: one transaction records many workers' signed commitments, each under the
/// same rules as the worker's own `commitUpdate`, and nothing another job, round, hub or chain
/// was signed for.
contract HubSignedCommitTest is SignedCommits {
    function test_commitSigned_recordsEveryWorkersCommitmentLikeItsOwn() public {
        assignTo(5, 1, signers(0, 3));
        (WorkerHub.SignedCommitment[] memory batch, PayloadCodec.Commitment[] memory entries) = batchOf(0, 3, 5, 1);
        vm.roll(700);
        vm.expectEmit(true, true, true, true);
        emit WorkerHub.UpdateCommitted(
            5,
            1,
            signerAddr(0),
            entries[0].updateHash,
            entries[0].transcriptRoot,
            entries[0].dataRoot,
            entries[0].numSamples,
            entries[0].trainLoss
        );
        assertEq(submit(5, 1, batch), 3, "three recorded");
        WorkerHub.CommitLog memory log = hub.getCommitLog(5, 1);
        assertEq(log.head, chainFrom(bytes32(0), entries), "the same log as three own commitments");
        assertEq(log.firstBlock, 700, "first block");
        for (uint256 i = 0; i < 3; ++i) {
            WorkerHub.Task memory task = hub.getTask(5, 1, toBytes32(signerAddr(i)));
            assertEq(uint8(task.state), uint8(WorkerHub.TaskState.Committed), "committed");
        }
        // The pending entries publish as if each worker had committed on its own.
        vm.recordLogs();
        hub.publishCommitments(5, 1, entries);
        assertEq(publishedNow()[0].payload, expectedPayload(5, 1, entries), "published");
    }

    function test_commitSigned_goesOnAfterOwnCommitmentsAndBeforeLaterOnes() public {
        assignTo(5, 1, signers(0, 4));
        PayloadCodec.Commitment[] memory entries = new PayloadCodec.Commitment[](4);
        entries[0] = commitAs(signerAddr(3), 5, 1);
        WorkerHub.SignedCommitment[] memory batch = new WorkerHub.SignedCommitment[](2);
        (batch[0], entries[1]) = signed(1, 5, 1);
        (batch[1], entries[2]) = signed(0, 5, 1);
        submit(5, 1, batch);
        entries[3] = commitAs(signerAddr(2), 5, 1);
        assertEq(hub.getCommitLog(5, 1).head, chainFrom(bytes32(0), entries), "one log, in recording order");
        assertEq(hub.getCommitLog(5, 1).firstBlock, block.number, "set by the first");
    }

    function test_commitSigned_skipsWhatDoesNotQualifyAndRecordsTheRest() public {
        stakeAs(signerAddr(2), 2 ether); // two tasks' locks
        assignTo(5, 1, signers(0, 5));
        assignTo(6, 1, one(signerAddr(2)));
        WorkerHub.SignedCommitment[] memory batch = new WorkerHub.SignedCommitment[](7);
        PayloadCodec.Commitment[] memory kept = new PayloadCodec.Commitment[](2);
        // 0: committed on its own meanwhile.
        commitAs(signerAddr(0), 5, 1);
        (batch[0],) = signed(0, 5, 1);
        // 1: recorded.
        (batch[1], kept[0]) = signed(1, 5, 1);
        // 2: signed for job 6: in job 5 it recovers another address, not assigned here.
        (batch[2],) = signed(2, 6, 1);
        // 3: a worker with no task in the round.
        (batch[3],) = signed(9, 5, 1);
        // 4: an altered field (the signature no longer recovers worker 4).
        (batch[4],) = signed(4, 5, 1);
        batch[4].numSamples += 1;
        // 5: a signature that recovers nobody.
        (batch[5],) = signed(3, 5, 1);
        batch[5].r = bytes32(0);
        // 6: recorded.
        (batch[6], kept[1]) = signed(3, 5, 1);
        vm.recordLogs();
        assertEq(submit(5, 1, batch), 2, "two recorded");
        assertEq(skipsIn(vm.getRecordedLogs()), 5, "five skipped");
        PayloadCodec.Commitment[] memory log = new PayloadCodec.Commitment[](3);
        log[0] = entryOf(signerAddr(0), 5, 1);
        (log[1], log[2]) = (kept[0], kept[1]);
        assertEq(hub.getCommitLog(5, 1).head, chainFrom(bytes32(0), log), "only the qualifying ones");
        assertEq(
            uint8(hub.getTask(5, 1, toBytes32(signerAddr(4))).state),
            uint8(WorkerHub.TaskState.Assigned),
            "altered: not committed"
        );
        assertEq(
            uint8(hub.getTask(6, 1, toBytes32(signerAddr(2))).state),
            uint8(WorkerHub.TaskState.Assigned),
            "job 6: not committed"
        );
    }

    function test_commitSigned_namesWhySomethingWasSkipped() public {
        assignTo(5, 1, signers(0, 2));
        (WorkerHub.SignedCommitment memory s,) = signed(0, 5, 1);
        vm.expectEmit(true, true, true, true);
        emit WorkerHub.CommitmentSkipped(5, 1, signerAddr(0), WorkerHub.CommitSkip.TooLate);
        vm.warp(block.timestamp + 1 days + 1);
        assertEq(submit(5, 1, one(s)), 0, "too late");
        vm.warp(block.timestamp - 1);
        submit(5, 1, one(s));
        vm.expectEmit(true, true, true, true);
        emit WorkerHub.CommitmentSkipped(5, 1, signerAddr(0), WorkerHub.CommitSkip.AlreadyCommitted);
        assertEq(submit(5, 1, one(s)), 0, "the same signature again");
        (WorkerHub.SignedCommitment memory stranger,) = signed(7, 5, 1);
        vm.expectEmit(true, true, true, true);
        emit WorkerHub.CommitmentSkipped(5, 1, signerAddr(7), WorkerHub.CommitSkip.NotAssigned);
        submit(5, 1, one(stranger));
        // Settled (both tasks' entries in): closed.
        settle(5, 1, signerAddr(0), PayloadCodec.OUTCOME_ACCEPTED, 0);
        settle(5, 1, signerAddr(1), PayloadCodec.OUTCOME_DROPPED, 0);
        (WorkerHub.SignedCommitment memory closed,) = signed(1, 5, 1);
        vm.expectEmit(true, true, true, true);
        emit WorkerHub.CommitmentSkipped(5, 1, signerAddr(1), WorkerHub.CommitSkip.TaskClosed);
        submit(5, 1, one(closed));
        assertEq(hub.getCommitLog(5, 1).head, chainFrom(bytes32(0), _one(entryOf(signerAddr(0), 5, 1))), "one");
    }

    function test_attack_signaturesForAnotherHubChainRoundOrJobRecordNothing() public {
        assignTo(5, 1, signers(0, 1));
        stakeAs(signerAddr(0), 1 ether); // a second task's lock
        assignTo(5, 2, signers(0, 1));
        // Another hub on this chain (same job, round and worker).
        WorkerHub other = new WorkerHub(core, hubVerifier(), 202, address(this), COORDINATOR, MIN_STAKE, UNBONDING);
        (WorkerHub.SignedCommitment memory forOther,) = signedBy(KEY_BASE, signerAddr(0), 5, 1, other);
        // This hub on another chain id (the same contract address after a fork).
        vm.chainId(31_337_000);
        (WorkerHub.SignedCommitment memory forFork,) = signed(0, 5, 1);
        vm.chainId(31_337);
        // Another round and another job of the same worker.
        (WorkerHub.SignedCommitment memory forRound,) = signed(0, 5, 1);
        (WorkerHub.SignedCommitment memory forJob,) = signed(0, 9, 1);
        WorkerHub.SignedCommitment[] memory batch = new WorkerHub.SignedCommitment[](3);
        (batch[0], batch[1], batch[2]) = (forOther, forFork, forJob);
        vm.recordLogs();
        assertEq(submit(5, 1, batch), 0, "none recovers the worker here");
        assertEq(skipsIn(vm.getRecordedLogs()), 3, "three skipped");
        assertEq(submit(5, 2, one(forRound)), 0, "round 1's signature in round 2");
        assertEq(hub.getCommitLog(5, 1).head, bytes32(0), "nothing in round 1");
        assertEq(hub.getCommitLog(5, 2).head, bytes32(0), "nothing in round 2");
        // Round 1's signature does record round 1's commitment.
        assertEq(submit(5, 1, one(forRound)), 1, "its own round");
    }

    function test_attack_aSignatureWithSAboveHalfTheOrderIsRefused() public {
        assignTo(5, 1, signers(0, 1));
        (WorkerHub.SignedCommitment memory s,) = signed(0, 5, 1);
        // The malleable twin of a signature has s' = n - s above half the order n; in compact
        // form its top bit is v's, so the twin is either unwritable or refused here.
        WorkerHub.SignedCommitment memory high =
            WorkerHub.SignedCommitment(s.updateHash, s.transcriptRoot, s.dataRoot, s.numSamples, s.trainLoss, s.r, 0);
        high.vs = bytes32(HALF + 1);
        vm.expectEmit(true, true, true, true);
        emit WorkerHub.CommitmentSkipped(5, 1, address(0), WorkerHub.CommitSkip.BadSignature);
        assertEq(submit(5, 1, one(high)), 0, "s above half the order");
        high.vs = bytes32(HALF + 1 | (1 << 255));
        assertEq(submit(5, 1, one(high)), 0, "either v");
        assertEq(submit(5, 1, one(s)), 1, "the low-s signature");
    }

    function test_commitmentDigest_isEip712OverTheHubsDomain() public view {
        PayloadCodec.Commitment memory c = entryOf(signerAddr(0), 5, 1);
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("fedrelay WorkerHub"),
                keccak256("1"),
                block.chainid,
                address(hub)
            )
        );
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("SignedCommitment(uint64 jobId,uint32 round,bytes32 commitment)"),
                uint64(5),
                uint32(1),
                keccak256(abi.encodePacked(c.updateHash, c.transcriptRoot, c.dataRoot, c.numSamples, c.trainLoss))
            )
        );
        assertEq(
            hub.commitmentDigest(5, 1, commitmentOf(c)),
            keccak256(abi.encodePacked("\x19\x01", domain, structHash)),
            "digest"
        );
    }

    function _one(PayloadCodec.Commitment memory c) private pure returns (PayloadCodec.Commitment[] memory list) {
        list = new PayloadCodec.Commitment[](1);
        list[0] = c;
    }
}

/// `commitSignedAndPublish`: a round's signed commitments recorded and published in one call,
/// after the commitments recorded before it and not yet published.
contract HubSignedPublishTest is SignedCommits {
    function publishSigned(
        uint64 jobId,
        uint32 round,
        PayloadCodec.Commitment[] memory pending,
        WorkerHub.SignedCommitment[] memory batch
    ) internal returns (uint256 recorded) {
        vm.prank(SUBMITTER);
        (recorded,) = hub.commitSignedAndPublish(jobId, round, pending, batch);
    }

    function test_commitSignedAndPublish_recordsAndPublishesTheRoundInOneCall() public {
        assignTo(5, 1, signers(0, 3));
        (WorkerHub.SignedCommitment[] memory batch, PayloadCodec.Commitment[] memory entries) = batchOf(0, 3, 5, 1);
        vm.recordLogs();
        assertEq(publishSigned(5, 1, new PayloadCodec.Commitment[](0), batch), 3, "three recorded");
        Published[] memory published = publishedNow();
        assertEq(published.length, 1, "one message");
        assertEq(published[0].payload, expectedPayload(5, 1, entries), "the three, in order");
        WorkerHub.CommitLog memory log = hub.getCommitLog(5, 1);
        assertEq(log.head, chainFrom(bytes32(0), entries), "recorded as commitSigned records");
        assertEq(log.publishedHead, log.head, "nothing left pending");
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.NothingToPublish.selector, uint64(5), uint32(1)));
        hub.publishCommitments(5, 1, new PayloadCodec.Commitment[](0));
    }

    function test_commitSignedAndPublish_publishesPendingCommitmentsFirst() public {
        assignTo(5, 1, signers(0, 3));
        PayloadCodec.Commitment[] memory entries = new PayloadCodec.Commitment[](3);
        entries[0] = commitAs(signerAddr(2), 5, 1);
        PayloadCodec.Commitment[] memory pending = new PayloadCodec.Commitment[](1);
        pending[0] = entries[0];
        WorkerHub.SignedCommitment[] memory batch = new WorkerHub.SignedCommitment[](2);
        (batch[0], entries[1]) = signed(0, 5, 1);
        (batch[1], entries[2]) = signed(1, 5, 1);
        vm.recordLogs();
        assertEq(publishSigned(5, 1, pending, batch), 2, "two recorded");
        Vm.Log[] memory logs = vm.getRecordedLogs();
        Published[] memory published = publishedBy(logs, address(core));
        assertEq(published.length, 1, "one message");
        assertEq(published[0].payload, expectedPayload(5, 1, entries), "the own commitment, then the signed");
        assertEq(hub.getCommitLog(5, 1).publishedHead, chainFrom(bytes32(0), entries), "all published");
        (uint256 first, bytes memory logged, uint256 batches, uint256 single) = recordedIn(logs);
        assertEq(batches, 1, "one CommitmentsRecorded");
        assertEq(single, 0, "no UpdateCommitted per entry");
        assertEq(first, 1, "the entries from the second on were recorded by this call");
        assertEq(logged, published[0].payload, "it logs the published payload");
    }

    function test_commitSignedAndPublish_leavesSkippedEntriesOutOfTheMessage() public {
        assignTo(5, 1, signers(0, 2));
        WorkerHub.SignedCommitment[] memory batch = new WorkerHub.SignedCommitment[](3);
        PayloadCodec.Commitment[] memory entries = new PayloadCodec.Commitment[](2);
        (batch[0], entries[0]) = signed(0, 5, 1);
        (batch[1],) = signed(7, 5, 1); // not assigned
        (batch[2], entries[1]) = signed(1, 5, 1);
        vm.recordLogs();
        assertEq(publishSigned(5, 1, new PayloadCodec.Commitment[](0), batch), 2, "two recorded");
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(skipsIn(logs), 1, "one skipped");
        Published[] memory published = publishedBy(logs, address(core));
        assertEq(published.length, 1, "one message");
        assertEq(published[0].payload, expectedPayload(5, 1, entries), "only the recorded two");
    }

    function test_attack_pendingThatIsNotTheLogIsRefusedAndNothingIsRecorded() public {
        assignTo(5, 1, signers(0, 3));
        PayloadCodec.Commitment memory own = commitAs(signerAddr(2), 5, 1);
        (WorkerHub.SignedCommitment[] memory batch,) = batchOf(0, 2, 5, 1);
        PayloadCodec.Commitment[] memory forged = new PayloadCodec.Commitment[](1);
        forged[0] = own;
        forged[0].updateHash = keccak256("another update");
        bytes32 head = hub.getCommitLog(5, 1).head;
        vm.expectRevert(
            abi.encodeWithSelector(WorkerHub.CommitmentsMismatch.selector, head, chainFrom(bytes32(0), forged))
        );
        publishSigned(5, 1, forged, batch);
        // Leaving the pending commitment out is refused the same way.
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.CommitmentsMismatch.selector, head, bytes32(0)));
        publishSigned(5, 1, new PayloadCodec.Commitment[](0), batch);
        for (uint256 i = 0; i < 2; ++i) {
            WorkerHub.Task memory task = hub.getTask(5, 1, toBytes32(signerAddr(i)));
            assertEq(uint8(task.state), uint8(WorkerHub.TaskState.Assigned), "nothing recorded");
        }
    }

    function test_commitSignedAndPublish_refusesNothingToPublishAndMoreThanOneMessage() public {
        assignTo(5, 1, signers(0, 1));
        PayloadCodec.Commitment[] memory none = new PayloadCodec.Commitment[](0);
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.NothingToPublish.selector, uint64(5), uint32(1)));
        publishSigned(5, 1, none, new WorkerHub.SignedCommitment[](0));
        (WorkerHub.SignedCommitment memory stranger,) = signed(9, 5, 1); // not assigned: skipped
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.NothingToPublish.selector, uint64(5), uint32(1)));
        publishSigned(5, 1, none, one(stranger));
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.PublishTooLarge.selector, uint256(33), uint256(32)));
        publishSigned(5, 1, none, new WorkerHub.SignedCommitment[](33));
        assertEq(hub.getCommitLog(5, 1).head, bytes32(0), "nothing recorded");
    }
}

/// 32 assigned workers' signed commitments, kept for the gas tests.
abstract contract SignedBatchOf32 is SignedCommits {
    WorkerHub.SignedCommitment[] internal batch;

    function setUp() public override {
        super.setUp();
        assignTo(5, 1, signers(0, 32));
        (WorkerHub.SignedCommitment[] memory b,) = batchOf(0, 32, 5, 1);
        for (uint256 i = 0; i < 32; ++i) {
            batch.push(b[i]);
        }
    }
}

/// Gas of recording and publishing 32 signed commitments in one call (snapshot).
contract HubSignedPublishGasTest is SignedBatchOf32 {
    /// The call alone: the batch is copied out of this test's storage unmetered.
    function test_gas_commitSignedAndPublish32() public {
        vm.pauseGasMetering();
        WorkerHub.SignedCommitment[] memory b = batch;
        PayloadCodec.Commitment[] memory none = new PayloadCodec.Commitment[](0);
        vm.resumeGasMetering();
        hub.commitSignedAndPublish(5, 1, none, b);
    }
}

/// Gas of recording 32 signed commitments in one transaction (snapshot).
contract HubSignedCommitGasTest is SignedBatchOf32 {
    /// The call alone: the batch is copied out of this test's storage unmetered.
    function test_gas_commitSigned32() public {
        vm.pauseGasMetering();
        WorkerHub.SignedCommitment[] memory b = batch;
        vm.resumeGasMetering();
        hub.commitSigned(5, 1, b);
    }
}
