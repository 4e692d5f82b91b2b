// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IMessageCore} from "../src/interfaces/IMessageCore.sol";
import {JobMarket} from "../src/JobMarket.sol";
import {ProposalChecker} from "../src/ProposalChecker.sol";
import {MessageReceiver} from "../src/base/MessageReceiver.sol";
import {Owned} from "../src/base/Owned.sol";
import {ReentrancyGuard} from "../src/base/ReentrancyGuard.sol";
import {PayloadCodec} from "../src/libraries/PayloadCodec.sol";
import {TokenTransfer} from "../src/libraries/TokenTransfer.sol";
import {MarketFixture} from "./utils/MarketFixture.sol";
import {MockERC20} from "./utils/MockERC20.sol";
import {Vm} from "./utils/Vm.sol";

contract JobMarketTest is MarketFixture {
    bytes32 internal constant PUBLISHED = keccak256("LogMessagePublished(address,uint64,uint32,bytes,uint8)");

    function setUp() public {
        setUpMarket();
    }

    function publishedPayloads() internal returns (bytes[] memory payloads) {
        Vm.Log[] memory logs = vm.getRecordedLogs();
        uint256 n = 0;
        for (uint256 i = 0; i < logs.length; ++i) {
            if (logs[i].topics[0] == PUBLISHED) ++n;
        }
        payloads = new bytes[](n);
        n = 0;
        for (uint256 i = 0; i < logs.length; ++i) {
            if (logs[i].topics[0] == PUBLISHED) {
                (,, bytes memory payload,) = abi.decode(logs[i].data, (uint64, uint32, bytes, uint8));
                payloads[n++] = payload;
            }
        }
    }

    // ------------------------------------------------------------------ administration

    function test_admin_settersUpdateAndRejectNonOwner() public {
        market.setAggregator(address(1));
        market.setChallenger(address(2));
        market.setChallengeWindow(5);
        market.setMaxBatch(SOLANA, 2);
        assertEq(market.aggregator(), address(1), "aggregator");
        assertEq(market.challenger(), address(2), "challenger");
        assertEq(market.challengeWindow(), 5, "window");
        assertEq(market.maxBatch(SOLANA), 2, "batch");
        vm.startPrank(address(0xBAD));
        bytes memory notOwner = abi.encodeWithSelector(Owned.NotOwner.selector, address(0xBAD));
        vm.expectRevert(notOwner);
        market.setAggregator(address(1));
        vm.expectRevert(notOwner);
        market.setChallenger(address(1));
        vm.expectRevert(notOwner);
        market.setChallengeWindow(1);
        vm.expectRevert(notOwner);
        market.setMaxBatch(SOLANA, 1);
        vm.expectRevert(notOwner);
        market.setPeer(5, HUB);
        vm.stopPrank();
    }

    function test_setMaxBatch_rejectsZeroAndAbove32() public {
        vm.expectRevert(abi.encodeWithSelector(JobMarket.BatchTooLarge.selector, 0, 32));
        market.setMaxBatch(SOLANA, 0);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.BatchTooLarge.selector, 33, 32));
        market.setMaxBatch(SOLANA, 33);
    }

    function test_setPeer_rejectsOwnChainAndZero() public {
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.InvalidPeerChain.selector, COORDINATOR));
        market.setPeer(COORDINATOR, HUB);
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.InvalidPeerChain.selector, 0));
        market.setPeer(0, HUB);
        assertEq(market.chainId(), COORDINATOR, "chain id from core");
        assertEq(address(market.core()), address(core), "core");
    }

    function test_ids_matchSharedVectors() public view {
        string memory json = vm.readFile(string.concat(vm.projectRoot(), "/../tests/vectors/payloads.json"));
        for (uint256 i = 0; i < 3; ++i) {
            string memory at = string.concat(".derivations.task_id[", vm.toString(i), "]");
            bytes32 expected = bytes32(vm.parseJsonBytes(json, string.concat(at, ".task_id")));
            uint64 jobId = uint64(vm.parseJsonUint(json, string.concat(at, ".job_id")));
            uint32 round = uint32(vm.parseJsonUint(json, string.concat(at, ".round")));
            uint16 chain = uint16(vm.parseJsonUint(json, string.concat(at, ".worker_chain")));
            bytes32 key = bytes32(vm.parseJsonBytes(json, string.concat(at, ".worker_key")));
            assertEq(market.taskIdOf(jobId, round, chain, key), expected, "task id");
        }
        for (uint256 i = 0; i < 2; ++i) {
            string memory at = string.concat(".derivations.worker_id[", vm.toString(i), "]");
            bytes32 expected = bytes32(vm.parseJsonBytes(json, string.concat(at, ".worker_id")));
            uint16 chain = uint16(vm.parseJsonUint(json, string.concat(at, ".worker_chain")));
            bytes32 key = bytes32(vm.parseJsonBytes(json, string.concat(at, ".worker_key")));
            assertEq(market.workerIdOf(chain, key), expected, "worker id");
        }
    }

    function testFuzz_ids_areOverThePackedFields(uint64 jobId, uint32 round, uint16 chain, bytes32 key) public view {
        assertEq(market.workerIdOf(chain, key), keccak256(abi.encodePacked(chain, key)), "worker id");
        assertEq(
            market.taskIdOf(jobId, round, chain, key), keccak256(abi.encodePacked(jobId, round, chain, key)), "task"
        );
    }

    // ------------------------------------------------------------------ posting and cancelling

    function test_postJob_nativeEscrowsWholeReward() public {
        vm.expectEmit(true, true, false, true);
        emit JobMarket.JobPosted(1, poster, address(0), 30 ether, 3);
        uint64 jobId = postNative(3, 4, 10 ether);
        JobMarket.Job memory job = market.getJob(jobId);
        assertEq(job.poster, poster, "poster");
        assertEq(job.escrow, 30 ether, "escrow");
        assertEq(uint8(job.status), uint8(JobMarket.JobStatus.Open), "open");
        assertEq(job.modelHash, MODEL, "model");
        assertEq(market.jobWorkerChains(jobId).length, 2, "chains");
        (uint256 deposited, uint256 escrowed,,,) = market.ledgers(address(0));
        assertEq(deposited, 30 ether, "deposited");
        assertEq(escrowed, 30 ether, "escrowed");
        assertEq(address(market).balance, 30 ether, "balance");
        assertEq(market.nextJobId(), 2, "next id");
    }

    function test_postJob_rejectsWrongNativeDeposit() public {
        JobMarket.JobSpec memory s = spec(3, 4, 10 ether);
        vm.prank(poster);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.WrongDeposit.selector, 29 ether, 30 ether));
        market.postJob{value: 29 ether}(s);
    }

    function test_postJob_rejectsInvalidSpecs() public {
        JobMarket.JobSpec memory s = spec(0, 4, 1);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NoRounds.selector));
        market.postJob(s);
        s = spec(1, 0, 1);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NoWorkersPerRound.selector));
        market.postJob(s);
        s = spec(1, 1, 0);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NoRewardPerRound.selector));
        market.postJob(s);
        s = spec(1, 1, 1);
        s.modelHash = bytes32(0);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NoModelHash.selector));
        market.postJob{value: 1}(s);
        s = spec(1, 1, 1);
        s.workerChains = new uint16[](0);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NoWorkerChains.selector));
        market.postJob{value: 1}(s);
        s = spec(1, 1, 1);
        s.workerChains[1] = EVM_WORKERS;
        vm.expectRevert(abi.encodeWithSelector(JobMarket.InvalidWorkerChain.selector, EVM_WORKERS));
        market.postJob{value: 1}(s);
        s.workerChains[1] = COORDINATOR;
        vm.expectRevert(abi.encodeWithSelector(JobMarket.InvalidWorkerChain.selector, COORDINATOR));
        market.postJob{value: 1}(s);
        s.workerChains[1] = 0;
        vm.expectRevert(abi.encodeWithSelector(JobMarket.InvalidWorkerChain.selector, 0));
        market.postJob{value: 1}(s);
    }

    function test_postJob_erc20PullsEscrowAndRejectsFeeTokens() public {
        MockERC20 token = new MockERC20();
        token.mint(poster, 100);
        JobMarket.JobSpec memory s = spec(2, 1, 10);
        s.token = address(token);
        vm.startPrank(poster);
        token.approve(address(market), 100);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.WrongDeposit.selector, 1, 0));
        market.postJob{value: 1}(s);
        uint64 jobId = market.postJob(s);
        vm.stopPrank();
        assertEq(token.balanceOf(address(market)), 20, "pulled");
        assertEq(market.getJob(jobId).token, address(token), "token");
        token.setFeeBps(100);
        token.mint(poster, 100);
        s.rewardPerRound = 50;
        vm.prank(poster);
        token.approve(address(market), 100);
        vm.prank(poster);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.WrongDeposit.selector, 99, 100));
        market.postJob(s);
    }

    function test_postJob_erc20RevertsWithoutAllowance() public {
        MockERC20 token = new MockERC20();
        token.mint(poster, 100);
        JobMarket.JobSpec memory s = spec(1, 1, 10);
        s.token = address(token);
        vm.prank(poster);
        vm.expectRevert(
            abi.encodeWithSelector(TokenTransfer.TransferFailed.selector, address(token), address(market), 10)
        );
        market.postJob(s);
    }

    function test_cancelJob_refundsUnspentBetweenRounds() public {
        uint64 jobId = postNative(3, 4, 10 ether);
        uint256 before = poster.balance;
        vm.expectEmit(true, false, false, true);
        emit JobMarket.JobCancelled(jobId, 30 ether);
        vm.prank(poster);
        market.cancelJob(jobId);
        assertEq(poster.balance - before, 30 ether, "refund");
        assertEq(uint8(market.getJob(jobId).status), uint8(JobMarket.JobStatus.Cancelled), "cancelled");
        (,,,, uint256 refunded) = market.ledgers(address(0));
        assertEq(refunded, 30 ether, "refunded");
        vm.prank(poster);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobNotOpen.selector, jobId));
        market.cancelJob(jobId);
    }

    function test_cancelJob_rejectsOthersAndRoundsInProgress() public {
        uint64 jobId = postNative(3, 4, 10 ether);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NotPoster.selector, address(this)));
        market.cancelJob(jobId);
        registerWorker(EVM_WORKERS, workerKey(0), MIN_STAKE, payoutOf(0));
        assign(jobId, EVM_WORKERS, 0, 1);
        vm.prank(poster);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.RoundInProgress.selector, jobId, 0));
        market.cancelJob(jobId);
    }

    function test_cancelJob_completedJobRefundsLeftoverOnce() public {
        uint64 jobId = postNative(1, 1, 10 ether);
        prepareRound(jobId, 0, EVM_WORKERS, 0, 1);
        finalize(jobId, 0, acceptedResults(EVM_WORKERS, 0, 1, 4 ether));
        vm.warp(block.timestamp + WINDOW);
        settle(jobId, 0);
        assertEq(uint8(market.getJob(jobId).status), uint8(JobMarket.JobStatus.Completed), "completed");
        uint256 before = poster.balance;
        vm.prank(poster);
        market.cancelJob(jobId);
        assertEq(poster.balance - before, 6 ether, "leftover");
        vm.prank(poster);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NothingToRefund.selector, jobId));
        market.cancelJob(jobId);
    }

    // ------------------------------------------------------------------ receiving messages

    function test_receive_workerRegisteredStoresWorker() public {
        bytes32 id = market.workerIdOf(EVM_WORKERS, workerKey(1));
        vm.expectEmit(true, false, false, true);
        emit JobMarket.WorkerRegistered(id, EVM_WORKERS, workerKey(1), 500, payoutOf(1));
        registerWorker(EVM_WORKERS, workerKey(1), 500, payoutOf(1));
        JobMarket.Worker memory w = market.getWorker(id);
        assertTrue(w.registered, "registered");
        assertEq(w.stake, 500, "stake");
        assertEq(w.payout, payoutOf(1), "payout");
        assertEq(w.capabilities, 3, "capabilities");
    }

    function test_receive_rejectsNonEvmPayout() public {
        bytes memory p = PayloadCodec.encode(
            PayloadCodec.WorkerRegistered(
                PayloadCodec.Header(1, COORDINATOR, toBytes32(address(market)), 0),
                workerKey(1),
                1,
                bytes32(type(uint256).max),
                0
            )
        );
        bytes memory vaa = signed(EVM_WORKERS, HUB, p);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.InvalidPayoutAddress.selector, bytes32(type(uint256).max)));
        market.receiveMessage(vaa);
    }

    function test_receive_rejectsZeroPayout() public {
        bytes memory vaa = signed(EVM_WORKERS, HUB, registeredPayload(workerKey(1), 1, address(0)));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.InvalidPayoutAddress.selector, bytes32(0)));
        market.receiveMessage(vaa);
    }

    function test_receive_rejectsPayloadMeantForWorkerChains() public {
        PayloadCodec.TaskAssigned memory m;
        m.header = PayloadCodec.Header(2, COORDINATOR, toBytes32(address(market)), 1);
        m.assignments = assignments(0, 1);
        bytes memory vaa = signed(EVM_WORKERS, HUB, PayloadCodec.encode(m));
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.UnexpectedPayload.selector, 2));
        market.receiveMessage(vaa);
    }

    function test_consumed_isOneBitPerEmitterAndSequence() public {
        // Sequences 255 and 256 sit in two words of the bitmap; each is consumed on its own.
        nextSequence = 255;
        bytes memory first = signed(EVM_WORKERS, HUB, registeredPayload(workerKey(1), 500, payoutOf(1)));
        bytes memory second = signed(EVM_WORKERS, HUB, registeredPayload(workerKey(2), 500, payoutOf(2)));
        market.receiveMessage(second);
        assertTrue(consumedBy(market, second), "256 consumed");
        assertFalse(consumedBy(market, first), "255 not yet");
        market.receiveMessage(first);
        assertTrue(consumedBy(market, first), "255 consumed");
        // The same sequence from another chain's peer is another message.
        bytes memory solana = signVaa(
            0,
            0,
            firstIndices(3),
            vaaBody(SOLANA, SOLANA_PROGRAM, 255, registeredPayload(workerKey(3), 500, payoutOf(3)))
        );
        assertFalse(consumedBy(market, solana), "another emitter's 255");
        market.receiveMessage(solana);
        assertTrue(consumedBy(market, solana), "consumed in its own bitmap");
        // Another body under a consumed emitter and sequence is the same message: refused.
        bytes memory twin = signVaa(
            0, 0, firstIndices(3), vaaBody(EVM_WORKERS, HUB, 255, registeredPayload(workerKey(4), 500, payoutOf(4)))
        );
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.AlreadyConsumed.selector, core.parseVM(twin).hash));
        market.receiveMessage(twin);
    }

    function test_attack_replayedVaaIsAlreadyConsumed() public {
        bytes memory vaa = signed(EVM_WORKERS, HUB, registeredPayload(workerKey(1), 500, payoutOf(1)));
        market.receiveMessage(vaa);
        bytes32 digest = core.parseVM(vaa).hash;
        assertTrue(consumedBy(market, vaa), "consumed");
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.AlreadyConsumed.selector, digest));
        market.receiveMessage(vaa);
    }

    function test_attack_forgedSignatureRejected() public {
        bytes memory body = vaaBody(EVM_WORKERS, HUB, 1, registeredPayload(workerKey(1), 500, payoutOf(1)));
        // Signed by keys 100.. which are not guardians, presented as guardian set 0.
        bytes memory vaa = signVaa(0, 100, firstIndices(3), body);
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.InvalidVaa.selector, "VM signature invalid"));
        market.receiveMessage(vaa);
    }

    function test_attack_duplicateSignerRejected() public {
        uint8[] memory indices = firstIndices(3);
        indices[2] = 1;
        bytes memory vaa =
            signVaa(0, 0, indices, vaaBody(EVM_WORKERS, HUB, 1, registeredPayload(workerKey(1), 5, payoutOf(1))));
        vm.expectRevert(
            abi.encodeWithSelector(MessageReceiver.InvalidVaa.selector, "signature indices must be ascending")
        );
        market.receiveMessage(vaa);
    }

    function test_attack_expiredGuardianSetRejected() public {
        bytes memory vaa = signed(EVM_WORKERS, HUB, registeredPayload(workerKey(1), 500, payoutOf(1)));
        rotateGuardians(4, 200);
        vm.warp(block.timestamp + 1 days + 1);
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.InvalidVaa.selector, "guardian set has expired"));
        market.receiveMessage(vaa);
    }

    function test_attack_wrongEmitterRejected() public {
        bytes32 impostor = bytes32(uint256(0xEE));
        bytes memory vaa = signed(EVM_WORKERS, impostor, registeredPayload(workerKey(1), 500, payoutOf(1)));
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.UnknownEmitter.selector, EVM_WORKERS, impostor));
        market.receiveMessage(vaa);
        vaa = signed(30, HUB, registeredPayload(workerKey(1), 500, payoutOf(1)));
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.UnknownEmitter.selector, 30, HUB));
        market.receiveMessage(vaa);
    }

    function test_attack_wrongTargetChainOrAddressRejected() public {
        bytes memory p = registeredPayload(workerKey(1), 500, payoutOf(1));
        p[3] = 0x05; // target chain 5
        bytes memory vaa = signed(EVM_WORKERS, HUB, p);
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.WrongTargetChain.selector, 5));
        market.receiveMessage(vaa);
        p = registeredPayload(workerKey(1), 500, payoutOf(1));
        p[35] = bytes1(uint8(p[35]) ^ 1);
        bytes32 wrong = toBytes32(address(market)) ^ bytes32(uint256(1));
        vaa = signed(EVM_WORKERS, HUB, p);
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.WrongTargetAddress.selector, wrong));
        market.receiveMessage(vaa);
    }

    // ------------------------------------------------------------------ assigning

    function test_assignTasks_publishesBatchedTaskAssigned() public {
        uint64 jobId = postNative(2, 8, 10 ether);
        for (uint256 i = 0; i < 3; ++i) {
            registerWorker(EVM_WORKERS, workerKey(i), MIN_STAKE, payoutOf(i));
        }
        uint64 deadline = uint64(block.timestamp + 1 days);
        vm.recordLogs();
        vm.prank(aggregator, aggregator);
        uint64 sequence = market.assignTasks(jobId, EVM_WORKERS, deadline, assignments(0, 3));
        assertEq(sequence, 0, "first message of the market");
        bytes[] memory published = publishedPayloads();
        assertEq(published.length, 1, "one message");
        PayloadCodec.TaskAssigned memory expected;
        expected.header = PayloadCodec.Header(2, EVM_WORKERS, HUB, jobId);
        expected.round = 0;
        expected.deadline = deadline;
        expected.modelHash = MODEL;
        expected.configHash = CONFIG;
        expected.minStake = MIN_STAKE;
        expected.stakeLock = REJECTED_SLASH;
        expected.releaseAt = deadline + RELEASE_AFTER;
        expected.assignments = assignments(0, 3);
        assertEq(published[0], PayloadCodec.encode(expected), "payload bytes");
        // No record per task: the lane counts the assignments and chains their keys.
        JobMarket.Lane memory lane = market.getLane(jobId, EVM_WORKERS);
        assertEq(lane.round, 0, "lane round");
        assertEq(lane.assigned, 3, "lane count");
        assertEq(lane.committed, 0, "none committed");
        assertEq(lane.lastKey, workerKey(2), "last key");
        assertEq(lane.assignedChain, assignedChainOf(0, 3), "keys chained in order");
        assertEq(lane.commitChain, CHAIN_START, "no commitments chained");
        assertEq(market.getLane(jobId, SOLANA).assigned, 0, "the other lane untouched");
        JobMarket.Round memory r = market.getRound(jobId, 0);
        assertEq(r.assigned, 3, "count");
        assertEq(uint8(r.phase), uint8(JobMarket.RoundPhase.Collecting), "collecting");
        assertEq(r.openedBlock, block.number, "opened");
    }

    function test_assignTasks_revertPaths() public {
        uint64 jobId = postNative(1, 5, 10 ether);
        for (uint256 i = 0; i < 6; ++i) {
            registerWorker(SOLANA, workerKey(i), MIN_STAKE, payoutOf(i));
        }
        registerWorker(SOLANA, workerKey(9), MIN_STAKE - 1, payoutOf(9));
        uint64 deadline = uint64(block.timestamp + 1 days);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NotAggregator.selector, address(this)));
        market.assignTasks(jobId, SOLANA, deadline, assignments(0, 1));
        vm.startPrank(aggregator, aggregator);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobNotOpen.selector, 99));
        market.assignTasks(99, SOLANA, deadline, assignments(0, 1));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.ChainNotAllowed.selector, jobId, 23));
        market.assignTasks(jobId, 23, deadline, assignments(0, 1));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.BatchTooLarge.selector, 5, 4));
        market.assignTasks(jobId, SOLANA, deadline, assignments(0, 5));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.BatchTooLarge.selector, 0, 4));
        market.assignTasks(jobId, SOLANA, deadline, assignments(0, 0));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.DeadlinePassed.selector, uint64(block.timestamp)));
        market.assignTasks(jobId, SOLANA, uint64(block.timestamp), assignments(0, 1));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnknownWorker.selector, SOLANA, workerKey(7)));
        market.assignTasks(jobId, SOLANA, deadline, assignments(7, 1));
        bytes32 lowId = market.workerIdOf(SOLANA, workerKey(9));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.InsufficientStake.selector, lowId, MIN_STAKE - 1, MIN_STAKE));
        market.assignTasks(jobId, SOLANA, deadline, assignments(9, 1));
        PayloadCodec.Assignment[] memory twice = assignments(0, 2);
        twice[1] = twice[0];
        vm.expectRevert(abi.encodeWithSelector(JobMarket.AssignmentOutOfOrder.selector, workerKey(0), workerKey(0)));
        market.assignTasks(jobId, SOLANA, deadline, twice);
        market.assignTasks(jobId, SOLANA, deadline, assignments(0, 4));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.TooManyWorkers.selector, 6, 5));
        market.assignTasks(jobId, SOLANA, deadline, assignments(4, 2));
        vm.stopPrank();
    }

    function test_assignTasks_requiresPeerAndExactFee() public {
        JobMarket.JobSpec memory s = spec(1, 5, 1 ether);
        s.workerChains[1] = 30; // allowed, but no peer registered
        vm.prank(poster);
        uint64 jobId = market.postJob{value: 1 ether}(s);
        registerWorker(EVM_WORKERS, workerKey(0), MIN_STAKE, payoutOf(0));
        uint64 deadline = uint64(block.timestamp + 1 days);
        vm.startPrank(aggregator, aggregator);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnknownPeer.selector, 30));
        market.assignTasks(jobId, 30, deadline, assignments(0, 1));
        vm.stopPrank();
        setCoreFee(3);
        vm.deal(aggregator, 10);
        vm.startPrank(aggregator, aggregator);
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.WrongMessageFee.selector, 0, 3));
        market.assignTasks(jobId, EVM_WORKERS, deadline, assignments(0, 1));
        market.assignTasks{value: 3}(jobId, EVM_WORKERS, deadline, assignments(0, 1));
        vm.stopPrank();
        assertEq(address(core).balance, 3, "fee reached the core");
    }

    // ------------------------------------------------------------------ commitments

    function test_receive_updateCommittedRecordsCommitment() public {
        uint64 jobId = postNative(1, 2, 1 ether);
        registerWorker(EVM_WORKERS, workerKey(0), MIN_STAKE, payoutOf(0));
        assign(jobId, EVM_WORKERS, 0, 1);
        bytes32 update = keccak256(abi.encode("update", workerKey(0), uint32(0)));
        bytes32 transcript = keccak256(abi.encode("transcript", workerKey(0), uint32(0)));
        bytes32 data = keccak256(abi.encode("data", workerKey(0), uint32(0)));
        vm.expectEmit(true, true, false, true);
        emit JobMarket.UpdatesReceived(jobId, 0, EVM_WORKERS, committedPayload(jobId, 0, workerKey(0)));
        commit(jobId, 0, EVM_WORKERS, workerKey(0));
        // No record per task: the lane counts the commitment and chains the hash of its packed
        // fields, which are in the event's payload.
        bytes32 commitment = keccak256(abi.encodePacked(update, transcript, data, uint32(1000), uint32(250_000)));
        assertEq(commitment, commitmentFor(workerKey(0), 0), "as the fixture records it");
        JobMarket.Lane memory lane = market.getLane(jobId, EVM_WORKERS);
        assertEq(lane.committed, 1, "counted");
        assertEq(lane.assigned, 1, "assigned");
        assertEq(lane.commitChain, keccak256(abi.encode(CHAIN_START, workerKey(0), commitment)), "chained");
    }

    function test_receive_updateCommittedRevertPaths() public {
        uint64 jobId = postNative(2, 2, 1 ether);
        registerWorker(EVM_WORKERS, workerKey(0), MIN_STAKE, payoutOf(0));
        bytes memory early = signed(EVM_WORKERS, HUB, committedPayload(jobId, 0, workerKey(0)));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.RoundNotCollecting.selector, jobId, 0));
        market.receiveMessage(early);
        assign(jobId, EVM_WORKERS, 0, 1);
        bytes memory wrongRound = signed(EVM_WORKERS, HUB, committedPayload(jobId, 1, workerKey(0)));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.WrongRound.selector, jobId, 1, 0));
        market.receiveMessage(wrongRound);
        // A chain without a lane this round: no task of the job was assigned there.
        bytes memory elsewhere = signed(SOLANA, SOLANA_PROGRAM, committedPayload(jobId, 0, workerKey(0)));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnexpectedCommitment.selector, jobId, 0, SOLANA, 1));
        market.receiveMessage(elsewhere);
        commit(jobId, 0, EVM_WORKERS, workerKey(0));
        // The lane holds as many commitments as tasks were assigned: a second one, the same
        // worker's or a stranger's, is refused.
        bytes memory again = signed(EVM_WORKERS, HUB, committedPayload(jobId, 0, workerKey(0)));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnexpectedCommitment.selector, jobId, 0, EVM_WORKERS, 1));
        market.receiveMessage(again);
        bytes memory stranger = signed(EVM_WORKERS, HUB, committedPayload(jobId, 0, workerKey(5)));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnexpectedCommitment.selector, jobId, 0, EVM_WORKERS, 1));
        market.receiveMessage(stranger);
    }

    // ------------------------------------------------------------------ finalizing and settling

    function test_finalizeRound_proposesAndOpensWindow() public {
        uint64 jobId = postNative(2, 3, 9 ether);
        prepareRound(jobId, 0, EVM_WORKERS, 0, 3);
        bytes32 newModel = keccak256(abi.encode("model", uint32(1)));
        vm.expectEmit(true, true, false, true);
        emit JobMarket.RoundFinalized(jobId, 0, newModel, 9 ether, uint64(block.timestamp + WINDOW));
        finalize(jobId, 0, acceptedResults(EVM_WORKERS, 0, 3, 3 ether));
        JobMarket.Round memory r = market.getRound(jobId, 0);
        assertEq(uint8(r.phase), uint8(JobMarket.RoundPhase.Proposed), "proposed");
        assertEq(r.proposedTotal, 9 ether, "total");
        assertEq(r.proposedBlock, block.number, "where the results are");
        bytes32[] memory leaves = new bytes32[](3);
        JobMarket.Result[] memory sorted = proposed(jobId, 0);
        for (uint256 i = 0; i < 3; ++i) {
            leaves[i] = leafOf(jobId, 0, sorted[i]);
        }
        bytes32 root = keccak256(abi.encodePacked(keccak256(abi.encodePacked(leaves[0], leaves[1])), leaves[2]));
        assertEq(r.resultsRoot, root, "only the results' root is stored");
        assertEq(market.claimable(payoutOf(0), address(0)), 0, "nothing paid yet");
    }

    function test_attack_doubleFinalizeRejected() public {
        uint64 jobId = postNative(2, 1, 1 ether);
        prepareRound(jobId, 0, EVM_WORKERS, 0, 1);
        finalize(jobId, 0, acceptedResults(EVM_WORKERS, 0, 1, 1 ether));
        (JobMarket.Result[] memory r,) = finalizeArgs(jobId, 0, acceptedResults(EVM_WORKERS, 0, 1, 1 ether));
        bytes32 root = resultsRootOf(jobId, 0, r);
        vm.prank(aggregator, aggregator);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.RoundAlreadyFinalized.selector, jobId, 0));
        market.finalizeRound(jobId, 0, MODEL, 1 ether, root, r);
        // The round cannot take more assignments or commitments once proposed.
        registerWorker(EVM_WORKERS, workerKey(1), MIN_STAKE, payoutOf(1));
        vm.prank(aggregator, aggregator);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.RoundAlreadyFinalized.selector, jobId, 0));
        market.assignTasks(jobId, EVM_WORKERS, uint64(block.timestamp + 1), assignments(1, 1));
    }

    function test_finalizeRound_revertPaths() public {
        uint64 jobId = postNative(2, 3, 1 ether);
        JobMarket.Result[] memory none = new JobMarket.Result[](0);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NotAggregator.selector, address(this)));
        market.finalizeRound(jobId, 0, MODEL, 0, bytes32(0), none);
        vm.startPrank(aggregator, aggregator);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobNotOpen.selector, 42));
        market.finalizeRound(42, 0, MODEL, 0, bytes32(0), none);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.WrongRound.selector, jobId, 1, 0));
        market.finalizeRound(jobId, 1, MODEL, 0, bytes32(0), none);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.RoundNotCollecting.selector, jobId, 0));
        market.finalizeRound(jobId, 0, MODEL, 0, bytes32(0), none);
        vm.stopPrank();
        prepareRound(jobId, 0, EVM_WORKERS, 0, 2);
        registerWorker(EVM_WORKERS, workerKey(2), MIN_STAKE, payoutOf(2));
        assign(jobId, EVM_WORKERS, 2, 1); // assigned, never commits
        (JobMarket.Result[] memory r,) = finalizeArgs(jobId, 0, acceptedResults(EVM_WORKERS, 0, 2, 1));
        bytes32 root = resultsRootOf(jobId, 0, r);
        vm.startPrank(aggregator, aggregator);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.ResultCountMismatch.selector, 2, 3));
        market.finalizeRound(jobId, 0, MODEL, 2, root, r);
        // The stated total within the round's budget.
        (r,) = finalizeArgs(jobId, 0, acceptedResults(EVM_WORKERS, 0, 3, 0.5 ether));
        root = resultsRootOf(jobId, 0, r);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.RewardExceedsBudget.selector, 1.5 ether, 1 ether));
        market.finalizeRound(jobId, 0, MODEL, 1.5 ether, root, r);
        vm.stopPrank();
        // Nothing else is checked here: results that break the rules (worker 2 accepted without a
        // commitment) with a total and root that are not theirs are proposed, and disproved
        // (test_checkProposal_revertPaths has the rules, ProposalDisproof.t.sol the disproofs).
        finalizeUnchecked(jobId, 0, r, 1 ether, keccak256("not the root"));
        assertEq(uint8(market.getRound(jobId, 0).phase), uint8(JobMarket.RoundPhase.Proposed), "proposed");
        assertEq(market.getRound(jobId, 0).resultsRoot, keccak256("not the root"), "the root as given");
        expectVoided(
            jobId,
            0,
            abi.encodeWithSelector(
                ProposalChecker.AcceptedWithoutCommitment.selector, taskOf(jobId, 0, EVM_WORKERS, workerKey(2))
            )
        );
    }

    function test_checkProposal_revertPaths() public {
        uint64 jobId = postNative(2, 3, 1 ether);
        prepareRound(jobId, 0, EVM_WORKERS, 0, 2);
        registerWorker(EVM_WORKERS, workerKey(2), MIN_STAKE, payoutOf(2));
        assign(jobId, EVM_WORKERS, 2, 1); // assigned, never commits
        (JobMarket.Result[] memory r, JobMarket.Commit[] memory c) =
            finalizeArgs(jobId, 0, acceptedResults(EVM_WORKERS, 0, 2, 1));
        expectRefused(jobId, 0, r, c, abi.encodeWithSelector(ProposalChecker.ResultCountMismatch.selector, 2, 3));
        (r, c) = finalizeArgs(jobId, 0, acceptedResults(EVM_WORKERS, 0, 3, 0));
        expectRefused(jobId, 1, r, c, abi.encodeWithSelector(ProposalChecker.WrongRound.selector, jobId, 1, 0));

        // The results are the lane's assignments, each once, in order (more in
        // test_checkProposal_resultsMustBeTheAssignedSetInLaneOrder).
        bytes memory mismatch = abi.encodeWithSelector(ProposalChecker.AssignmentMismatch.selector, EVM_WORKERS);
        r[2] = JobMarket.Result(workerKey(8), EVM_WORKERS, PayloadCodec.OUTCOME_DROPPED, 0, 0, bytes32(0));
        expectRefused(jobId, 0, r, c, mismatch);
        r[2].workerKey = workerKey(0); // a task named twice
        expectRefused(jobId, 0, r, c, mismatch);

        // The checks below edit worker 2's result, the lane's last (keys in assignment order).
        (r, c) = finalizeArgs(jobId, 0, acceptedResults(EVM_WORKERS, 0, 3, 0));
        assertEq(r[2].workerKey, workerKey(2), "lane order");
        assertEq(c.length, 2, "worker 2 did not commit");
        bytes32 task2 = market.taskIdOf(jobId, 0, EVM_WORKERS, workerKey(2));
        expectRefused(jobId, 0, r, c, abi.encodeWithSelector(ProposalChecker.AcceptedWithoutCommitment.selector, task2));

        r[2].outcome = PayloadCodec.OUTCOME_DROPPED;
        r[2].reward = 1;
        expectRefused(
            jobId, 0, r, c, abi.encodeWithSelector(ProposalChecker.RewardWithoutAcceptance.selector, task2, 1)
        );

        r[2].reward = 0;
        r[2].fault = 1;
        r[2].evidence = EVIDENCE;
        expectRefused(jobId, 0, r, c, abi.encodeWithSelector(ProposalChecker.InvalidFault.selector, task2, 1, 1));

        r[2].fault = 0; // evidence without a slash
        expectRefused(jobId, 0, r, c, abi.encodeWithSelector(ProposalChecker.InvalidEvidence.selector, task2, 1));

        r[2].fault = 1;
        r[2].outcome = 3;
        expectRefused(jobId, 0, r, c, abi.encodeWithSelector(ProposalChecker.InvalidOutcome.selector, task2, 3));

        r[2].outcome = PayloadCodec.OUTCOME_SLASHED;
        r[2].fault = 0;
        expectRefused(jobId, 0, r, c, abi.encodeWithSelector(ProposalChecker.InvalidFault.selector, task2, 2, 0));

        r[2].fault = 3;
        expectRefused(jobId, 0, r, c, abi.encodeWithSelector(ProposalChecker.InvalidFault.selector, task2, 2, 3));

        r[2].fault = 2;
        r[2].evidence = bytes32(0);
        expectRefused(jobId, 0, r, c, abi.encodeWithSelector(ProposalChecker.InvalidEvidence.selector, task2, 2));

        r[2].evidence = EVIDENCE;
        r[0].reward = 0.6 ether;
        r[1].reward = 0.6 ether;
        expectRefused(
            jobId, 0, r, c, abi.encodeWithSelector(ProposalChecker.RewardExceedsBudget.selector, 1.2 ether, 1 ether)
        );

        // The stated total and root are the results' own.
        r[1].reward = 0.4 ether;
        bytes32 root = resultsRootOf(jobId, 0, r);
        vm.expectRevert(abi.encodeWithSelector(ProposalChecker.TotalMismatch.selector, 0.9 ether, 1 ether));
        checker.checkProposal(jobId, 0, 0.9 ether, root, r, c);
        vm.expectRevert(abi.encodeWithSelector(ProposalChecker.ResultsRootMismatch.selector, bytes32(uint256(1))));
        checker.checkProposal(jobId, 0, 1 ether, bytes32(uint256(1)), r, c);
        checker.checkProposal(jobId, 0, 1 ether, root, r, c);
        vm.prank(aggregator, aggregator);
        market.finalizeRound(jobId, 0, MODEL, 1 ether, root, r);
        assertEq(uint8(market.getRound(jobId, 0).phase), uint8(JobMarket.RoundPhase.Proposed), "proposed");
    }

    // ------------------------------------------------------------------ lanes

    function test_assignTasks_keysStrictlyIncreaseAcrossTheRoundsBatches() public {
        uint64 jobId = postNative(2, 8, 1 ether);
        for (uint256 i = 0; i < 5; ++i) {
            registerWorker(SOLANA, workerKey(i), MIN_STAKE, payoutOf(i));
            registerWorker(EVM_WORKERS, workerKey(i), MIN_STAKE, payoutOf(i));
        }
        uint64 deadline = uint64(block.timestamp + 1 days);
        PayloadCodec.Assignment[] memory one = new PayloadCodec.Assignment[](1);
        vm.startPrank(aggregator, aggregator);
        // Within a batch: keys in increasing order.
        PayloadCodec.Assignment[] memory reversed = assignments(0, 2);
        (reversed[0], reversed[1]) = (reversed[1], reversed[0]);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.AssignmentOutOfOrder.selector, workerKey(0), workerKey(1)));
        market.assignTasks(jobId, SOLANA, deadline, reversed);
        // Key zero is never above a fresh lane's last key.
        one[0] = PayloadCodec.Assignment(bytes32(0), 0);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.AssignmentOutOfOrder.selector, bytes32(0), bytes32(0)));
        market.assignTasks(jobId, SOLANA, deadline, one);

        PayloadCodec.Assignment[] memory first = assignments(0, 3);
        first[1] = first[2]; // workers 0 and 2
        PayloadCodec.Assignment[] memory firstTwo = new PayloadCodec.Assignment[](2);
        (firstTwo[0], firstTwo[1]) = (first[0], first[1]);
        market.assignTasks(jobId, SOLANA, deadline, firstTwo);
        // (Read back, not `block.number`: via-IR may read that after the roll.)
        uint64 opened = market.getRound(jobId, 0).openedBlock;
        assertEq(opened, block.number, "opened at the first assignment");
        vm.roll(block.number + 5);
        // Across batches of the round: a key below the lane's last, or the last again, is refused.
        one[0] = PayloadCodec.Assignment(workerKey(1), 0);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.AssignmentOutOfOrder.selector, workerKey(1), workerKey(2)));
        market.assignTasks(jobId, SOLANA, deadline, one);
        one[0] = PayloadCodec.Assignment(workerKey(2), 0);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.AssignmentOutOfOrder.selector, workerKey(2), workerKey(2)));
        market.assignTasks(jobId, SOLANA, deadline, one);
        // A later batch whose first key is fine but whose second repeats it.
        PayloadCodec.Assignment[] memory repeat = assignments(3, 2);
        repeat[1] = repeat[0];
        vm.expectRevert(abi.encodeWithSelector(JobMarket.AssignmentOutOfOrder.selector, workerKey(3), workerKey(3)));
        market.assignTasks(jobId, SOLANA, deadline, repeat);
        one[0] = PayloadCodec.Assignment(workerKey(3), 0);
        market.assignTasks(jobId, SOLANA, deadline, one);
        // Each chain has its own lane: the EVM worker chain starts from the lowest key.
        market.assignTasks(jobId, EVM_WORKERS, deadline, assignments(0, 2));
        vm.stopPrank();

        JobMarket.Lane memory lane = market.getLane(jobId, SOLANA);
        assertEq(lane.assigned, 3, "three on solana");
        assertEq(lane.lastKey, workerKey(3), "last key");
        bytes32 chain = keccak256(abi.encode(CHAIN_START, workerKey(0)));
        chain = keccak256(abi.encode(chain, workerKey(2)));
        chain = keccak256(abi.encode(chain, workerKey(3)));
        assertEq(lane.assignedChain, chain, "keys 0, 2, 3 across two batches");
        lane = market.getLane(jobId, EVM_WORKERS);
        assertEq(lane.assigned, 2, "two on the evm chain");
        assertEq(lane.assignedChain, assignedChainOf(0, 2), "its own chain");
        JobMarket.Round memory r = market.getRound(jobId, 0);
        assertEq(r.assigned, 5, "round count");
        assertEq(r.openedBlock, opened, "not moved by later assignments");
    }

    function test_updateCommitted_beyondTheLaneOrInAnotherRoundsLaneIsUnexpected() public {
        uint64 jobId = postNative(2, 2, 1 ether);
        registerWorker(EVM_WORKERS, workerKey(0), MIN_STAKE, payoutOf(0));
        registerWorker(EVM_WORKERS, workerKey(1), MIN_STAKE, payoutOf(1));
        registerWorker(SOLANA, workerKey(10), MIN_STAKE, payoutOf(10));
        assign(jobId, EVM_WORKERS, 0, 1);
        // A commitment by a worker that was not assigned is taken (the worker chain vouches for
        // it) but counts against the lane; it cannot be used at finalize.
        vm.expectEmit(true, true, false, true);
        emit JobMarket.UpdatesReceived(jobId, 0, EVM_WORKERS, committedPayload(jobId, 0, workerKey(1)));
        commit(jobId, 0, EVM_WORKERS, workerKey(1));
        assertEq(market.getLane(jobId, EVM_WORKERS).committed, 1, "counted");
        // The lane is full: one commitment per assigned task.
        bytes memory beyond = signed(EVM_WORKERS, HUB, committedPayload(jobId, 0, workerKey(0)));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnexpectedCommitment.selector, jobId, 0, EVM_WORKERS, 1));
        market.receiveMessage(beyond);
        (JobMarket.Result[] memory r, JobMarket.Commit[] memory c) =
            finalizeArgs(jobId, 0, acceptedResults(EVM_WORKERS, 0, 1, 1 ether));
        assertEq(c.length, 1, "the stranger's commitment is the lane's");
        assertEq(c[0].workerKey, workerKey(1), "the stranger's");
        // Worker 0 has none: accepting it is refused, and voided when proposed unchecked.
        bytes32 task0 = taskOf(jobId, 0, EVM_WORKERS, workerKey(0));
        expectRefusedAndVoided(
            jobId, 0, r, abi.encodeWithSelector(ProposalChecker.AcceptedWithoutCommitment.selector, task0)
        );
        r[0].outcome = PayloadCodec.OUTCOME_DROPPED;
        r[0].reward = 0;
        finalize(jobId, 0, r);
        vm.warp(block.timestamp + WINDOW);
        settle(jobId, 0);

        // Round 1 assigns only on Solana: the EVM lane is still round 0's.
        assign(jobId, SOLANA, 10, 1);
        bytes memory staleLane = signed(EVM_WORKERS, HUB, committedPayload(jobId, 1, workerKey(0)));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnexpectedCommitment.selector, jobId, 1, EVM_WORKERS, 1));
        market.receiveMessage(staleLane);
        bytes memory oldRound = signed(SOLANA, SOLANA_PROGRAM, committedPayload(jobId, 0, workerKey(10)));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.WrongRound.selector, jobId, 0, 1));
        market.receiveMessage(oldRound);
        commit(jobId, 1, SOLANA, workerKey(10));
        JobMarket.Lane memory lane = market.getLane(jobId, EVM_WORKERS);
        assertEq(lane.round, 0, "untouched by round 1");
        finalize(jobId, 1, acceptedResults(SOLANA, 10, 1, 1 ether));
        vm.warp(block.timestamp + WINDOW);
        settle(jobId, 1);
        assertEq(market.claimable(payoutOf(10), address(0)), 1 ether, "paid");
    }

    /// A job of `rounds` rounds with workers 0 and 1 on the EVM worker chain and 10 and 11 on
    /// Solana assigned in round 0; the EVM workers commit in the order 1, 0.
    function fourWorkerRound(uint32 rounds) internal returns (uint64 jobId) {
        jobId = postNative(rounds, 4, 4 ether);
        for (uint256 i = 0; i < 2; ++i) {
            registerWorker(EVM_WORKERS, workerKey(i), MIN_STAKE, payoutOf(i));
            registerWorker(SOLANA, workerKey(10 + i), MIN_STAKE, payoutOf(10 + i));
        }
        assign(jobId, SOLANA, 10, 2);
        assign(jobId, EVM_WORKERS, 0, 2);
        commit(jobId, 0, SOLANA, workerKey(10));
        commit(jobId, 0, EVM_WORKERS, workerKey(1));
        commit(jobId, 0, SOLANA, workerKey(11));
        commit(jobId, 0, EVM_WORKERS, workerKey(0));
    }

    function fourResults() internal pure returns (JobMarket.Result[] memory r) {
        r = new JobMarket.Result[](4);
        JobMarket.Result[] memory evm = acceptedResults(EVM_WORKERS, 0, 2, 1 ether);
        JobMarket.Result[] memory sol = acceptedResults(SOLANA, 10, 2, 1 ether);
        (r[0], r[1], r[2], r[3]) = (sol[1], evm[1], sol[0], evm[0]);
    }

    function test_checkProposal_resultsMustBeTheAssignedSetInLaneOrder() public {
        uint64 jobId = fourWorkerRound(1);
        (JobMarket.Result[] memory honest,) = finalizeArgs(jobId, 0, fourResults());
        // The job's chain order (EVM worker chain, then Solana), keys increasing in each lane,
        // whatever order the lanes were assigned and committed in.
        assertEq(honest[0].workerKey, workerKey(0), "evm 0");
        assertEq(honest[1].workerKey, workerKey(1), "evm 1");
        assertEq(honest[2].workerKey, workerKey(10), "solana 10");
        assertEq(honest[3].workerKey, workerKey(11), "solana 11");
        bytes memory evmMismatch = abi.encodeWithSelector(ProposalChecker.AssignmentMismatch.selector, EVM_WORKERS);
        bytes memory solanaMismatch = abi.encodeWithSelector(ProposalChecker.AssignmentMismatch.selector, SOLANA);
        // Each forged set is refused by the check and, proposed unchecked, voided by a disproof.

        // A worker that was not assigned in place of one that was (a registered one, too).
        registerWorker(EVM_WORKERS, workerKey(5), MIN_STAKE, payoutOf(5));
        JobMarket.Result[] memory r = copyOf(honest);
        r[1] = JobMarket.Result(workerKey(5), EVM_WORKERS, PayloadCodec.OUTCOME_DROPPED, 0, 0, bytes32(0));
        expectRefusedAndVoided(jobId, 0, r, evmMismatch);
        // The last lane's set differs: the other lanes' checks passed first.
        r = copyOf(honest);
        r[3].workerKey = workerKey(12);
        r[3].outcome = PayloadCodec.OUTCOME_DROPPED;
        r[3].reward = 0;
        expectRefusedAndVoided(jobId, 0, r, solanaMismatch);

        // The right set, but a lane's results swapped.
        r = copyOf(honest);
        (r[0], r[1]) = (r[1], r[0]);
        expectRefusedAndVoided(jobId, 0, r, evmMismatch);
        r = copyOf(honest);
        (r[2], r[3]) = (r[3], r[2]);
        expectRefusedAndVoided(jobId, 0, r, solanaMismatch);

        // The lanes in the wrong order: the first lane is the EVM worker chain's.
        r = copyOf(honest);
        (r[0], r[1], r[2], r[3]) = (honest[2], honest[3], honest[0], honest[1]);
        expectRefusedAndVoided(jobId, 0, r, abi.encodeWithSelector(ProposalChecker.ResultsOutOfOrder.selector, 0));
        // The lanes interleaved, as sorting by task id could give them.
        r = copyOf(honest);
        (r[1], r[2]) = (honest[2], honest[1]);
        expectRefusedAndVoided(jobId, 0, r, abi.encodeWithSelector(ProposalChecker.ResultsOutOfOrder.selector, 1));
        // A result moved to another chain (the same key is a different worker there).
        r = copyOf(honest);
        r[1].workerChain = SOLANA;
        r[1].outcome = PayloadCodec.OUTCOME_DROPPED;
        r[1].reward = 0;
        expectRefusedAndVoided(jobId, 0, r, abi.encodeWithSelector(ProposalChecker.ResultsOutOfOrder.selector, 1));

        // The honest set, proposed after all those disproofs, settles.
        finalize(jobId, 0, honest);
        vm.warp(block.timestamp + WINDOW);
        settle(jobId, 0);
        assertEq(market.claimable(payoutOf(11), address(0)), 1 ether, "paid");
    }

    function test_checkProposal_forgedCommitListsRejected() public {
        uint64 jobId = fourWorkerRound(1);
        (JobMarket.Result[] memory r, JobMarket.Commit[] memory honest) = finalizeArgs(jobId, 0, fourResults());
        // Each lane's commitments in arrival order: the EVM lane's are worker 1's, then 0's.
        assertEq(honest.length, 4, "four commitments");
        assertEq(honest[0].workerKey, workerKey(1), "evm, first to arrive");
        assertEq(honest[1].workerKey, workerKey(0), "evm, second");
        assertEq(honest[2].workerKey, workerKey(10), "solana, first");
        assertEq(honest[3].workerKey, workerKey(11), "solana, second");
        assertEq(market.getLane(jobId, EVM_WORKERS).commitChain, commitChainOf(slice(honest, 0, 2)), "evm chain");
        assertEq(market.getLane(jobId, SOLANA).commitChain, commitChainOf(slice(honest, 2, 4)), "solana chain");
        bytes memory evmMismatch = abi.encodeWithSelector(ProposalChecker.CommitsMismatch.selector, EVM_WORKERS);
        bytes memory solanaMismatch = abi.encodeWithSelector(ProposalChecker.CommitsMismatch.selector, SOLANA);
        JobMarket.Commit[][] memory forged = new JobMarket.Commit[][](9);
        bytes[] memory reasons = new bytes[](9);

        // A commitment changed, or named for another worker.
        JobMarket.Commit[] memory c = copyOf(honest);
        c[1].commitment = keccak256("another update");
        (forged[0], reasons[0]) = (c, evmMismatch);
        c = copyOf(honest);
        c[3].commitment = commitmentFor(workerKey(11), 1); // the same worker's, of another round
        (forged[1], reasons[1]) = (c, solanaMismatch);
        c = copyOf(honest);
        c[2].workerKey = workerKey(11);
        (forged[2], reasons[2]) = (c, solanaMismatch);

        // One dropped: from the first lane (its range then takes the next lane's first), or the
        // last; or all of them.
        c = new JobMarket.Commit[](3);
        (c[0], c[1], c[2]) = (honest[1], honest[2], honest[3]);
        (forged[3], reasons[3]) = (c, evmMismatch);
        (forged[4], reasons[4]) = (slice(honest, 0, 3), solanaMismatch);
        (forged[5], reasons[5]) = (new JobMarket.Commit[](0), evmMismatch);

        // Reordered: a lane's in key order instead of arrival order, or the lanes swapped.
        c = copyOf(honest);
        (c[0], c[1]) = (c[1], c[0]);
        (forged[6], reasons[6]) = (c, evmMismatch);
        c = new JobMarket.Commit[](4);
        (c[0], c[1], c[2], c[3]) = (honest[2], honest[3], honest[0], honest[1]);
        (forged[7], reasons[7]) = (c, evmMismatch);

        // An extra commitment after the last lane's, by anyone.
        c = new JobMarket.Commit[](5);
        for (uint256 i = 0; i < 4; ++i) {
            c[i] = honest[i];
        }
        c[4] = JobMarket.Commit(workerKey(0), commitmentFor(workerKey(0), 0));
        (forged[8], reasons[8]) = (c, abi.encodeWithSelector(ProposalChecker.CommitsMismatch.selector, 0));

        for (uint256 i = 0; i < forged.length; ++i) {
            expectRefused(jobId, 0, r, forged[i], reasons[i]);
        }
        // Forged evidence cannot disprove the honest proposal either: the disproof reverts with
        // the evidence's error and the proposal stands.
        finalize(jobId, 0, r);
        for (uint256 i = 0; i < forged.length; ++i) {
            vm.expectRevert(reasons[i]);
            checker.disprove(jobId, 0, r, forged[i]);
        }
        vm.expectRevert(abi.encodeWithSelector(ProposalChecker.ProposalValid.selector, jobId, 0));
        checker.disprove(jobId, 0, r, honest);
        assertEq(uint8(market.getRound(jobId, 0).phase), uint8(JobMarket.RoundPhase.Proposed), "still proposed");
        vm.warp(block.timestamp + WINDOW);
        settle(jobId, 0);
        assertEq(market.claimable(payoutOf(0), address(0)), 1 ether, "paid");
    }

    /// A job of one round with worker key 0 on both chains (two workers) and one more worker on
    /// each (keys 1 and 11); every worker commits except key 0 on the chains not in `key0Commits`
    /// (EVM_WORKERS, SOLANA or 0: both). Each lane receives its commitments key 0's last.
    function sameKeyOnBothChains(uint16 key0Commits) internal returns (uint64 jobId) {
        jobId = postNative(1, 4, 4 ether);
        for (uint256 i = 0; i < 2; ++i) {
            registerWorker(EVM_WORKERS, workerKey(i), MIN_STAKE, payoutOf(i));
        }
        registerWorker(SOLANA, workerKey(0), MIN_STAKE, payoutOf(20));
        registerWorker(SOLANA, workerKey(11), MIN_STAKE, payoutOf(11));
        assign(jobId, EVM_WORKERS, 0, 2);
        PayloadCodec.Assignment[] memory sol = assignments(0, 2);
        sol[1].workerKey = workerKey(11);
        vm.prank(aggregator, aggregator);
        market.assignTasks(jobId, SOLANA, uint64(block.timestamp + 1 days), sol);
        commit(jobId, 0, EVM_WORKERS, workerKey(1));
        commit(jobId, 0, SOLANA, workerKey(11));
        if (key0Commits != SOLANA) commit(jobId, 0, EVM_WORKERS, workerKey(0));
        if (key0Commits != EVM_WORKERS) commit(jobId, 0, SOLANA, workerKey(0));
    }

    /// Key 0's results on both chains and the others' (lane order), all ACCEPTED.
    function sameKeyResults() internal pure returns (JobMarket.Result[] memory all) {
        all = new JobMarket.Result[](4);
        JobMarket.Result[] memory evm = acceptedResults(EVM_WORKERS, 0, 2, 1 ether);
        (all[0], all[1]) = (evm[0], evm[1]);
        all[2] = JobMarket.Result(workerKey(0), SOLANA, 0, 0, 1 ether, bytes32(0));
        all[3] = JobMarket.Result(workerKey(11), SOLANA, 0, 0, 1 ether, bytes32(0));
    }

    function test_checkProposal_findsTheWorkersCommitmentAnywhereInItsLaneNeverInAnother() public {
        // Both key 0 workers committed, each last in its lane: found wherever it sits.
        uint64 jobId = sameKeyOnBothChains(0);
        (JobMarket.Result[] memory r, JobMarket.Commit[] memory c) = finalizeArgs(jobId, 0, sameKeyResults());
        assertEq(c[1].workerKey, workerKey(0), "evm key 0: second of its lane");
        assertEq(c[3].workerKey, workerKey(0), "solana key 0: second of its lane");
        checker.checkProposal(jobId, 0, 4 ether, resultsRootOf(jobId, 0, r), r, c);
        finalize(jobId, 0, r);
        assertEq(market.getRound(jobId, 0).proposedTotal, 4 ether, "all four accepted");
        vm.expectRevert(abi.encodeWithSelector(ProposalChecker.ProposalValid.selector, jobId, 0));
        checker.disprove(jobId, 0, r, c);
        vm.warp(block.timestamp + WINDOW);
        settle(jobId, 0);
        assertEq(market.claimable(payoutOf(20), address(0)), 1 ether, "solana key 0 paid");
        assertEq(market.claimable(payoutOf(0), address(0)), 1 ether, "evm key 0 paid");

        // Only Solana's key 0 committed: the EVM worker 0 has no commitment, the other lane's
        // commitment of the same key notwithstanding; it may be dropped or slashed as MISSED.
        jobId = sameKeyOnBothChains(SOLANA);
        (r, c) = finalizeArgs(jobId, 0, sameKeyResults());
        assertEq(c.length, 3, "three commitments");
        assertEq(c[2].workerKey, workerKey(0), "the same key's, in the solana lane");
        expectRefusedAndVoided(
            jobId,
            0,
            r,
            abi.encodeWithSelector(
                ProposalChecker.AcceptedWithoutCommitment.selector, taskOf(jobId, 0, EVM_WORKERS, workerKey(0))
            )
        );
        r[0] = JobMarket.Result(workerKey(0), EVM_WORKERS, PayloadCodec.OUTCOME_SLASHED, 2, 0, EVIDENCE);
        finalize(jobId, 0, r);

        // Only the EVM key 0 committed: Solana's key 0 has none, either way round.
        jobId = sameKeyOnBothChains(EVM_WORKERS);
        (r, c) = finalizeArgs(jobId, 0, sameKeyResults());
        assertEq(c[1].workerKey, workerKey(0), "the same key's, in the evm lane");
        expectRefusedAndVoided(
            jobId,
            0,
            r,
            abi.encodeWithSelector(
                ProposalChecker.AcceptedWithoutCommitment.selector, taskOf(jobId, 0, SOLANA, workerKey(0))
            )
        );
        // A result that is not ACCEPTED needs no commitment: dropped, it is proposed; a worker
        // that did commit may be dropped too.
        r[2].outcome = PayloadCodec.OUTCOME_DROPPED;
        r[2].reward = 0;
        r[1].outcome = PayloadCodec.OUTCOME_DROPPED;
        r[1].reward = 0;
        finalize(jobId, 0, r);
        assertEq(market.getRound(jobId, 0).proposedTotal, 2 ether, "two accepted");
    }

    function test_checkProposal_committedTaskCannotBeSlashedAsMissed() public {
        uint64 jobId = fourWorkerRound(1);
        (JobMarket.Result[] memory r,) = finalizeArgs(jobId, 0, fourResults());
        // Worker 1's commitment reached the lane (relayed after the coordinator closed
        // collection, say): a MISSED slash for it is refused, and voided when proposed unchecked.
        r[1] = JobMarket.Result(workerKey(1), EVM_WORKERS, PayloadCodec.OUTCOME_SLASHED, 2, 0, keccak256("evidence"));
        expectRefusedAndVoided(
            jobId,
            0,
            r,
            abi.encodeWithSelector(
                ProposalChecker.CommittedTaskMissed.selector, taskOf(jobId, 0, EVM_WORKERS, workerKey(1))
            )
        );
        // Dropped without fault (not aggregated, not paid, not slashed) it goes through; a
        // REJECTED slash of a committed update still does.
        r[1] = JobMarket.Result(workerKey(1), EVM_WORKERS, PayloadCodec.OUTCOME_DROPPED, 0, 0, bytes32(0));
        r[3] = JobMarket.Result(workerKey(11), SOLANA, PayloadCodec.OUTCOME_SLASHED, 1, 0, keccak256("evidence"));
        finalize(jobId, 0, r);
        assertEq(uint8(market.getRound(jobId, 0).phase), uint8(JobMarket.RoundPhase.Proposed), "proposed");
    }

    function test_lane_resetsOnTheNextRound() public {
        uint64 jobId = postNative(2, 2, 2 ether);
        prepareRound(jobId, 0, EVM_WORKERS, 0, 2);
        JobMarket.Lane memory lane = market.getLane(jobId, EVM_WORKERS);
        assertEq(lane.round, 0, "round 0");
        assertEq(lane.assigned, 2, "two assigned");
        assertEq(lane.committed, 2, "two committed");
        JobMarket.Commit[] memory old = laneCommits(jobId, 0, EVM_WORKERS);
        assertEq(lane.commitChain, commitChainOf(old), "round 0's commitments");
        finalize(jobId, 0, acceptedResults(EVM_WORKERS, 0, 2, 1 ether));
        vm.warp(block.timestamp + WINDOW);
        settle(jobId, 0);
        assertEq(market.getLane(jobId, EVM_WORKERS).round, 0, "kept until the next assignment");

        // Round 1 assigns worker 0 again: below the old lane's last key, in a fresh lane.
        vm.roll(block.number + 1);
        assign(jobId, EVM_WORKERS, 0, 1);
        lane = market.getLane(jobId, EVM_WORKERS);
        assertEq(lane.round, 1, "round 1");
        assertEq(lane.assigned, 1, "fresh assigned count");
        assertEq(lane.committed, 0, "fresh committed count");
        assertEq(lane.lastKey, workerKey(0), "last key");
        assertEq(lane.assignedChain, assignedChainOf(0, 1), "fresh assigned chain");
        assertEq(lane.commitChain, CHAIN_START, "fresh commit chain");
        assertEq(market.getRound(jobId, 1).openedBlock, block.number, "round 1 opened");
        assertEq(market.getRound(jobId, 0).openedBlock, block.number - 1, "round 0's kept");

        // Round 0's commitments are not round 1's: worker 0 has not committed in this lane.
        JobMarket.Result[] memory r = acceptedResults(EVM_WORKERS, 0, 1, 1 ether);
        JobMarket.Commit[] memory stale = new JobMarket.Commit[](1);
        stale[0] = old[0];
        bytes32 task = taskOf(jobId, 1, EVM_WORKERS, workerKey(0));
        expectRefused(
            jobId, 1, r, stale, abi.encodeWithSelector(ProposalChecker.AcceptedWithoutCommitment.selector, task)
        );
        expectRefusedAndVoided(
            jobId, 1, r, abi.encodeWithSelector(ProposalChecker.AcceptedWithoutCommitment.selector, task)
        );
        r[0].outcome = PayloadCodec.OUTCOME_DROPPED;
        r[0].reward = 0;
        expectRefused(jobId, 1, r, stale, abi.encodeWithSelector(ProposalChecker.CommitsMismatch.selector, 0));
        // Worker 1 was not assigned this round: the one-task lane takes one commitment.
        commit(jobId, 1, EVM_WORKERS, workerKey(0));
        bytes memory second = signed(EVM_WORKERS, HUB, committedPayload(jobId, 1, workerKey(1)));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnexpectedCommitment.selector, jobId, 1, EVM_WORKERS, 1));
        market.receiveMessage(second);
        // With round 1's commitment in the lane, round 0's in its place does not match.
        r = acceptedResults(EVM_WORKERS, 0, 1, 1 ether);
        expectRefused(jobId, 1, r, stale, abi.encodeWithSelector(ProposalChecker.CommitsMismatch.selector, EVM_WORKERS));
        finalize(jobId, 1, r);
        vm.warp(block.timestamp + WINDOW);
        settle(jobId, 1);
        assertEq(market.claimable(payoutOf(0), address(0)), 2 ether, "paid in both rounds");
        assertEq(uint8(market.getJob(jobId).status), uint8(JobMarket.JobStatus.Completed), "completed");
    }

    /// A deep copy (assigning a memory struct copies a reference).
    function copyOf(JobMarket.Result[] memory a) internal pure returns (JobMarket.Result[] memory b) {
        b = new JobMarket.Result[](a.length);
        for (uint256 i = 0; i < a.length; ++i) {
            b[i] = JobMarket.Result(
                a[i].workerKey, a[i].workerChain, a[i].outcome, a[i].fault, a[i].reward, a[i].evidence
            );
        }
    }

    function copyOf(JobMarket.Commit[] memory a) internal pure returns (JobMarket.Commit[] memory b) {
        return slice(a, 0, a.length);
    }

    /// A deep copy of `a[from:to]`.
    function slice(JobMarket.Commit[] memory a, uint256 from, uint256 to)
        internal
        pure
        returns (JobMarket.Commit[] memory b)
    {
        b = new JobMarket.Commit[](to - from);
        for (uint256 i = from; i < to; ++i) {
            b[i - from] = JobMarket.Commit(a[i].workerKey, a[i].commitment);
        }
    }

    function test_challengeRound_reopensProposal() public {
        uint64 jobId = postNative(1, 1, 1 ether);
        prepareRound(jobId, 0, EVM_WORKERS, 0, 1);
        finalize(jobId, 0, acceptedResults(EVM_WORKERS, 0, 1, 1 ether));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NotChallenger.selector, address(this)));
        market.challengeRound(jobId, 0, bytes32("bad aggregate"));
        vm.expectEmit(true, true, false, true);
        emit JobMarket.RoundChallenged(jobId, 0, challenger, bytes32("bad aggregate"));
        vm.prank(challenger);
        market.challengeRound(jobId, 0, bytes32("bad aggregate"));
        assertEq(uint8(market.getRound(jobId, 0).phase), uint8(JobMarket.RoundPhase.Collecting), "reopened");
        assertEq(market.getRound(jobId, 0).resultsRoot, bytes32(0), "proposal dropped");
        vm.prank(challenger);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.RoundNotProposed.selector, jobId, 0));
        market.challengeRound(jobId, 0, bytes32(0));
        // The aggregator proposes again, and a challenge after the window is refused.
        finalize(jobId, 0, acceptedResults(EVM_WORKERS, 0, 1, 0.5 ether));
        uint64 deadline = market.getRound(jobId, 0).challengeDeadline;
        vm.warp(deadline);
        vm.prank(challenger);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.ChallengeWindowClosed.selector, deadline));
        market.challengeRound(jobId, 0, bytes32(0));
        settle(jobId, 0);
        assertEq(market.claimable(payoutOf(0), address(0)), 0.5 ether, "second proposal paid");
    }

    /// Three committed workers proposed on `jobId` round 0, one of them (worker 1) slashed.
    function proposeThree(uint64 jobId, uint256 from) internal returns (JobMarket.Result[] memory r) {
        prepareRound(jobId, 0, EVM_WORKERS, from, 3);
        r = acceptedResults(EVM_WORKERS, from, 3, 1 ether);
        r[1].outcome = PayloadCodec.OUTCOME_SLASHED;
        r[1].reward = 0;
        r[1].fault = 1;
        r[1].evidence = EVIDENCE;
        finalize(jobId, 0, r);
        r = proposed(jobId, 0);
    }

    function test_attack_settleWithOtherResultsRejected() public {
        uint64 jobId = postNative(1, 3, 3 ether);
        JobMarket.Result[] memory good = proposeThree(jobId, 0);
        uint64 otherJob = postNative(1, 3, 3 ether);
        vm.warp(block.timestamp + WINDOW);
        bytes memory mismatch = abi.encodeWithSelector(JobMarket.ResultsMismatch.selector, jobId, 0);

        JobMarket.Result[] memory r = proposed(jobId, 0);
        r[indexOf(r, workerKey(0))].reward = 2 ether; // a reward raised
        vm.expectRevert(mismatch);
        market.settleRound(jobId, 0, r);
        r = proposed(jobId, 0);
        r[indexOf(r, workerKey(1))].outcome = PayloadCodec.OUTCOME_ACCEPTED; // a slash dropped
        vm.expectRevert(mismatch);
        market.settleRound(jobId, 0, r);
        r = proposed(jobId, 0);
        (r[0], r[2]) = (r[2], r[0]); // the same results in another order
        vm.expectRevert(mismatch);
        market.settleRound(jobId, 0, r);
        JobMarket.Result[] memory two = new JobMarket.Result[](2);
        (two[0], two[1]) = (good[0], good[1]); // one left out
        vm.expectRevert(mismatch);
        market.settleRound(jobId, 0, two);
        JobMarket.Result[] memory none = new JobMarket.Result[](0);
        vm.expectRevert(mismatch);
        market.settleRound(jobId, 0, none);

        // The other job's proposal has the same workers and results, under its own root.
        JobMarket.Result[] memory theirs = proposeThree(otherJob, 0);
        assertTrue(market.getRound(otherJob, 0).resultsRoot != market.getRound(jobId, 0).resultsRoot, "own root");
        vm.warp(block.timestamp + WINDOW);
        settle(otherJob, 0);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.JobNotOpen.selector, otherJob));
        market.settleRound(otherJob, 0, theirs); // settled once: its only round, the job completed
        settle(jobId, 0);
        assertEq(market.claimable(payoutOf(0), address(0)), 2 ether, "one reward from each job");
    }

    function test_attack_disputeWithForgedProofRejected() public {
        uint64 jobId = postNative(1, 3, 3 ether);
        JobMarket.Result[] memory r = proposeThree(jobId, 0);
        uint256 slashed = indexOf(r, workerKey(1));
        uint256 accepted = indexOf(r, workerKey(0));
        bytes32 taskId = taskOf(jobId, 0, EVM_WORKERS, workerKey(0));
        bytes memory invalid = abi.encodeWithSelector(JobMarket.InvalidResultProof.selector, taskId);

        // An accepted worker claiming it was slashed: that result is not in the root.
        JobMarket.Result memory forged =
            JobMarket.Result(r[accepted].workerKey, EVM_WORKERS, PayloadCodec.OUTCOME_SLASHED, 1, 0, EVIDENCE);
        bytes32[] memory proof = proofOf(jobId, 0, r, accepted);
        vm.prank(payoutOf(0));
        vm.expectRevert(invalid);
        market.disputeSlash(jobId, 0, accepted, forged, proof);
        // Its own result, at another index, with a sibling added, with one missing.
        vm.prank(payoutOf(0));
        vm.expectRevert(invalid);
        market.disputeSlash(jobId, 0, slashed, r[accepted], proof);
        bytes32[] memory longer = new bytes32[](proof.length + 1);
        for (uint256 i = 0; i < proof.length; ++i) {
            longer[i] = proof[i];
        }
        vm.prank(payoutOf(0));
        vm.expectRevert(invalid);
        market.disputeSlash(jobId, 0, accepted, r[accepted], longer);
        bytes32[] memory shorter = new bytes32[](proof.length - 1);
        for (uint256 i = 0; i < shorter.length; ++i) {
            shorter[i] = proof[i];
        }
        vm.prank(payoutOf(0));
        vm.expectRevert(invalid);
        market.disputeSlash(jobId, 0, accepted, r[accepted], shorter);
        vm.prank(payoutOf(0));
        vm.expectRevert(invalid);
        market.disputeSlash(jobId, 0, 3, r[accepted], proof); // an index past the results
        // The genuine result with its proof is not slashed.
        vm.prank(payoutOf(0));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NotSlashed.selector, taskId));
        market.disputeSlash(jobId, 0, accepted, r[accepted], proof);

        // A proof from another job's proposal, with the same results, proves nothing here.
        uint64 otherJob = postNative(1, 3, 3 ether);
        JobMarket.Result[] memory theirs = proposeThree(otherJob, 0);
        bytes32 slashedTask = taskOf(jobId, 0, EVM_WORKERS, workerKey(1));
        vm.prank(payoutOf(1));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.InvalidResultProof.selector, slashedTask));
        market.disputeSlash(jobId, 0, slashed, r[slashed], proofOf(otherJob, 0, theirs, slashed));
        // The slashed worker's own proof opens its dispute.
        dispute(jobId, 0, EVM_WORKERS, workerKey(1), payoutOf(1));
        assertEq(market.getDispute(slashedTask).proposal, 1, "disputed");
    }

    function test_attack_settleAndWithdrawInsideWindowRejected() public {
        uint64 jobId = postNative(1, 1, 1 ether);
        prepareRound(jobId, 0, EVM_WORKERS, 0, 1);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.RoundNotProposed.selector, jobId, 0));
        settle(jobId, 0);
        finalize(jobId, 0, acceptedResults(EVM_WORKERS, 0, 1, 1 ether));
        uint64 deadline = uint64(block.timestamp + WINDOW);
        vm.warp(deadline - 1);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.ChallengeWindowOpen.selector, deadline));
        settle(jobId, 0);
        vm.prank(payoutOf(0));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NothingToWithdraw.selector, payoutOf(0), address(0)));
        market.withdraw(address(0));
    }

    function test_settleRound_creditsAndPublishesPerChainBatches() public {
        uint64 jobId = postNative(2, 8, 8 ether);
        prepareRound(jobId, 0, EVM_WORKERS, 0, 3);
        // Solana takes at most 4 assignments per message: two TASK_ASSIGNED for five workers.
        for (uint256 i = 10; i < 15; ++i) {
            registerWorker(SOLANA, workerKey(i), MIN_STAKE, payoutOf(i));
        }
        assign(jobId, SOLANA, 10, 4);
        assign(jobId, SOLANA, 14, 1);
        for (uint256 i = 10; i < 15; ++i) {
            commit(jobId, 0, SOLANA, workerKey(i));
        }
        JobMarket.Result[] memory r = new JobMarket.Result[](8);
        JobMarket.Result[] memory evm = acceptedResults(EVM_WORKERS, 0, 3, 1 ether);
        JobMarket.Result[] memory sol = acceptedResults(SOLANA, 10, 5, 1 ether);
        for (uint256 i = 0; i < 3; ++i) {
            r[i] = evm[i];
        }
        for (uint256 i = 0; i < 5; ++i) {
            r[3 + i] = sol[i];
        }
        r[7].outcome = 2;
        r[7].reward = 0;
        r[7].fault = 1;
        r[7].evidence = EVIDENCE;
        finalize(jobId, 0, r);
        setCoreFee(1);
        vm.warp(block.timestamp + WINDOW);
        // 1 EVM + 2 Solana messages: the fee of three.
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.WrongMessageFee.selector, 1, 3));
        settleWith(jobId, 0, 1);
        vm.recordLogs();
        settleWith(jobId, 0, 3);
        bytes[] memory published = publishedPayloads();
        assertEq(published.length, 3, "three ROUND_SETTLED");
        PayloadCodec.RoundSettled memory last = this.decodeSettled(published[2]);
        assertEq(last.header.targetChain, SOLANA, "solana batch");
        assertEq(last.header.targetAddress, SOLANA_PROGRAM, "solana target");
        assertEq(last.settlements.length, 1, "remainder batch");
        PayloadCodec.RoundSettled memory first = this.decodeSettled(published[1]);
        assertEq(first.settlements.length, 4, "full batch");
        bool seen = false;
        for (uint256 i = 0; i < 5; ++i) {
            PayloadCodec.Settlement memory e = i < 4 ? first.settlements[i] : last.settlements[0];
            // The proposal's order: the lane's, keys increasing.
            assertEq(e.workerKey, workerKey(10 + i), "solana lane in assignment order");
            if (e.workerKey != workerKey(14)) {
                assertEq(e.outcome, 0, "accepted");
                continue;
            }
            seen = true;
            assertEq(e.outcome, 2, "slashed");
            assertEq(e.slash, REJECTED_SLASH, "the policy's amount for a rejection");
        }
        assertTrue(seen, "the slashed worker settled");
        assertEq(last.slashMode, 0, "slash mode");
        assertEq(last.slashRecipient, keccak256("poster on solana"), "the job's recipient on that chain");
        assertEq(last.modelHash, keccak256(abi.encode("model", uint32(1))), "new model");
        PayloadCodec.RoundSettled memory evmBatch = this.decodeSettled(published[0]);
        assertEq(evmBatch.header.targetChain, EVM_WORKERS, "the job's first chain first");
        assertEq(evmBatch.settlements.length, 3, "evm batch");
        for (uint256 i = 0; i < 3; ++i) {
            assertEq(evmBatch.settlements[i].workerKey, workerKey(i), "evm lane in assignment order");
        }
        assertEq(market.claimable(payoutOf(11), address(0)), 1 ether, "credited");
        assertEq(market.claimable(payoutOf(14), address(0)), 0, "slashed gets nothing");
        JobMarket.Job memory job = market.getJob(jobId);
        assertEq(job.currentRound, 1, "next round");
        assertEq(job.escrow, 16 ether - 7 ether, "escrow reduced");
        assertEq(job.modelHash, keccak256(abi.encode("model", uint32(1))), "model advanced");
        vm.expectRevert(abi.encodeWithSelector(JobMarket.RoundNotProposed.selector, jobId, 0));
        settleWith(jobId, 0, 0);
    }

    function test_settleRound_requiresPeerOfEveryChain() public {
        uint64 jobId = postNative(1, 1, 1 ether);
        prepareRound(jobId, 0, EVM_WORKERS, 0, 1);
        finalize(jobId, 0, acceptedResults(EVM_WORKERS, 0, 1, 1 ether));
        market.setPeer(EVM_WORKERS, bytes32(0));
        vm.warp(block.timestamp + WINDOW);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.UnknownPeer.selector, EVM_WORKERS));
        settle(jobId, 0);
    }

    function decodeSettled(bytes calldata p) external pure returns (PayloadCodec.RoundSettled memory) {
        return PayloadCodec.decodeRoundSettled(p);
    }

    // ------------------------------------------------------------------ withdrawing

    function test_withdraw_paysClaimableOnceNativeAndToken() public {
        uint64 jobId = postNative(1, 1, 1 ether);
        prepareRound(jobId, 0, EVM_WORKERS, 0, 1);
        finalize(jobId, 0, acceptedResults(EVM_WORKERS, 0, 1, 0.75 ether));
        vm.warp(block.timestamp + WINDOW);
        settle(jobId, 0);
        vm.prank(payoutOf(0));
        market.withdraw(address(0));
        assertEq(payoutOf(0).balance, 0.75 ether, "paid");
        (,,, uint256 withdrawn,) = market.ledgers(address(0));
        assertEq(withdrawn, 0.75 ether, "ledger");
        vm.prank(payoutOf(0));
        vm.expectRevert(abi.encodeWithSelector(JobMarket.NothingToWithdraw.selector, payoutOf(0), address(0)));
        market.withdraw(address(0));

        MockERC20 token = new MockERC20();
        token.mint(poster, 10);
        JobMarket.JobSpec memory s = spec(1, 1, 10);
        s.token = address(token);
        vm.startPrank(poster);
        token.approve(address(market), 10);
        uint64 tokenJob = market.postJob(s);
        vm.stopPrank();
        assign(tokenJob, EVM_WORKERS, 0, 1);
        commit(tokenJob, 0, EVM_WORKERS, workerKey(0));
        finalize(tokenJob, 0, acceptedResults(EVM_WORKERS, 0, 1, 10));
        vm.warp(block.timestamp + WINDOW);
        settle(tokenJob, 0);
        vm.prank(payoutOf(0));
        market.withdraw(address(token));
        assertEq(token.balanceOf(payoutOf(0)), 10, "token paid");
    }

    function test_withdraw_revertsWhenPaymentFails() public {
        FalseToken token = new FalseToken();
        JobMarket.JobSpec memory s = spec(1, 1, 10);
        s.token = address(token);
        uint64 jobId = market.postJob(s);
        prepareRound(jobId, 0, EVM_WORKERS, 0, 1);
        finalize(jobId, 0, acceptedResults(EVM_WORKERS, 0, 1, 10));
        vm.warp(block.timestamp + WINDOW);
        settle(jobId, 0);
        token.setRefuse(true);
        vm.prank(payoutOf(0));
        vm.expectRevert(abi.encodeWithSelector(TokenTransfer.TransferFailed.selector, address(token), payoutOf(0), 10));
        market.withdraw(address(token));
        assertEq(market.claimable(payoutOf(0), address(token)), 10, "claim kept after the failed payment");
    }

    function test_attack_reentrancyOnWithdrawRejected() public {
        ReentrantPayout attacker = new ReentrantPayout(market);
        uint64 jobId = postNative(1, 1, 1 ether);
        registerWorker(EVM_WORKERS, workerKey(0), MIN_STAKE, address(attacker));
        assign(jobId, EVM_WORKERS, 0, 1);
        commit(jobId, 0, EVM_WORKERS, workerKey(0));
        finalize(jobId, 0, acceptedResults(EVM_WORKERS, 0, 1, 1 ether));
        vm.warp(block.timestamp + WINDOW);
        settle(jobId, 0);
        attacker.attack();
        assertEq(attacker.caught(), ReentrancyGuard.Reentrancy.selector, "re-entry refused");
        assertEq(address(attacker).balance, 1 ether, "paid exactly once");
        assertEq(address(market).balance, 0, "nothing else left");
    }
}

/// Payout address that tries to withdraw again from inside the payment.
contract ReentrantPayout {
    JobMarket internal immutable market;
    bytes4 public caught;

    constructor(JobMarket market_) {
        market = market_;
    }

    function attack() external {
        market.withdraw(address(0));
    }

    receive() external payable {
        try market.withdraw(address(0)) {}
        catch (bytes memory reason) {
            caught = bytes4(reason);
        }
    }
}

/// ERC-20 whose transfers report failure by returning false once `refuse` is set.
contract FalseToken {
    bool internal refuse;
    uint256 internal held;

    function setRefuse(bool value) external {
        refuse = value;
    }

    function balanceOf(address) external view returns (uint256) {
        return held;
    }

    function transferFrom(address, address, uint256 amount) external returns (bool) {
        held += amount;
        return true;
    }

    function transfer(address, uint256 amount) external returns (bool) {
        if (refuse) return false;
        held -= amount;
        return true;
    }
}

/// The same tests against a core that behaves like Wormhole's (see `RequireStyleCore`).
contract JobMarketOnRequireStyleCoreTest is JobMarketTest {
    constructor() {
        requireStyleCore = true;
    }
}
