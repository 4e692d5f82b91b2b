// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {JobMarket} from "../src/JobMarket.sol";
import {ProposalChecker} from "../src/ProposalChecker.sol";
import {WorkerHub} from "../src/WorkerHub.sol";
import {MessageCore} from "../src/MessageCore.sol";
import {MessageReceiver} from "../src/base/MessageReceiver.sol";
import {IMessageCore} from "../src/interfaces/IMessageCore.sol";
import {PayloadCodec} from "../src/libraries/PayloadCodec.sol";
import {HubFixture} from "./utils/HubFixture.sol";
import {MarketFixture} from "./utils/MarketFixture.sol";
import {Vm} from "./utils/Vm.sol";

bytes32 constant PUBLISHED = keccak256("LogMessagePublished(address,uint64,uint32,bytes,uint8)");

/// A message a core published: who sent it, its sequence and payload.
struct Published {
    address sender;
    uint64 sequence;
    bytes payload;
}

/// The messages `core` published among `logs`, in order.
function publishedBy(Vm.Log[] memory logs, address core) pure returns (Published[] memory out) {
    uint256 n = 0;
    for (uint256 i = 0; i < logs.length; ++i) {
        if (logs[i].emitter == core && logs[i].topics[0] == PUBLISHED) ++n;
    }
    out = new Published[](n);
    n = 0;
    for (uint256 i = 0; i < logs.length; ++i) {
        if (logs[i].emitter != core || logs[i].topics[0] != PUBLISHED) continue;
        (uint64 sequence,, bytes memory payload,) = abi.decode(logs[i].data, (uint64, uint32, bytes, uint8));
        out[n++] = Published(address(uint160(uint256(logs[i].topics[1]))), sequence, payload);
    }
}

/// A commit chain from `start` over `entries`, each step keccak256(abi.encode(previous, key,
/// keccak256 of the entry's packed fields)), written out here rather than through PayloadCodec.
function chainFrom(bytes32 start, PayloadCodec.Commitment[] memory entries) pure returns (bytes32 chain) {
    chain = start;
    for (uint256 i = 0; i < entries.length; ++i) {
        PayloadCodec.Commitment memory c = entries[i];
        bytes32 commitment =
            keccak256(abi.encodePacked(c.updateHash, c.transcriptRoot, c.dataRoot, c.numSamples, c.trainLoss));
        chain = keccak256(abi.encode(chain, c.workerKey, commitment));
    }
}

/// `entries[from:to]`, copied.
function sliceOf(PayloadCodec.Commitment[] memory entries, uint256 from, uint256 to)
    pure
    returns (PayloadCodec.Commitment[] memory out)
{
    out = new PayloadCodec.Commitment[](to - from);
    for (uint256 i = from; i < to; ++i) {
        out[i - from] = entries[i];
    }
}

/// What the tests below deliver messages through.
interface MessageTarget {
    function receiveMessage(bytes calldata encodedVaa) external payable;
}

/// A hub with helpers to assign, commit and publish.
abstract contract HubCommits is HubFixture {
    function setUp() public virtual {
        setUpHub();
    }

    /// The commitment `w` makes in `jobId` round `round` (every field depends on all three).
    function entryOf(address w, uint64 jobId, uint32 round) internal pure returns (PayloadCodec.Commitment memory) {
        bytes32 seed = keccak256(abi.encode(w, jobId, round));
        return PayloadCodec.Commitment(
            toBytes32(w),
            keccak256(abi.encode("update", seed)),
            keccak256(abi.encode("transcript", seed)),
            keccak256(abi.encode("data", seed)),
            uint32(uint256(seed) % 100_000),
            uint32(uint256(seed) >> 224)
        );
    }

    function commitAs(address w, uint64 jobId, uint32 round) internal returns (PayloadCodec.Commitment memory c) {
        c = entryOf(w, jobId, round);
        vm.prank(w);
        hub.commitUpdate(jobId, round, c.updateHash, c.transcriptRoot, c.dataRoot, c.numSamples, c.trainLoss);
    }

    function workers(uint256 from, uint256 count) internal pure returns (address[] memory ws) {
        ws = new address[](count);
        for (uint256 i = 0; i < count; ++i) {
            ws[i] = worker(from + i);
        }
    }

    /// Assign workers [from, from+count) in job round `round` (32 to a message) and have them
    /// commit in that order; returns their commitments.
    function assignAndCommit(uint64 jobId, uint32 round, uint256 from, uint256 count)
        internal
        returns (PayloadCodec.Commitment[] memory entries)
    {
        for (uint256 start = 0; start < count; start += 32) {
            assignTo(jobId, round, workers(from + start, count - start < 32 ? count - start : 32));
        }
        entries = new PayloadCodec.Commitment[](count);
        for (uint256 i = 0; i < count; ++i) {
            entries[i] = commitAs(worker(from + i), jobId, round);
        }
    }

    function expectedPayload(uint64 jobId, uint32 round, PayloadCodec.Commitment[] memory entries)
        internal
        pure
        returns (bytes memory)
    {
        return PayloadCodec.encode(
            PayloadCodec.UpdateCommitted(PayloadCodec.Header(3, COORDINATOR, MARKET, jobId), round, entries)
        );
    }

    function publishedNow() internal returns (Published[] memory) {
        return publishedBy(vm.getRecordedLogs(), address(core));
    }
}

