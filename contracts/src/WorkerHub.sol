// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IMessageCore} from "./interfaces/IMessageCore.sol";
import {MessageReceiver} from "./base/MessageReceiver.sol";
import {ReentrancyGuard} from "./base/ReentrancyGuard.sol";
import {PayloadCodec} from "./libraries/PayloadCodec.sol";

/// @title WorkerHub
/// @notice A worker chain's side of fedrelay: workers stake native currency, register with the
/// coordinator chain (WORKER_REGISTERED), receive batched TASK_ASSIGNED messages, commit their
/// updates and are released or slashed by ROUND_SETTLED. A commitment is recorded in its job
/// round's commit log (a hash chain and an event) without a message of its own; anyone may then
/// publish the round's pending commitments, up to 32 to an UPDATE_COMMITTED.
///
/// Stake that backs work cannot leave: a task is created only for a registered worker whose bonded
/// stake meets the job's minimum and who has the task's lock free; the lock stays until the task is
/// settled, or released by its worker once the job's release time has passed with no settlement.
/// A settlement that slashes nobody writes nothing of its workers: their tasks count as settled
/// once every task of their round on this chain has had its entry (the round's log counts both),
/// and each lock is freed when the job's round two on takes over the task's slot or by
/// `releaseSettled` (anyone, for any workers). An unbond request that would cut into locked stake
/// is refused. Every change of a registered
/// worker's bonded stake, and every refused or released task, is reported to the coordinator
/// chain as STAKE_CHANGED so that its selection uses the stake the worker really has.
///
/// Slashed stake never goes to an owner: ROUND_SETTLED names where it goes (the job's recipient,
/// or split among the batch's honest workers), and it becomes a claimable balance that only its
/// recipient can withdraw (`claim`).
/// @dev Balance accounting: balance = totalStaked + totalUnbonding + totalClaimable + feeReserve.
contract WorkerHub is MessageReceiver, ReentrancyGuard {
    /// @dev Native amounts have 18 decimals; messages carry 8.
    uint256 internal constant DECIMALS_FACTOR = 1e10;

    enum TaskState {
        None,
        Assigned,
        Committed,
        Settled,
        Released
    }

    /// @notice Why a TASK_ASSIGNED entry did not create a task.
    enum RefusalReason {
        NotRegistered,
        BelowMinStake,
        LockUnavailable,
        AlreadyAssigned,
        InvalidWorkerKey,
        PreviousTaskOpen
    }

    /// @notice Why a ROUND_SETTLED entry was not applied.
    enum SkipReason {
        UnknownTask,
        AlreadySettled,
        Released
    }

    /// @dev Two storage slots. The first holds everything a task's assignment, commitment and
    /// slash read or write (bonded stake, the locks its tasks hold, their count and the
    /// registration), so each touches one slot of its worker; the second what unbonding and stake
    /// reports use. 104 bits hold any stake (2e31 wei): `stake` refuses more. A task holds its
    /// lock while it is Assigned or Committed, also once its round has settled (see `Task`).
    struct Staker {
        uint104 staked;
        uint104 locked;
        uint32 activeTasks;
        bool registered;
        uint128 unbonding;
        uint64 unbondingReadyAt;
        uint64 stakeNonce;
    }

    /// @dev One storage slot: state, round, deadline, releaseAt and lock. A worker's tasks in a
    /// job take turns in two slots (`_slotOf`: the job, the worker and the round's parity), so a
    /// job's later rounds overwrite a finished task's slot instead of writing a fresh one (a
    /// fresh slot costs 20,000 gas, a rewritten one 2,900). A task is the one in its slot only
    /// while the slot holds its round; a slot still holding an open task of an earlier round
    /// refuses the new one (`PreviousTaskOpen`, which takes a round's settlement arriving after
    /// the assignment two rounds on). The worker is not stored: every path that reaches a task
    /// names it. Timestamps fit 48 bits (larger ones are clamped: no block reaches them); a
    /// lock fits 96 bits: it is at most the worker's free bonded stake (else the entry is
    /// refused), which is part of this contract's balance. The update hash is not stored either:
    /// it is in `UpdateCommitted` and in the UPDATE_COMMITTED message.
    ///
    /// A settlement entry writes its task only when it slashes (state Settled, lock freed). Any
    /// other leaves the task Assigned or Committed, holding its lock; the task is settled once
    /// its round is (`_settled`: every task the round's log counts as created has had its entry),
    /// which refuses its commitment and its release. Its lock goes to the task that takes over
    /// the slot two rounds on (a worker's stake record is then not written at all when the locks
    /// are equal), or is freed by `releaseSettled` (state Settled).
    struct Task {
        TaskState state;
        uint32 round;
        uint48 deadline;
        uint48 releaseAt;
        uint96 lock;
    }

    /// @notice A worker's commitment, signed by the worker for anyone to record
    /// (`commitSigned`): the fields of `commitUpdate` and an EIP-2098 compact signature over
    /// the EIP-712 digest `commitmentDigest` (this hub's domain, the job, the round and the
    /// fields' hash), so it records nothing on another chain, hub, job or round.
    struct SignedCommitment {
        bytes32 updateHash;
        bytes32 transcriptRoot;
        bytes32 dataRoot;
        uint32 numSamples;
        uint32 trainLoss;
        bytes32 r;
        bytes32 vs;
    }

    /// @notice Why `commitSigned` left an entry out (the others are recorded); `None`: recorded.
    enum CommitSkip {
        None,
        BadSignature,
        NotAssigned,
        AlreadyCommitted,
        TaskClosed,
        StakeBelowLock,
        TooLate
    }

    /// @notice A job round's log on this chain. Its commitments: `head` chains them in the order
    /// they were recorded (`PayloadCodec.chainCommitment` from zero), `publishedHead` is its value
    /// after the last published one, `firstBlock` the block of the first (where a publisher
    /// starts reading `UpdateCommitted` for the entries); a commitment writes `head` only. Its
    /// tasks: `created`, how many TASK_ASSIGNED entries created a task; `closed`, how many
    /// ROUND_SETTLED entries met one of them (Assigned, Committed or Released). The round is
    /// settled here when both are equal and not zero: a task meets at most one entry (the
    /// coordinator chain settles a round once, one entry per task), so every task created has
    /// had its entry. An entry that arrives before its task's assignment meets none and is not
    /// counted: the round then stays open and its workers release their tasks after the job's
    /// release time, as when no settlement comes.
    struct CommitLog {
        bytes32 head;
        bytes32 publishedHead;
        uint64 firstBlock;
        uint32 created;
        uint32 closed;
    }

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant DOMAIN_NAME_HASH = keccak256("fedrelay WorkerHub");
    bytes32 private constant DOMAIN_VERSION_HASH = keccak256("1");
    bytes32 private constant COMMITMENT_TYPEHASH =
        keccak256("SignedCommitment(uint64 jobId,uint32 round,bytes32 commitment)");
    /// @dev secp256k1's order / 2: a larger `s` is the malleable twin of a smaller one.
    uint256 private constant HALF_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    /// @notice Seconds between `requestUnbond` and `withdrawStake`.
    uint64 public immutable unbondingDelay;
    /// @notice Stake (wei) a worker needs to register.
    uint256 public immutable minStake;
    /// @notice Wormhole chain id of the coordinator chain (where WORKER_REGISTERED goes).
    uint16 public immutable coordinatorChain;

    mapping(address => Staker) private _stakers;
    mapping(bytes32 => Task) private _tasks;
    mapping(bytes32 => uint256) private _claimable;
    mapping(bytes32 => CommitLog) private _commitLogs;
    /// @notice Sum of all bonded stakes.
    uint256 public totalStaked;
    /// @notice Sum of all unbonding stakes.
    uint256 public totalUnbonding;
    /// @notice Sum of all claimable (slashed and redistributed) balances.
    uint256 public totalClaimable;
    /// @notice Native currency that pays the core's fee for messages published while receiving a
    /// VAA (refusals, slashes); topped up by whoever relays (`receiveMessage`'s value) or anyone
    /// (`fundMessageFees`), and spent on nothing else.
    uint256 public feeReserve;

    event Staked(address indexed worker, uint256 amount, uint256 staked);
    event UnbondRequested(address indexed worker, uint256 amount, uint64 readyAt);
    event StakeWithdrawn(address indexed worker, uint256 amount);
    event Registered(address indexed worker, uint64 stake, bytes32 payout, uint32 capabilities, uint64 sequence);
    event StakeChangePublished(
        address indexed worker, uint8 indexed reason, uint64 stake, uint64 nonce, uint64 sequence
    );
    /// @notice A TASK_ASSIGNED message was applied; `payload` is its payload, whose entries
    /// name each worker's task (id `taskIdOf(jobId, round, workerKey)`), shard and, for all,
    /// the deadline and release time. Every entry's task was created except those a
    /// `TaskRefused` of the same transaction names. One event a message, not one a task: the
    /// payload's 36 bytes an entry cost less as log data than a log of their own.
    event TasksAssigned(uint64 indexed jobId, uint32 indexed round, bytes payload);
    event TaskRefused(bytes32 indexed taskId, bytes32 indexed workerKey, RefusalReason reason);
    event UpdateCommitted(
        uint64 indexed jobId,
        uint32 indexed round,
        address indexed worker,
        bytes32 updateHash,
        bytes32 transcriptRoot,
        bytes32 dataRoot,
        uint32 numSamples,
        uint32 trainLoss
    );
    event CommitmentSkipped(uint64 indexed jobId, uint32 indexed round, address indexed worker, CommitSkip reason);
    /// @notice `commitSignedAndPublish` recorded the entries of `payload` (the UPDATE_COMMITTED
    /// it published) from index `first` on; those before `first` were recorded earlier (their
    /// own events) and published with them. One event for the batch instead of an
    /// `UpdateCommitted` per entry: an entry's 136 bytes cost less as log data than a log.
    event CommitmentsRecorded(uint64 indexed jobId, uint32 indexed round, uint256 first, bytes payload);
    event CommitmentsPublished(
        uint64 indexed jobId, uint32 indexed round, uint256 count, bytes32 head, uint64 firstSequence
    );
    /// @notice A ROUND_SETTLED message was applied; `payload` is its payload, whose entries give
    /// each worker's outcome (accepted, dropped or slashed). Every entry settled its task except
    /// those a `SettlementSkipped` of the same transaction names. Only a slash writes the task
    /// and frees its lock here (`Slashed`); the others leave the lock held until the slot's next
    /// task or `releaseSettled` (see `Task`). One event a message, as `TasksAssigned`.
    event TasksSettled(uint64 indexed jobId, uint32 indexed round, bytes payload);
    event TaskExpiredReleased(bytes32 indexed taskId, address indexed worker);
    /// @notice `releaseSettled` freed the locks (`lock` in all) that `tasks` of the worker's
    /// settled tasks in the job still held.
    event SettledLocksFreed(uint64 indexed jobId, address indexed worker, uint256 tasks, uint256 lock);
    event SettlementSkipped(bytes32 indexed taskId, bytes32 indexed workerKey, SkipReason reason);
    event Slashed(bytes32 indexed taskId, address indexed worker, uint256 amount);
    event SlashCredited(bytes32 indexed recipient, uint256 amount);
    event Claimed(address indexed account, uint256 amount);
    event MessageFeesFunded(address indexed from, uint256 amount);

    error ZeroAmount();
    error StakeTooLarge(uint256 staked, uint256 limit);
    error InsufficientStake(uint256 staked, uint256 required);
    error UnbondExceedsFreeStake(uint256 staked, uint256 amount, uint256 locked);
    error UnbondingPending(uint64 readyAt);
    error NothingUnbonding(address worker);
    error UnknownTask(bytes32 taskId);
    error NotAssignedWorker(bytes32 taskId, address caller);
    error AlreadyCommitted(bytes32 taskId);
    error TaskAlreadySettled(bytes32 taskId);
    error TaskAlreadyReleased(bytes32 taskId);
    error StakeBelowTaskLock(bytes32 taskId, uint256 staked, uint256 lock);
    error CommitmentTooLate(bytes32 taskId, uint64 deadline);
    error ReleaseTooEarly(bytes32 taskId, uint64 releaseAt);
    error InsufficientFeeReserve(uint256 required, uint256 available);
    error NothingToClaim(address account);
    error NothingToPublish(uint64 jobId, uint32 round);
    error CommitmentsMismatch(bytes32 head, bytes32 given);
    error PublishTooLarge(uint256 count, uint256 limit);
    error TransferFailed(address to, uint256 amount);

    /// @param core_ The message core (Wormhole core in production).
    /// @param verifier_ What verifies incoming VAAs: zero for the core, or a ThresholdVerifier beside it.
    /// @param consistencyLevel_ Consistency level of published messages.
    /// @param initialOwner Account that manages peers.
    /// @param coordinatorChain_ Wormhole chain id of the coordinator chain.
    /// @param minStake_ Stake (wei) required to register.
    /// @param unbondingDelay_ Seconds between an unbond request and the withdrawal.
    constructor(
        IMessageCore core_,
        IMessageCore verifier_,
        uint8 consistencyLevel_,
        address initialOwner,
        uint16 coordinatorChain_,
        uint256 minStake_,
        uint64 unbondingDelay_
    ) MessageReceiver(core_, verifier_, consistencyLevel_, initialOwner) {
        coordinatorChain = coordinatorChain_;
        minStake = minStake_;
        unbondingDelay = unbondingDelay_;
    }

    // ------------------------------------------------------------------ stake

    /// @notice Add to the caller's bonded stake. A registered worker also pays the core's fee for
    /// the STAKE_CHANGED it publishes: the stake added is `msg.value` minus that fee.
    function stake() external payable {
        Staker storage s = _stakers[msg.sender];
        uint256 fee = s.registered ? core.messageFee() : 0;
        if (msg.value <= fee) revert ZeroAmount();
        uint256 amount = msg.value - fee;
        uint256 staked = uint256(s.staked) + amount;
        if (staked > type(uint104).max) revert StakeTooLarge(staked, type(uint104).max);
        s.staked = uint104(staked);
        totalStaked += amount;
        emit Staked(msg.sender, amount, s.staked);
        if (s.registered) _publishStakeChange(msg.sender, s, PayloadCodec.STAKE_STAKED, bytes32(0), fee);
    }

    /// @notice Move `amount` of bonded stake to unbonding; it can be withdrawn after the delay.
    /// @dev Refused when it would leave less bonded stake than the caller's open tasks lock. A new
    /// request adds to what is unbonding and restarts the delay. A registered worker pays the
    /// core's fee for its STAKE_CHANGED as `msg.value`.
    function requestUnbond(uint256 amount) external payable {
        Staker storage s = _stakers[msg.sender];
        uint256 fee = _requireFees(s.registered ? 1 : 0);
        if (amount == 0) revert ZeroAmount();
        if (amount > s.staked || s.staked - amount < s.locked) {
            revert UnbondExceedsFreeStake(s.staked, amount, s.locked);
        }
        s.staked -= uint104(amount); // amount <= staked, checked above
        s.unbonding += uint128(amount);
        totalStaked -= amount;
        totalUnbonding += amount;
        uint64 readyAt = uint64(block.timestamp) + unbondingDelay;
        s.unbondingReadyAt = readyAt;
        emit UnbondRequested(msg.sender, amount, readyAt);
        if (s.registered) _publishStakeChange(msg.sender, s, PayloadCodec.STAKE_UNBONDING, bytes32(0), fee);
    }

    /// @notice Withdraw the caller's unbonded stake once the delay has passed.
    /// @dev Unbonding stake never backs a task (`requestUnbond` keeps locked stake bonded). A
    /// registered worker pays the core's fee for its STAKE_CHANGED as `msg.value`.
    function withdrawStake() external payable nonReentrant {
        Staker storage s = _stakers[msg.sender];
        uint256 fee = _requireFees(s.registered ? 1 : 0);
        uint256 amount = s.unbonding;
        if (amount == 0) revert NothingUnbonding(msg.sender);
        if (block.timestamp < s.unbondingReadyAt) revert UnbondingPending(s.unbondingReadyAt);
        s.unbonding = 0;
        totalUnbonding -= amount;
        emit StakeWithdrawn(msg.sender, amount);
        if (s.registered) _publishStakeChange(msg.sender, s, PayloadCodec.STAKE_WITHDRAWN, bytes32(0), fee);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed(msg.sender, amount);
    }

    /// @notice Announce the caller to the coordinator chain (publishes WORKER_REGISTERED).
    /// @dev Pays the core's fee as `msg.value`. The coordinator chain takes the stake of a first
    /// registration; after that, stake reaches it only through STAKE_CHANGED.
    /// @param payout Where rewards go on the coordinator chain (left-padded EVM address).
    /// @param capabilities Bit 0: CUDA GPU; bit 1: deterministic CPU replay.
    /// @return sequence The published message's sequence.
    function register(bytes32 payout, uint32 capabilities) external payable returns (uint64 sequence) {
        uint256 fee = _requireFees(1);
        Staker storage s = _stakers[msg.sender];
        if (s.staked < minStake || s.staked == 0) revert InsufficientStake(s.staked, minStake);
        bytes32 target = _coordinator();
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
    /// @dev `msg.value` is added to `feeReserve`, which pays for the STAKE_CHANGED messages the VAA
    /// causes (one per refused entry and per slashed worker). Reverts `AlreadyConsumed` when the VAA
    /// was delivered before; never reverts for one worker's entry.
    function receiveMessage(bytes calldata encodedVaa) external payable {
        if (msg.value != 0) _fund();
        (IMessageCore.VM memory vm, PayloadCodec.Header memory header) = _consume(encodedVaa);
        if (header.payloadId == PayloadCodec.TASK_ASSIGNED) {
            _onTaskAssigned(vm.payload);
        } else if (header.payloadId == PayloadCodec.ROUND_SETTLED) {
            _onRoundSettled(vm.payload);
        } else {
            revert UnexpectedPayload(header.payloadId);
        }
    }

    /// @notice Act on each of `vaas` on its own, as `receiveMessage` does; a consumed or refused
    /// entry does not revert the others (see `MessageReceiver` for the results and `BatchEntry`).
    /// @dev `msg.value` is added to `feeReserve` once, before the entries, which pay their
    /// messages from it; an entry the reserve cannot pay for is FAILED (`InsufficientFeeReserve`).
    /// @return results Per entry: APPLIED 1, CONSUMED 2, INVALID 3, FAILED 4.
    function receiveMessages(bytes[] calldata vaas) external payable nonReentrant returns (uint8[] memory results) {
        if (msg.value != 0) _fund();
        results = _receiveBatch(vaas);
    }

    /// @notice Add `msg.value` to the reserve that pays for messages published on receipt.
    function fundMessageFees() external payable {
        if (msg.value == 0) revert ZeroAmount();
        _fund();
    }

    function _fund() private {
        feeReserve += msg.value;
        emit MessageFeesFunded(msg.sender, msg.value);
    }

    function _onTaskAssigned(bytes memory payload) private {
        (PayloadCodec.TaskAssigned memory m, uint256 count) = PayloadCodec.decodeTaskAssignedHead(payload);
        uint256 required = uint256(m.minStake) * DECIMALS_FACTOR;
        uint256 lock = uint256(m.stakeLock) * DECIMALS_FACTOR;
        uint256 created = 0;
        for (uint256 i = 0; i < count; ++i) {
            (bytes32 workerKey,) = PayloadCodec.assignmentAt(payload, i);
            if (_assignEntry(m, workerKey, required, lock)) ++created;
        }
        // at most 255 entries a message; a round's count cannot reach 2^32
        if (created != 0) _commitLogs[_logKey(m.header.jobId, m.round)].created += uint32(created);
        emit TasksAssigned(m.header.jobId, m.round, payload);
    }

    /// @dev Create one entry's task (true), or skip it (TaskRefused) without touching the rest.
    /// The slot's earlier task, two rounds before, is overwritten once it no longer holds a lock
    /// or its round has settled (its lock then passes to the new task); while it is open the
    /// entry is refused (`PreviousTaskOpen`).
    function _assignEntry(PayloadCodec.TaskAssigned memory m, bytes32 workerKey, uint256 required, uint256 lock)
        private
        returns (bool)
    {
        if (uint256(workerKey) >> 160 != 0 || workerKey == bytes32(0)) {
            // No worker of this chain has such a key; the coordinator chain never knew one.
            emit TaskRefused(taskIdOf(m.header.jobId, m.round, workerKey), workerKey, RefusalReason.InvalidWorkerKey);
            return false;
        }
        address worker = address(uint160(uint256(workerKey)));
        bytes32 slot = _slotOf(m.header.jobId, m.round, worker);
        Task storage task = _tasks[slot];
        TaskState state = task.state;
        if (state != TaskState.None && task.round == m.round) {
            emit TaskRefused(taskIdOf(m.header.jobId, m.round, workerKey), workerKey, RefusalReason.AlreadyAssigned);
            return false;
        }
        Staker storage s = _stakers[worker];
        bool refused;
        RefusalReason why;
        // Whether the earlier task still holds a lock, which passes to this one
        bool takesOver = state == TaskState.Assigned || state == TaskState.Committed;
        uint256 held = 0;
        if (takesOver && !_settled(m.header.jobId, task.round)) {
            (refused, why) = (true, RefusalReason.PreviousTaskOpen); // its settlement must come first
        } else {
            if (takesOver) held = task.lock;
            (refused, why) = _refusal(s, required, lock, held);
        }
        if (refused) {
            bytes32 taskId = taskIdOf(m.header.jobId, m.round, workerKey);
            emit TaskRefused(taskId, workerKey, why);
            _publishStakeChange(worker, s, PayloadCodec.STAKE_TASK_REFUSED, taskId, _reserveFee());
            return false;
        }
        // lock <= free bonded stake (`_refusal`), so it fits in 96 bits
        _tasks[slot] = Task(TaskState.Assigned, m.round, _toTime(m.deadline), _toTime(m.releaseAt), uint96(lock));
        if (!takesOver) {
            s.locked += uint104(lock);
            s.activeTasks += 1;
        } else if (held != lock) {
            s.locked = uint104(uint256(s.locked) - held + lock); // held is part of locked
        }
        return true;
    }

    /// @dev Why `s` cannot take a task with `lock`, when `held` of its locks is freed for it.
    function _refusal(Staker storage s, uint256 required, uint256 lock, uint256 held)
        private
        view
        returns (bool refused, RefusalReason why)
    {
        if (!s.registered) return (true, RefusalReason.NotRegistered);
        if (s.staked < required) return (true, RefusalReason.BelowMinStake);
        // locked <= staked always: a lock is taken from free stake, a slash takes at most it
        if (s.staked - (s.locked - held) < lock) return (true, RefusalReason.LockUnavailable);
        return (false, RefusalReason.NotRegistered);
    }

    /// @dev Whether the job round's tasks on this chain have all had their settlement entries.
    function _settled(uint64 jobId, uint32 round) private view returns (bool) {
        return _closedLog(_commitLogs[_logKey(jobId, round)]);
    }

    function _closedLog(CommitLog storage log) private view returns (bool) {
        uint32 created = log.created;
        return created != 0 && log.closed == created;
    }

    function _onRoundSettled(bytes memory payload) private {
        (PayloadCodec.RoundSettled memory m, uint256 count) = PayloadCodec.decodeRoundSettledHead(payload);
        address[] memory honest = new address[](count);
        uint256 honestCount = 0;
        uint256 slashed = 0;
        uint256 closed = 0;
        for (uint256 i = 0; i < count; ++i) {
            (bytes32 workerKey, uint8 outcome, uint64 slash) = PayloadCodec.settlementAt(payload, i);
            // A key above 160 bits never had a task (assignment refuses it); it must not reach
            // the task of the address in its low bits.
            address worker = address(uint160(uint256(workerKey)));
            Task storage task = _tasks[_slotOf(m.header.jobId, m.round, worker)];
            TaskState state = task.state;
            if (uint256(workerKey) >> 160 != 0 || state == TaskState.None || task.round != m.round) {
                emit SettlementSkipped(taskIdOf(m.header.jobId, m.round, workerKey), workerKey, SkipReason.UnknownTask);
                continue;
            }
            if (state == TaskState.Settled) {
                emit SettlementSkipped(
                    taskIdOf(m.header.jobId, m.round, workerKey), workerKey, SkipReason.AlreadySettled
                );
                continue;
            }
            ++closed; // the task's one entry: released or not, it counts toward its round's close
            if (state == TaskState.Released) {
                emit SettlementSkipped(taskIdOf(m.header.jobId, m.round, workerKey), workerKey, SkipReason.Released);
                continue;
            }
            if (outcome == PayloadCodec.OUTCOME_SLASHED) {
                task.state = TaskState.Settled;
                Staker storage staker = _stakers[worker];
                uint256 lock = task.lock;
                staker.locked -= uint104(lock);
                staker.activeTasks -= 1;
                bytes32 taskId = taskIdOf(m.header.jobId, m.round, workerKey);
                slashed += _slash(taskId, worker, lock, staker, uint256(slash) * DECIMALS_FACTOR);
            } else if (outcome == PayloadCodec.OUTCOME_ACCEPTED) {
                honest[honestCount++] = worker;
            }
        }
        if (closed != 0) _commitLogs[_logKey(m.header.jobId, m.round)].closed += uint32(closed);
        if (slashed != 0) _distribute(m, honest, honestCount, slashed);
        emit TasksSettled(m.header.jobId, m.round, payload);
    }

    /// @dev Take min(amount, the task's lock, bonded stake) from bonded stake and report it.
    function _slash(bytes32 taskId, address worker, uint256 lock, Staker storage s, uint256 amount)
        private
        returns (uint256 taken)
    {
        taken = amount < lock ? amount : lock;
        if (taken > s.staked) taken = s.staked;
        if (taken == 0) return 0;
        s.staked -= uint104(taken); // taken <= staked
        totalStaked -= taken;
        emit Slashed(taskId, worker, taken);
        _publishStakeChange(worker, s, PayloadCodec.STAKE_SLASHED, bytes32(0), _reserveFee());
    }

    /// @dev Credit a batch's slashed total as its slash mode says.
    function _distribute(
        PayloadCodec.RoundSettled memory m,
        address[] memory honest,
        uint256 honestCount,
        uint256 slashed
    ) private {
        uint256 rest = slashed;
        if (m.slashMode == PayloadCodec.SLASH_TO_HONEST && honestCount != 0) {
            uint256 share = slashed / honestCount;
            for (uint256 i = 0; i < honestCount && share != 0; ++i) {
                _credit(PayloadCodec.toBytes32(honest[i]), share);
            }
            if (share != 0) rest -= share * honestCount;
        }
        if (rest != 0) _credit(m.slashRecipient, rest);
    }

    function _credit(bytes32 recipient, uint256 amount) private {
        _claimable[recipient] += amount;
        totalClaimable += amount;
        emit SlashCredited(recipient, amount);
    }

    // ------------------------------------------------------------------ commitments

    /// @notice Commit the caller's update for an assigned task, and the data it trained on:
    /// `dataRoot`, the Merkle root over the hashes of its `numSamples` examples (docs/protocol.md,
    /// "Data commitments"). The commitment joins its job round's commit log (its hash chain and
    /// `UpdateCommitted`); it reaches the coordinator chain when someone publishes the round's
    /// pending commitments (`publishCommitments`).
    /// @dev Only the assigned worker, once, no later than the task's deadline, while the task is
    /// neither settled nor released and the worker's bonded stake still covers its lock.
    function commitUpdate(
        uint64 jobId,
        uint32 round,
        bytes32 updateHash,
        bytes32 transcriptRoot,
        bytes32 dataRoot,
        uint32 numSamples,
        uint32 trainLoss
    ) external {
        CommitLog storage log = _commitLogs[_logKey(jobId, round)];
        _markCommitted(jobId, round, log);
        bytes32 head = log.head;
        if (head == bytes32(0)) log.firstBlock = uint64(block.number);
        bytes32 commitment = PayloadCodec.commitmentHash(updateHash, transcriptRoot, dataRoot, numSamples, trainLoss);
        log.head = PayloadCodec.chainCommitment(head, PayloadCodec.toBytes32(msg.sender), commitment);
        emit UpdateCommitted(jobId, round, msg.sender, updateHash, transcriptRoot, dataRoot, numSamples, trainLoss);
    }

    /// @notice Record commitments the workers signed (`SignedCommitment`), in one transaction for
    /// any number of workers; anyone may submit them. Each entry is recorded exactly as its
    /// worker's own `commitUpdate` would be (the same task rules, commit log and
    /// `UpdateCommitted`); an entry that does not qualify (a signature that recovers no assigned
    /// worker, a task already committed, closed or past its deadline, stake below its lock) is
    /// left out with `CommitmentSkipped` and the others are still recorded, so a worker who
    /// commits on its own meanwhile cannot make a batch fail.
    /// @return recorded How many entries were recorded.
    function commitSigned(uint64 jobId, uint32 round, SignedCommitment[] calldata entries)
        external
        returns (uint256 recorded)
    {
        CommitLog storage log = _commitLogs[_logKey(jobId, round)];
        (recorded,) = _recordSigned(jobId, round, log, entries, "", 0);
    }

    /// @notice `commitSigned`, then publish the round's pending commitments as one
    /// UPDATE_COMMITTED: `pending`, those recorded before and not yet published (as
    /// `publishCommitments` takes them), then the entries this call recorded. A round whose
    /// workers sign is recorded and published in one transaction, its commitments sent once.
    /// Anyone may call it, paying the core's fee for one message as `msg.value`.
    /// @dev At most `MAX_BATCH` commitments in all (`pending` and `entries`); `pending` must
    /// rebuild the log from `publishedHead` to `head` (`CommitmentsMismatch`); a call that leaves
    /// nothing to publish reverts (`NothingToPublish`), recording nothing.
    /// @return recorded How many entries were recorded.
    /// @return sequence The published message's sequence.
    function commitSignedAndPublish(
        uint64 jobId,
        uint32 round,
        PayloadCodec.Commitment[] calldata pending,
        SignedCommitment[] calldata entries
    ) external payable returns (uint256 recorded, uint64 sequence) {
        uint256 fee = _requireFees(1);
        uint256 total = pending.length + entries.length;
        if (total > PayloadCodec.MAX_BATCH) revert PublishTooLarge(total, PayloadCodec.MAX_BATCH);
        if (total == 0) revert NothingToPublish(jobId, round);
        CommitLog storage log = _commitLogs[_logKey(jobId, round)];
        PayloadCodec.UpdateCommitted memory message;
        message.header = PayloadCodec.Header(PayloadCodec.UPDATE_COMMITTED, coordinatorChain, _coordinator(), jobId);
        message.round = round;
        // Sized for every entry; cut to those recorded below.
        bytes memory payload = PayloadCodec.updateCommittedFixed(message, total);
        bytes32 chained = _putPending(payload, log.publishedHead, pending);
        if (chained != log.head) revert CommitmentsMismatch(log.head, chained);
        bytes32 head;
        (recorded, head) = _recordSigned(jobId, round, log, entries, payload, pending.length);
        uint256 count = pending.length + recorded;
        if (count == 0) revert NothingToPublish(jobId, round);
        PayloadCodec.setCommitmentCount(payload, count); // the entries left out were never written
        log.publishedHead = head;
        sequence = _publish(payload, fee);
        if (recorded != 0) emit CommitmentsRecorded(jobId, round, pending.length, payload);
        emit CommitmentsPublished(jobId, round, count, head, sequence);
    }

    /// @dev Write `pending` as the first entries of `payload`; their hash chain from `chained`.
    function _putPending(bytes memory payload, bytes32 chained, PayloadCodec.Commitment[] calldata pending)
        private
        pure
        returns (bytes32)
    {
        for (uint256 i = 0; i < pending.length; ++i) {
            PayloadCodec.Commitment calldata c = pending[i];
            bytes32 commitment =
                PayloadCodec.commitmentHash(c.updateHash, c.transcriptRoot, c.dataRoot, c.numSamples, c.trainLoss);
            chained = PayloadCodec.chainCommitment(chained, c.workerKey, commitment);
            PayloadCodec.putCommitment(
                payload, i, c.workerKey, c.updateHash, c.transcriptRoot, c.dataRoot, c.numSamples, c.trainLoss
            );
        }
        return chained;
    }

    /// @dev Write the signed commitment `e` of `key` as entry `i` of `payload`.
    function _putSigned(bytes memory payload, uint256 i, bytes32 key, SignedCommitment calldata e) private pure {
        PayloadCodec.putCommitment(
            payload, i, key, e.updateHash, e.transcriptRoot, e.dataRoot, e.numSamples, e.trainLoss
        );
    }

    /// @dev Record the signed `entries` into `log` (see `commitSigned`), each recorded one
    /// written as an entry of the UPDATE_COMMITTED `payload` from index `offset` on, or, when
    /// `payload` is empty, logged by its `UpdateCommitted`; returns how many were recorded and
    /// the log's head after them.
    function _recordSigned(
        uint64 jobId,
        uint32 round,
        CommitLog storage log,
        SignedCommitment[] calldata entries,
        bytes memory payload,
        uint256 offset
    ) private returns (uint256 recorded, bytes32 head) {
        head = log.head;
        bytes32 domain = _domainSeparator();
        for (uint256 i = 0; i < entries.length; ++i) {
            SignedCommitment calldata e = entries[i];
            bytes32 commitment =
                PayloadCodec.commitmentHash(e.updateHash, e.transcriptRoot, e.dataRoot, e.numSamples, e.trainLoss);
            address worker = _signer(_digest(domain, jobId, round, commitment), e.r, e.vs);
            CommitSkip skip = worker == address(0) ? CommitSkip.BadSignature : _tryCommit(jobId, round, worker, log);
            if (skip != CommitSkip.None) {
                emit CommitmentSkipped(jobId, round, worker, skip);
                continue;
            }
            if (head == bytes32(0)) log.firstBlock = uint64(block.number);
            bytes32 key = PayloadCodec.toBytes32(worker);
            head = PayloadCodec.chainCommitment(head, key, commitment);
            if (payload.length != 0) {
                _putSigned(payload, offset + recorded, key, e); // logged by `CommitmentsRecorded`
            } else {
                emit UpdateCommitted(
                    jobId, round, worker, e.updateHash, e.transcriptRoot, e.dataRoot, e.numSamples, e.trainLoss
                );
            }
            ++recorded;
        }
        if (recorded != 0) log.head = head;
    }

    /// @notice The EIP-712 digest a worker signs for `commitSigned`: domain `fedrelay WorkerHub`
    /// version 1 with this chain's EVM id and this contract; typed struct
    /// `SignedCommitment(uint64 jobId,uint32 round,bytes32 commitment)`, where `commitment` is
    /// the hash the commit log chains (`PayloadCodec.commitmentHash` of the five fields).
    function commitmentDigest(uint64 jobId, uint32 round, bytes32 commitment) external view returns (bytes32) {
        return _digest(_domainSeparator(), jobId, round, commitment);
    }

    function _domainSeparator() private view returns (bytes32) {
        return
            keccak256(abi.encode(DOMAIN_TYPEHASH, DOMAIN_NAME_HASH, DOMAIN_VERSION_HASH, block.chainid, address(this)));
    }

    function _digest(bytes32 domain, uint64 jobId, uint32 round, bytes32 commitment) private pure returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(COMMITMENT_TYPEHASH, jobId, round, commitment));
        return keccak256(abi.encodePacked("\x19\x01", domain, structHash));
    }

    /// @dev The address that signed `digest` with the EIP-2098 compact signature (`r`, `vs`);
    /// zero for an invalid one. A high `s` is refused, so a commitment has one valid signature.
    function _signer(bytes32 digest, bytes32 r, bytes32 vs) private pure returns (address) {
        bytes32 s = vs & bytes32(type(uint256).max >> 1);
        if (uint256(s) > HALF_ORDER) return address(0);
        uint8 v = uint8(uint256(vs >> 255)) + 27;
        return ecrecover(digest, v, r, s);
    }

    /// @notice Publish the job round's pending commitments: `entries` are every commitment
    /// recorded since the last publication, in the order recorded (the `UpdateCommitted` events
    /// from the log's `firstBlock` on, after those already published); they go out as
    /// UPDATE_COMMITTED messages of up to 32. Anyone may call it, paying the core's fee per
    /// message as `msg.value`.
    /// @dev The entries must rebuild the log's hash chain from `publishedHead` to `head`
    /// (`CommitmentsMismatch` otherwise, also when a commitment landed meanwhile: read again), so
    /// nobody can publish a commitment that was not recorded, leave one out, reorder or repeat it.
    /// @return firstSequence The first published message's sequence.
    function publishCommitments(uint64 jobId, uint32 round, PayloadCodec.Commitment[] calldata entries)
        external
        payable
        returns (uint64 firstSequence)
    {
        uint256 count = entries.length;
        uint256 fee = _requireFees((count + PayloadCodec.MAX_BATCH - 1) / PayloadCodec.MAX_BATCH);
        CommitLog storage log = _commitLogs[_logKey(jobId, round)];
        bytes32 head = log.head;
        bytes32 chained = log.publishedHead;
        if (chained == head) revert NothingToPublish(jobId, round);
        PayloadCodec.UpdateCommitted memory message;
        message.header = PayloadCodec.Header(PayloadCodec.UPDATE_COMMITTED, coordinatorChain, _coordinator(), jobId);
        message.round = round;
        // The messages are written as the chain is rebuilt through their entries, and published
        // once it reaches the head.
        uint256 messages = (count + PayloadCodec.MAX_BATCH - 1) / PayloadCodec.MAX_BATCH;
        bytes[] memory payloads = new bytes[](messages);
        for (uint256 m = 0; m < messages; ++m) {
            uint256 start = m * PayloadCodec.MAX_BATCH;
            uint256 size = count - start < PayloadCodec.MAX_BATCH ? count - start : PayloadCodec.MAX_BATCH;
            payloads[m] = PayloadCodec.updateCommittedFixed(message, size);
            chained = _putPending(payloads[m], chained, entries[start:start + size]);
        }
        if (chained != head) revert CommitmentsMismatch(head, chained);
        log.publishedHead = head;
        for (uint256 m = 0; m < messages; ++m) {
            uint64 sequence = _publish(payloads[m], fee);
            if (m == 0) firstSequence = sequence;
        }
        emit CommitmentsPublished(jobId, round, count, head, firstSequence);
    }

    /// @notice A job round's commit log on this chain (all zero before its first commitment).
    function getCommitLog(uint64 jobId, uint32 round) external view returns (CommitLog memory) {
        return _commitLogs[_logKey(jobId, round)];
    }

    function _markCommitted(uint64 jobId, uint32 round, CommitLog storage log) private {
        bytes32 taskId = taskIdOf(jobId, round, PayloadCodec.toBytes32(msg.sender));
        Task storage task = _tasks[_slotOf(jobId, round, msg.sender)];
        if (task.state == TaskState.None || task.round != round) revert NotAssignedWorker(taskId, msg.sender);
        if (task.state == TaskState.Committed) revert AlreadyCommitted(taskId);
        if (task.state == TaskState.Settled || _closedLog(log)) revert TaskAlreadySettled(taskId);
        if (task.state == TaskState.Released) revert TaskAlreadyReleased(taskId);
        uint256 staked = _stakers[msg.sender].staked;
        if (staked < task.lock) revert StakeBelowTaskLock(taskId, staked, task.lock);
        if (block.timestamp > task.deadline) revert CommitmentTooLate(taskId, task.deadline);
        task.state = TaskState.Committed;
    }

    /// @dev `_markCommitted`'s rules for `worker`, as a reason instead of a revert
    /// (`None` when the task was marked committed).
    function _tryCommit(uint64 jobId, uint32 round, address worker, CommitLog storage log)
        private
        returns (CommitSkip)
    {
        Task storage task = _tasks[_slotOf(jobId, round, worker)];
        TaskState state = task.state;
        if (state == TaskState.None || task.round != round) return CommitSkip.NotAssigned;
        if (state == TaskState.Committed) return CommitSkip.AlreadyCommitted;
        if (state != TaskState.Assigned || _closedLog(log)) return CommitSkip.TaskClosed;
        if (_stakers[worker].staked < task.lock) return CommitSkip.StakeBelowLock;
        if (block.timestamp > task.deadline) return CommitSkip.TooLate;
        task.state = TaskState.Committed;
        return CommitSkip.None;
    }

    /// @notice Release the caller's task of `jobId` round `round` that was not settled by its
    /// release time: its stake lock is freed and the coordinator chain learns of it
    /// (STAKE_CHANGED TASK_RELEASED). A later settlement of the task is skipped. Pays the core's
    /// fee as `msg.value`.
    function releaseExpiredTask(uint64 jobId, uint32 round) external payable returns (uint64 sequence) {
        uint256 fee = _requireFees(1);
        bytes32 taskId = taskIdOf(jobId, round, PayloadCodec.toBytes32(msg.sender));
        Task storage task = _tasks[_slotOf(jobId, round, msg.sender)];
        if (task.state == TaskState.None || task.round != round) revert UnknownTask(taskId);
        if (task.state == TaskState.Settled) revert TaskAlreadySettled(taskId);
        if (task.state == TaskState.Released) revert TaskAlreadyReleased(taskId);
        if (_settled(jobId, round)) revert TaskAlreadySettled(taskId); // `releaseSettled` frees its lock
        if (block.timestamp <= task.releaseAt) revert ReleaseTooEarly(taskId, task.releaseAt);
        task.state = TaskState.Released;
        Staker storage s = _stakers[msg.sender];
        s.locked -= task.lock;
        s.activeTasks -= 1;
        emit TaskExpiredReleased(taskId, msg.sender);
        sequence = _publishStakeChange(msg.sender, s, PayloadCodec.STAKE_TASK_RELEASED, taskId, fee);
    }

    /// @notice Free the locks that `workers`' tasks of `jobId` still hold although their rounds
    /// have settled (see `Task`: a settlement without a slash leaves the lock to the job's task
    /// two rounds on, which a job's last two rounds never have). Anyone may call it for anyone:
    /// it frees only stake no task needs, and changes no bonded stake. A worker's stake record
    /// is written once for both of its task slots in the job.
    /// @return freed How many tasks' locks were freed.
    function releaseSettled(uint64 jobId, address[] calldata workers) external returns (uint256 freed) {
        for (uint256 i = 0; i < workers.length; ++i) {
            address worker = workers[i];
            uint256 lock = 0;
            uint256 tasks = 0;
            for (uint32 parity = 0; parity < 2; ++parity) {
                Task storage task = _tasks[_slotOf(jobId, parity, worker)];
                TaskState state = task.state;
                if (state != TaskState.Assigned && state != TaskState.Committed) continue;
                if (!_settled(jobId, task.round)) continue;
                task.state = TaskState.Settled;
                lock += task.lock;
                ++tasks;
            }
            if (tasks == 0) continue;
            Staker storage s = _stakers[worker];
            s.locked -= uint104(lock); // both were part of locked
            s.activeTasks -= uint32(tasks);
            freed += tasks;
            emit SettledLocksFreed(jobId, worker, tasks, lock);
        }
    }

    // ------------------------------------------------------------------ slashed funds

    /// @notice Withdraw the slashed stake credited to the caller (as job recipient or honest worker).
    function claim() external nonReentrant {
        bytes32 key = PayloadCodec.toBytes32(msg.sender);
        uint256 amount = _claimable[key];
        if (amount == 0) revert NothingToClaim(msg.sender);
        _claimable[key] = 0;
        totalClaimable -= amount;
        emit Claimed(msg.sender, amount);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed(msg.sender, amount);
    }

    /// @notice Slashed stake `account` may claim.
    function claimable(address account) external view returns (uint256) {
        return _claimable[PayloadCodec.toBytes32(account)];
    }

    /// @notice Slashed stake credited to a recipient given in the protocol's bytes32 form.
    function claimableOf(bytes32 recipient) external view returns (uint256) {
        return _claimable[recipient];
    }

    // ------------------------------------------------------------------ views

    /// @notice task_id = keccak256(u64 job_id || u32 round || u16 this chain || worker_key).
    function taskIdOf(uint64 jobId, uint32 round, bytes32 workerKey) public view returns (bytes32) {
        return PayloadCodec.computeTaskId(jobId, round, chainId, workerKey);
    }

    /// @notice A worker's stake record.
    function getStaker(address worker) external view returns (Staker memory) {
        return _stakers[worker];
    }

    /// @notice The task of `workerKey` in `jobId` round `round` (all zero when there is none,
    /// or when a later round of the job has taken its slot). A task whose round has settled
    /// reads Settled, also while it still holds its lock (`releaseSettled`).
    function getTask(uint64 jobId, uint32 round, bytes32 workerKey) external view returns (Task memory task) {
        if (uint256(workerKey) >> 160 != 0) return task;
        task = _tasks[_slotOf(jobId, round, address(uint160(uint256(workerKey))))];
        if (task.round != round) {
            delete task;
        } else if ((task.state == TaskState.Assigned || task.state == TaskState.Committed) && _settled(jobId, round)) {
            task.state = TaskState.Settled;
        }
    }

    /// @notice Whether every task of `jobId` round `round` created on this chain has had its
    /// ROUND_SETTLED entry (false before its first task).
    function isRoundSettled(uint64 jobId, uint32 round) external view returns (bool) {
        return _settled(jobId, round);
    }

    // ------------------------------------------------------------------ internals

    /// @dev Where a job round's commit log lives: keccak256(u64 job_id || u32 round).
    function _logKey(uint64 jobId, uint32 round) private pure returns (bytes32 key) {
        assembly ("memory-safe") {
            // 12 bytes in the scratch space
            mstore(0x00, shl(192, jobId))
            mstore(0x08, shl(224, round))
            key := keccak256(0x00, 12)
        }
    }

    /// @dev Where a worker's task of `jobId` round `round` lives: keccak256(u64 job_id || u8
    /// round parity || worker address), so a job's rounds take turns in two slots per worker.
    function _slotOf(uint64 jobId, uint32 round, address worker) private pure returns (bytes32 slot) {
        assembly ("memory-safe") {
            // 29 bytes in the scratch space, each field written after the one before it
            mstore(0x00, shl(192, jobId))
            mstore(0x08, shl(248, and(round, 1)))
            mstore(0x09, shl(96, worker))
            slot := keccak256(0x00, 29)
        }
    }

    /// @dev A message's timestamp in 48 bits, clamped (no block reaches 2^48 seconds).
    function _toTime(uint64 value) private pure returns (uint48) {
        return value > type(uint48).max ? type(uint48).max : uint48(value);
    }

    function _coordinator() private view returns (bytes32 target) {
        target = peers[coordinatorChain];
        if (target == bytes32(0)) revert UnknownEmitter(coordinatorChain, target);
    }

    /// @dev Take one message fee from the reserve (for messages published on receipt).
    function _reserveFee() private returns (uint256 fee) {
        fee = core.messageFee();
        if (fee > feeReserve) revert InsufficientFeeReserve(fee, feeReserve);
        feeReserve -= fee;
    }

    /// @dev Publish STAKE_CHANGED with the worker's bonded stake and next nonce.
    function _publishStakeChange(address worker, Staker storage s, uint8 reason, bytes32 taskId, uint256 fee)
        private
        returns (uint64 sequence)
    {
        uint64 nonce = ++s.stakeNonce;
        uint64 reported = _toMessageAmount(s.staked);
        PayloadCodec.StakeChanged memory message = PayloadCodec.StakeChanged(
            PayloadCodec.Header(PayloadCodec.STAKE_CHANGED, coordinatorChain, _coordinator(), 0),
            PayloadCodec.toBytes32(worker),
            reported,
            nonce,
            reason,
            taskId
        );
        sequence = _publish(PayloadCodec.encode(message), fee);
        emit StakeChangePublished(worker, reason, reported, nonce, sequence);
    }

    function _toMessageAmount(uint256 amount) private pure returns (uint64) {
        uint256 scaled = amount / DECIMALS_FACTOR;
        return scaled > type(uint64).max ? type(uint64).max : uint64(scaled);
    }
}
