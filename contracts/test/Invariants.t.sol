// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {JobMarket} from "../src/JobMarket.sol";
import {ProposalChecker} from "../src/ProposalChecker.sol";
import {IRewardSource, RewardDistributor} from "../src/RewardDistributor.sol";
import {WorkerHub} from "../src/WorkerHub.sol";
import {MessageReceiver} from "../src/base/MessageReceiver.sol";
import {PayloadCodec} from "../src/libraries/PayloadCodec.sol";
import {HubFixture} from "./utils/HubFixture.sol";
import {MarketFixture} from "./utils/MarketFixture.sol";
import {DistributorTrees} from "./utils/DistributorTrees.sol";
import {Test} from "./utils/Test.sol";

/// Drives a JobMarket through random job, round, cancel, withdraw and replay actions.
contract MarketHandler is MarketFixture {
    uint64[] public jobIds;
    mapping(uint64 => uint256) public deposited;
    mapping(uint64 => uint256) public paidOut;
    mapping(uint64 => uint256) public refunded;
    bytes[] internal delivered;
    uint256 public replaysAccepted;
    /// Settlements the market accepted with a result other than the proposal's.
    uint256 public tamperedSettled;
    /// Assignments the market accepted for a worker whose current stake was below the job's minimum.
    uint256 public assignedBelowMinimum;
    /// Honest proposals the market refused: the round's assigned set in lane order, each
    /// accepted result with its worker's commitment, every lane's commitments in arrival order.
    uint256 public honestProposalsRefused;
    /// Rounds proposed honestly (so the invariants above are not vacuous).
    uint256 public proposals;
    /// UPDATE_COMMITTED messages delivered, and those of them carrying several commitments.
    uint256 public batchesDelivered;
    uint256 public multiEntryBatches;
    uint256 internal nextWorker;
    mapping(uint256 => uint64) internal stakeNonces;
    /// Invalid proposals made unchecked (as a dishonest aggregator could) and voided by a
    /// disproof; those the checker passed, or a disproof could not void (both must stay 0).
    uint256 public disproofs;
    uint256 public invalidProposalsChecked;
    uint256 public invalidProposalsStanding;
    /// Honest proposals a disproof voided; settlements of a voided proposal's results (both 0).
    uint256 public validProposalsVoided;
    uint256 public voidedSettled;
    /// Each voided proposal's results (the last per job), for `settleVoided`.
    mapping(uint64 => JobMarket.Result[]) internal voided;
    mapping(uint64 => uint32) internal voidedRound;
    /// What settled proposals credited each payout account, and what each withdrew.
    mapping(address => uint256) public credited;
    mapping(address => uint256) public withdrawnBy;
    uint256 public totalPaidOut;

    constructor() {
        setUpMarket();
    }

    function jobCount() external view returns (uint256) {
        return jobIds.length;
    }

    function post(uint256 rounds, uint256 reward) external {
        rounds = bound(rounds, 1, 4);
        reward = bound(reward, 1, 10 ether);
        uint64 jobId = postNative(uint32(rounds), 4, reward);
        jobIds.push(jobId);
        deposited[jobId] = reward * rounds;
    }

    function _job(uint256 seed) internal view returns (uint64 jobId, bool found) {
        if (jobIds.length == 0) return (0, false);
        return (jobIds[seed % jobIds.length], true);
    }

    /// Assign, commit, and propose the current round of a job with random rewards.
    function propose(uint256 seed, uint256 workers, uint256 rewardSeed) external {
        (uint64 jobId, bool found) = _job(seed);
        if (!found) return;
        JobMarket.Job memory job = market.getJob(jobId);
        if (job.status != JobMarket.JobStatus.Open) return;
        if (market.getRound(jobId, job.currentRound).phase != JobMarket.RoundPhase.Idle) return;
        workers = bound(workers, 1, 4);
        uint256 from = _registerWorkers(workers);
        assign(jobId, EVM_WORKERS, from, workers);
        // The workers commit in an order of their own and the worker chain publishes their
        // commitments as a hub does, several to an UPDATE_COMMITTED (batches of a size drawn
        // here); the fixture records each lane's commitments in arrival order, as finalize needs.
        uint256 shift = rewardSeed % workers;
        uint256 batch = 1 + (rewardSeed >> 8) % workers;
        for (uint256 k = 0; k < workers; k += batch) {
            uint256 size = workers - k < batch ? workers - k : batch;
            bytes32[] memory keys = new bytes32[](size);
            for (uint256 j = 0; j < size; ++j) {
                keys[j] = workerKey(from + (k + j + shift) % workers);
            }
            delivered.push(commitBatch(jobId, job.currentRound, EVM_WORKERS, keys));
            ++batchesDelivered;
            if (size > 1) ++multiEntryBatches;
        }
        JobMarket.Result[] memory results = acceptedResults(EVM_WORKERS, from, workers, 0);
        uint256 budget = job.rewardPerRound;
        for (uint256 i = 0; i < workers; ++i) {
            uint256 reward = bound(uint256(keccak256(abi.encode(rewardSeed, i))), 0, budget);
            results[i].reward = uint128(reward);
            budget -= reward;
        }
        _propose(jobId, job.currentRound, results);
    }

    /// Register `workers` fresh workers on the EVM worker chain; the first one's index.
    function _registerWorkers(uint256 workers) internal returns (uint256 from) {
        from = nextWorker;
        nextWorker += workers;
        for (uint256 i = from; i < from + workers; ++i) {
            bytes memory vaa = signed(EVM_WORKERS, HUB, registeredPayload(workerKey(i), MIN_STAKE, payoutOf(i % 5)));
            market.receiveMessage(vaa);
            delivered.push(vaa);
        }
    }

    function _propose(uint64 jobId, uint32 round, JobMarket.Result[] memory results) internal {
        if (tryFinalize(jobId, round, results)) ++proposals;
        else ++honestProposalsRefused;
    }

    /// Assign and commit the current round of a job as `propose` does, but with one worker's
    /// commitment never delivered, then propose unchecked, as a dishonest aggregator could, a
    /// proposal that breaks a rule (`kind`: that worker ACCEPTED without a commitment, a stated
    /// total that is not the rewards' sum, a root that is not the results', or a committed worker
    /// slashed as MISSED). Anyone disproves it; the aggregator then proposes the round honestly.
    function proposeInvalid(uint256 seed, uint256 workers, uint256 kind, uint256 rewardSeed) external {
        (uint64 jobId, bool found) = _job(seed);
        if (!found) return;
        JobMarket.Job memory job = market.getJob(jobId);
        if (job.status != JobMarket.JobStatus.Open) return;
        uint32 round = job.currentRound;
        if (market.getRound(jobId, round).phase != JobMarket.RoundPhase.Idle) return;
        workers = bound(workers, 2, 4);
        uint256 from = _registerWorkers(workers);
        assign(jobId, EVM_WORKERS, from, workers);
        uint256 absent = from + rewardSeed % workers; // never commits
        for (uint256 i = from; i < from + workers; ++i) {
            if (i != absent) delivered.push(commit(jobId, round, EVM_WORKERS, workerKey(i)));
        }
        // The honest results: the absent worker dropped, the others accepted within the budget
        // (less one, so a total one above theirs still fits it).
        JobMarket.Result[] memory honest = acceptedResults(EVM_WORKERS, from, workers, 0);
        uint256 budget = job.rewardPerRound - 1;
        for (uint256 i = 0; i < workers; ++i) {
            if (from + i == absent) {
                honest[i].outcome = PayloadCodec.OUTCOME_DROPPED;
                continue;
            }
            uint256 reward = bound(uint256(keccak256(abi.encode(rewardSeed, i))), 0, budget);
            honest[i].reward = uint128(reward);
            budget -= reward;
        }
        JobMarket.Result[] memory bad = new JobMarket.Result[](workers);
        for (uint256 i = 0; i < workers; ++i) {
            JobMarket.Result memory h = honest[i];
            bad[i] = JobMarket.Result(h.workerKey, h.workerChain, h.outcome, h.fault, h.reward, h.evidence);
        }
        uint256 total = totalOf(honest);
        bytes32 root;
        kind %= 4;
        if (kind == 0) {
            bad[absent - from].outcome = PayloadCodec.OUTCOME_ACCEPTED; // no reward: the total holds
        } else if (kind == 3) {
            uint256 present = absent == from ? 1 : 0;
            (bad[present].outcome, bad[present].fault) = (PayloadCodec.OUTCOME_SLASHED, 2);
            (bad[present].reward, bad[present].evidence) = (0, keccak256("evidence"));
            total -= honest[present].reward;
        }
        root = resultsRootOf(jobId, round, bad);
        if (kind == 1) total += 1;
        if (kind == 2) root = keccak256(abi.encode(root));
        JobMarket.Commit[] memory commits = commitsFor(jobId, round, bad);
        try checker.checkProposal(jobId, round, total, root, bad, commits) {
            ++invalidProposalsChecked;
        } catch {}
        finalizeUnchecked(jobId, round, bad, total, root);
        try checker.disprove(jobId, round, bad, commits) {
            ++disproofs;
            delete voided[jobId];
            for (uint256 i = 0; i < workers; ++i) {
                voided[jobId].push(bad[i]);
            }
            voidedRound[jobId] = round;
        } catch {
            ++invalidProposalsStanding;
            return;
        }
        _propose(jobId, round, honest);
    }

    /// Try to void the pending proposal of a job with the right evidence: every proposal the
    /// handler left pending was checked, so the disproof must fail.
    function disprovePending(uint256 seed) external {
        (uint64 jobId, bool found) = _job(seed);
        if (!found) return;
        uint32 round = market.getJob(jobId).currentRound;
        JobMarket.Round memory r = market.getRound(jobId, round);
        if (r.phase != JobMarket.RoundPhase.Proposed || block.timestamp >= r.challengeDeadline) return;
        JobMarket.Result[] memory results = proposed(jobId, round);
        try checker.disprove(jobId, round, results, commitsFor(jobId, round, results)) {
            ++validProposalsVoided;
        } catch (bytes memory reason) {
            if (bytes4(reason) != ProposalChecker.ProposalValid.selector) ++validProposalsVoided;
        }
    }

    /// Try to settle a job's last voided proposal with its results: never accepted. (Where only
    /// its stated total or root was wrong, its results are those of the honest proposal that
    /// replaced it, which `settle` settles.)
    function settleVoided(uint256 seed) external {
        (uint64 jobId, bool found) = _job(seed);
        if (!found || voided[jobId].length == 0) return;
        uint32 round = voidedRound[jobId];
        if (resultsHashOf(voided[jobId]) == resultsHashOf(proposed(jobId, round))) return;
        JobMarket.Round memory r = market.getRound(jobId, round);
        if (r.phase == JobMarket.RoundPhase.Proposed && block.timestamp < r.challengeDeadline) {
            vm.warp(r.challengeDeadline);
        }
        try market.settleRound(jobId, round, voided[jobId]) {
            ++voidedSettled;
        } catch {}
    }

    /// The worker chain reports a new stake for a known worker (slash, unbond, withdrawal, top-up).
    function changeStake(uint256 who, uint64 stake) external {
        if (nextWorker == 0) return;
        uint256 i = who % nextWorker;
        stake = uint64(bound(stake, 0, 2 * MIN_STAKE));
        bytes memory vaa = signed(EVM_WORKERS, HUB, stakeChangedPayload(workerKey(i), stake, ++stakeNonces[i], 4));
        market.receiveMessage(vaa);
        delivered.push(vaa);
    }

    /// Try to draw an existing worker for a job's idle round; the market must refuse one whose
    /// current stake is below the job's minimum. An accepted draw is proposed as DROPPED.
    function drawExisting(uint256 seed, uint256 who) external {
        (uint64 jobId, bool found) = _job(seed);
        if (!found || nextWorker == 0) return;
        JobMarket.Job memory job = market.getJob(jobId);
        if (job.status != JobMarket.JobStatus.Open) return;
        if (market.getRound(jobId, job.currentRound).phase != JobMarket.RoundPhase.Idle) return;
        uint256 i = who % nextWorker;
        uint64 stakeNow = market.getWorker(market.workerIdOf(EVM_WORKERS, workerKey(i))).stake;
        PayloadCodec.Assignment[] memory a = assignments(i, 1);
        vm.prank(aggregator, aggregator);
        try market.assignTasks(jobId, EVM_WORKERS, uint64(block.timestamp + 1 days), a) {
            if (stakeNow < job.minStake) ++assignedBelowMinimum;
        } catch {
            return;
        }
        JobMarket.Result[] memory dropped = new JobMarket.Result[](1);
        dropped[0] = JobMarket.Result(workerKey(i), EVM_WORKERS, 1, 0, 0, bytes32(0));
        _propose(jobId, job.currentRound, dropped);
    }

    /// A job whose current round is proposed, with the clock moved past its challenge window.
    function _settleable(uint256 seed)
        internal
        returns (bool found, uint64 jobId, uint32 round, JobMarket.Round memory r)
    {
        (jobId, found) = _job(seed);
        if (!found) return (false, 0, 0, r);
        round = market.getJob(jobId).currentRound;
        r = market.getRound(jobId, round);
        if (r.phase != JobMarket.RoundPhase.Proposed) return (false, 0, 0, r);
        if (block.timestamp < r.challengeDeadline) vm.warp(r.challengeDeadline);
    }

    function settle(uint256 seed) external virtual {
        (bool found, uint64 jobId, uint32 round, JobMarket.Round memory r) = _settleable(seed);
        if (!found) return;
        JobMarket.Result[] memory results = proposed(jobId, round);
        settle(jobId, round);
        paidOut[jobId] += r.proposedTotal;
        totalPaidOut += r.proposedTotal;
        for (uint256 i = 0; i < results.length; ++i) {
            credited[payoutOf((uint256(results[i].workerKey) - 0x1000) % 5)] += results[i].reward;
        }
    }

    /// Settle the pending proposal with one result's reward raised: only the proposal's own
    /// results (their root) may settle.
    function settleTampered(uint256 seed, uint256 which) external {
        (bool found, uint64 jobId, uint32 round,) = _settleable(seed);
        if (!found) return;
        JobMarket.Result[] memory results = proposed(jobId, round);
        results[which % results.length].reward += 1;
        try market.settleRound(jobId, round, results) {
            ++tamperedSettled;
        } catch {}
    }

    function challenge(uint256 seed) external {
        (uint64 jobId, bool found) = _job(seed);
        if (!found) return;
        uint32 round = market.getJob(jobId).currentRound;
        JobMarket.Round memory r = market.getRound(jobId, round);
        if (r.phase != JobMarket.RoundPhase.Proposed || block.timestamp >= r.challengeDeadline) return;
        vm.prank(challenger);
        market.challengeRound(jobId, round, bytes32(0));
        // The aggregator answers the challenge with a proposal that pays nobody: the same tasks
        // (those of the challenged proposal, the round's assigned set), all DROPPED.
        JobMarket.Result[] memory none = proposed(jobId, round);
        for (uint256 i = 0; i < none.length; ++i) {
            none[i] = JobMarket.Result(none[i].workerKey, none[i].workerChain, 1, 0, 0, bytes32(0));
        }
        _propose(jobId, round, none);
    }

    function cancel(uint256 seed) external {
        (uint64 jobId, bool found) = _job(seed);
        if (!found) return;
        JobMarket.Job memory job = market.getJob(jobId);
        bool open = job.status == JobMarket.JobStatus.Open
            && market.getRound(jobId, job.currentRound).phase == JobMarket.RoundPhase.Idle;
        if (!(open || job.status == JobMarket.JobStatus.Completed) || job.escrow == 0) return;
        vm.prank(poster);
        market.cancelJob(jobId);
        refunded[jobId] += job.escrow;
    }

    function withdraw(uint256 who) external {
        address account = payoutOf(who % 5);
        uint256 amount = market.claimable(account, address(0));
        if (amount == 0) return;
        vm.prank(account);
        market.withdraw(address(0));
        withdrawnBy[account] += amount;
    }

    function replay(uint256 seed) external {
        if (delivered.length == 0) return;
        try market.receiveMessage(delivered[seed % delivered.length]) {
            ++replaysAccepted;
        } catch (bytes memory reason) {
            if (bytes4(reason) != MessageReceiver.AlreadyConsumed.selector) ++replaysAccepted;
        }
    }

    /// Deliver two delivered VAAs again in one batch: each must come back CONSUMED (2).
    function replayBatch(uint256 seed) external {
        if (delivered.length == 0) return;
        bytes[] memory vaas = new bytes[](2);
        vaas[0] = delivered[seed % delivered.length];
        vaas[1] = delivered[(seed / 7) % delivered.length];
        uint8[] memory results = market.receiveMessages(vaas);
        for (uint256 i = 0; i < results.length; ++i) {
            if (results[i] != 2) ++replaysAccepted;
        }
    }

    function marketAddress() external view returns (JobMarket) {
        return market;
    }
}