/// A WorkerHub's commit log and its publication as UPDATE_COMMITTED batches.
contract HubCommitLogTest is HubCommits {
    // ------------------------------------------------------------------ the log

    function test_commitUpdate_extendsTheLogInCommitOrder() public {
        address[] memory ws = workers(1, 3);
        assignTo(5, 1, ws);
        vm.roll(500);
        vm.recordLogs();
        PayloadCodec.Commitment[] memory entries = new PayloadCodec.Commitment[](3);
        entries[0] = entryOf(worker(3), 5, 1);
        vm.expectEmit(true, true, true, true);
        emit WorkerHub.UpdateCommitted(
            5,
            1,
            worker(3),
            entries[0].updateHash,
            entries[0].transcriptRoot,
            entries[0].dataRoot,
            entries[0].numSamples,
            entries[0].trainLoss
        );
        commitAs(worker(3), 5, 1);
        WorkerHub.CommitLog memory log = hub.getCommitLog(5, 1);
        assertEq(log.head, chainFrom(bytes32(0), sliceOf(entries, 0, 1)), "one commitment chained from zero");
        assertEq(log.firstBlock, 500, "the first commitment's block");
        vm.roll(501);
        entries[1] = commitAs(worker(1), 5, 1);
        entries[2] = commitAs(worker(2), 5, 1);
        log = hub.getCommitLog(5, 1);
        assertEq(log.head, chainFrom(bytes32(0), entries), "chained in commit order, not assignment order");
        assertEq(log.publishedHead, bytes32(0), "nothing published");
        assertEq(log.firstBlock, 500, "kept by later commitments");
        assertEq(publishedNow().length, 0, "commitments publish nothing");
        WorkerHub.CommitLog memory other = hub.getCommitLog(5, 0);
        assertEq(other.head, bytes32(0), "another round's log");
        assertEq(other.firstBlock, 0, "untouched");
    }

    // ------------------------------------------------------------------ publishing

    function test_publishCommitments_threeWorkersInOneMessage() public {
        PayloadCodec.Commitment[] memory entries = assignAndCommit(5, 1, 1, 3);
        setCoreFee(5);
        address anyone = address(0xA11CE); // neither a worker nor the owner
        vm.deal(anyone, 1 ether);
        uint64 sequence = core.nextSequence(address(hub));
        bytes32 head = hub.getCommitLog(5, 1).head;
        vm.recordLogs();
        vm.expectEmit(true, true, false, true);
        emit WorkerHub.CommitmentsPublished(5, 1, 3, head, sequence);
        vm.prank(anyone);
        uint64 first = hub.publishCommitments{value: 5}(5, 1, entries);
        assertEq(first, sequence, "its sequence");
        Published[] memory out = publishedNow();
        assertEq(out.length, 1, "one message");
        assertEq(out[0].sender, address(hub), "from the hub");
        assertEq(out[0].sequence, sequence, "sequence");
        assertEq(out[0].payload, expectedPayload(5, 1, entries), "payload bytes");
        assertEq(out[0].payload.length, 49 + 3 * 136, "size");
        WorkerHub.CommitLog memory log = hub.getCommitLog(5, 1);
        assertEq(log.publishedHead, head, "all published");
        assertEq(log.head, head, "head unchanged");
        assertEq(address(core).balance, 5, "the fee reached the core");
    }

    function test_publishCommitments_fortyGoOutAsThirtyTwoAndEight() public {
        PayloadCodec.Commitment[] memory entries = assignAndCommit(9, 0, 100, 40);
        setCoreFee(3);
        vm.deal(address(this), 1 ether);
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.WrongMessageFee.selector, 3, 6));
        hub.publishCommitments{value: 3}(9, 0, entries);
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.WrongMessageFee.selector, 9, 6));
        hub.publishCommitments{value: 9}(9, 0, entries);
        uint64 sequence = core.nextSequence(address(hub));
        vm.recordLogs();
        vm.expectEmit(true, true, false, true);
        emit WorkerHub.CommitmentsPublished(9, 0, 40, chainFrom(bytes32(0), entries), sequence);
        assertEq(hub.publishCommitments{value: 6}(9, 0, entries), sequence, "first sequence");
        Published[] memory out = publishedNow();
        assertEq(out.length, 2, "two messages");
        assertEq(out[0].payload, expectedPayload(9, 0, sliceOf(entries, 0, 32)), "the first 32");
        assertEq(out[1].payload, expectedPayload(9, 0, sliceOf(entries, 32, 40)), "the last 8");
        assertEq(out[1].sequence, sequence + 1, "consecutive");
        assertEq(address(core).balance, 6, "two fees");
    }

    function test_publishCommitments_onlyWhatIsPending() public {
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.NothingToPublish.selector, 5, 1));
        hub.publishCommitments(5, 1, new PayloadCodec.Commitment[](0));
        PayloadCodec.Commitment[] memory entries = assignAndCommit(5, 1, 1, 3);
        hub.publishCommitments(5, 1, entries);
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.NothingToPublish.selector, 5, 1));
        hub.publishCommitments(5, 1, entries);
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.NothingToPublish.selector, 5, 1));
        hub.publishCommitments(5, 1, new PayloadCodec.Commitment[](0));
        // A later commitment: only it is pending.
        assignTo(5, 1, one(worker(4)));
        PayloadCodec.Commitment[] memory late = new PayloadCodec.Commitment[](1);
        late[0] = commitAs(worker(4), 5, 1);
        bytes32 head = hub.getCommitLog(5, 1).head;
        assertEq(head, chainFrom(chainFrom(bytes32(0), entries), late), "the log goes on from the published part");
        // Everything again is not what is pending.
        PayloadCodec.Commitment[] memory all = new PayloadCodec.Commitment[](4);
        for (uint256 i = 0; i < 3; ++i) {
            all[i] = entries[i];
        }
        all[3] = late[0];
        vm.expectRevert(
            abi.encodeWithSelector(
                WorkerHub.CommitmentsMismatch.selector, head, chainFrom(chainFrom(bytes32(0), entries), all)
            )
        );
        hub.publishCommitments(5, 1, all);
        vm.recordLogs();
        hub.publishCommitments(5, 1, late);
        Published[] memory out = publishedNow();
        assertEq(out.length, 1, "one message");
        assertEq(out[0].payload, expectedPayload(5, 1, late), "the new commitment alone");
        assertEq(hub.getCommitLog(5, 1).publishedHead, head, "all published");
    }

    /// Publishing `entries` for job 5 round 1 is refused: they do not rebuild the pending chain.
    function expectMismatch(PayloadCodec.Commitment[] memory entries, string memory what) internal {
        WorkerHub.CommitLog memory log = hub.getCommitLog(5, 1);
        bytes32 given = chainFrom(log.publishedHead, entries);
        assertTrue(given != log.head, what);
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.CommitmentsMismatch.selector, log.head, given));
        hub.publishCommitments(5, 1, entries);
    }

    function test_attack_publishingAnythingButThePendingCommitmentsIsRefused() public {
        PayloadCodec.Commitment[] memory entries = assignAndCommit(5, 1, 1, 3);
        expectMismatch(new PayloadCodec.Commitment[](0), "none");
        // One left out.
        for (uint256 skip = 0; skip < 3; ++skip) {
            PayloadCodec.Commitment[] memory fewer = new PayloadCodec.Commitment[](2);
            for (uint256 i = 0; i < 3; ++i) {
                if (i < skip) fewer[i] = entries[i];
                else if (i > skip) fewer[i - 1] = entries[i];
            }
            expectMismatch(fewer, "one left out");
        }
        // Reordered.
        PayloadCodec.Commitment[] memory swapped = sliceOf(entries, 0, 3);
        (swapped[0], swapped[1]) = (entries[1], entries[0]);
        expectMismatch(swapped, "reordered");
        swapped = sliceOf(entries, 0, 3);
        (swapped[1], swapped[2]) = (entries[2], entries[1]);
        expectMismatch(swapped, "reordered at the end");
        // Any field of any entry altered.
        for (uint256 at = 0; at < 3; ++at) {
            for (uint256 field = 0; field < 6; ++field) {
                PayloadCodec.Commitment[] memory altered = sliceOf(entries, 0, 3);
                altered[at] = _altered(entries[at], field);
                expectMismatch(altered, "altered");
            }
        }
        // Repeated, and an invented extra one (before or after).
        PayloadCodec.Commitment[] memory more = new PayloadCodec.Commitment[](4);
        for (uint256 i = 0; i < 3; ++i) {
            more[i] = entries[i];
        }
        more[3] = entries[2];
        expectMismatch(more, "the last repeated");
        more[3] = entries[0];
        expectMismatch(more, "the first repeated");
        more[3] = entryOf(worker(9), 5, 1);
        expectMismatch(more, "an invented one after");
        more[0] = entryOf(worker(9), 5, 1);
        for (uint256 i = 0; i < 3; ++i) {
            more[i + 1] = entries[i];
        }
        expectMismatch(more, "an invented one before");
        // Nothing went out, and the right entries still do.
        assertEq(hub.getCommitLog(5, 1).publishedHead, bytes32(0), "nothing published");
        hub.publishCommitments(5, 1, entries);
    }

    function _altered(PayloadCodec.Commitment memory c, uint256 field)
        internal
        pure
        returns (PayloadCodec.Commitment memory d)
    {
        d = PayloadCodec.Commitment(c.workerKey, c.updateHash, c.transcriptRoot, c.dataRoot, c.numSamples, c.trainLoss);
        if (field == 0) d.workerKey = toBytes32(worker(9));
        else if (field == 1) d.updateHash = keccak256("another update");
        else if (field == 2) d.transcriptRoot = bytes32(uint256(c.transcriptRoot) ^ 1);
        else if (field == 3) d.dataRoot = bytes32(0);
        else if (field == 4) d.numSamples = c.numSamples + 1;
        else d.trainLoss = c.trainLoss ^ 0x80000000;
    }

    function test_attack_anotherJobsOrRoundsLogRefusesTheEntries() public {
        PayloadCodec.Commitment[] memory entries = assignAndCommit(5, 1, 1, 3);
        // Round 3 (the same slots as round 1) and job 6 have no commitments yet.
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.NothingToPublish.selector, 5, 3));
        hub.publishCommitments(5, 3, entries);
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.NothingToPublish.selector, 6, 1));
        hub.publishCommitments(6, 1, entries);
        // Job 6 and round 2 have commitments of their own, by the same workers.
        for (uint256 i = 1; i <= 3; ++i) {
            stakeAs(worker(i), 2 ether); // the locks of two more tasks
        }
        assignTo(6, 1, workers(1, 3));
        assignTo(5, 2, workers(1, 3));
        PayloadCodec.Commitment[] memory job6 = new PayloadCodec.Commitment[](3);
        PayloadCodec.Commitment[] memory round2 = new PayloadCodec.Commitment[](3);
        for (uint256 i = 0; i < 3; ++i) {
            job6[i] = commitAs(worker(1 + i), 6, 1);
            round2[i] = commitAs(worker(1 + i), 5, 2);
        }
        bytes32 head6 = hub.getCommitLog(6, 1).head;
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.CommitmentsMismatch.selector, head6, chainFrom(0, entries)));
        hub.publishCommitments(6, 1, entries);
        bytes32 head2 = hub.getCommitLog(5, 2).head;
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.CommitmentsMismatch.selector, head2, chainFrom(0, entries)));
        hub.publishCommitments(5, 2, entries);
        // Each log takes its own.
        vm.expectRevert(abi.encodeWithSelector(WorkerHub.CommitmentsMismatch.selector, head6, chainFrom(0, round2)));
        hub.publishCommitments(6, 1, round2);
        hub.publishCommitments(6, 1, job6);
        hub.publishCommitments(5, 2, round2);
        hub.publishCommitments(5, 1, entries);
    }

    function test_publishCommitments_needsTheCoordinatorPeer() public {
        PayloadCodec.Commitment[] memory entries = assignAndCommit(5, 1, 1, 1);
        hub.setPeer(COORDINATOR, bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.UnknownEmitter.selector, COORDINATOR, bytes32(0)));
        hub.publishCommitments(5, 1, entries);
    }
}

