// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {JobMarket} from "../../src/JobMarket.sol";
import {ProposalChecker} from "../../src/ProposalChecker.sol";
import {MerkleTree} from "../../src/libraries/MerkleTree.sol";
import {PayloadCodec} from "../../src/libraries/PayloadCodec.sol";
import {IMessageCore} from "../../src/interfaces/IMessageCore.sol";
import {CoreFixture} from "./CoreFixture.sol";
import {MerkleProofs} from "./MerkleProofs.sol";

/// @notice A JobMarket on coordinator chain 2 with peers on EVM chain 4 and Solana (chain 1).
abstract contract MarketFixture is CoreFixture {
    uint16 internal constant COORDINATOR = 2;
    uint16 internal constant EVM_WORKERS = 4;
    uint16 internal constant SOLANA = 1;
    uint64 internal constant WINDOW = 1 hours;
    uint64 internal constant MIN_STAKE = 100;
    bytes32 internal constant HUB = bytes32(uint256(0x4B0B));
    bytes32 internal constant SOLANA_PROGRAM = keccak256("solana worker program");
    bytes32 internal constant MODEL = keccak256("model 0");
    bytes32 internal constant CONFIG = keccak256("config");
    uint64 internal constant REJECTED_SLASH = 60;
    uint64 internal constant MISSED_SLASH = 25;
    uint64 internal constant RELEASE_AFTER = 1 days;
    uint64 internal constant PROGRESS_TIMEOUT = 3 days;
    bytes32 internal constant EVIDENCE = keccak256("evidence blob");

    address internal poster = address(0x9057E4);
    address internal aggregator = address(0xA66);
    address internal challenger = address(0xC4A1);

    JobMarket internal market;
    /// The market's proposal checker (`market.proposalChecker()`, read once so that no call is
    /// spent on it between an expectRevert and the call it is for).
    ProposalChecker internal checker;
    uint64 internal nextSequence = 1;

    function setUpMarket() internal {
        vm.warp(1_800_000_000);
        deployCore(COORDINATOR);
        market = new JobMarket(core, IMessageCore(address(0)), 202, address(this), aggregator, challenger, WINDOW);
        checker = market.proposalChecker();
        market.setPeer(EVM_WORKERS, HUB);
        market.setPeer(SOLANA, SOLANA_PROGRAM);
        market.setMaxBatch(EVM_WORKERS, 32);
        market.setMaxBatch(SOLANA, 4);
        vm.deal(poster, 1_000 ether);
    }

    function signed(uint16 chain, bytes32 emitter, bytes memory payload) internal returns (bytes memory) {
        return signVaa(0, 0, firstIndices(3), vaaBody(chain, emitter, nextSequence++, payload));
    }

    function peerOf(uint16 chain) internal pure returns (bytes32) {
        return chain == SOLANA ? SOLANA_PROGRAM : HUB;
    }

    function workerKey(uint256 i) internal pure returns (bytes32) {
        return bytes32(uint256(0x1000 + i));
    }

    function payoutOf(uint256 i) internal pure returns (address) {
        return address(uint160(0x5000 + i));
    }

    function registeredPayload(bytes32 key, uint64 stake, address payout) internal view returns (bytes memory) {
        return PayloadCodec.encode(
            PayloadCodec.WorkerRegistered(
                PayloadCodec.Header(1, COORDINATOR, toBytes32(address(market)), 0), key, stake, toBytes32(payout), 3
            )
        );
    }

    function stakeChangedPayload(bytes32 key, uint64 stake, uint64 nonce, uint8 reason)
        internal
        view
        returns (bytes memory)
    {
        return stakeChangedPayload(key, stake, nonce, reason, bytes32(0));
    }

    function stakeChangedPayload(bytes32 key, uint64 stake, uint64 nonce, uint8 reason, bytes32 taskId)
        internal
        view
        returns (bytes memory)
    {
        return PayloadCodec.encode(
            PayloadCodec.StakeChanged(
                PayloadCodec.Header(5, COORDINATOR, toBytes32(address(market)), 0), key, stake, nonce, reason, taskId
            )
        );
    }

    function changeStake(uint16 chain, bytes32 key, uint64 stake, uint64 nonce, uint8 reason) internal {
        market.receiveMessage(signed(chain, peerOf(chain), stakeChangedPayload(key, stake, nonce, reason)));
    }

    function registerWorker(uint16 chain, bytes32 key, uint64 stake, address payout) internal {
        market.receiveMessage(signed(chain, peerOf(chain), registeredPayload(key, stake, payout)));
    }

    /// The UPDATE_COMMITTED fields `committedPayload` gives `key` in `round`.
    function updateOf(bytes32 key, uint32 round) internal pure returns (bytes32) {
        return keccak256(abi.encode("update", key, round));
    }

    function transcriptOf(bytes32 key, uint32 round) internal pure returns (bytes32) {
        return keccak256(abi.encode("transcript", key, round));
    }

    function dataOf(bytes32 key, uint32 round) internal pure returns (bytes32) {
        return keccak256(abi.encode("data", key, round));
    }

    uint32 internal constant NUM_SAMPLES = 1000;
    uint32 internal constant TRAIN_LOSS = 250_000;

    /// The UPDATE_COMMITTED entry the fixture gives `key` in `round`.
    function commitmentOf(bytes32 key, uint32 round) internal pure returns (PayloadCodec.Commitment memory) {
        return PayloadCodec.Commitment(
            key, updateOf(key, round), transcriptOf(key, round), dataOf(key, round), NUM_SAMPLES, TRAIN_LOSS
        );
    }

    /// An UPDATE_COMMITTED carrying `entries`, in that order.
    function committedPayload(uint64 jobId, uint32 round, PayloadCodec.Commitment[] memory entries)
        internal
        view
        returns (bytes memory)
    {
        return PayloadCodec.encode(
            PayloadCodec.UpdateCommitted(
                PayloadCodec.Header(3, COORDINATOR, toBytes32(address(market)), jobId), round, entries
            )
        );
    }

    /// An UPDATE_COMMITTED carrying `keys`' commitments (`commitmentOf`), in that order.
    function committedPayload(uint64 jobId, uint32 round, bytes32[] memory keys) internal view returns (bytes memory) {
        PayloadCodec.Commitment[] memory entries = new PayloadCodec.Commitment[](keys.length);
        for (uint256 i = 0; i < keys.length; ++i) {
            entries[i] = commitmentOf(keys[i], round);
        }
        return committedPayload(jobId, round, entries);
    }

    /// An UPDATE_COMMITTED carrying `key`'s commitment alone.
    function committedPayload(uint64 jobId, uint32 round, bytes32 key) internal view returns (bytes memory) {
        bytes32[] memory keys = new bytes32[](1);
        keys[0] = key;
        return committedPayload(jobId, round, keys);
    }

    /// Worker keys [from, from+count).
    function keysOf(uint256 from, uint256 count) internal pure returns (bytes32[] memory keys) {
        keys = new bytes32[](count);
        for (uint256 i = 0; i < count; ++i) {
            keys[i] = workerKey(from + i);
        }
    }

    /// The hash a lane chains for an entry: PayloadCodec.commitmentHash of its fields.
    function hashOf(PayloadCodec.Commitment memory c) internal pure returns (bytes32) {
        return PayloadCodec.commitmentHash(c.updateHash, c.transcriptRoot, c.dataRoot, c.numSamples, c.trainLoss);
    }

    /// The commitment the market chains for `committedPayload(_, round, key)`: keccak256 of its
    /// packed fields (update_hash .. train_loss, 104 bytes), as PayloadCodec.commitmentHash.
    function commitmentFor(bytes32 key, uint32 round) internal pure returns (bytes32) {
        return keccak256(
            abi.encodePacked(
                updateOf(key, round), transcriptOf(key, round), dataOf(key, round), NUM_SAMPLES, TRAIN_LOSS
            )
        );
    }

    /// Where JobMarket's lane hash chains start.
    bytes32 internal constant CHAIN_START = bytes32(uint256(1));

    /// A lane's `assignedChain` after assigning workers [from, from+count) in that order.
    function assignedChainOf(uint256 from, uint256 count) internal pure returns (bytes32 chain) {
        chain = CHAIN_START;
        for (uint256 i = from; i < from + count; ++i) {
            chain = keccak256(abi.encode(chain, workerKey(i)));
        }
    }

    /// A lane's `commitChain` after `commits` arrived in that order.
    function commitChainOf(JobMarket.Commit[] memory commits) internal pure returns (bytes32 chain) {
        chain = CHAIN_START;
        for (uint256 i = 0; i < commits.length; ++i) {
            chain = keccak256(abi.encode(chain, commits[i].workerKey, commits[i].commitment));
        }
    }

    /// A commit chain from `start` extended by `entries` in order (a hub log starts from zero,
    /// a market lane from CHAIN_START).
    function chainOf(bytes32 start, PayloadCodec.Commitment[] memory entries) internal pure returns (bytes32 chain) {
        chain = start;
        for (uint256 i = 0; i < entries.length; ++i) {
            chain = PayloadCodec.chainCommitment(chain, entries[i].workerKey, hashOf(entries[i]));
        }
    }

    /// Each lane's commitments (job, round, worker chain) as the market took them, in arrival order.
    mapping(uint64 => mapping(uint32 => mapping(uint16 => JobMarket.Commit[]))) private _laneCommits;

    /// Deliver `key`'s UPDATE_COMMITTED and record it in its lane; returns the VAA delivered.
    /// (Deliver the VAA yourself where the delivery is expected to revert: this records it.)
    function commit(uint64 jobId, uint32 round, uint16 chain, bytes32 key) internal returns (bytes memory vaa) {
        vaa = signed(chain, peerOf(chain), committedPayload(jobId, round, key));
        market.receiveMessage(vaa);
        _laneCommits[jobId][round][chain].push(JobMarket.Commit(key, commitmentFor(key, round)));
    }

    /// Deliver one UPDATE_COMMITTED carrying `keys`' commitments and record them in their lane.
    function commitBatch(uint64 jobId, uint32 round, uint16 chain, bytes32[] memory keys)
        internal
        returns (bytes memory vaa)
    {
        vaa = signed(chain, peerOf(chain), committedPayload(jobId, round, keys));
        market.receiveMessage(vaa);
        for (uint256 i = 0; i < keys.length; ++i) {
            _laneCommits[jobId][round][chain].push(JobMarket.Commit(keys[i], commitmentFor(keys[i], round)));
        }
    }

    /// Record commitments delivered by the test itself (in arrival order) in their lane.
    function recordCommits(uint64 jobId, uint32 round, uint16 chain, PayloadCodec.Commitment[] memory entries)
        internal
    {
        for (uint256 i = 0; i < entries.length; ++i) {
            _laneCommits[jobId][round][chain].push(JobMarket.Commit(entries[i].workerKey, hashOf(entries[i])));
        }
    }

    /// The lane's commitments in arrival order, as `commit` recorded them.
    function laneCommits(uint64 jobId, uint32 round, uint16 chain) internal view returns (JobMarket.Commit[] memory) {
        return _laneCommits[jobId][round][chain];
    }

    function spec(uint32 rounds, uint16 perRound, uint256 reward) internal view returns (JobMarket.JobSpec memory s) {
        s.modelHash = MODEL;
        s.configHash = CONFIG;
        s.numRounds = rounds;
        s.workersPerRound = perRound;
        s.rewardPerRound = reward;
        s.minStake = MIN_STAKE;
        s.workerChains = new uint16[](2);
        s.workerChains[0] = EVM_WORKERS;
        s.workerChains[1] = SOLANA;
        s.rejectedSlash = REJECTED_SLASH;
        s.missedSlash = MISSED_SLASH;
        s.slashMode = 0;
        s.slashRecipients = new bytes32[](2);
        s.slashRecipients[0] = bytes32(uint256(uint160(poster)));
        s.slashRecipients[1] = keccak256("poster on solana");
        s.releaseAfter = RELEASE_AFTER;
        s.progressTimeout = PROGRESS_TIMEOUT;
    }

    function postNative(uint32 rounds, uint16 perRound, uint256 reward) internal returns (uint64 jobId) {
        vm.prank(poster);
        jobId = market.postJob{value: reward * rounds}(spec(rounds, perRound, reward));
    }

    function assignments(uint256 from, uint256 count) internal pure returns (PayloadCodec.Assignment[] memory a) {
        a = new PayloadCodec.Assignment[](count);
        for (uint256 i = 0; i < count; ++i) {
            a[i] = PayloadCodec.Assignment(workerKey(from + i), uint32(i));
        }
    }

    function assign(uint64 jobId, uint16 chain, uint256 from, uint256 count) internal returns (uint64) {
        vm.prank(aggregator, aggregator);
        return market.assignTasks(jobId, chain, uint64(block.timestamp + 1 days), assignments(from, count));
    }

    /// Register workers [from, from+count) on `chain`, assign them, and commit all their updates.
    function prepareRound(uint64 jobId, uint32 round, uint16 chain, uint256 from, uint256 count) internal {
        for (uint256 i = from; i < from + count; ++i) {
            registerWorker(chain, workerKey(i), MIN_STAKE, payoutOf(i));
        }
        assign(jobId, chain, from, count);
        for (uint256 i = from; i < from + count; ++i) {
            commit(jobId, round, chain, workerKey(i));
        }
    }

    function acceptedResults(uint16 chain, uint256 from, uint256 count, uint256 reward)
        internal
        pure
        returns (JobMarket.Result[] memory r)
    {
        r = new JobMarket.Result[](count);
        for (uint256 i = 0; i < count; ++i) {
            r[i] = JobMarket.Result(workerKey(from + i), chain, 0, 0, uint128(reward), bytes32(0));
        }
    }

    /// The results of each round's last `finalize`, as proposed (lane by lane).
    mapping(uint64 => mapping(uint32 => JobMarket.Result[])) private _proposed;

    /// task_id as JobMarket.taskIdOf computes it (here, so no call is spent before an expectRevert).
    function taskOf(uint64 jobId, uint32 round, uint16 chain, bytes32 key) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(jobId, round, chain, key));
    }

    /// Where a worker chain's lane comes in a proposal: the order of the job's worker chains as
    /// `spec` sets them (EVM_WORKERS, then SOLANA), any other chain after them.
    function laneRank(uint16 chain) internal pure returns (uint256) {
        if (chain == EVM_WORKERS) return 0;
        if (chain == SOLANA) return 1;
        return 2 + uint256(chain);
    }

    function _before(JobMarket.Result memory a, JobMarket.Result memory b) private pure returns (bool) {
        uint256 ra = laneRank(a.workerChain);
        uint256 rb = laneRank(b.workerChain);
        return ra < rb || (ra == rb && a.workerKey < b.workerKey);
    }

    /// `results` as finalizeRound takes them (a copy; insertion sort): lane by lane in the job's
    /// chain order, each lane's in assignment order (increasing worker keys).
    function laneOrdered(JobMarket.Result[] memory results) internal pure returns (JobMarket.Result[] memory ordered) {
        ordered = new JobMarket.Result[](results.length);
        for (uint256 i = 0; i < results.length; ++i) {
            JobMarket.Result memory next = results[i];
            uint256 j = i;
            while (j > 0 && _before(next, ordered[j - 1])) {
                ordered[j] = ordered[j - 1];
                --j;
            }
            ordered[j] = next;
        }
    }

    /// The chains whose lanes a proposal of `ordered` covers, in lane order: EVM_WORKERS and
    /// SOLANA (a lane without commitments adds none), then any other chain of the results.
    function _laneChains(JobMarket.Result[] memory ordered) private pure returns (uint16[] memory chains) {
        chains = new uint16[](2 + ordered.length);
        chains[0] = EVM_WORKERS;
        chains[1] = SOLANA;
        uint256 n = 2;
        for (uint256 i = 0; i < ordered.length; ++i) {
            uint16 chain = ordered[i].workerChain;
            if (laneRank(chain) >= 2 && chain != chains[n - 1]) chains[n++] = chain;
        }
        assembly {
            mstore(chains, n)
        }
    }

    /// `results` in lane order and the evidence `checkProposal` and `disprove` take with them:
    /// every lane's commitments (lane order, each lane's in arrival order). Computed without a
    /// call, so it may come between an expectRevert and the call it is for.
    function finalizeArgs(uint64 jobId, uint32 round, JobMarket.Result[] memory results)
        internal
        view
        returns (JobMarket.Result[] memory ordered, JobMarket.Commit[] memory commits)
    {
        ordered = laneOrdered(results);
        commits = commitsFor(jobId, round, ordered);
    }

    /// Every lane's recorded commitments for a proposal of `ordered` (results in lane order):
    /// the lanes in order, each lane's commitments in arrival order.
    function commitsFor(uint64 jobId, uint32 round, JobMarket.Result[] memory ordered)
        internal
        view
        returns (JobMarket.Commit[] memory commits)
    {
        uint16[] memory chains = _laneChains(ordered);
        uint256 count = 0;
        for (uint256 c = 0; c < chains.length; ++c) {
            count += _laneCommits[jobId][round][chains[c]].length;
        }
        commits = new JobMarket.Commit[](count);
        uint256 n = 0;
        for (uint256 c = 0; c < chains.length; ++c) {
            JobMarket.Commit[] storage lane = _laneCommits[jobId][round][chains[c]];
            for (uint256 k = 0; k < lane.length; ++k) {
                commits[n++] = lane[k];
            }
        }
    }

    /// The total a proposal of `results` states: the sum of their rewards.
    function totalOf(JobMarket.Result[] memory results) internal pure returns (uint256 total) {
        for (uint256 i = 0; i < results.length; ++i) {
            total += results[i].reward;
        }
    }

    /// The results root a proposal of `ordered` states: the Merkle root of their leaves
    /// (`leafOf`) in the order given (zero for none).
    function resultsRootOf(uint64 jobId, uint32 round, JobMarket.Result[] memory ordered)
        internal
        pure
        returns (bytes32)
    {
        if (ordered.length == 0) return bytes32(0);
        bytes32[] memory leaves = new bytes32[](ordered.length);
        for (uint256 i = 0; i < ordered.length; ++i) {
            leaves[i] = leafOf(jobId, round, ordered[i]);
        }
        return MerkleTree.root(leaves);
    }

    /// keccak256 of `results`' ABI encoding: the hash the market pins a proposal's results with.
    function resultsHashOf(JobMarket.Result[] memory results) internal pure returns (bytes32 hash) {
        bytes memory encoded = abi.encode(results); // offset, length, then the results' words
        assembly ("memory-safe") {
            hash := keccak256(add(encoded, 96), sub(mload(encoded), 64))
        }
    }

    /// Where `key`'s result sits in `results`.
    function indexOf(JobMarket.Result[] memory results, bytes32 key) internal pure returns (uint256) {
        for (uint256 i = 0; i < results.length; ++i) {
            if (results[i].workerKey == key) return i;
        }
        revert("no result for that key");
    }

    function modelOf(uint32 round) internal pure returns (bytes32) {
        return keccak256(abi.encode("model", round + 1));
    }

    function _record(uint64 jobId, uint32 round, JobMarket.Result[] memory ordered) private {
        delete _proposed[jobId][round];
        for (uint256 i = 0; i < ordered.length; ++i) {
            _proposed[jobId][round].push(ordered[i]);
        }
    }

    /// Propose `results` (any order) as the aggregator does: first check the proposal with the
    /// round's recorded commitments (`checkProposal` reverts naming the rule it breaks), then
    /// `finalizeRound` with the results' total and root.
    function finalize(uint64 jobId, uint32 round, JobMarket.Result[] memory results) internal {
        (JobMarket.Result[] memory ordered, JobMarket.Commit[] memory commits) = finalizeArgs(jobId, round, results);
        uint256 total = totalOf(ordered);
        bytes32 root = resultsRootOf(jobId, round, ordered);
        checker.checkProposal(jobId, round, total, root, ordered, commits);
        _record(jobId, round, ordered);
        vm.prank(aggregator, aggregator);
        market.finalizeRound(jobId, round, modelOf(round), total, root, ordered);
    }

    /// `finalize`, reporting whether the proposal was made: false when `checkProposal` refuses
    /// it (so it is never proposed) or the market reverts.
    function tryFinalize(uint64 jobId, uint32 round, JobMarket.Result[] memory results) internal returns (bool) {
        (JobMarket.Result[] memory ordered, JobMarket.Commit[] memory commits) = finalizeArgs(jobId, round, results);
        uint256 total = totalOf(ordered);
        bytes32 root = resultsRootOf(jobId, round, ordered);
        try checker.checkProposal(jobId, round, total, root, ordered, commits) {}
        catch {
            return false;
        }
        vm.prank(aggregator, aggregator);
        try market.finalizeRound(jobId, round, modelOf(round), total, root, ordered) {
            _record(jobId, round, ordered);
            return true;
        } catch {
            return false;
        }
    }

    /// Propose `ordered` exactly as given (no reordering) as a dishonest aggregator could: no
    /// check, the total and root as given. The market takes whatever keeps its own few rules.
    function finalizeUnchecked(
        uint64 jobId,
        uint32 round,
        JobMarket.Result[] memory ordered,
        uint256 total,
        bytes32 root
    ) internal {
        _record(jobId, round, ordered);
        vm.prank(aggregator, aggregator);
        market.finalizeRound(jobId, round, modelOf(round), total, root, ordered);
    }

    /// `finalizeUnchecked` of `results` (any order) in lane order, with their own total and root.
    function finalizeUnchecked(uint64 jobId, uint32 round, JobMarket.Result[] memory results)
        internal
        returns (JobMarket.Result[] memory ordered)
    {
        ordered = laneOrdered(results);
        finalizeUnchecked(jobId, round, ordered, totalOf(ordered), resultsRootOf(jobId, round, ordered));
    }

    /// Disprove the round's last proposal (its recorded results, the recorded commitments as
    /// evidence), as `disprover`.
    function disprove(uint64 jobId, uint32 round, address disprover) internal {
        JobMarket.Result[] memory results = _proposed[jobId][round];
        JobMarket.Commit[] memory commits = commitsFor(jobId, round, results);
        vm.prank(disprover);
        checker.disprove(jobId, round, results, commits);
    }

    /// `checkProposal` refuses `ordered` (exactly as given, with their own total and root) and
    /// `commits` as evidence, naming `reason`.
    function expectRefused(
        uint64 jobId,
        uint32 round,
        JobMarket.Result[] memory ordered,
        JobMarket.Commit[] memory commits,
        bytes memory reason
    ) internal {
        uint256 total = totalOf(ordered);
        bytes32 root = resultsRootOf(jobId, round, ordered);
        vm.expectRevert(reason);
        checker.checkProposal(jobId, round, total, root, ordered, commits);
    }

    /// A proposal of `ordered` (exactly as given, with their own total and root) breaks the rule
    /// `reason` names: `checkProposal` refuses it with the round's recorded commitments, the
    /// market takes it all the same when an aggregator proposes it unchecked, and anyone voids it
    /// with `disprove` (`expectVoided`: it never settles).
    function expectRefusedAndVoided(uint64 jobId, uint32 round, JobMarket.Result[] memory ordered, bytes memory reason)
        internal
    {
        expectRefused(jobId, round, ordered, commitsFor(jobId, round, ordered), reason);
        finalizeUnchecked(jobId, round, ordered, totalOf(ordered), resultsRootOf(jobId, round, ordered));
        assertEq(uint8(market.getRound(jobId, round).phase), uint8(JobMarket.RoundPhase.Proposed), "proposed unchecked");
        expectVoided(jobId, round, reason);
    }

    /// Who disproves in `expectVoided`: anyone may.
    address internal constant DISPROVER = address(0xD15B);

    /// Disprove the round's pending proposal (as `disprove`) and show it voided for `reason` (the
    /// rule's error, as `checkProposal` reverts with it): ProposalDisproved, the round collecting
    /// again with no proposal shown, nothing paid or moved, and the voided results never settle,
    /// not after their window either (the clock is left at the window's end).
    function expectVoided(uint64 jobId, uint32 round, bytes memory reason) internal {
        JobMarket.Round memory before = market.getRound(jobId, round);
        assertEq(uint8(before.phase), uint8(JobMarket.RoundPhase.Proposed), "a proposal to disprove");
        JobMarket.Job memory job = market.getJob(jobId);
        (, uint256 escrowed, uint256 claimableTotal,,) = market.ledgers(job.token);
        JobMarket.Result[] memory results = _proposed[jobId][round];
        JobMarket.Commit[] memory commits = commitsFor(jobId, round, results);
        vm.expectEmit(true, true, false, true);
        emit JobMarket.ProposalDisproved(jobId, round, before.proposal, DISPROVER, reason);
        vm.prank(DISPROVER);
        checker.disprove(jobId, round, results, commits);
        JobMarket.Round memory r = market.getRound(jobId, round);
        assertEq(uint8(r.phase), uint8(JobMarket.RoundPhase.Collecting), "voided: collecting again");
        assertEq(r.proposal, before.proposal, "the same proposal count");
        assertEq(r.proposedTotal, 0, "no total shown");
        assertEq(r.resultsRoot, bytes32(0), "no root shown");
        assertEq(r.proposedModelHash, bytes32(0), "no model shown");
        JobMarket.Job memory jobAfter = market.getJob(jobId);
        assertEq(jobAfter.currentRound, round, "the round did not move");
        assertEq(jobAfter.escrow, job.escrow, "escrow untouched");
        assertEq(jobAfter.modelHash, job.modelHash, "model untouched");
        (, uint256 escrowedAfter, uint256 claimableAfter,,) = market.ledgers(job.token);
        assertEq(escrowedAfter, escrowed, "ledger: escrowed untouched");
        assertEq(claimableAfter, claimableTotal, "ledger: nothing credited");
        // Not disproved twice; never settled, however long it waits.
        vm.expectRevert(abi.encodeWithSelector(ProposalChecker.RoundNotProposed.selector, jobId, round));
        checker.disprove(jobId, round, results, commits);
        if (block.timestamp < before.challengeDeadline) vm.warp(before.challengeDeadline);
        vm.expectRevert(abi.encodeWithSelector(JobMarket.RoundNotProposed.selector, jobId, round));
        market.settleRound(jobId, round, results);
    }

    /// The results of the round's last `finalize`.
    function proposed(uint64 jobId, uint32 round) internal view returns (JobMarket.Result[] memory) {
        return _proposed[jobId][round];
    }

    function settle(uint64 jobId, uint32 round) internal {
        market.settleRound(jobId, round, _proposed[jobId][round]);
    }

    function settleWith(uint64 jobId, uint32 round, uint256 value) internal {
        market.settleRound{value: value}(jobId, round, _proposed[jobId][round]);
    }

    /// The leaf JobMarket gives a result: keccak256(abi.encode(jobId, round, result)).
    function leafOf(uint64 jobId, uint32 round, JobMarket.Result memory result) internal pure returns (bytes32) {
        return keccak256(abi.encode(jobId, round, result));
    }

    /// The Merkle proof of result `index` among `results` (positional tree, an odd node moves up).
    function proofOf(uint64 jobId, uint32 round, JobMarket.Result[] memory results, uint256 index)
        internal
        pure
        returns (bytes32[] memory proof)
    {
        bytes32[] memory leaves = new bytes32[](results.length);
        for (uint256 i = 0; i < results.length; ++i) {
            leaves[i] = leafOf(jobId, round, results[i]);
        }
        proof = MerkleProofs.proofOf(leaves, index);
    }

    /// Dispute `key`'s slash in the round's last proposal, as its payout address.
    function dispute(uint64 jobId, uint32 round, uint16 chain, bytes32 key, address payout) internal {
        JobMarket.Result[] memory results = _proposed[jobId][round];
        uint256 index = indexOf(results, key);
        require(results[index].workerChain == chain, "result on another chain");
        bytes32[] memory proof = proofOf(jobId, round, results, index);
        vm.prank(payout);
        market.disputeSlash(jobId, round, index, results[index], proof);
    }
}