contract JobMarketInvariants is Test {
    MarketHandler internal handler;
    JobMarket internal market;

    function setUp() public {
        handler = new MarketHandler();
        market = handler.marketAddress();
    }

    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    function invariant_escrowIsConserved() public view {
        (uint256 deposited, uint256 escrowed, uint256 claimable, uint256 withdrawn, uint256 refunded) =
            market.ledgers(address(0));
        assertEq(
            deposited,
            escrowed + claimable + withdrawn + refunded,
            "deposited = escrowed + claimable + withdrawn + refunded"
        );
        assertEq(address(market).balance, escrowed + claimable, "balance backs escrow and claims");
    }

    function invariant_noJobPaysMoreThanEscrowed() public view {
        for (uint256 i = 0; i < handler.jobCount(); ++i) {
            uint64 jobId = handler.jobIds(i);
            uint256 deposited = handler.deposited(jobId);
            uint256 spent = handler.paidOut(jobId) + handler.refunded(jobId);
            assertLe(spent, deposited, "paid out more than escrowed");
            assertEq(market.getJob(jobId).escrow, deposited - spent, "escrow left");
        }
    }

    function invariant_noWorkerDrawnBelowTheJobMinimum() public view {
        assertEq(handler.assignedBelowMinimum(), 0, "a worker below the minimum stake was assigned");
    }

    function invariant_honestProposalsAreAccepted() public view {
        assertEq(handler.honestProposalsRefused(), 0, "the market refused an honest proposal");
    }

    /// The handler's own path, once, deterministically: batched commitments make an honest
    /// proposal the market accepts (so the invariant above is not vacuous).
    function test_handler_batchedCommitmentsAreProposable() public {
        handler.post(1, 1 ether);
        handler.propose(0, 4, 3 << 8 | 1); // four workers, one batch of four
        handler.post(2, 1 ether);
        handler.propose(1, 3, 1 << 8 | 2); // three workers, batches of two and one
        assertEq(handler.proposals(), 2, "both proposed");
        assertEq(handler.honestProposalsRefused(), 0, "none refused");
        assertEq(handler.batchesDelivered(), 3, "three UPDATE_COMMITTED");
        assertEq(handler.multiEntryBatches(), 2, "two of them with several commitments");
        handler.replay(2);
        handler.replayBatch(5);
        assertEq(handler.replaysAccepted(), 0, "replays refused");
    }

    function invariant_onlyTheProposedResultsSettle() public view {
        assertEq(handler.tamperedSettled(), 0, "a round settled with results it was not proposed with");
    }

    function invariant_noDigestConsumedTwice() public view {
        assertEq(handler.replaysAccepted(), 0, "a VAA was accepted twice");
    }

    function invariant_invalidProposalsAreDisprovedAndValidOnesAreNot() public view {
        assertEq(handler.invalidProposalsChecked(), 0, "the checker passed an invalid proposal");
        assertEq(handler.invalidProposalsStanding(), 0, "an invalid proposal could not be disproved");
        assertEq(handler.validProposalsVoided(), 0, "a valid proposal was disproved");
    }

    /// A disproved proposal never settles or pays: the market credited exactly what the honest
    /// proposals that settled gave each account (ghost accounting), nothing for a voided one.
    function invariant_aDisprovedProposalNeverSettlesOrPays() public view {
        assertEq(handler.voidedSettled(), 0, "a voided proposal settled");
        (,, uint256 claimable, uint256 withdrawn,) = market.ledgers(address(0));
        assertEq(claimable + withdrawn, handler.totalPaidOut(), "credited only the settled proposals' totals");
        for (uint256 i = 0; i < 5; ++i) {
            address account = address(uint160(0x5000 + i));
            assertEq(
                market.claimable(account, address(0)) + handler.withdrawnBy(account),
                handler.credited(account),
                "an account credited other than its settled rewards"
            );
        }
    }

    /// The handler's disproof path, once per kind of rule broken: each invalid proposal is
    /// voided, the round proposed again honestly and settled; the voided results never settle.
    function test_handler_invalidProposalsAreDisproved() public {
        for (uint256 kind = 0; kind < 4; ++kind) {
            handler.post(1, 1 ether);
            handler.proposeInvalid(kind, 2 + kind % 3, kind, 7 + kind);
            handler.disprovePending(kind);
            handler.settleVoided(kind);
            handler.settle(kind);
            handler.settleVoided(kind);
        }
        assertEq(handler.disproofs(), 4, "four disproofs");
        assertEq(handler.proposals(), 4, "each round proposed again honestly");
        assertEq(handler.honestProposalsRefused(), 0, "none refused");
        invariant_invalidProposalsAreDisprovedAndValidOnesAreNot();
        invariant_aDisprovedProposalNeverSettlesOrPays();
        invariant_escrowIsConserved();
        for (uint256 i = 0; i < 4; ++i) {
            assertEq(market.getJob(handler.jobIds(i)).currentRound, 1, "round 0 settled");
        }
        assertTrue(handler.totalPaidOut() > 0, "paid something");
    }
}