/// Gas of one commitment (a worker's transaction, snapshot).
contract HubCommitGasTest is HubCommits {
    function setUp() public override {
        super.setUp();
        assignTo(5, 1, workers(1, 2));
        commitAs(worker(1), 5, 1);
    }

    /// A commitment that extends a round's log (not its first).
    function test_gas_commitUpdate() public {
        commitAs(worker(2), 5, 1);
    }
}

/// Gas of publishing a round's 32 commitments in one UPDATE_COMMITTED (snapshot).
contract HubPublishGasTest is HubCommits {
    PayloadCodec.Commitment[] internal pending;

    function setUp() public override {
        super.setUp();
        PayloadCodec.Commitment[] memory entries = assignAndCommit(5, 1, 1, 32);
        for (uint256 i = 0; i < 32; ++i) {
            pending.push(entries[i]);
        }
    }

    /// The call alone: the entries are copied out of this test's storage unmetered.
    function test_gas_publishCommitments32() public {
        vm.pauseGasMetering();
        PayloadCodec.Commitment[] memory entries = pending;
        vm.resumeGasMetering();
        hub.publishCommitments(5, 1, entries);
    }
}

/// The coordinator chain's side: UPDATE_COMMITTED batches applied to a lane.
contract MarketBatchedCommitmentsTest is MarketFixture {
    function setUp() public {
        setUpMarket();
    }

    function test_batch_appliedToTheLaneInOrder() public {
        uint64 jobId = postNative(1, 4, 4 ether);
        for (uint256 i = 0; i < 4; ++i) {
            registerWorker(EVM_WORKERS, workerKey(i), MIN_STAKE, payoutOf(i));
        }
        assign(jobId, EVM_WORKERS, 0, 4);
        bytes32[] memory keys = new bytes32[](3);
        (keys[0], keys[1], keys[2]) = (workerKey(2), workerKey(0), workerKey(3));
        bytes memory payload = committedPayload(jobId, 0, keys);
        assertEq(payload.length, 49 + 3 * 136, "three entries");
        vm.recordLogs();
        vm.expectEmit(true, true, false, true);
        emit JobMarket.UpdatesReceived(jobId, 0, EVM_WORKERS, payload);
        market.receiveMessage(signed(EVM_WORKERS, HUB, payload));
        Vm.Log[] memory logs = vm.getRecordedLogs();
        uint256 events = 0;
        for (uint256 i = 0; i < logs.length; ++i) {
            if (logs[i].emitter == address(market) && logs[i].topics[0] == JobMarket.UpdatesReceived.selector) {
                ++events;
            }
        }
        assertEq(events, 1, "one event for the message");
        recordCommits(jobId, 0, EVM_WORKERS, _entries(keys, 0));
        JobMarket.Lane memory lane = market.getLane(jobId, EVM_WORKERS);
        assertEq(lane.committed, 3, "three counted");
        assertEq(lane.assigned, 4, "of four");
        bytes32 chain = CHAIN_START;
        for (uint256 i = 0; i < 3; ++i) {
            chain = keccak256(abi.encode(chain, keys[i], commitmentFor(keys[i], 0)));
        }
        assertEq(lane.commitChain, chain, "chained entry by entry, in the message's order");
        assertEq(lane.commitChain, chainFrom(CHAIN_START, _entries(keys, 0)), "as a hub log chains them");
        assertEq(lane.commitChain, commitChainOf(laneCommits(jobId, 0, EVM_WORKERS)), "as the fixture records");
    }

    function _entries(bytes32[] memory keys, uint32 round) internal pure returns (PayloadCodec.Commitment[] memory e) {
        e = new PayloadCodec.Commitment[](keys.length);
        for (uint256 i = 0; i < keys.length; ++i) {
            e[i] = commitmentOf(keys[i], round);
        }
    }

    function test_batch_beyondTheAssignedTasksIsRefusedWhole() public {
        uint64 jobId = postNative(2, 4, 4 ether);
        for (uint256 i = 0; i < 4; ++i) {
            registerWorker(EVM_WORKERS, workerKey(i), MIN_STAKE, payoutOf(i));
        }
        assign(jobId, EVM_WORKERS, 0, 3);
        bytes memory four = signed(EVM_WORKERS, HUB, committedPayload(jobId, 0, keysOf(0, 4)));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnexpectedCommitment.selector, jobId, 0, EVM_WORKERS, 4));
        market.receiveMessage(four);
        commitBatch(jobId, 0, EVM_WORKERS, keysOf(0, 2));
        bytes memory two = signed(EVM_WORKERS, HUB, committedPayload(jobId, 0, keysOf(2, 2)));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnexpectedCommitment.selector, jobId, 0, EVM_WORKERS, 2));
        market.receiveMessage(two);
        JobMarket.Lane memory lane = market.getLane(jobId, EVM_WORKERS);
        assertEq(lane.committed, 2, "nothing of a refused batch applied");
        assertEq(lane.commitChain, commitChainOf(laneCommits(jobId, 0, EVM_WORKERS)), "chain as before");
        commitBatch(jobId, 0, EVM_WORKERS, keysOf(2, 1)); // the one that fits
        assertEq(market.getLane(jobId, EVM_WORKERS).committed, 3, "full");
        // Another round's batch: the job's current round is 0, and a chain without a lane this
        // round has no room.
        bytes memory later = signed(EVM_WORKERS, HUB, committedPayload(jobId, 1, keysOf(0, 1)));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.WrongRound.selector, jobId, 1, 0));
        market.receiveMessage(later);
        bytes memory solana = signed(SOLANA, SOLANA_PROGRAM, committedPayload(jobId, 0, keysOf(0, 1)));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnexpectedCommitment.selector, jobId, 0, SOLANA, 1));
        market.receiveMessage(solana);
    }

    function test_batches_inSequenceExtendTheChainAndAreProposable() public {
        uint64 jobId = postNative(1, 5, 5 ether);
        for (uint256 i = 0; i < 5; ++i) {
            registerWorker(EVM_WORKERS, workerKey(i), MIN_STAKE, payoutOf(i));
        }
        assign(jobId, EVM_WORKERS, 0, 5);
        bytes32[] memory first = new bytes32[](3);
        (first[0], first[1], first[2]) = (workerKey(4), workerKey(1), workerKey(0));
        bytes32[] memory second = new bytes32[](2);
        (second[0], second[1]) = (workerKey(3), workerKey(2));
        commitBatch(jobId, 0, EVM_WORKERS, first);
        bytes32 afterFirst = market.getLane(jobId, EVM_WORKERS).commitChain;
        assertEq(afterFirst, chainFrom(CHAIN_START, _entries(first, 0)), "first batch");
        commitBatch(jobId, 0, EVM_WORKERS, second);
        JobMarket.Lane memory lane = market.getLane(jobId, EVM_WORKERS);
        assertEq(lane.committed, 5, "all five");
        assertEq(lane.commitChain, chainFrom(afterFirst, _entries(second, 0)), "the second extends the first");
        // A proposal listing the commitments in arrival order across both batches is accepted.
        finalize(jobId, 0, acceptedResults(EVM_WORKERS, 0, 5, 1 ether));
        assertEq(uint8(market.getRound(jobId, 0).phase), uint8(JobMarket.RoundPhase.Proposed), "proposed");
        vm.warp(block.timestamp + WINDOW);
        settle(jobId, 0);
        assertEq(market.claimable(payoutOf(4), address(0)), 1 ether, "paid");
    }

    function test_attack_commitmentsInAnotherOrderThanTheBatchesAreRefused() public {
        uint64 jobId = postNative(1, 3, 3 ether);
        for (uint256 i = 0; i < 3; ++i) {
            registerWorker(EVM_WORKERS, workerKey(i), MIN_STAKE, payoutOf(i));
        }
        assign(jobId, EVM_WORKERS, 0, 3);
        bytes32[] memory keys = new bytes32[](3);
        (keys[0], keys[1], keys[2]) = (workerKey(2), workerKey(0), workerKey(1));
        commitBatch(jobId, 0, EVM_WORKERS, keys);
        (JobMarket.Result[] memory r, JobMarket.Commit[] memory honest) =
            finalizeArgs(jobId, 0, acceptedResults(EVM_WORKERS, 0, 3, 1 ether));
        bytes memory mismatch = abi.encodeWithSelector(ProposalChecker.CommitsMismatch.selector, EVM_WORKERS);
        // Sorted by key instead of as they arrived.
        JobMarket.Commit[] memory sorted = new JobMarket.Commit[](3);
        (sorted[0], sorted[1], sorted[2]) = (honest[1], honest[2], honest[0]);
        expectRefused(jobId, 0, r, sorted, mismatch);
        // A commitment hashed the old way (abi.encode of the fields) does not match either.
        JobMarket.Commit[] memory oldHash = new JobMarket.Commit[](3);
        (oldHash[0], oldHash[1], oldHash[2]) = (honest[0], honest[1], honest[2]);
        oldHash[0] = JobMarket.Commit(
            keys[0],
            keccak256(
                abi.encode(updateOf(keys[0], 0), transcriptOf(keys[0], 0), dataOf(keys[0], 0), NUM_SAMPLES, TRAIN_LOSS)
            )
        );
        expectRefused(jobId, 0, r, oldHash, mismatch);
        // Neither is evidence against the honest proposal: a disproof with them reverts and
        // voids nothing; with the batches' order it finds the proposal valid.
        finalize(jobId, 0, acceptedResults(EVM_WORKERS, 0, 3, 1 ether));
        vm.expectRevert(mismatch);
        checker.disprove(jobId, 0, r, sorted);
        vm.expectRevert(mismatch);
        checker.disprove(jobId, 0, r, oldHash);
        vm.expectRevert(abi.encodeWithSelector(ProposalChecker.ProposalValid.selector, jobId, 0));
        checker.disprove(jobId, 0, r, honest);
        assertEq(uint8(market.getRound(jobId, 0).phase), uint8(JobMarket.RoundPhase.Proposed), "still proposed");
        vm.warp(block.timestamp + WINDOW);
        settle(jobId, 0);
        assertEq(market.claimable(payoutOf(2), address(0)), 1 ether, "paid");
    }
}

