// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {WorkerHub} from "../../src/WorkerHub.sol";
import {PayloadCodec} from "../../src/libraries/PayloadCodec.sol";
import {IMessageCore} from "../../src/interfaces/IMessageCore.sol";
import {CoreFixture} from "./CoreFixture.sol";

/// @notice A WorkerHub on EVM worker chain 4 whose coordinator peer is a JobMarket on chain 2.
abstract contract HubFixture is CoreFixture {
    uint16 internal constant COORDINATOR = 2;
    uint16 internal constant WORKERS = 4;
    bytes32 internal constant MARKET = bytes32(uint256(0x3A4C));
    uint256 internal constant MIN_STAKE = 1 ether;
    uint64 internal constant UNBONDING = 7 days;
    /// Task policy of the fixture's TASK_ASSIGNED: 1 ether (8 decimals) needed and locked.
    uint64 internal constant TASK_MIN_STAKE = 1e8;
    uint64 internal constant TASK_LOCK = 1e8;
    uint64 internal constant RELEASE_AFTER = 1 days;
    bytes32 internal constant POSTER = bytes32(uint256(0x9057E4));

    WorkerHub internal hub;
    uint64 internal nextSequence = 1;

    function setUpHub() internal {
        vm.warp(1_800_000_000);
        deployCore(WORKERS);
        hub = new WorkerHub(core, hubVerifier(), 202, address(this), COORDINATOR, MIN_STAKE, UNBONDING);
        hub.setPeer(COORDINATOR, MARKET);
    }

    /// The hub's verifier, made after the core: zero (the core itself) unless a test overrides it.
    function hubVerifier() internal virtual returns (IMessageCore) {
        return IMessageCore(address(0));
    }

    function worker(uint256 i) internal pure virtual returns (address) {
        return address(uint160(0x7000 + i));
    }

    function signedFromMarket(bytes memory payload) internal returns (bytes memory) {
        return signVaa(0, 0, firstIndices(3), vaaBody(COORDINATOR, MARKET, nextSequence++, payload));
    }

    function stakeAs(address who, uint256 amount) internal {
        vm.deal(who, who.balance + amount);
        vm.prank(who);
        hub.stake{value: amount}();
    }

    function taskAssignedPayload(uint64 jobId, uint32 round, uint64 deadline, address[] memory workers)
        internal
        view
        returns (bytes memory)
    {
        PayloadCodec.TaskAssigned memory m;
        m.header = PayloadCodec.Header(2, WORKERS, toBytes32(address(hub)), jobId);
        m.round = round;
        m.deadline = deadline;
        m.modelHash = keccak256("model");
        m.configHash = keccak256("config");
        m.minStake = TASK_MIN_STAKE;
        m.stakeLock = TASK_LOCK;
        m.releaseAt = deadline + RELEASE_AFTER;
        m.assignments = new PayloadCodec.Assignment[](workers.length);
        for (uint256 i = 0; i < workers.length; ++i) {
            m.assignments[i] = PayloadCodec.Assignment(toBytes32(workers[i]), uint32(i));
        }
        return PayloadCodec.encode(m);
    }

    /// Stake what the fixture's tasks need and register, unless `w` is registered already.
    function ensureRegistered(address w) internal {
        WorkerHub.Staker memory s = hub.getStaker(w);
        if (s.registered) return;
        if (s.staked < MIN_STAKE) stakeAs(w, MIN_STAKE - s.staked);
        vm.prank(w);
        hub.register(toBytes32(w), 0);
    }

    /// Register every worker (see `ensureRegistered`) and deliver their TASK_ASSIGNED.
    function assignTo(uint64 jobId, uint32 round, address[] memory workers) internal {
        for (uint256 i = 0; i < workers.length; ++i) {
            ensureRegistered(workers[i]);
        }
        deliverAssigned(jobId, round, workers);
    }

    /// Deliver a TASK_ASSIGNED as is, whatever the workers' state.
    function deliverAssigned(uint64 jobId, uint32 round, address[] memory workers) internal {
        hub.receiveMessage(
            signedFromMarket(taskAssignedPayload(jobId, round, uint64(block.timestamp + 1 days), workers))
        );
    }

    function one(address w) internal pure returns (address[] memory list) {
        list = new address[](1);
        list[0] = w;
    }

    function settledPayload(uint64 jobId, uint32 round, address w, uint8 outcome, uint64 slash)
        internal
        view
        returns (bytes memory)
    {
        PayloadCodec.Settlement[] memory entries = new PayloadCodec.Settlement[](1);
        entries[0] = PayloadCodec.Settlement(toBytes32(w), outcome, slash);
        return settledBatch(jobId, round, PayloadCodec.SLASH_TO_RECIPIENT, entries);
    }

    function settledBatch(uint64 jobId, uint32 round, uint8 mode, PayloadCodec.Settlement[] memory entries)
        internal
        view
        returns (bytes memory)
    {
        PayloadCodec.RoundSettled memory m;
        m.header = PayloadCodec.Header(4, WORKERS, toBytes32(address(hub)), jobId);
        m.round = round;
        m.modelHash = keccak256("model 1");
        m.slashMode = mode;
        m.slashRecipient = POSTER;
        m.settlements = entries;
        return PayloadCodec.encode(m);
    }

    function settle(uint64 jobId, uint32 round, address w, uint8 outcome, uint64 slash) internal {
        hub.receiveMessage(signedFromMarket(settledPayload(jobId, round, w, outcome, slash)));
    }
}
