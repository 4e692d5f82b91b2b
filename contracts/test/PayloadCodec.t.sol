// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {PayloadCodec} from "../src/libraries/PayloadCodec.sol";
import {CodecHarness} from "./harness/CodecHarness.sol";
import {Test} from "./utils/Test.sol";

/// Payload decoding against the shared vectors of tests/vectors/payloads.json, and fuzzing.
contract PayloadCodecTest is Test {
    CodecHarness internal codec;
    string internal vectors;
    uint256 internal validCount;
    uint256 internal invalidCount;

    function setUp() public {
        codec = new CodecHarness();
        vectors = vm.readFile(string.concat(vm.projectRoot(), "/../tests/vectors/payloads.json"));
        validCount = _count(".valid");
        invalidCount = _count(".invalid");
    }

    function _count(string memory key) internal view returns (uint256 n) {
        while (vm.keyExistsJson(vectors, string.concat(key, "[", vm.toString(n), "]"))) ++n;
    }

    function _valid(uint256 i) internal view returns (bytes memory) {
        return vm.parseJsonBytes(vectors, string.concat(".valid[", vm.toString(i), "].bytes"));
    }

    function _field(uint256 i, string memory name) internal pure returns (string memory) {
        return string.concat(".valid[", vm.toString(i), "].fields.", name);
    }

    /// Codec error selectors for each error class the Python codec names.
    function _errorsFor(string memory name) internal pure returns (bytes4[] memory s) {
        bytes32 h = keccak256(bytes(name));
        if (h == keccak256("payload_size_mismatch")) {
            s = new bytes4[](2);
            (s[0], s[1]) = (PayloadCodec.PayloadTooShort.selector, PayloadCodec.PayloadLengthMismatch.selector);
        } else if (h == keccak256("unknown_payload_id")) {
            s = new bytes4[](1);
            s[0] = PayloadCodec.UnknownPayloadId.selector;
        } else if (h == keccak256("unsupported_payload_version")) {
            s = new bytes4[](1);
            s[0] = PayloadCodec.UnsupportedPayloadVersion.selector;
        } else if (h == keccak256("invalid_payload_field")) {
            s = _fieldErrors();
        }
    }

    function _fieldErrors() internal pure returns (bytes4[] memory s) {
        s = new bytes4[](8);
        s[0] = PayloadCodec.InvalidBatchCount.selector;
        s[1] = PayloadCodec.InvalidOutcome.selector;
        s[2] = PayloadCodec.NonZeroJobId.selector;
        s[3] = PayloadCodec.StakeLockAboveMinStake.selector;
        s[4] = PayloadCodec.InvalidSlashMode.selector;
        s[5] = PayloadCodec.ZeroSlashRecipient.selector;
        s[6] = PayloadCodec.InvalidStakeReason.selector;
        s[7] = PayloadCodec.UnexpectedTaskId.selector;
    }

    function _isCodecError(bytes4 selector) internal pure returns (bool) {
        bytes4[] memory fields = _fieldErrors();
        for (uint256 i = 0; i < fields.length; ++i) {
            if (selector == fields[i]) return true;
        }
        return selector == PayloadCodec.PayloadTooShort.selector
            || selector == PayloadCodec.PayloadLengthMismatch.selector
            || selector == PayloadCodec.UnknownPayloadId.selector
            || selector == PayloadCodec.UnsupportedPayloadVersion.selector;
    }

    function test_vectors_present() public view {
        assertTrue(validCount >= 20, "valid payload vectors");
        assertTrue(invalidCount >= 38, "invalid payload vectors");
    }

    function test_vectors_validDecodeAndReencodeByteForByte() public view {
        for (uint256 i = 0; i < validCount; ++i) {
            bytes memory raw = _valid(i);
            assertEq(codec.roundTrip(raw), raw, "round trip");
            PayloadCodec.Header memory h = codec.decodeHeader(raw);
            assertEq(h.payloadId, vm.parseJsonUint(vectors, _field(i, "payload_id")), "payload id");
            assertEq(h.targetChain, vm.parseJsonUint(vectors, _field(i, "target_chain")), "target chain");
            assertEq(h.targetAddress, bytes32(vm.parseJsonBytes(vectors, _field(i, "target_address"))), "target");
            assertEq(h.jobId, vm.parseJsonUint(vectors, _field(i, "job_id")), "job id");
            _checkBody(i, h.payloadId, raw);
        }
    }

    function _checkBody(uint256 i, uint8 id, bytes memory raw) internal view {
        if (id == PayloadCodec.WORKER_REGISTERED) {
            PayloadCodec.WorkerRegistered memory m = codec.decodeWorkerRegistered(raw);
            assertEq(m.stake, vm.parseJsonUint(vectors, _field(i, "stake")), "stake");
            assertEq(m.capabilities, vm.parseJsonUint(vectors, _field(i, "capabilities")), "caps");
        } else if (id == PayloadCodec.TASK_ASSIGNED) {
            PayloadCodec.TaskAssigned memory m = codec.decodeTaskAssigned(raw);
            assertEq(m.round, vm.parseJsonUint(vectors, _field(i, "round")), "round");
            assertEq(m.deadline, vm.parseJsonUint(vectors, _field(i, "deadline")), "deadline");
            assertEq(m.minStake, vm.parseJsonUint(vectors, _field(i, "min_stake")), "min stake");
            assertEq(m.stakeLock, vm.parseJsonUint(vectors, _field(i, "stake_lock")), "stake lock");
            assertEq(m.releaseAt, vm.parseJsonUint(vectors, _field(i, "release_at")), "release at");
            uint256 last = m.assignments.length - 1;
            string memory key = _field(i, string.concat("tasks[", vm.toString(last), "]"));
            assertEq(m.assignments[last].shard, vm.parseJsonUint(vectors, string.concat(key, ".shard")), "shard");
        } else if (id == PayloadCodec.UPDATE_COMMITTED) {
            _checkCommitments(i, raw);
        } else if (id == PayloadCodec.STAKE_CHANGED) {
            PayloadCodec.StakeChanged memory m = codec.decodeStakeChanged(raw);
            assertEq(m.workerKey, bytes32(vm.parseJsonBytes(vectors, _field(i, "worker_key"))), "worker key");
            assertEq(m.stake, vm.parseJsonUint(vectors, _field(i, "stake")), "stake");
            assertEq(m.nonce, vm.parseJsonUint(vectors, _field(i, "nonce")), "nonce");
            assertEq(m.reason, vm.parseJsonUint(vectors, _field(i, "reason")), "reason");
            assertEq(m.taskId, bytes32(vm.parseJsonBytes(vectors, _field(i, "task_id"))), "task id");
        } else {
            PayloadCodec.RoundSettled memory m = codec.decodeRoundSettled(raw);
            assertEq(m.round, vm.parseJsonUint(vectors, _field(i, "round")), "round");
            assertEq(m.slashMode, vm.parseJsonUint(vectors, _field(i, "slash_mode")), "slash mode");
            assertEq(m.slashRecipient, bytes32(vm.parseJsonBytes(vectors, _field(i, "slash_recipient"))), "recipient");
            uint256 last = m.settlements.length - 1;
            string memory key = _field(i, string.concat("settlements[", vm.toString(last), "]"));
            assertEq(m.settlements[last].outcome, vm.parseJsonUint(vectors, string.concat(key, ".outcome")), "outcome");
            assertEq(m.settlements[last].slash, vm.parseJsonUint(vectors, string.concat(key, ".slash")), "slash");
        }
    }

    /// An UPDATE_COMMITTED vector's entries, decoded and read in place (`chainEntry`), against
    /// the JSON fields.
    function _checkCommitments(uint256 i, bytes memory raw) internal view {
        PayloadCodec.UpdateCommitted memory m = codec.decodeUpdateCommitted(raw);
        assertEq(m.round, vm.parseJsonUint(vectors, _field(i, "round")), "round");
        uint256 count = 0;
        while (vm.keyExistsJson(vectors, _field(i, string.concat("commitments[", vm.toString(count), "]")))) ++count;
        assertEq(m.commitments.length, count, "count");
        assertEq(raw.length, 49 + 136 * count, "size");
        (uint64 jobId, uint32 round, uint256 headCount) = codec.decodeUpdateCommittedHead(raw);
        assertEq(jobId, vm.parseJsonUint(vectors, _field(i, "job_id")), "head job");
        assertEq(round, m.round, "head round");
        assertEq(headCount, count, "head count");
        bytes32 chain = keccak256("start");
        for (uint256 j = 0; j < count; ++j) {
            string memory key = _field(i, string.concat("commitments[", vm.toString(j), "]"));
            PayloadCodec.Commitment memory c = m.commitments[j];
            assertEq(c.workerKey, bytes32(vm.parseJsonBytes(vectors, string.concat(key, ".worker_key"))), "key");
            assertEq(c.updateHash, bytes32(vm.parseJsonBytes(vectors, string.concat(key, ".update_hash"))), "update");
            assertEq(
                c.transcriptRoot,
                bytes32(vm.parseJsonBytes(vectors, string.concat(key, ".transcript_root"))),
                "transcript"
            );
            assertEq(c.dataRoot, bytes32(vm.parseJsonBytes(vectors, string.concat(key, ".data_root"))), "data root");
            assertEq(c.numSamples, vm.parseJsonUint(vectors, string.concat(key, ".num_samples")), "samples");
            assertEq(c.trainLoss, vm.parseJsonUint(vectors, string.concat(key, ".train_loss")), "loss");
            // The hash of an entry is over its 104 bytes after the key, as they lie in the payload.
            uint256 at = 49 + 136 * j + 32;
            bytes memory fields = new bytes(104);
            for (uint256 b = 0; b < 104; ++b) {
                fields[b] = raw[at + b];
            }
            assertEq(codec.commitmentHash(c), keccak256(fields), "commitment hash over the entry's bytes");
            chain = keccak256(abi.encode(chain, c.workerKey, keccak256(fields)));
        }
        assertEq(codec.chainEntries(keccak256("start"), raw), chain, "chained in place");
    }

    function test_vectors_invalidRejectedWithMatchingError() public view {
        for (uint256 i = 0; i < invalidCount; ++i) {
            string memory at = string.concat(".invalid[", vm.toString(i), "]");
            bytes memory raw = vm.parseJsonBytes(vectors, string.concat(at, ".bytes"));
            string memory name = vm.parseJsonString(vectors, string.concat(at, ".name"));
            bytes4[] memory allowed = _errorsFor(vm.parseJsonString(vectors, string.concat(at, ".error")));
            try codec.roundTrip(raw) returns (bytes memory) {
                fail(string.concat("accepted invalid vector ", name));
            } catch (bytes memory reason) {
                bytes4 selector = bytes4(reason);
                bool matched = false;
                for (uint256 j = 0; j < allowed.length; ++j) {
                    matched = matched || selector == allowed[j];
                }
                assertTrue(matched, string.concat("wrong error for ", name));
            }
            if (_startsWith(name, "update_committed")) _checkHeadRejects(raw, name, allowed);
        }
    }

    /// The in-place reader JobMarket uses refuses what the full decoder refuses, with the same errors.
    function _checkHeadRejects(bytes memory raw, string memory name, bytes4[] memory allowed) internal view {
        try codec.decodeUpdateCommittedHead(raw) returns (uint64, uint32, uint256) {
            fail(string.concat("head accepted invalid vector ", name));
        } catch (bytes memory reason) {
            bool matched = false;
            for (uint256 j = 0; j < allowed.length; ++j) {
                matched = matched || bytes4(reason) == allowed[j];
            }
            assertTrue(matched, string.concat("wrong head error for ", name));
        }
    }

    function _startsWith(string memory s, string memory prefix) internal pure returns (bool) {
        bytes memory a = bytes(s);
        bytes memory b = bytes(prefix);
        if (a.length < b.length) return false;
        for (uint256 i = 0; i < b.length; ++i) {
            if (a[i] != b[i]) return false;
        }
        return true;
    }

    function test_decode_rejectsWrongPayloadType() public {
        bytes memory raw = _valid(0); // WORKER_REGISTERED
        vm.expectRevert(abi.encodeWithSelector(PayloadCodec.UnknownPayloadId.selector, 1));
        codec.decodeTaskAssigned(raw);
    }

    function test_encode_rejectsEmptyAndOversizedBatches() public {
        PayloadCodec.TaskAssigned memory m;
        m.assignments = new PayloadCodec.Assignment[](0);
        vm.expectRevert(abi.encodeWithSelector(PayloadCodec.InvalidBatchCount.selector, 0));
        codec.encodeTaskAssigned(m);
        PayloadCodec.RoundSettled memory s;
        s.settlements = new PayloadCodec.Settlement[](33);
        vm.expectRevert(abi.encodeWithSelector(PayloadCodec.InvalidBatchCount.selector, 33));
        codec.encodeRoundSettled(s);
        s.settlements = new PayloadCodec.Settlement[](1);
        s.slashRecipient = bytes32(uint256(1));
        s.settlements[0].outcome = 3;
        vm.expectRevert(abi.encodeWithSelector(PayloadCodec.InvalidOutcome.selector, 3));
        codec.encodeRoundSettled(s);
    }

    // ------------------------------------------------------------------ fuzz

    /// Any mutation of a vector (one byte changed, cut short, or extended) is either rejected with
    /// a codec error or decodes to a payload that encodes back to exactly the mutated bytes.
    function testFuzz_vectors_mutationsRejectedOrCanonical(uint256 which, uint256 at, uint8 value, uint8 mode)
        public
        view
    {
        bytes memory raw = _valid(bound(which, 0, validCount - 1));
        bytes memory mutated;
        mode = mode % 3;
        if (mode == 0) {
            mutated = raw;
            mutated[bound(at, 0, raw.length - 1)] = bytes1(value);
        } else if (mode == 1) {
            mutated = new bytes(bound(at, 0, raw.length - 1));
            for (uint256 i = 0; i < mutated.length; ++i) {
                mutated[i] = raw[i];
            }
        } else {
            mutated = bytes.concat(raw, new bytes(bound(at, 1, 40)));
        }
        try codec.roundTrip(mutated) returns (bytes memory again) {
            assertEq(again, mutated, "accepted mutation must be canonical");
            assertTrue(mode == 0, "a length change was accepted");
        } catch (bytes memory reason) {
            assertTrue(_isCodecError(bytes4(reason)), "unexpected revert");
        }
    }

    function testFuzz_taskAssigned_roundTrip(uint64 jobId, uint32 round, uint64 deadline, bytes32 seed, uint8 k)
        public
        view
    {
        k = uint8(bound(k, 1, 32));
        PayloadCodec.TaskAssigned memory m;
        m.header = PayloadCodec.Header(PayloadCodec.TASK_ASSIGNED, 4, seed, jobId);
        m.round = round;
        m.deadline = deadline;
        m.modelHash = keccak256(abi.encode(seed, 1));
        m.configHash = keccak256(abi.encode(seed, 2));
        m.minStake = deadline;
        m.stakeLock = deadline / 3;
        m.releaseAt = deadline ^ uint64(round);
        m.assignments = new PayloadCodec.Assignment[](k);
        for (uint256 i = 0; i < k; ++i) {
            m.assignments[i] = PayloadCodec.Assignment(keccak256(abi.encode(seed, i)), uint32(i * 7));
        }
        bytes memory raw = codec.encodeTaskAssigned(m);
        assertEq(raw.length, 145 + 36 * uint256(k), "size");
        PayloadCodec.TaskAssigned memory back = codec.decodeTaskAssigned(raw);
        assertEq(back.header.jobId, jobId, "job");
        assertEq(back.round, round, "round");
        assertEq(back.deadline, deadline, "deadline");
        assertEq(back.minStake, m.minStake, "min stake");
        assertEq(back.stakeLock, m.stakeLock, "lock");
        assertEq(back.releaseAt, m.releaseAt, "release");
        assertEq(back.assignments.length, k, "count");
        assertEq(back.assignments[k - 1].workerKey, m.assignments[k - 1].workerKey, "key");
        assertEq(back.assignments[k - 1].shard, m.assignments[k - 1].shard, "shard");
    }

    function testFuzz_roundSettled_roundTrip(uint64 jobId, uint32 round, bytes32 seed, uint8 k, uint64 slash)
        public
        view
    {
        k = uint8(bound(k, 1, 32));
        PayloadCodec.RoundSettled memory m;
        m.header = PayloadCodec.Header(PayloadCodec.ROUND_SETTLED, 1, seed, jobId);
        m.round = round;
        m.modelHash = seed;
        m.slashMode = uint8(k % 2);
        m.slashRecipient = keccak256(abi.encode(seed, "recipient"));
        m.settlements = new PayloadCodec.Settlement[](k);
        for (uint256 i = 0; i < k; ++i) {
            m.settlements[i] = PayloadCodec.Settlement(keccak256(abi.encode(seed, i)), uint8(i % 3), slash);
        }
        bytes memory raw = codec.encodeRoundSettled(m);
        assertEq(raw.length, 114 + 41 * uint256(k), "size");
        PayloadCodec.RoundSettled memory back = codec.decodeRoundSettled(raw);
        assertEq(back.settlements.length, k, "count");
        assertEq(back.settlements[k - 1].outcome, (k - 1) % 3, "outcome");
        assertEq(back.settlements[k - 1].slash, slash, "slash");
        assertEq(back.header.targetAddress, seed, "target");
        assertEq(back.slashMode, k % 2, "mode");
        assertEq(back.slashRecipient, m.slashRecipient, "recipient");
    }

    function testFuzz_stakeChanged_roundTrip(bytes32 key, uint64 stake, uint64 nonce, uint8 reason, bytes32 task)
        public
        view
    {
        reason = uint8(bound(reason, 1, 6));
        if (reason != PayloadCodec.STAKE_TASK_REFUSED && reason != PayloadCodec.STAKE_TASK_RELEASED) task = 0;
        PayloadCodec.StakeChanged memory m =
            PayloadCodec.StakeChanged(PayloadCodec.Header(5, 2, key, 0), key, stake, nonce, reason, task);
        bytes memory raw = codec.encodeStakeChanged(m);
        assertEq(raw.length, 125, "size");
        PayloadCodec.StakeChanged memory back = codec.decodeStakeChanged(raw);
        assertEq(back.stake, stake, "stake");
        assertEq(back.nonce, nonce, "nonce");
        assertEq(back.reason, reason, "reason");
        assertEq(back.taskId, task, "task");
    }

    function test_stakeChanged_rejectsTaskIdForOtherReasons() public {
        PayloadCodec.StakeChanged memory m = PayloadCodec.StakeChanged(
            PayloadCodec.Header(5, 2, bytes32(uint256(1)), 0), bytes32(uint256(2)), 1, 1, 4, bytes32(uint256(3))
        );
        vm.expectRevert(abi.encodeWithSelector(PayloadCodec.UnexpectedTaskId.selector, 4, bytes32(uint256(3))));
        codec.encodeStakeChanged(m);
        m.reason = 7;
        m.taskId = 0;
        vm.expectRevert(abi.encodeWithSelector(PayloadCodec.InvalidStakeReason.selector, 7));
        codec.encodeStakeChanged(m);
    }

    function testFuzz_fixedPayloads_roundTrip(bytes32 a, bytes32 b, uint64 n, uint32 x) public view {
        PayloadCodec.WorkerRegistered memory w =
            PayloadCodec.WorkerRegistered(PayloadCodec.Header(1, 2, a, 0), b, n, a, x);
        bytes memory raw = codec.encodeWorkerRegistered(w);
        assertEq(raw.length, 120, "registered size");
        assertEq(codec.roundTrip(raw), raw, "registered");
    }

    function testFuzz_updateCommitted_roundTrip(uint64 jobId, uint32 round, bytes32 seed, uint8 k, uint32 x)
        public
        view
    {
        k = uint8(bound(k, 1, 32));
        PayloadCodec.UpdateCommitted memory m;
        m.header = PayloadCodec.Header(PayloadCodec.UPDATE_COMMITTED, 2, seed, jobId);
        m.round = round;
        m.commitments = new PayloadCodec.Commitment[](k);
        for (uint256 i = 0; i < k; ++i) {
            m.commitments[i] = PayloadCodec.Commitment(
                keccak256(abi.encode(seed, i, "key")),
                keccak256(abi.encode(seed, i, "update")),
                keccak256(abi.encode(seed, i, "transcript")),
                keccak256(abi.encode(seed, i, "data")),
                x ^ uint32(i),
                _wrappingAdd(x, i)
            );
        }
        bytes memory raw = codec.encodeUpdateCommitted(m);
        assertEq(raw.length, 49 + 136 * uint256(k), "size");
        assertEq(uint8(raw[48]), k, "count byte");
        assertEq(codec.roundTrip(raw), raw, "canonical");
        PayloadCodec.UpdateCommitted memory back = codec.decodeUpdateCommitted(raw);
        assertEq(back.header.jobId, jobId, "job");
        assertEq(back.round, round, "round");
        assertEq(back.commitments.length, k, "count");
        bytes32 chain = bytes32(0);
        for (uint256 i = 0; i < k; ++i) {
            assertEq(keccak256(abi.encode(back.commitments[i])), keccak256(abi.encode(m.commitments[i])), "entry");
            chain = codec.chainCommitment(chain, m.commitments[i].workerKey, codec.commitmentHash(m.commitments[i]));
        }
        assertEq(codec.chainEntries(bytes32(0), raw), chain, "chainEntry agrees with chainCommitment");
    }

    function _wrappingAdd(uint32 x, uint256 i) internal pure returns (uint32) {
        unchecked {
            return x + uint32(i);
        }
    }

    function test_updateCommitted_encodeRejectsEmptyAndOversizedBatches() public {
        PayloadCodec.UpdateCommitted memory m;
        m.header = PayloadCodec.Header(PayloadCodec.UPDATE_COMMITTED, 2, bytes32(uint256(1)), 7);
        m.commitments = new PayloadCodec.Commitment[](0);
        vm.expectRevert(abi.encodeWithSelector(PayloadCodec.InvalidBatchCount.selector, 0));
        codec.encodeUpdateCommitted(m);
        m.commitments = new PayloadCodec.Commitment[](33);
        vm.expectRevert(abi.encodeWithSelector(PayloadCodec.InvalidBatchCount.selector, 33));
        codec.encodeUpdateCommitted(m);
    }

    function test_commitmentHash_isOverThePackedFields() public view {
        PayloadCodec.Commitment memory c =
            PayloadCodec.Commitment(bytes32(uint256(1)), keccak256("u"), keccak256("t"), keccak256("d"), 640, 123_456);
        bytes32 packed =
            keccak256(abi.encodePacked(c.updateHash, c.transcriptRoot, c.dataRoot, c.numSamples, c.trainLoss));
        assertEq(codec.commitmentHash(c), packed, "104 packed bytes");
        assertTrue(
            packed != keccak256(abi.encode(c.updateHash, c.transcriptRoot, c.dataRoot, c.numSamples, c.trainLoss)),
            "not the padded encoding"
        );
        assertEq(
            codec.chainCommitment(bytes32(uint256(9)), c.workerKey, packed),
            keccak256(abi.encode(bytes32(uint256(9)), c.workerKey, packed)),
            "chain step"
        );
    }
}