/// Gas of a 32-commitment UPDATE_COMMITTED delivered to JobMarket (snapshot).
contract MarketBatchGasTest is MarketFixture {
    bytes internal vaa32;
    bytes internal vaa1;
    uint64 internal jobId;

    function setUp() public {
        setUpMarket();
        jobId = postNative(1, 32, 32 ether);
        for (uint256 i = 0; i < 32; ++i) {
            registerWorker(EVM_WORKERS, workerKey(i), MIN_STAKE, payoutOf(i));
        }
        assign(jobId, EVM_WORKERS, 0, 32);
        vaa32 = signed(EVM_WORKERS, HUB, committedPayload(jobId, 0, keysOf(0, 32)));
        vaa1 = signed(EVM_WORKERS, HUB, committedPayload(jobId, 0, workerKey(0)));
    }

    /// The delivery alone: the VAA is copied out of this test's storage unmetered.
    function test_gas_receiveUpdateCommitted32() public {
        vm.pauseGasMetering();
        bytes memory vaa = vaa32;
        vm.resumeGasMetering();
        market.receiveMessage(vaa);
    }

    /// The same delivery carrying one commitment, for comparison.
    function test_gas_receiveUpdateCommitted1() public {
        vm.pauseGasMetering();
        bytes memory vaa = vaa1;
        vm.resumeGasMetering();
        market.receiveMessage(vaa);
    }
}