/// Drives a WorkerHub through stake, unbond, withdraw, assignment, release, slashing settlements
/// in both slash modes, and claims of slashed funds.
contract HubHandler is HubFixture {
    uint256 public deposited;
    uint256 public withdrawn;
    uint256 public claimed;
    /// Slashes larger than the task's lock (the most the job's policy can take); must stay 0.
    uint256 public slashesAbovePolicy;
    /// Tasks created for a worker whose bonded stake was below the minimum or lock; must stay 0.
    uint256 public tasksBelowMinimum;
    /// `releaseSettled` calls that freed another number of locks than the settled tasks held;
    /// must stay 0.
    uint256 public releasesMiscounted;
    bytes32[] internal openTasks;
    /// Tasks settled without a slash, whose lock the hub still holds (until the slot's next task
    /// or `releaseSettled`).
    bytes32[] internal heldTasks;
    mapping(uint64 => uint32) internal nextRound;

    /// Each job round's commit log as the handler expects it: the chain over all its commitments
    /// and over the published ones (both from zero), and the commitments not yet published.
    struct LogGhost {
        uint64 jobId;
        uint32 round;
        bytes32 head;
        bytes32 publishedHead;
        PayloadCodec.Commitment[] pending;
    }

    LogGhost[] internal logs;
    mapping(bytes32 => uint256) internal logIndex; // 1 + index in `logs`
    /// Publications of exactly the pending commitments the hub refused, and publications of
    /// anything else it took (an entry left out, or one added); both must stay 0.
    uint256 public publicationsRefused;
    uint256 public wrongPublicationsAccepted;
    /// Commitments published (so the invariants above are not vacuous).
    uint256 public commitmentsPublished;

    /// Signed commitments `commitSigned` did not record as their worker's own commitment (or
    /// recorded one signed for another round); must stay 0.
    uint256 public signedMisrecorded;
    /// Signed commitments recorded (so the invariant above is not vacuous).
    uint256 public signedRecorded;
    uint256 internal constant KEY_BASE = 0xC0117;

    constructor() {
        setUpHub();
    }

    function hubAddress() external view returns (WorkerHub) {
        return hub;
    }

    /// The handler's workers have keys: they can sign their commitments.
    function worker(uint256 i) internal pure override returns (address) {
        return vm.addr(KEY_BASE + i);
    }

    function workerAt(uint256 i) external pure returns (address) {
        return worker(i);
    }

    function stake(uint256 who, uint256 amount) external {
        amount = bound(amount, 1, 5 ether);
        stakeAs(worker(who % 4), amount);
        deposited += amount;
    }

    function register(uint256 who) external {
        address w = worker(who % 4);
        WorkerHub.Staker memory s = hub.getStaker(w);
        if (s.registered || s.staked < MIN_STAKE) return;
        vm.prank(w);
        hub.register(toBytes32(w), 0);
    }

    function unbond(uint256 who, uint256 amount) external {
        address w = worker(who % 4);
        WorkerHub.Staker memory s = hub.getStaker(w);
        if (s.staked <= s.locked) return;
        vm.prank(w);
        hub.requestUnbond(bound(amount, 1, s.staked - s.locked));
    }

    function withdrawStake(uint256 who) external {
        address w = worker(who % 4);
        WorkerHub.Staker memory s = hub.getStaker(w);
        if (s.unbonding == 0) return;
        if (block.timestamp < s.unbondingReadyAt) vm.warp(s.unbondingReadyAt);
        uint256 before = w.balance;
        vm.prank(w);
        hub.withdrawStake();
        withdrawn += w.balance - before;
    }

    /// Deliver a TASK_ASSIGNED whatever the worker's stake: the hub decides. Three jobs each
    /// move on a round per assignment, so a worker's later rounds of a job meet its two task
    /// slots holding open, settled and released tasks of earlier rounds.
    function assignOne(uint256 who, uint256 job) external {
        uint64 jobId = uint64(job % 3) + 1;
        _assign(jobId, nextRound[jobId]++, worker(who % 4));
    }

    /// Give a worker the stake for two more tasks, assign it a round of a job and then the
    /// round two on, which falls in the same slot while the first is still open.
    function assignInTheSameSlot(uint256 who, uint256 job) external {
        address w = worker(who % 4);
        uint64 jobId = uint64(job % 3) + 1;
        WorkerHub.Staker memory s = hub.getStaker(w);
        uint256 topUp = 2 ether + s.locked > s.staked ? 2 ether + s.locked - s.staked : 0;
        if (!s.registered && s.staked + topUp < MIN_STAKE) topUp = MIN_STAKE - s.staked;
        if (topUp != 0) {
            stakeAs(w, topUp);
            deposited += topUp;
        }
        if (!s.registered) {
            vm.prank(w);
            hub.register(toBytes32(w), 0);
        }
        uint32 round = nextRound[jobId];
        nextRound[jobId] = round + 3;
        _assign(jobId, round, w);
        _assign(jobId, round + 2, w);
    }

    function _assign(uint64 jobId, uint32 round, address w) internal {
        WorkerHub.Staker memory before = hub.getStaker(w);
        deliverAssigned(jobId, round, one(w));
        if (hub.getTask(jobId, round, toBytes32(w)).state != WorkerHub.TaskState.Assigned) return;
        uint256 lock = uint256(TASK_LOCK) * 1e10;
        if (before.staked < uint256(TASK_MIN_STAKE) * 1e10 || before.staked - before.locked < lock) {
            ++tasksBelowMinimum;
        }
        openTasks.push(bytes32(uint256(jobId) << 192 | uint256(round) << 160 | uint160(w)));
        // A settled task of the same job and worker in the same slot passed its lock on.
        for (uint256 i = 0; i < heldTasks.length;) {
            (uint64 heldJob, uint32 heldRound, address heldWorker) = unpack(heldTasks[i]);
            if (heldJob == jobId && heldWorker == w && heldRound % 2 == round % 2) {
                heldTasks[i] = heldTasks[heldTasks.length - 1];
                heldTasks.pop();
            } else {
                ++i;
            }
        }
    }

    /// Anyone frees the locks a worker's settled tasks of a job still hold.
    function releaseSettled(uint256 who, uint256 job) external {
        address w = worker(who % 4);
        uint64 jobId = uint64(job % 3) + 1;
        uint256 expected = 0;
        for (uint256 i = 0; i < heldTasks.length;) {
            (uint64 heldJob,, address heldWorker) = unpack(heldTasks[i]);
            if (heldJob == jobId && heldWorker == w) {
                heldTasks[i] = heldTasks[heldTasks.length - 1];
                heldTasks.pop();
                ++expected;
            } else {
                ++i;
            }
        }
        if (hub.releaseSettled(jobId, one(w)) != expected) ++releasesMiscounted;
    }

    /// The locks of the tasks the handler created for `w` that should still hold one (open, or
    /// settled without a slash and not yet passed on or freed), and how many there are.
    function openLocksOf(address w) external view returns (uint256 locked, uint256 count) {
        for (uint256 i = 0; i < openTasks.length; ++i) {
            if (address(uint160(uint256(openTasks[i]))) != w) continue;
            locked += uint256(TASK_LOCK) * 1e10;
            ++count;
        }
        for (uint256 i = 0; i < heldTasks.length; ++i) {
            if (address(uint160(uint256(heldTasks[i]))) != w) continue;
            locked += uint256(TASK_LOCK) * 1e10;
            ++count;
        }
    }

    /// Whether every open task the handler created is still held by the hub as its round's
    /// task, and every settled one holding its lock reads settled.
    function openTasksHeld() external view returns (bool) {
        for (uint256 i = 0; i < openTasks.length; ++i) {
            (uint64 jobId, uint32 round, address w) = unpack(openTasks[i]);
            WorkerHub.TaskState state = hub.getTask(jobId, round, toBytes32(w)).state;
            if (state != WorkerHub.TaskState.Assigned && state != WorkerHub.TaskState.Committed) return false;
        }
        for (uint256 i = 0; i < heldTasks.length; ++i) {
            (uint64 jobId, uint32 round, address w) = unpack(heldTasks[i]);
            if (hub.getTask(jobId, round, toBytes32(w)).state != WorkerHub.TaskState.Settled) return false;
        }
        return true;
    }

    function unpack(bytes32 packed) internal pure returns (uint64 jobId, uint32 round, address w) {
        jobId = uint64(uint256(packed) >> 192);
        round = uint32(uint256(packed) >> 160);
        w = address(uint160(uint256(packed)));
    }

    function _log(uint64 jobId, uint32 round) internal returns (LogGhost storage g) {
        bytes32 key = keccak256(abi.encode(jobId, round));
        if (logIndex[key] == 0) {
            logs.push();
            logIndex[key] = logs.length;
            g = logs[logs.length - 1];
            (g.jobId, g.round) = (jobId, round);
        }
        return logs[logIndex[key] - 1];
    }

    /// An open task that can still commit (before its deadline, once), and its commitment.
    function _committable(uint256 which, uint32 numSamples, uint32 trainLoss)
        internal
        view
        returns (bool ok, uint64 jobId, uint32 round, PayloadCodec.Commitment memory c)
    {
        if (openTasks.length == 0) return (false, 0, 0, c);
        address w;
        (jobId, round, w) = unpack(openTasks[which % openTasks.length]);
        WorkerHub.Task memory task = hub.getTask(jobId, round, toBytes32(w));
        if (task.state != WorkerHub.TaskState.Assigned || block.timestamp > task.deadline) return (false, 0, 0, c);
        c = PayloadCodec.Commitment(
            toBytes32(w),
            keccak256(abi.encode("update", jobId, round, w)),
            keccak256(abi.encode("transcript", jobId, round, w)),
            keccak256(abi.encode("data", jobId, round, w)),
            numSamples,
            trainLoss
        );
        ok = true;
    }

    /// The handler's ghost log takes a recorded commitment.
    function _recorded(uint64 jobId, uint32 round, PayloadCodec.Commitment memory c) internal {
        LogGhost storage g = _log(jobId, round);
        bytes32 commitment =
            keccak256(abi.encodePacked(c.updateHash, c.transcriptRoot, c.dataRoot, c.numSamples, c.trainLoss));
        g.head = keccak256(abi.encode(g.head, c.workerKey, commitment));
        g.pending.push(c);
    }

    /// An open task's worker commits (before its deadline, once); the handler's ghost log follows.
    function commitOne(uint256 which, uint32 numSamples, uint32 trainLoss) external {
        (bool ok, uint64 jobId, uint32 round, PayloadCodec.Commitment memory c) =
            _committable(which, numSamples, trainLoss);
        if (!ok) return;
        vm.prank(address(uint160(uint256(c.workerKey))));
        try hub.commitUpdate(jobId, round, c.updateHash, c.transcriptRoot, c.dataRoot, numSamples, trainLoss) {
            _recorded(jobId, round, c);
        } catch {}
    }

    /// An open task's worker signs its commitment and anyone records it (`commitSigned`), in a
    /// batch that also holds the same commitment signed for the next round, which must record
    /// nothing here.
    function commitSignedOne(uint256 which, uint32 numSamples, uint32 trainLoss, address submitter) external {
        (bool ok, uint64 jobId, uint32 round, PayloadCodec.Commitment memory c) =
            _committable(which, numSamples, trainLoss);
        if (!ok) return;
        WorkerHub.SignedCommitment[] memory batch = new WorkerHub.SignedCommitment[](2);
        batch[0] = _signed(c, jobId, round + 1);
        batch[1] = _signed(c, jobId, round);
        vm.prank(submitter);
        uint256 recorded = hub.commitSigned(jobId, round, batch);
        if (recorded != 1 || hub.getTask(jobId, round, c.workerKey).state != WorkerHub.TaskState.Committed) {
            ++signedMisrecorded;
        }
        if (recorded != 0) _recorded(jobId, round, c);
        signedRecorded += recorded;
    }

    /// The same, recorded and published in one call (`commitSignedAndPublish`) with the log's
    /// pending commitments: the log's published head moves to its new head.
    function commitSignedAndPublishOne(uint256 which, uint32 numSamples, uint32 trainLoss, address submitter) external {
        (bool ok, uint64 jobId, uint32 round, PayloadCodec.Commitment memory c) =
            _committable(which, numSamples, trainLoss);
        if (!ok) return;
        LogGhost storage g = _log(jobId, round);
        PayloadCodec.Commitment[] memory pending = g.pending;
        if (pending.length + 2 > PayloadCodec.MAX_BATCH) return;
        WorkerHub.SignedCommitment[] memory batch = new WorkerHub.SignedCommitment[](2);
        batch[0] = _signed(c, jobId, round + 1);
        batch[1] = _signed(c, jobId, round);
        vm.prank(submitter);
        try hub.commitSignedAndPublish(jobId, round, pending, batch) returns (uint256 recorded, uint64) {
            if (recorded != 1 || hub.getTask(jobId, round, c.workerKey).state != WorkerHub.TaskState.Committed) {
                ++signedMisrecorded;
            }
            if (recorded != 0) _recorded(jobId, round, c);
            signedRecorded += recorded;
            commitmentsPublished += g.pending.length;
            g.publishedHead = g.head;
            delete g.pending;
        } catch {
            ++signedMisrecorded; // the task was committable: the call had something to publish
        }
    }

    function _signed(PayloadCodec.Commitment memory c, uint64 jobId, uint32 round)
        internal
        view
        returns (WorkerHub.SignedCommitment memory)
    {
        uint256 key = 0;
        for (uint256 i = 0; i < 4; ++i) {
            if (toBytes32(worker(i)) == c.workerKey) key = KEY_BASE + i;
        }
        bytes32 commitment =
            PayloadCodec.commitmentHash(c.updateHash, c.transcriptRoot, c.dataRoot, c.numSamples, c.trainLoss);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, hub.commitmentDigest(jobId, round, commitment));
        return WorkerHub.SignedCommitment(
            c.updateHash,
            c.transcriptRoot,
            c.dataRoot,
            c.numSamples,
            c.trainLoss,
            r,
            s | bytes32(uint256(v - 27) << 255)
        );
    }

    /// Anyone publishes a log's pending commitments; first, the same with one left out or one
    /// added, which the hub must refuse.
    function publish(uint256 which, bool tamper) external {
        if (logs.length == 0) return;
        LogGhost storage g = logs[which % logs.length];
        PayloadCodec.Commitment[] memory entries = g.pending;
        if (tamper && entries.length != 0) {
            PayloadCodec.Commitment[] memory wrong = new PayloadCodec.Commitment[](entries.length - 1);
            for (uint256 i = 1; i < entries.length; ++i) {
                wrong[i - 1] = entries[i];
            }
            try hub.publishCommitments(g.jobId, g.round, wrong) {
                ++wrongPublicationsAccepted;
            } catch {}
            PayloadCodec.Commitment[] memory extra = new PayloadCodec.Commitment[](entries.length + 1);
            for (uint256 i = 0; i < entries.length; ++i) {
                extra[i] = entries[i];
            }
            extra[entries.length] = entries[0];
            try hub.publishCommitments(g.jobId, g.round, extra) {
                ++wrongPublicationsAccepted;
            } catch {}
        }
        try hub.publishCommitments(g.jobId, g.round, entries) {
            if (entries.length == 0) ++wrongPublicationsAccepted;
            commitmentsPublished += entries.length;
            g.publishedHead = g.head;
            delete g.pending;
        } catch (bytes memory reason) {
            if (entries.length != 0 || bytes4(reason) != WorkerHub.NothingToPublish.selector) ++publicationsRefused;
        }
    }

    /// Whether every job round's log on the hub is the handler's: the same head and published head.
    function logsAsExpected() external view returns (bool) {
        for (uint256 i = 0; i < logs.length; ++i) {
            WorkerHub.CommitLog memory log = hub.getCommitLog(logs[i].jobId, logs[i].round);
            if (log.head != logs[i].head || log.publishedHead != logs[i].publishedHead) return false;
        }
        return true;
    }

    function settleOne(uint256 which, uint8 outcome, uint64 slash, bool toHonest) external {
        if (openTasks.length == 0) return;
        uint256 at = which % openTasks.length;
        bytes32 packed = openTasks[at];
        openTasks[at] = openTasks[openTasks.length - 1];
        openTasks.pop();
        (uint64 jobId, uint32 round, address w) = unpack(packed);
        outcome = outcome % 3;
        slash = outcome == 2 ? uint64(bound(slash, 0, 8e8)) : 0;
        uint256 before = hub.getStaker(w).staked;
        PayloadCodec.Settlement[] memory entries = new PayloadCodec.Settlement[](1);
        entries[0] = PayloadCodec.Settlement(toBytes32(w), outcome, slash);
        hub.receiveMessage(signedFromMarket(settledBatch(jobId, round, toHonest ? 1 : 0, entries)));
        if (before - hub.getStaker(w).staked > uint256(TASK_LOCK) * 1e10) ++slashesAbovePolicy;
        if (outcome != PayloadCodec.OUTCOME_SLASHED) heldTasks.push(packed); // its round's one task
    }

    function release(uint256 which) external {
        if (openTasks.length == 0) return;
        uint256 at = which % openTasks.length;
        (uint64 jobId, uint32 round, address w) = unpack(openTasks[at]);
        WorkerHub.Task memory task = hub.getTask(jobId, round, toBytes32(w));
        if (block.timestamp <= task.releaseAt) vm.warp(task.releaseAt + 1);
        vm.prank(w);
        hub.releaseExpiredTask(jobId, round);
        openTasks[at] = openTasks[openTasks.length - 1];
        openTasks.pop();
    }

    function claim(uint256 who) external {
        address account = who % 5 == 4 ? address(uint160(uint256(POSTER))) : worker(who % 4);
        uint256 amount = hub.claimable(account);
        if (amount == 0) return;
        vm.prank(account);
        hub.claim();
        claimed += amount;
    }
}

