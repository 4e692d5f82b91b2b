// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title PayloadCodec
/// @notice The one Solidity definition of fedrelay's message payloads (PROTOCOL.md). Integers are
/// big-endian and fixed width, addresses are bytes32, there is no length prefix and no trailing
/// byte. The Solana program and the Python codec copy these layouts byte for byte.
///
/// Header (every payload, 44 bytes):
///   0  u8      payload_id        1 WORKER_REGISTERED, 2 TASK_ASSIGNED, 3 UPDATE_COMMITTED,
///                                4 ROUND_SETTLED, 5 STAKE_CHANGED
///   1  u8      version = 4
///   2  u16     target_chain      Wormhole chain id of the receiver
///   4  bytes32 target_address    receiving contract or program
///   36 u64     job_id            0 when not job-specific
///
/// WORKER_REGISTERED (120 bytes):  44 worker_key bytes32 | 76 stake u64 (8 decimals)
///                                 | 84 payout_address bytes32 | 116 capabilities u32
/// TASK_ASSIGNED (145 + 36k):      44 round u32 | 48 deadline u64 | 56 model_hash bytes32
///                                 | 88 config_hash bytes32 | 120 min_stake u64 | 128 stake_lock u64
///                                 (<= min_stake) | 136 release_at u64 | 144 count u8 (1..32)
///                                 | 145 k x (worker_key bytes32, shard u32)
/// UPDATE_COMMITTED (49 + 136k):   44 round u32 | 48 count u8 (1..32) | 49 k x (worker_key bytes32,
///                                 update_hash bytes32, transcript_root bytes32, data_root bytes32,
///                                 num_samples u32 (examples under data_root), train_loss u32
///                                 (loss x 1e6, saturating)): one job round's commitments on one
///                                 worker chain, in the order it recorded them
/// ROUND_SETTLED (114 + 41k):      44 round u32 | 48 model_hash bytes32 | 80 slash_mode u8 (0, 1)
///                                 | 81 slash_recipient bytes32 (nonzero) | 113 count u8 (1..32)
///                                 | 114 k x (worker_key bytes32, outcome u8, slash u64)
/// STAKE_CHANGED (125 bytes):      44 worker_key bytes32 | 76 stake u64 | 84 nonce u64
///                                 | 92 reason u8 (1..6) | 93 task_id bytes32 (zero unless the
///                                 reason is TASK_REFUSED or TASK_RELEASED); job_id is 0
library PayloadCodec {
    uint8 internal constant WORKER_REGISTERED = 1;
    uint8 internal constant TASK_ASSIGNED = 2;
    uint8 internal constant UPDATE_COMMITTED = 3;
    uint8 internal constant ROUND_SETTLED = 4;
    uint8 internal constant STAKE_CHANGED = 5;
    uint8 internal constant VERSION = 4;

    uint256 internal constant HEADER_SIZE = 44;
    uint256 internal constant WORKER_REGISTERED_SIZE = 120;
    uint256 internal constant TASK_ASSIGNED_FIXED = 145;
    uint256 internal constant ASSIGNMENT_SIZE = 36;
    uint256 internal constant UPDATE_COMMITTED_FIXED = 49;
    uint256 internal constant COMMITMENT_SIZE = 136;
    uint256 internal constant ROUND_SETTLED_FIXED = 114;
    uint256 internal constant STAKE_CHANGED_SIZE = 125;
    uint256 internal constant SETTLEMENT_SIZE = 41;
    uint256 internal constant MAX_BATCH = 32;

    uint8 internal constant OUTCOME_ACCEPTED = 0;
    uint8 internal constant OUTCOME_DROPPED = 1;
    uint8 internal constant OUTCOME_SLASHED = 2;

    uint8 internal constant SLASH_TO_RECIPIENT = 0;
    uint8 internal constant SLASH_TO_HONEST = 1;

    uint8 internal constant STAKE_STAKED = 1;
    uint8 internal constant STAKE_UNBONDING = 2;
    uint8 internal constant STAKE_WITHDRAWN = 3;
    uint8 internal constant STAKE_SLASHED = 4;
    uint8 internal constant STAKE_TASK_REFUSED = 5;
    uint8 internal constant STAKE_TASK_RELEASED = 6;

    struct Header {
        uint8 payloadId;
        uint16 targetChain;
        bytes32 targetAddress;
        uint64 jobId;
    }

    struct WorkerRegistered {
        Header header;
        bytes32 workerKey;
        uint64 stake;
        bytes32 payoutAddress;
        uint32 capabilities;
    }

    struct Assignment {
        bytes32 workerKey;
        uint32 shard;
    }

    struct TaskAssigned {
        Header header;
        uint32 round;
        uint64 deadline;
        bytes32 modelHash;
        bytes32 configHash;
        uint64 minStake;
        uint64 stakeLock;
        uint64 releaseAt;
        Assignment[] assignments;
    }

    struct Commitment {
        bytes32 workerKey;
        bytes32 updateHash;
        bytes32 transcriptRoot;
        bytes32 dataRoot;
        uint32 numSamples;
        uint32 trainLoss;
    }

    struct UpdateCommitted {
        Header header;
        uint32 round;
        Commitment[] commitments;
    }

    struct Settlement {
        bytes32 workerKey;
        uint8 outcome;
        uint64 slash;
    }

    struct RoundSettled {
        Header header;
        uint32 round;
        bytes32 modelHash;
        uint8 slashMode;
        bytes32 slashRecipient;
        Settlement[] settlements;
    }

    struct StakeChanged {
        Header header;
        bytes32 workerKey;
        uint64 stake;
        uint64 nonce;
        uint8 reason;
        bytes32 taskId;
    }

    /// @notice The payload is shorter than a header.
    error PayloadTooShort(uint256 length);
    /// @notice The payload id is not one this codec knows, or not the one expected.
    error UnknownPayloadId(uint8 payloadId);
    /// @notice The payload's protocol version is not 2.
    error UnsupportedPayloadVersion(uint8 version);
    /// @notice The payload's length does not match its declared contents (short or trailing bytes).
    error PayloadLengthMismatch(uint256 length, uint256 expected);
    /// @notice A batch count outside 1..32.
    error InvalidBatchCount(uint256 count);
    /// @notice A settlement outcome other than accepted, dropped or slashed.
    error InvalidOutcome(uint8 outcome);
    /// @notice WORKER_REGISTERED and STAKE_CHANGED are not job-specific: their job id must be zero.
    error NonZeroJobId(uint64 jobId);
    /// @notice A TASK_ASSIGNED whose stake lock exceeds its minimum stake.
    error StakeLockAboveMinStake(uint64 stakeLock, uint64 minStake);
    /// @notice A ROUND_SETTLED slash mode other than to-recipient or to-honest.
    error InvalidSlashMode(uint8 mode);
    /// @notice A ROUND_SETTLED without a slash recipient.
    error ZeroSlashRecipient();
    /// @notice A STAKE_CHANGED reason outside 1..6.
    error InvalidStakeReason(uint8 reason);
    /// @notice A STAKE_CHANGED names a task although its reason is about no task.
    error UnexpectedTaskId(uint8 reason, bytes32 taskId);

    // ------------------------------------------------------------------ decoding

    /// @notice Decode and check the 44-byte header shared by every payload.
    function decodeHeader(bytes memory payload) internal pure returns (Header memory header) {
        if (payload.length < HEADER_SIZE) revert PayloadTooShort(payload.length);
        header.payloadId = uint8(_read(payload, 0, 1));
        uint8 version = uint8(_read(payload, 1, 1));
        if (header.payloadId < WORKER_REGISTERED || header.payloadId > STAKE_CHANGED) {
            revert UnknownPayloadId(header.payloadId);
        }
        if (version != VERSION) revert UnsupportedPayloadVersion(version);
        header.targetChain = uint16(_read(payload, 2, 2));
        header.targetAddress = bytes32(_read(payload, 4, 32));
        header.jobId = uint64(_read(payload, 36, 8));
    }

    /// @notice Decode a WORKER_REGISTERED payload.
    function decodeWorkerRegistered(bytes memory payload) internal pure returns (WorkerRegistered memory message) {
        message.header = _expect(payload, WORKER_REGISTERED);
        _exactLength(payload, WORKER_REGISTERED_SIZE);
        if (message.header.jobId != 0) revert NonZeroJobId(message.header.jobId);
        message.workerKey = bytes32(_read(payload, 44, 32));
        message.stake = uint64(_read(payload, 76, 8));
        message.payoutAddress = bytes32(_read(payload, 84, 32));
        message.capabilities = uint32(_read(payload, 116, 4));
    }

    /// @notice Decode a TASK_ASSIGNED payload.
    function decodeTaskAssigned(bytes memory payload) internal pure returns (TaskAssigned memory message) {
        uint256 count;
        (message, count) = decodeTaskAssignedHead(payload);
        message.assignments = new Assignment[](count);
        for (uint256 i = 0; i < count; ++i) {
            (bytes32 workerKey, uint32 shard) = assignmentAt(payload, i);
            message.assignments[i] = Assignment(workerKey, shard);
        }
    }

    /// @notice Check a TASK_ASSIGNED payload and decode its fixed part (`assignments` left
    /// empty) without copying its entries: read entry `i` (below `count`) with `assignmentAt`.
    function decodeTaskAssignedHead(bytes memory payload)
        internal
        pure
        returns (TaskAssigned memory message, uint256 count)
    {
        message.header = _expect(payload, TASK_ASSIGNED);
        if (payload.length < TASK_ASSIGNED_FIXED) {
            revert PayloadLengthMismatch(payload.length, TASK_ASSIGNED_FIXED);
        }
        message.round = uint32(_read(payload, 44, 4));
        message.deadline = uint64(_read(payload, 48, 8));
        message.modelHash = bytes32(_read(payload, 56, 32));
        message.configHash = bytes32(_read(payload, 88, 32));
        message.minStake = uint64(_read(payload, 120, 8));
        message.stakeLock = uint64(_read(payload, 128, 8));
        message.releaseAt = uint64(_read(payload, 136, 8));
        count = _read(payload, 144, 1);
        _checkCount(count);
        _exactLength(payload, TASK_ASSIGNED_FIXED + ASSIGNMENT_SIZE * count);
        _checkLock(message.stakeLock, message.minStake);
    }

    /// @notice Entry `i` of a TASK_ASSIGNED payload checked by `decodeTaskAssignedHead`.
    function assignmentAt(bytes memory payload, uint256 i) internal pure returns (bytes32 workerKey, uint32 shard) {
        uint256 at = TASK_ASSIGNED_FIXED + ASSIGNMENT_SIZE * i;
        workerKey = bytes32(_read(payload, at, 32));
        shard = uint32(_read(payload, at + 32, 4));
    }

    /// @notice Decode an UPDATE_COMMITTED payload.
    function decodeUpdateCommitted(bytes memory payload) internal pure returns (UpdateCommitted memory message) {
        message.header = _expect(payload, UPDATE_COMMITTED);
        uint256 count;
        (message.round, count) = _checkUpdateCommitted(payload);
        message.commitments = new Commitment[](count);
        for (uint256 i = 0; i < count; ++i) {
            uint256 at = UPDATE_COMMITTED_FIXED + COMMITMENT_SIZE * i;
            message.commitments[i] = Commitment(
                bytes32(_read(payload, at, 32)),
                bytes32(_read(payload, at + 32, 32)),
                bytes32(_read(payload, at + 64, 32)),
                bytes32(_read(payload, at + 96, 32)),
                uint32(_read(payload, at + 128, 4)),
                uint32(_read(payload, at + 132, 4))
            );
        }
    }

    /// @notice Check an UPDATE_COMMITTED payload without copying its entries (read them with
    /// `chainEntry`): its job, round and number of commitments.
    function decodeUpdateCommittedHead(bytes memory payload)
        internal
        pure
        returns (uint64 jobId, uint32 round, uint256 count)
    {
        jobId = _expect(payload, UPDATE_COMMITTED).jobId;
        (round, count) = _checkUpdateCommitted(payload);
    }

    /// @notice `chainCommitment(previous, ...)` for entry `i` of an UPDATE_COMMITTED payload
    /// checked by `decodeUpdateCommittedHead` (`i` below its count), hashed in place.
    function chainEntry(bytes32 previous, bytes memory payload, uint256 i) internal pure returns (bytes32 next) {
        assembly ("memory-safe") {
            let entry := add(add(payload, 32), add(49, mul(136, i)))
            let scratch := mload(0x40)
            mstore(scratch, previous)
            mstore(add(scratch, 32), mload(entry))
            mstore(add(scratch, 64), keccak256(add(entry, 32), 104))
            next := keccak256(scratch, 96)
        }
    }

    /// @notice Decode a ROUND_SETTLED payload.
    function decodeRoundSettled(bytes memory payload) internal pure returns (RoundSettled memory message) {
        uint256 count;
        (message, count) = decodeRoundSettledHead(payload);
        message.settlements = new Settlement[](count);
        for (uint256 i = 0; i < count; ++i) {
            (bytes32 workerKey, uint8 outcome, uint64 slash) = settlementAt(payload, i);
            message.settlements[i] = Settlement(workerKey, outcome, slash);
        }
    }

    /// @notice Check a ROUND_SETTLED payload, every entry's outcome included, and decode its
    /// fixed part (`settlements` left empty) without copying its entries: read entry `i` (below
    /// `count`) with `settlementAt`.
    function decodeRoundSettledHead(bytes memory payload)
        internal
        pure
        returns (RoundSettled memory message, uint256 count)
    {
        message.header = _expect(payload, ROUND_SETTLED);
        if (payload.length < ROUND_SETTLED_FIXED) {
            revert PayloadLengthMismatch(payload.length, ROUND_SETTLED_FIXED);
        }
        message.round = uint32(_read(payload, 44, 4));
        message.modelHash = bytes32(_read(payload, 48, 32));
        message.slashMode = uint8(_read(payload, 80, 1));
        message.slashRecipient = bytes32(_read(payload, 81, 32));
        count = _read(payload, 113, 1);
        _checkCount(count);
        _exactLength(payload, ROUND_SETTLED_FIXED + SETTLEMENT_SIZE * count);
        for (uint256 i = 0; i < count; ++i) {
            uint8 outcome = uint8(_read(payload, ROUND_SETTLED_FIXED + SETTLEMENT_SIZE * i + 32, 1));
            if (outcome > OUTCOME_SLASHED) revert InvalidOutcome(outcome);
        }
        _checkSlashDestination(message.slashMode, message.slashRecipient);
    }

    /// @notice Entry `i` of a ROUND_SETTLED payload checked by `decodeRoundSettledHead`.
    function settlementAt(bytes memory payload, uint256 i)
        internal
        pure
        returns (bytes32 workerKey, uint8 outcome, uint64 slash)
    {
        uint256 at = ROUND_SETTLED_FIXED + SETTLEMENT_SIZE * i;
        workerKey = bytes32(_read(payload, at, 32));
        outcome = uint8(_read(payload, at + 32, 1));
        slash = uint64(_read(payload, at + 33, 8));
    }

    /// @notice Decode a STAKE_CHANGED payload.
    function decodeStakeChanged(bytes memory payload) internal pure returns (StakeChanged memory message) {
        message.header = _expect(payload, STAKE_CHANGED);
        _exactLength(payload, STAKE_CHANGED_SIZE);
        if (message.header.jobId != 0) revert NonZeroJobId(message.header.jobId);
        message.workerKey = bytes32(_read(payload, 44, 32));
        message.stake = uint64(_read(payload, 76, 8));
        message.nonce = uint64(_read(payload, 84, 8));
        message.reason = uint8(_read(payload, 92, 1));
        message.taskId = bytes32(_read(payload, 93, 32));
        _checkStakeReason(message.reason, message.taskId);
    }

    // ------------------------------------------------------------------ encoding

    /// @notice Encode a WORKER_REGISTERED payload.
    function encode(WorkerRegistered memory m) internal pure returns (bytes memory) {
        return abi.encodePacked(
            _encodeHeader(m.header, WORKER_REGISTERED), m.workerKey, m.stake, m.payoutAddress, m.capabilities
        );
    }

    /// @notice Encode a TASK_ASSIGNED payload.
    function encode(TaskAssigned memory m) internal pure returns (bytes memory out) {
        uint256 count = m.assignments.length;
        out = taskAssignedFixed(m, count);
        for (uint256 i = 0; i < count; ++i) {
            putAssignment(out, i, m.assignments[i].workerKey, m.assignments[i].shard);
        }
    }

    /// @notice A TASK_ASSIGNED payload of `count` entries with its fixed part written from `m`
    /// (whose `assignments` it does not read); `putAssignment` writes the entries.
    function taskAssignedFixed(TaskAssigned memory m, uint256 count) internal pure returns (bytes memory out) {
        _checkCount(count);
        _checkLock(m.stakeLock, m.minStake);
        out = new bytes(TASK_ASSIGNED_FIXED + ASSIGNMENT_SIZE * count);
        _putHeader(out, m.header, TASK_ASSIGNED);
        _put(out, 44, 4, m.round);
        _put(out, 48, 8, m.deadline);
        _put(out, 56, 32, uint256(m.modelHash));
        _put(out, 88, 32, uint256(m.configHash));
        _put(out, 120, 8, m.minStake);
        _put(out, 128, 8, m.stakeLock);
        _put(out, 136, 8, m.releaseAt);
        _put(out, 144, 1, count);
    }

    /// @notice Write entry `i` of a payload from `taskAssignedFixed`.
    function putAssignment(bytes memory out, uint256 i, bytes32 workerKey, uint32 shard) internal pure {
        uint256 at = TASK_ASSIGNED_FIXED + ASSIGNMENT_SIZE * i;
        _put(out, at, 32, uint256(workerKey));
        _put(out, at + 32, 4, shard);
    }

    /// @notice Encode an UPDATE_COMMITTED payload.
    function encode(UpdateCommitted memory m) internal pure returns (bytes memory out) {
        uint256 count = m.commitments.length;
        out = updateCommittedFixed(m, count);
        for (uint256 i = 0; i < count; ++i) {
            Commitment memory c = m.commitments[i];
            putCommitment(out, i, c.workerKey, c.updateHash, c.transcriptRoot, c.dataRoot, c.numSamples, c.trainLoss);
        }
    }

    /// @notice An UPDATE_COMMITTED payload of `count` entries with its fixed part written from
    /// `m` (whose `commitments` it does not read); `putCommitment` writes the entries. A payload
    /// may be given fewer entries than it was made for with `setCommitmentCount`.
    function updateCommittedFixed(UpdateCommitted memory m, uint256 count) internal pure returns (bytes memory out) {
        _checkCount(count);
        out = new bytes(UPDATE_COMMITTED_FIXED + COMMITMENT_SIZE * count);
        _putHeader(out, m.header, UPDATE_COMMITTED);
        _put(out, 44, 4, m.round);
        _put(out, 48, 1, count);
    }

    /// @notice Write entry `i` of a payload from `updateCommittedFixed`.
    function putCommitment(
        bytes memory out,
        uint256 i,
        bytes32 workerKey,
        bytes32 updateHash,
        bytes32 transcriptRoot,
        bytes32 dataRoot,
        uint32 numSamples,
        uint32 trainLoss
    ) internal pure {
        uint256 at = UPDATE_COMMITTED_FIXED + COMMITMENT_SIZE * i;
        _put(out, at, 32, uint256(workerKey));
        _put(out, at + 32, 32, uint256(updateHash));
        _put(out, at + 64, 32, uint256(transcriptRoot));
        _put(out, at + 96, 32, uint256(dataRoot));
        _put(out, at + 128, 4, numSamples);
        _put(out, at + 132, 4, trainLoss);
    }

    /// @notice Cut a payload from `updateCommittedFixed` down to its first `count` entries.
    function setCommitmentCount(bytes memory out, uint256 count) internal pure {
        _checkCount(count);
        uint256 size = UPDATE_COMMITTED_FIXED + COMMITMENT_SIZE * count;
        if (size > out.length) revert PayloadLengthMismatch(out.length, size);
        assembly ("memory-safe") {
            mstore(out, size)
        }
        _put(out, 48, 1, count);
    }

    /// @notice Encode a ROUND_SETTLED payload.
    function encode(RoundSettled memory m) internal pure returns (bytes memory out) {
        uint256 count = m.settlements.length;
        out = roundSettledFixed(m, count);
        for (uint256 i = 0; i < count; ++i) {
            Settlement memory s = m.settlements[i];
            putSettlement(out, i, s.workerKey, s.outcome, s.slash);
        }
    }

    /// @notice A ROUND_SETTLED payload of `count` entries with its fixed part written from `m`
    /// (whose `settlements` it does not read); `putSettlement` writes the entries.
    function roundSettledFixed(RoundSettled memory m, uint256 count) internal pure returns (bytes memory out) {
        _checkCount(count);
        _checkSlashDestination(m.slashMode, m.slashRecipient);
        out = new bytes(ROUND_SETTLED_FIXED + SETTLEMENT_SIZE * count);
        _putHeader(out, m.header, ROUND_SETTLED);
        _put(out, 44, 4, m.round);
        _put(out, 48, 32, uint256(m.modelHash));
        _put(out, 80, 1, m.slashMode);
        _put(out, 81, 32, uint256(m.slashRecipient));
        _put(out, 113, 1, count);
    }

    /// @notice Write entry `i` of a payload from `roundSettledFixed`.
    function putSettlement(bytes memory out, uint256 i, bytes32 workerKey, uint8 outcome, uint64 slash) internal pure {
        if (outcome > OUTCOME_SLASHED) revert InvalidOutcome(outcome);
        uint256 at = ROUND_SETTLED_FIXED + SETTLEMENT_SIZE * i;
        _put(out, at, 32, uint256(workerKey));
        _put(out, at + 32, 1, outcome);
        _put(out, at + 33, 8, slash);
    }

    /// @notice Encode a STAKE_CHANGED payload.
    function encode(StakeChanged memory m) internal pure returns (bytes memory) {
        if (m.header.jobId != 0) revert NonZeroJobId(m.header.jobId);
        _checkStakeReason(m.reason, m.taskId);
        return
            abi.encodePacked(_encodeHeader(m.header, STAKE_CHANGED), m.workerKey, m.stake, m.nonce, m.reason, m.taskId);
    }

    /// @notice One step of a hash chain over commitments, the same wherever one is kept (a
    /// worker chain's commit log, the coordinator chain's lanes):
    /// keccak256(abi.encode(previous, workerKey, commitmentHash(...))).
    function chainCommitment(bytes32 previous, bytes32 workerKey, bytes32 commitment) internal pure returns (bytes32) {
        return keccak256(abi.encode(previous, workerKey, commitment));
    }

    /// @notice What a hash chain takes for a commitment's fields: keccak256 of the 104 bytes they
    /// take in an UPDATE_COMMITTED entry (after its worker key).
    function commitmentHash(
        bytes32 updateHash,
        bytes32 transcriptRoot,
        bytes32 dataRoot,
        uint32 numSamples,
        uint32 trainLoss
    ) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(updateHash, transcriptRoot, dataRoot, numSamples, trainLoss));
    }

    /// @notice task_id = keccak256(u64 job_id || u32 round || u16 worker chain || worker_key).
    function computeTaskId(uint64 jobId, uint32 round, uint16 chain, bytes32 workerKey)
        internal
        pure
        returns (bytes32 id)
    {
        assembly ("memory-safe") {
            // 46 bytes in the scratch space, each field written after the one before it
            mstore(0x00, shl(192, jobId))
            mstore(0x08, shl(224, round))
            mstore(0x0c, shl(240, chain))
            mstore(0x0e, workerKey)
            id := keccak256(0x00, 46)
        }
    }

    /// @notice Left-pad an EVM address into the protocol's bytes32 form.
    function toBytes32(address account) internal pure returns (bytes32) {
        return bytes32(uint256(uint160(account)));
    }

    // ------------------------------------------------------------------ internals

    function _encodeHeader(Header memory h, uint8 payloadId) private pure returns (bytes memory) {
        return abi.encodePacked(payloadId, VERSION, h.targetChain, h.targetAddress, h.jobId);
    }

    function _expect(bytes memory payload, uint8 payloadId) private pure returns (Header memory header) {
        header = decodeHeader(payload);
        if (header.payloadId != payloadId) revert UnknownPayloadId(header.payloadId);
    }

    function _exactLength(bytes memory payload, uint256 expected) private pure {
        if (payload.length != expected) revert PayloadLengthMismatch(payload.length, expected);
    }

    function _checkLock(uint64 stakeLock, uint64 minStake) private pure {
        if (stakeLock > minStake) revert StakeLockAboveMinStake(stakeLock, minStake);
    }

    function _checkSlashDestination(uint8 mode, bytes32 recipient) private pure {
        if (mode > SLASH_TO_HONEST) revert InvalidSlashMode(mode);
        if (recipient == bytes32(0)) revert ZeroSlashRecipient();
    }

    function _checkStakeReason(uint8 reason, bytes32 taskId) private pure {
        if (reason < STAKE_STAKED || reason > STAKE_TASK_RELEASED) revert InvalidStakeReason(reason);
        if (reason != STAKE_TASK_REFUSED && reason != STAKE_TASK_RELEASED && taskId != bytes32(0)) {
            revert UnexpectedTaskId(reason, taskId);
        }
    }

    function _checkUpdateCommitted(bytes memory payload) private pure returns (uint32 round, uint256 count) {
        if (payload.length < UPDATE_COMMITTED_FIXED) {
            revert PayloadLengthMismatch(payload.length, UPDATE_COMMITTED_FIXED);
        }
        round = uint32(_read(payload, 44, 4));
        count = _read(payload, 48, 1);
        _checkCount(count);
        _exactLength(payload, UPDATE_COMMITTED_FIXED + COMMITMENT_SIZE * count);
    }

    function _checkCount(uint256 count) private pure {
        if (count == 0 || count > MAX_BATCH) revert InvalidBatchCount(count);
    }

    /// @dev Big-endian unsigned integer of `size` (1..32) bytes at `offset`; callers check bounds.
    function _read(bytes memory data, uint256 offset, uint256 size) private pure returns (uint256 value) {
        assembly ("memory-safe") {
            value := shr(sub(256, mul(size, 8)), mload(add(add(data, 32), offset)))
        }
    }

    /// @dev Write `value` as a big-endian unsigned integer of `size` (1..32) bytes at `offset`,
    /// leaving every other byte as it was; callers check bounds and that `value` fits. (The word
    /// read and written back may reach past the end of `out`; those bytes keep their value.)
    function _put(bytes memory out, uint256 offset, uint256 size, uint256 value) private pure {
        assembly ("memory-safe") {
            let at := add(add(out, 32), offset)
            let shift := sub(256, mul(size, 8))
            // the word's last 32 - size bytes, kept (none when size is 32)
            mstore(at, or(shl(shift, value), and(mload(at), sub(shl(shift, 1), 1))))
        }
    }

    /// @dev Write the 44-byte header of a payload with id `payloadId` at the start of `out`.
    function _putHeader(bytes memory out, Header memory h, uint8 payloadId) private pure {
        _put(out, 0, 1, payloadId);
        _put(out, 1, 1, VERSION);
        _put(out, 2, 2, h.targetChain);
        _put(out, 4, 32, uint256(h.targetAddress));
        _put(out, 36, 8, h.jobId);
    }
}