/// A WorkerHub on chain 4 and a JobMarket on chain 2, every message between them carried as a
/// VAA signed over what the sending core published.
contract HubToMarketEndToEndTest is MarketFixture {
    MessageCore internal hubCore;
    WorkerHub internal hub;

    function setUp() public {
        setUpMarket();
        hubCore = new MessageCore(EVM_WORKERS, guardianAddresses(4, 0), 1 days, address(this));
        hub = new WorkerHub(
            IMessageCore(address(hubCore)), IMessageCore(address(0)), 202, address(this), COORDINATOR, 1 ether, 7 days
        );
        hub.setPeer(COORDINATOR, toBytes32(address(market)));
        market.setPeer(EVM_WORKERS, toBytes32(address(hub)));
    }

    function vaaOf(uint16 chain, Published memory m) internal view returns (bytes memory) {
        return signVaa(0, 0, firstIndices(3), vaaBody(chain, toBytes32(m.sender), m.sequence, m.payload));
    }

    /// Deliver every message `from` published among the recorded logs to `to`.
    function relay(address from, uint16 chain, address to) internal returns (Published[] memory out) {
        out = publishedBy(vm.getRecordedLogs(), from);
        for (uint256 i = 0; i < out.length; ++i) {
            MessageTarget(to).receiveMessage(vaaOf(chain, out[i]));
        }
    }

    function hubWorker(uint256 i) internal pure returns (address) {
        return address(uint160(uint256(workerKey(i))));
    }

    /// The commitments the hub's `UpdateCommitted` events carry, in order, as a publisher reads them.
    function commitmentsLogged(Vm.Log[] memory logs) internal view returns (PayloadCodec.Commitment[] memory out) {
        bytes32 topic = WorkerHub.UpdateCommitted.selector;
        uint256 n = 0;
        for (uint256 i = 0; i < logs.length; ++i) {
            if (logs[i].emitter == address(hub) && logs[i].topics[0] == topic) ++n;
        }
        out = new PayloadCodec.Commitment[](n);
        n = 0;
        for (uint256 i = 0; i < logs.length; ++i) {
            if (logs[i].emitter != address(hub) || logs[i].topics[0] != topic) continue;
            PayloadCodec.Commitment memory c;
            c.workerKey = logs[i].topics[3];
            (c.updateHash, c.transcriptRoot, c.dataRoot, c.numSamples, c.trainLoss) =
                abi.decode(logs[i].data, (bytes32, bytes32, bytes32, uint32, uint32));
            out[n++] = c;
        }
    }

    function test_endToEnd_hubPublishesAndTheMarketChainsTheSameCommitments() public {
        // Workers 0..3 stake and register on the hub; the market learns of them.
        vm.recordLogs();
        for (uint256 i = 0; i < 4; ++i) {
            vm.deal(hubWorker(i), 2 ether);
            vm.startPrank(hubWorker(i));
            hub.stake{value: 2 ether}();
            hub.register(toBytes32(payoutOf(i)), 0);
            vm.stopPrank();
        }
        relay(address(hubCore), EVM_WORKERS, address(market));
        assertEq(market.getWorker(market.workerIdOf(EVM_WORKERS, workerKey(3))).stake, 2e8, "registered");

        uint64 jobId = postNative(1, 4, 4 ether);
        vm.recordLogs();
        assign(jobId, EVM_WORKERS, 0, 4);
        relay(address(core), COORDINATOR, address(hub));
        assertEq(
            uint8(hub.getTask(jobId, 0, workerKey(2)).state), uint8(WorkerHub.TaskState.Assigned), "task on the hub"
        );

        // They commit in an order of their own; the first three are published, then the last.
        uint256[4] memory order = [uint256(2), 0, 3, 1];
        vm.recordLogs();
        for (uint256 k = 0; k < 4; ++k) {
            bytes32 key = workerKey(order[k]);
            vm.prank(hubWorker(order[k]));
            hub.commitUpdate(jobId, 0, updateOf(key, 0), transcriptOf(key, 0), dataOf(key, 0), NUM_SAMPLES, TRAIN_LOSS);
            if (k == 2) break;
        }
        PayloadCodec.Commitment[] memory firstThree = commitmentsLogged(vm.getRecordedLogs());
        assertEq(firstThree.length, 3, "three logged");
        vm.recordLogs();
        vm.prank(address(0xB0B)); // anyone
        hub.publishCommitments(jobId, 0, firstThree);
        Published[] memory out = relay(address(hubCore), EVM_WORKERS, address(market));
        assertEq(out.length, 1, "one UPDATE_COMMITTED");
        recordCommits(jobId, 0, EVM_WORKERS, firstThree);

        vm.recordLogs();
        vm.prank(hubWorker(1));
        hub.commitUpdate(
            jobId,
            0,
            updateOf(workerKey(1), 0),
            transcriptOf(workerKey(1), 0),
            dataOf(workerKey(1), 0),
            NUM_SAMPLES,
            TRAIN_LOSS
        );
        PayloadCodec.Commitment[] memory last = commitmentsLogged(vm.getRecordedLogs());
        vm.recordLogs();
        hub.publishCommitments(jobId, 0, last);
        relay(address(hubCore), EVM_WORKERS, address(market));
        recordCommits(jobId, 0, EVM_WORKERS, last);

        // Both sides chain the same commitments in the same order, from their own starts.
        PayloadCodec.Commitment[] memory all = new PayloadCodec.Commitment[](4);
        for (uint256 i = 0; i < 3; ++i) {
            all[i] = firstThree[i];
        }
        all[3] = last[0];
        WorkerHub.CommitLog memory log = hub.getCommitLog(jobId, 0);
        JobMarket.Lane memory lane = market.getLane(jobId, EVM_WORKERS);
        assertEq(log.head, chainFrom(bytes32(0), all), "hub log from zero");
        assertEq(log.publishedHead, log.head, "all published");
        assertEq(lane.committed, 4, "all four on the lane");
        assertEq(lane.commitChain, chainFrom(CHAIN_START, all), "lane from CHAIN_START");
        for (uint256 k = 0; k < 4; ++k) {
            assertEq(all[k].workerKey, workerKey(order[k]), "commit order");
            assertEq(hashOf(all[k]), commitmentFor(all[k].workerKey, 0), "the fixture's commitment");
        }

        // The aggregator proposes from those commitments; the settlement goes back to the hub.
        finalize(jobId, 0, acceptedResults(EVM_WORKERS, 0, 4, 1 ether));
        vm.warp(block.timestamp + WINDOW);
        vm.recordLogs();
        settle(jobId, 0);
        relay(address(core), COORDINATOR, address(hub));
        address[] memory workers = new address[](4);
        for (uint256 i = 0; i < 4; ++i) {
            assertEq(uint8(hub.getTask(jobId, 0, workerKey(i)).state), uint8(WorkerHub.TaskState.Settled), "settled");
            workers[i] = hubWorker(i);
        }
        assertEq(hub.releaseSettled(jobId, workers), 4, "the job's last round: anyone frees the locks");
        for (uint256 i = 0; i < 4; ++i) {
            assertEq(hub.getStaker(hubWorker(i)).locked, 0, "lock freed");
        }
        assertEq(market.claimable(payoutOf(2), address(0)), 1 ether, "paid");
    }
}