contract WorkerHubInvariants is Test {
    HubHandler internal handler;
    WorkerHub internal hub;

    function setUp() public {
        handler = new HubHandler();
        hub = handler.hubAddress();
    }

    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    function invariant_stakeAccountingHoldsUnderSlashing() public view {
        uint256 staked = 0;
        uint256 unbonding = 0;
        for (uint256 i = 0; i < 4; ++i) {
            WorkerHub.Staker memory s = hub.getStaker(handler.workerAt(i));
            staked += s.staked;
            unbonding += s.unbonding;
            assertLe(s.locked, s.staked, "locked stake stays bonded");
            (uint256 openLocks, uint256 open) = handler.openLocksOf(handler.workerAt(i));
            assertEq(s.locked, openLocks, "a worker's lock is its open tasks' locks, none lost to a reused slot");
            assertEq(s.activeTasks, open, "open tasks counted");
        }
        assertEq(staked, hub.totalStaked(), "sum of stakes");
        assertEq(unbonding, hub.totalUnbonding(), "sum of unbonding");
        uint256 held = hub.totalStaked() + hub.totalUnbonding() + hub.totalClaimable() + hub.feeReserve();
        assertEq(address(hub).balance, held, "balance");
        assertEq(
            handler.deposited(),
            hub.totalStaked() + hub.totalUnbonding() + hub.totalClaimable() + handler.withdrawn() + handler.claimed(),
            "every wei staked is bonded, unbonding, claimable (slashed), withdrawn or claimed"
        );
    }

    function invariant_noTaskBelowTheJobMinimum() public view {
        assertEq(handler.tasksBelowMinimum(), 0, "a task was created without the stake it needs");
    }

    function invariant_noOpenTaskLosesItsSlot() public view {
        assertTrue(handler.openTasksHeld(), "a later round took the slot of an open task");
        assertEq(handler.releasesMiscounted(), 0, "releaseSettled freed another number of locks");
    }

    function invariant_commitLogsChainEveryCommitmentOnce() public view {
        assertTrue(handler.logsAsExpected(), "a commit log differs from its commitments");
        assertEq(handler.publicationsRefused(), 0, "the pending commitments could not be published");
        assertEq(handler.wrongPublicationsAccepted(), 0, "a publication other than the pending ones went out");
        assertEq(handler.signedMisrecorded(), 0, "a signed commitment was not recorded as its worker's");
    }

    /// The handler's commit path, once, deterministically: commitments are published (a
    /// tampered publication refused first) and the logs follow.
    function test_handler_commitmentsArePublished() public {
        for (uint256 i = 0; i < 3; ++i) {
            handler.stake(i, 2 ether);
            handler.register(i);
        }
        handler.assignOne(0, 0);
        handler.assignOne(1, 0); // job 1 round 1: another log
        handler.assignOne(2, 3); // job 1 round 2
        handler.commitOne(0, 10, 20);
        handler.commitOne(1, 11, 21);
        handler.commitSignedOne(2, 12, 22, address(0xA11CE));
        assertEq(handler.signedRecorded(), 1, "a signed commitment recorded");
        handler.publish(0, true);
        handler.publish(1, false);
        handler.publish(1, false); // nothing pending any more
        assertEq(handler.commitmentsPublished(), 2, "two logs published");
        invariant_commitLogsChainEveryCommitmentOnce();
    }

    function invariant_noSlashExceedsItsPolicy() public view {
        assertEq(handler.slashesAbovePolicy(), 0, "a slash took more than the task's lock");
    }
}

