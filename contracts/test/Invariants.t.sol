// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {JobMarket} from "../src/JobMarket.sol";
import {WorkerHub} from "../src/WorkerHub.sol";
import {MessageReceiver} from "../src/base/MessageReceiver.sol";
import {PayloadCodec} from "../src/libraries/PayloadCodec.sol";
import {HubFixture} from "./utils/HubFixture.sol";
import {MarketFixture} from "./utils/MarketFixture.sol";
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
    uint256 internal nextWorker;
    mapping(uint256 => uint64) internal stakeNonces;

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
        uint256 from = nextWorker;
        nextWorker += workers;
        for (uint256 i = from; i < from + workers; ++i) {
            bytes memory vaa = signed(EVM_WORKERS, HUB, registeredPayload(workerKey(i), MIN_STAKE, payoutOf(i % 5)));
            market.receiveMessage(vaa);
            delivered.push(vaa);
        }
        assign(jobId, EVM_WORKERS, from, workers);
        // The workers commit in an order of their own; the fixture records each lane's commitments
        // in arrival order, as finalize needs them.
        uint256 shift = rewardSeed % workers;
        for (uint256 k = 0; k < workers; ++k) {
            uint256 i = from + (k + shift) % workers;
            delivered.push(commit(jobId, job.currentRound, EVM_WORKERS, workerKey(i)));
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

    function _propose(uint64 jobId, uint32 round, JobMarket.Result[] memory results) internal {
        if (tryFinalize(jobId, round, results)) ++proposals;
        else ++honestProposalsRefused;
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
        vm.prank(aggregator);
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

    function settle(uint256 seed) external {
        (bool found, uint64 jobId, uint32 round, JobMarket.Round memory r) = _settleable(seed);
        if (!found) return;
        settle(jobId, round);
        paidOut[jobId] += r.proposedTotal;
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
        if (market.claimable(account, address(0)) == 0) return;
        vm.prank(account);
        market.withdraw(address(0));
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

    function invariant_onlyTheProposedResultsSettle() public view {
        assertEq(handler.tamperedSettled(), 0, "a round settled with results it was not proposed with");
    }

    function invariant_noDigestConsumedTwice() public view {
        assertEq(handler.replaysAccepted(), 0, "a VAA was accepted twice");
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
    bytes32[] internal openTasks;
    uint64 internal nextJob = 1;

    constructor() {
        setUpHub();
    }

    function hubAddress() external view returns (WorkerHub) {
        return hub;
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

    /// Deliver a TASK_ASSIGNED whatever the worker's stake: the hub decides.
    function assignOne(uint256 who) external {
        address w = worker(who % 4);
        uint64 jobId = nextJob++;
        WorkerHub.Staker memory before = hub.getStaker(w);
        deliverAssigned(jobId, 0, one(w));
        bytes32 taskId = hub.taskIdOf(jobId, 0, toBytes32(w));
        if (hub.getTask(taskId).state != WorkerHub.TaskState.Assigned) return;
        uint256 lock = uint256(TASK_LOCK) * 1e10;
        if (before.staked < uint256(TASK_MIN_STAKE) * 1e10 || before.staked - before.locked < lock) {
            ++tasksBelowMinimum;
        }
        openTasks.push(bytes32(uint256(jobId) << 160 | uint160(w)));
    }

    function settleOne(uint256 which, uint8 outcome, uint64 slash, bool toHonest) external {
        if (openTasks.length == 0) return;
        uint256 at = which % openTasks.length;
        bytes32 packed = openTasks[at];
        openTasks[at] = openTasks[openTasks.length - 1];
        openTasks.pop();
        uint64 jobId = uint64(uint256(packed) >> 160);
        address w = address(uint160(uint256(packed)));
        outcome = outcome % 3;
        slash = outcome == 2 ? uint64(bound(slash, 0, 8e8)) : 0;
        uint256 before = hub.getStaker(w).staked;
        PayloadCodec.Settlement[] memory entries = new PayloadCodec.Settlement[](1);
        entries[0] = PayloadCodec.Settlement(toBytes32(w), outcome, slash);
        hub.receiveMessage(signedFromMarket(settledBatch(jobId, 0, toHonest ? 1 : 0, entries)));
        if (before - hub.getStaker(w).staked > uint256(TASK_LOCK) * 1e10) ++slashesAbovePolicy;
    }

    function release(uint256 which) external {
        if (openTasks.length == 0) return;
        uint256 at = which % openTasks.length;
        bytes32 packed = openTasks[at];
        address w = address(uint160(uint256(packed)));
        uint64 jobId = uint64(uint256(packed) >> 160);
        WorkerHub.Task memory task = hub.getTask(hub.taskIdOf(jobId, 0, toBytes32(w)));
        if (block.timestamp <= task.releaseAt) vm.warp(task.releaseAt + 1);
        vm.prank(w);
        hub.releaseExpiredTask(jobId, 0);
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
            WorkerHub.Staker memory s = hub.getStaker(address(uint160(0x7000 + i)));
            staked += s.staked;
            unbonding += s.unbonding;
            assertLe(s.locked, s.staked, "locked stake stays bonded");
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

    function invariant_noSlashExceedsItsPolicy() public view {
        assertEq(handler.slashesAbovePolicy(), 0, "a slash took more than the task's lock");
    }
}
