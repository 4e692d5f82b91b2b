// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {JobMarket} from "../../src/JobMarket.sol";
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
    uint64 internal nextSequence = 1;

    function setUpMarket() internal {
        vm.warp(1_800_000_000);
        deployCore(COORDINATOR);
        market = new JobMarket(core, IMessageCore(address(0)), 202, address(this), aggregator, challenger, WINDOW);
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

    function committedPayload(uint64 jobId, uint32 round, bytes32 key) internal view returns (bytes memory) {
        return PayloadCodec.encode(
            PayloadCodec.UpdateCommitted(
                PayloadCodec.Header(3, COORDINATOR, toBytes32(address(market)), jobId),
                round,
                key,
                keccak256(abi.encode("update", key, round)),
                keccak256(abi.encode("transcript", key, round)),
                keccak256(abi.encode("data", key, round)),
                1000,
                250_000
            )
        );
    }

    function commit(uint64 jobId, uint32 round, uint16 chain, bytes32 key) internal {
        market.receiveMessage(signed(chain, peerOf(chain), committedPayload(jobId, round, key)));
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
        vm.prank(aggregator);
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

    /// The results of each round's last `finalize`, as proposed (sorted by task id).
    mapping(uint64 => mapping(uint32 => JobMarket.Result[])) private _proposed;

    /// task_id as JobMarket.taskIdOf computes it (here, so no call is spent before an expectRevert).
    function taskOf(uint64 jobId, uint32 round, uint16 chain, bytes32 key) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(jobId, round, chain, key));
    }

    /// `results` sorted by task id, as finalizeRound takes them (a copy; insertion sort).
    function sortedResults(uint64 jobId, uint32 round, JobMarket.Result[] memory results)
        internal
        pure
        returns (JobMarket.Result[] memory sorted)
    {
        sorted = new JobMarket.Result[](results.length);
        for (uint256 i = 0; i < results.length; ++i) {
            JobMarket.Result memory next = results[i];
            uint256 id = uint256(taskOf(jobId, round, next.workerChain, next.workerKey));
            uint256 j = i;
            while (j > 0 && uint256(taskOf(jobId, round, sorted[j - 1].workerChain, sorted[j - 1].workerKey)) > id) {
                sorted[j] = sorted[j - 1];
                --j;
            }
            sorted[j] = next;
        }
    }

    /// Where `key`'s result sits in `results`.
    function indexOf(JobMarket.Result[] memory results, bytes32 key) internal pure returns (uint256) {
        for (uint256 i = 0; i < results.length; ++i) {
            if (results[i].workerKey == key) return i;
        }
        revert("no result for that key");
    }

    function finalize(uint64 jobId, uint32 round, JobMarket.Result[] memory results) internal {
        JobMarket.Result[] memory sorted = sortedResults(jobId, round, results);
        delete _proposed[jobId][round];
        for (uint256 i = 0; i < sorted.length; ++i) {
            _proposed[jobId][round].push(sorted[i]);
        }
        vm.prank(aggregator);
        market.finalizeRound(jobId, round, keccak256(abi.encode("model", round + 1)), sorted);
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