/// Drives a JobMarket whose rewards go to a RewardDistributor: the market's own actions, plus
/// honest and greedy roots, vetoes and claims. Five payout accounts earn, as in MarketHandler.
contract DistributorHandler is MarketHandler, DistributorTrees {
    uint256 internal constant ACCOUNTS = 5;
    RewardDistributor public distributor;
    /// What each payout account earned in settled rounds (the honest cumulative).
    mapping(address => uint256) public earned;
    /// The largest cumulative any proposed root gave each account.
    mapping(address => uint256) public mostProposed;
    /// The last proposed tree, and whether it was vetoed.
    bytes32[] internal proposedLeaves;
    uint256[] internal proposedAmounts;
    bool internal proposedVetoed;
    /// Claims paid under a root that was vetoed.
    uint256 public paidUnderVetoed;
    uint256 public rootsProposed;
    uint256 public claimsPaid;

    constructor() {
        distributor =
            new RewardDistributor(IRewardSource(address(market)), address(this), aggregator, challenger, 1 hours);
        market.setRewardsAccount(address(distributor));
    }

    function settle(uint256 seed) external override {
        (bool found, uint64 jobId, uint32 round, JobMarket.Round memory r) = _settleable(seed);
        if (!found) return;
        JobMarket.Result[] memory results = proposed(jobId, round);
        settle(jobId, round);
        paidOut[jobId] += r.proposedTotal;
        for (uint256 i = 0; i < results.length; ++i) {
            uint256 index = uint256(results[i].workerKey) - 0x1000;
            earned[payoutOf(index % ACCOUNTS)] += results[i].reward;
        }
    }

    /// Propose a root: honest (the earned amounts) or greedy (raised by `extra` for one account).
    function proposeRoot(bool greedy, uint256 who, uint256 extra) external {
        address[] memory accounts = new address[](ACCOUNTS);
        uint256[] memory cumulative = new uint256[](ACCOUNTS);
        for (uint256 i = 0; i < ACCOUNTS; ++i) {
            accounts[i] = payoutOf(i);
            cumulative[i] = earned[accounts[i]];
        }
        if (greedy) cumulative[who % ACCOUNTS] += bound(extra, 1, 100 ether);
        bytes32[] memory leaves = leavesOf(distributor, accounts, address(0), cumulative);
        vm.prank(aggregator, aggregator);
        distributor.proposeRoot(rootOf(leaves), uint64(ACCOUNTS), bytes32(0));
        for (uint256 i = 0; i < ACCOUNTS; ++i) {
            if (cumulative[i] > mostProposed[accounts[i]]) mostProposed[accounts[i]] = cumulative[i];
        }
        proposedLeaves = leaves;
        proposedAmounts = cumulative;
        proposedVetoed = false;
        ++rootsProposed;
    }

    function veto() external {
        RewardDistributor.Root memory pending = distributor.pendingRoot();
        if (pending.epoch == 0) return;
        vm.prank(challenger);
        distributor.vetoRoot(bytes32(0));
        proposedVetoed = true;
    }

    function wait(uint256 by) external {
        vm.warp(block.timestamp + bound(by, 0, 2 hours));
    }

    /// Claim with the last proposed tree (live, pending or vetoed).
    function claim(uint256 who) external {
        if (proposedLeaves.length == 0) return;
        uint256 i = who % ACCOUNTS;
        bytes32 liveBefore = distributor.liveRoot().root;
        bool vetoed = proposedVetoed && rootOf(proposedLeaves) != liveBefore;
        try distributor.claim(claimOf(proposedLeaves, payoutOf(i), address(0), proposedAmounts[i], i)) {
            ++claimsPaid;
            if (vetoed) ++paidUnderVetoed;
        } catch {}
    }

    function pull() external {
        distributor.pull(address(0));
    }
}

