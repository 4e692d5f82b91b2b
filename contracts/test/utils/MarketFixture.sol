// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {JobMarket} from "../../src/JobMarket.sol";
import {PayloadCodec} from "../../src/libraries/PayloadCodec.sol";
import {CoreFixture} from "./CoreFixture.sol";

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
        market = new JobMarket(core, 202, address(this), aggregator, challenger, WINDOW);
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

    function finalize(uint64 jobId, uint32 round, JobMarket.Result[] memory results) internal {
        vm.prank(aggregator);
        market.finalizeRound(jobId, round, keccak256(abi.encode("model", round + 1)), results);
    }
}
