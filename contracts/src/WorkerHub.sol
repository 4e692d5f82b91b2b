// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IMessageCore} from "./interfaces/IMessageCore.sol";
import {MessageReceiver} from "./base/MessageReceiver.sol";
import {ReentrancyGuard} from "./base/ReentrancyGuard.sol";
import {PayloadCodec} from "./libraries/PayloadCodec.sol";

/// @title WorkerHub
/// @notice A worker chain's side of fedrelay: workers stake native currency, register with the
/// coordinator chain (WORKER_REGISTERED), receive batched TASK_ASSIGNED messages, commit their
/// updates (UPDATE_COMMITTED) and are released or slashed by ROUND_SETTLED. Stake leaves only
/// through an unbonding delay, and never while the worker holds an unsettled task.
/// @dev Stake accounting: balance = totalStaked + totalUnbonding + slashedBalance.
contract WorkerHub is MessageReceiver, ReentrancyGuard {
    /// @dev Native amounts have 18 decimals; messages carry 8.
    uint256 internal constant DECIMALS_FACTOR = 1e10;

    enum TaskState {
        None,
        Assigned,
        Committed,
        Settled
    }

    struct Staker {
        uint256 staked;
        uint256 unbonding;
        uint64 unbondingReadyAt;
        uint32 activeTasks;
        bool registered;
    }

    struct Task {
        TaskState state;
        address worker;
        uint64 deadline;
        bytes32 updateHash;
    }

    /// @notice Seconds between `requestUnbond` and `withdrawStake`.
    uint64 public immutable unbondingDelay;
    /// @notice Stake (wei) a worker needs to register.
    uint256 public immutable minStake;
    /// @notice Wormhole chain id of the coordinator chain (where WORKER_REGISTERED goes).
    uint16 public immutable coordinatorChain;

    mapping(address => Staker) private _stakers;
    mapping(bytes32 => Task) private _tasks;
    /// @notice Sum of all bonded stakes.
    uint256 public totalStaked;
    /// @notice Sum of all unbonding stakes.
    uint256 public totalUnbonding;
    /// @notice Slashed stake not yet swept to the treasury.
    uint256 public slashedBalance;

    event Staked(address indexed worker, uint256 amount, uint256 staked);
    event UnbondRequested(address indexed worker, uint256 amount, uint64 readyAt);
    event StakeWithdrawn(address indexed worker, uint256 amount);
    event Registered(address indexed worker, uint64 stake, bytes32 payout, uint32 capabilities, uint64 sequence);
    event TaskAssigned(
        bytes32 indexed taskId,
        uint64 indexed jobId,
        uint32 round,
        address indexed worker,
        uint32 shard,
        uint64 deadline
    );
    event UpdateCommitted(
        bytes32 indexed taskId, address indexed worker, bytes32 updateHash, bytes32 transcriptRoot, uint64 sequence
    );
    event TaskReleased(bytes32 indexed taskId, address indexed worker, uint8 outcome);
    event Slashed(bytes32 indexed taskId, address indexed worker, uint256 amount);
    event SlashedSwept(address indexed to, uint256 amount);

    error ZeroAmount();
    error InsufficientStake(uint256 staked, uint256 required);
    error UnbondingPending(uint64 readyAt);
    error NothingUnbonding(address worker);
    error StillAssigned(address worker, uint32 activeTasks);
    error InvalidWorkerKey(bytes32 workerKey);
    error TaskAlreadyAssigned(bytes32 taskId);
    error UnknownTask(bytes32 taskId);
    error NotAssignedWorker(bytes32 taskId, address caller);
    error AlreadyCommitted(bytes32 taskId);
    error TaskAlreadySettled(bytes32 taskId);
    error CommitmentTooLate(bytes32 taskId, uint64 deadline);
    error UnexpectedPayload(uint8 payloadId);
    error TransferFailed(address to, uint256 amount);

    /// @param core_ The message core (Wormhole core in production).
    /// @param consistencyLevel_ Consistency level of published messages.
    /// @param initialOwner Account that manages peers and sweeps slashed stake.
    /// @param coordinatorChain_ Wormhole chain id of the coordinator chain.
    /// @param minStake_ Stake (wei) required to register.
    /// @param unbondingDelay_ Seconds between an unbond request and the withdrawal.
    constructor(
        IMessageCore core_,
        uint8 consistencyLevel_,
        address initialOwner,
        uint16 coordinatorChain_,
        uint256 minStake_,
        uint64 unbondingDelay_
    ) MessageReceiver(core_, consistencyLevel_, initialOwner) {
        coordinatorChain = coordinatorChain_;
        minStake = minStake_;
        unbondingDelay = unbondingDelay_;
    }

    // ------------------------------------------------------------------ stake

    /// @notice Add `msg.value` to the caller's bonded stake.
    function stake() external payable {
        if (msg.value == 0) revert ZeroAmount();
        Staker storage s = _stakers[msg.sender];
        s.staked += msg.value;
        totalStaked += msg.value;
        emit Staked(msg.sender, msg.value, s.staked);
    }

    /// @notice Move `amount` of bonded stake to unbonding; it can be withdrawn after the delay.
    /// @dev A new request adds to what is unbonding and restarts the delay.
    function requestUnbond(uint256 amount) external {
        Staker storage s = _stakers[msg.sender];
        if (amount == 0) revert ZeroAmount();
        if (amount > s.staked) revert InsufficientStake(s.staked, amount);
        s.staked -= amount;
        s.unbonding += amount;
        totalStaked -= amount;
        totalUnbonding += amount;
        uint64 readyAt = uint64(block.timestamp) + unbondingDelay;
        s.unbondingReadyAt = readyAt;
        emit UnbondRequested(msg.sender, amount, readyAt);
    }

    /// @notice Withdraw the caller's unbonded stake once the delay has passed and no task is open.
    function withdrawStake() external nonReentrant {
        Staker storage s = _stakers[msg.sender];
        uint256 amount = s.unbonding;
        if (amount == 0) revert NothingUnbonding(msg.sender);
        if (block.timestamp < s.unbondingReadyAt) revert UnbondingPending(s.unbondingReadyAt);
        if (s.activeTasks != 0) revert StillAssigned(msg.sender, s.activeTasks);
        s.unbonding = 0;
        totalUnbonding -= amount;
        emit StakeWithdrawn(msg.sender, amount);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed(msg.sender, amount);
    }

    /// @notice Announce the caller to the coordinator chain (publishes WORKER_REGISTERED).
    /// @dev Pays the core's fee as `msg.value`. Registering again refreshes the reported stake.
    /// @param payout Where rewards go on the coordinator chain (left-padded EVM address).
    /// @param capabilities Bit 0: CUDA GPU; bit 1: deterministic CPU replay.
    /// @return sequence The published message's sequence.
    function register(bytes32 payout, uint32 capabilities) external payable returns (uint64 sequence) {
        uint256 fee = _requireFees(1);
        Staker storage s = _stakers[msg.sender];
        if (s.staked < minStake || s.staked == 0) revert InsufficientStake(s.staked, minStake);
        bytes32 target = peers[coordinatorChain];
        if (target == bytes32(0)) revert UnknownEmitter(coordinatorChain, target);
        s.registered = true;
        uint64 reported = _toMessageAmount(s.staked);
        PayloadCodec.WorkerRegistered memory message = PayloadCodec.WorkerRegistered(
            PayloadCodec.Header(PayloadCodec.WORKER_REGISTERED, coordinatorChain, target, 0),
            PayloadCodec.toBytes32(msg.sender),
            reported,
            payout,
            capabilities
        );
        sequence = _publish(PayloadCodec.encode(message), fee);
        emit Registered(msg.sender, reported, payout, capabilities, sequence);
    }

    // ------------------------------------------------------------------ messages in

    /// @notice Act on a guardian-signed TASK_ASSIGNED or ROUND_SETTLED VAA from the coordinator.
    /// @dev Reverts `AlreadyConsumed` when the VAA was delivered before.
    function receiveMessage(bytes calldata encodedVaa) external {
        (IMessageCore.VM memory vm, PayloadCodec.Header memory header) = _consume(encodedVaa);
        if (header.payloadId == PayloadCodec.TASK_ASSIGNED) {
            _onTaskAssigned(PayloadCodec.decodeTaskAssigned(vm.payload));
        } else if (header.payloadId == PayloadCodec.ROUND_SETTLED) {
            _onRoundSettled(PayloadCodec.decodeRoundSettled(vm.payload));
        } else {
            revert UnexpectedPayload(header.payloadId);
        }
    }

    function _onTaskAssigned(PayloadCodec.TaskAssigned memory m) private {
        uint64 jobId = m.header.jobId;
        for (uint256 i = 0; i < m.assignments.length; ++i) {
            PayloadCodec.Assignment memory a = m.assignments[i];
            address worker = _workerAddress(a.workerKey);
            bytes32 taskId = taskIdOf(jobId, m.round, a.workerKey);
            Task storage task = _tasks[taskId];
            if (task.state != TaskState.None) revert TaskAlreadyAssigned(taskId);
            task.state = TaskState.Assigned;
            task.worker = worker;
            task.deadline = m.deadline;
            _stakers[worker].activeTasks += 1;
            emit TaskAssigned(taskId, jobId, m.round, worker, a.shard, m.deadline);
        }
    }

    function _onRoundSettled(PayloadCodec.RoundSettled memory m) private {
        for (uint256 i = 0; i < m.settlements.length; ++i) {
            PayloadCodec.Settlement memory s = m.settlements[i];
            bytes32 taskId = taskIdOf(m.header.jobId, m.round, s.workerKey);
            Task storage task = _tasks[taskId];
            if (task.state == TaskState.None) revert UnknownTask(taskId);
            if (task.state == TaskState.Settled) revert TaskAlreadySettled(taskId);
            task.state = TaskState.Settled;
            Staker storage staker = _stakers[task.worker];
            staker.activeTasks -= 1;
            if (s.outcome == PayloadCodec.OUTCOME_SLASHED && s.slash != 0) {
                _slash(taskId, task.worker, staker, uint256(s.slash) * DECIMALS_FACTOR);
            }
            emit TaskReleased(taskId, task.worker, s.outcome);
        }
    }

    /// @dev Take `amount` (capped at what the worker has) from bonded stake first, then unbonding.
    function _slash(bytes32 taskId, address worker, Staker storage s, uint256 amount) private {
        uint256 fromStaked = amount < s.staked ? amount : s.staked;
        s.staked -= fromStaked;
        totalStaked -= fromStaked;
        uint256 rest = amount - fromStaked;
        uint256 fromUnbonding = rest < s.unbonding ? rest : s.unbonding;
        s.unbonding -= fromUnbonding;
        totalUnbonding -= fromUnbonding;
        uint256 taken = fromStaked + fromUnbonding;
        slashedBalance += taken;
        emit Slashed(taskId, worker, taken);
    }

    // ------------------------------------------------------------------ commitments

    /// @notice Commit the caller's update for an assigned task (publishes UPDATE_COMMITTED).
    /// @dev Only the assigned worker, once, no later than the task's deadline. Pays the core's
    /// fee as `msg.value`.
    /// @return sequence The published message's sequence.
    function commitUpdate(
        uint64 jobId,
        uint32 round,
        bytes32 updateHash,
        bytes32 transcriptRoot,
        uint32 numSamples,
        uint32 trainLoss
    ) external payable returns (uint64 sequence) {
        uint256 fee = _requireFees(1);
        bytes32 taskId = _markCommitted(jobId, round, updateHash);
        PayloadCodec.UpdateCommitted memory message;
        message.header =
            PayloadCodec.Header(PayloadCodec.UPDATE_COMMITTED, coordinatorChain, peers[coordinatorChain], jobId);
        message.round = round;
        message.workerKey = PayloadCodec.toBytes32(msg.sender);
        message.updateHash = updateHash;
        message.transcriptRoot = transcriptRoot;
        message.numSamples = numSamples;
        message.trainLoss = trainLoss;
        sequence = _publish(PayloadCodec.encode(message), fee);
        emit UpdateCommitted(taskId, msg.sender, updateHash, transcriptRoot, sequence);
    }

    function _markCommitted(uint64 jobId, uint32 round, bytes32 updateHash) private returns (bytes32 taskId) {
        taskId = taskIdOf(jobId, round, PayloadCodec.toBytes32(msg.sender));
        Task storage task = _tasks[taskId];
        if (task.state == TaskState.None || task.worker != msg.sender) revert NotAssignedWorker(taskId, msg.sender);
        if (task.state == TaskState.Committed) revert AlreadyCommitted(taskId);
        if (task.state == TaskState.Settled) revert TaskAlreadySettled(taskId);
        if (block.timestamp > task.deadline) revert CommitmentTooLate(taskId, task.deadline);
        task.state = TaskState.Committed;
        task.updateHash = updateHash;
    }

    // ------------------------------------------------------------------ treasury

    /// @notice Send slashed stake to `to`.
    function sweepSlashed(address payable to) external onlyOwner nonReentrant {
        uint256 amount = slashedBalance;
        if (amount == 0) revert ZeroAmount();
        slashedBalance = 0;
        emit SlashedSwept(to, amount);
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }

    // ------------------------------------------------------------------ views

    /// @notice task_id = keccak256(u64 job_id || u32 round || u16 this chain || worker_key).
    function taskIdOf(uint64 jobId, uint32 round, bytes32 workerKey) public view returns (bytes32) {
        return keccak256(abi.encodePacked(jobId, round, chainId, workerKey));
    }

    /// @notice A worker's stake record.
    function getStaker(address worker) external view returns (Staker memory) {
        return _stakers[worker];
    }

    /// @notice A task's record.
    function getTask(bytes32 taskId) external view returns (Task memory) {
        return _tasks[taskId];
    }

    function _workerAddress(bytes32 workerKey) private pure returns (address) {
        if (uint256(workerKey) >> 160 != 0 || workerKey == bytes32(0)) revert InvalidWorkerKey(workerKey);
        return address(uint160(uint256(workerKey)));
    }

    function _toMessageAmount(uint256 amount) private pure returns (uint64) {
        uint256 scaled = amount / DECIMALS_FACTOR;
        return scaled > type(uint64).max ? type(uint64).max : uint64(scaled);
    }
}