contract RewardDistributorInvariants is Test {
    DistributorHandler internal handler;
    RewardDistributor internal distributor;
    JobMarket internal market;

    function setUp() public {
        handler = new DistributorHandler();
        distributor = handler.distributor();
        market = handler.marketAddress();
    }

    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    function invariant_paysNoMoreThanTheMarketCredited() public view {
        uint256 received = distributor.received(address(0));
        uint256 paid = distributor.paid(address(0));
        assertLe(paid, received, "paid more than received");
        assertEq(address(distributor).balance, received - paid, "balance backs what is unpaid");
        (,,, uint256 withdrawn,) = market.ledgers(address(0));
        assertEq(received, withdrawn, "everything withdrawn from the market went to the distributor");
    }

    function invariant_marketEscrowIsConserved() public view {
        (uint256 deposited, uint256 escrowed, uint256 claimable, uint256 withdrawn, uint256 refunded) =
            market.ledgers(address(0));
        assertEq(deposited, escrowed + claimable + withdrawn + refunded, "conservation");
        assertEq(address(market).balance, escrowed + claimable, "balance backs escrow and claims");
    }

    function invariant_noAccountPaidBeyondAnyRoot_andClaimedSumsToPaid() public view {
        uint256 sum = 0;
        for (uint256 i = 0; i < 5; ++i) {
            address account = address(uint160(0x5000 + i));
            uint256 claimed = distributor.claimed(account, address(0));
            assertLe(claimed, handler.mostProposed(account), "claimed beyond every root");
            assertEq(account.balance, claimed, "paid exactly what is recorded");
            sum += claimed;
        }
        assertEq(sum, distributor.paid(address(0)), "no double payment");
    }

    function invariant_aVetoedRootNeverPays() public view {
        assertEq(handler.paidUnderVetoed(), 0, "paid under a vetoed root");
    }

    /// The handler's paths once: a round settled, an honest root live, a claim paid; a greedy
    /// root vetoed pays nothing.
    function test_handler_paysUnderAnHonestRoot() public {
        handler.post(1, 1 ether);
        handler.propose(0, 4, 3 << 8 | 1);
        handler.settle(0);
        handler.proposeRoot(false, 0, 0);
        handler.wait(2 hours);
        for (uint256 i = 0; i < 5; ++i) {
            handler.claim(i);
        }
        assertEq(distributor.paid(address(0)), handler.paidOut(1), "the round's rewards");
        handler.proposeRoot(true, 1, 5 ether);
        handler.veto();
        handler.wait(2 hours);
        handler.claim(1);
        assertEq(handler.paidUnderVetoed(), 0, "the vetoed root paid nothing");
    }
}
