// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {PayloadCodec} from "../src/libraries/PayloadCodec.sol";
import {Test} from "./utils/Test.sol";

/// @notice The in-place writers and readers the contracts use for batched payloads (the fixed
/// part first, then each entry written or read where it lies) give exactly the bytes of the
/// payload concatenated field by field, whatever order the entries are written in.
contract PayloadWritersTest is Test {
    function _key(bytes32 seed, uint256 i) internal pure returns (bytes32) {
        return keccak256(abi.encode(seed, i));
    }

    function testFuzz_taskAssigned_entriesWrittenInAnyOrderGiveThePackedBytes(
        uint64 jobId,
        uint32 round,
        uint64 deadline,
        bytes32 seed,
        uint8 k
    ) public pure {
        k = uint8(bound(k, 1, 32));
        PayloadCodec.TaskAssigned memory m;
        m.header = PayloadCodec.Header(PayloadCodec.TASK_ASSIGNED, 4, seed, jobId);
        m.round = round;
        m.deadline = deadline;
        m.modelHash = _key(seed, 100);
        m.configHash = _key(seed, 101);
        m.minStake = deadline;
        m.stakeLock = deadline / 3;
        m.releaseAt = deadline ^ uint64(round);
        bytes memory expected = abi.encodePacked(
            uint8(2), uint8(4), uint16(4), seed, jobId, round, deadline, m.modelHash, m.configHash, m.minStake
        );
        expected = abi.encodePacked(expected, m.stakeLock, m.releaseAt, k);
        bytes memory written = PayloadCodec.taskAssignedFixed(m, k);
        for (uint256 i = 0; i < k; ++i) {
            expected = abi.encodePacked(expected, _key(seed, i), uint32(i * 0x01010101));
        }
        for (uint256 i = k; i > 0; --i) {
            PayloadCodec.putAssignment(written, i - 1, _key(seed, i - 1), uint32((i - 1) * 0x01010101));
        }
        assertEq(written, expected, "bytes");
        (PayloadCodec.TaskAssigned memory head, uint256 count) = PayloadCodec.decodeTaskAssignedHead(written);
        assertEq(count, k, "count");
        assertEq(head.releaseAt, m.releaseAt, "release");
        for (uint256 i = 0; i < k; ++i) {
            (bytes32 key, uint32 shard) = PayloadCodec.assignmentAt(written, i);
            assertEq(key, _key(seed, i), "key");
            assertEq(shard, uint32(i * 0x01010101), "shard");
        }
    }

    function testFuzz_roundSettled_entriesWrittenInAnyOrderGiveThePackedBytes(
        uint64 jobId,
        uint32 round,
        bytes32 seed,
        uint8 k,
        uint64 slash
    ) public pure {
        k = uint8(bound(k, 1, 32));
        PayloadCodec.RoundSettled memory m;
        m.header = PayloadCodec.Header(PayloadCodec.ROUND_SETTLED, 1, seed, jobId);
        m.round = round;
        m.modelHash = _key(seed, 100);
        m.slashMode = uint8(k % 2);
        m.slashRecipient = _key(seed, 101);
        bytes memory expected =
            abi.encodePacked(uint8(4), uint8(4), uint16(1), seed, jobId, round, m.modelHash, m.slashMode);
        expected = abi.encodePacked(expected, m.slashRecipient, k);
        for (uint256 i = 0; i < k; ++i) {
            expected = abi.encodePacked(expected, _key(seed, i), uint8(i % 3), slash ^ uint64(i));
        }
        bytes memory written = PayloadCodec.roundSettledFixed(m, k);
        for (uint256 i = k; i > 0; --i) {
            PayloadCodec.putSettlement(written, i - 1, _key(seed, i - 1), uint8((i - 1) % 3), slash ^ uint64(i - 1));
        }
        assertEq(written, expected, "bytes");
        (PayloadCodec.RoundSettled memory head, uint256 count) = PayloadCodec.decodeRoundSettledHead(written);
        assertEq(count, k, "count");
        assertEq(head.slashRecipient, m.slashRecipient, "recipient");
        for (uint256 i = 0; i < k; ++i) {
            (bytes32 key, uint8 outcome, uint64 amount) = PayloadCodec.settlementAt(written, i);
            assertEq(key, _key(seed, i), "key");
            assertEq(outcome, i % 3, "outcome");
            assertEq(amount, slash ^ uint64(i), "slash");
        }
    }

    function testFuzz_updateCommitted_cutToTheEntriesWrittenGivesThePackedBytes(
        uint64 jobId,
        uint32 round,
        bytes32 seed,
        uint8 k,
        uint8 kept
    ) public pure {
        k = uint8(bound(k, 1, 32));
        kept = uint8(bound(kept, 1, k));
        PayloadCodec.UpdateCommitted memory m;
        m.header = PayloadCodec.Header(PayloadCodec.UPDATE_COMMITTED, 2, seed, jobId);
        m.round = round;
        bytes memory written = PayloadCodec.updateCommittedFixed(m, k);
        bytes memory expected = abi.encodePacked(uint8(3), uint8(4), uint16(2), seed, jobId, round, kept);
        for (uint256 i = 0; i < kept; ++i) {
            (bytes32 a, bytes32 b, bytes32 c) = (_key(seed, 3 * i), _key(seed, 3 * i + 1), _key(seed, 3 * i + 2));
            expected = abi.encodePacked(expected, _key(seed, 1000 + i), a, b, c, uint32(i + 1), ~uint32(i));
            PayloadCodec.putCommitment(written, i, _key(seed, 1000 + i), a, b, c, uint32(i + 1), ~uint32(i));
        }
        PayloadCodec.setCommitmentCount(written, kept);
        assertEq(written, expected, "bytes");
        (uint64 job, uint32 r, uint256 count) = PayloadCodec.decodeUpdateCommittedHead(written);
        assertEq(job, jobId, "job");
        assertEq(r, round, "round");
        assertEq(count, kept, "count");
    }

    function testFuzz_computeTaskId_isOverThePackedFields(uint64 jobId, uint32 round, uint16 chain, bytes32 key)
        public
        pure
    {
        assertEq(
            PayloadCodec.computeTaskId(jobId, round, chain, key),
            keccak256(abi.encodePacked(jobId, round, chain, key)),
            "task id"
        );
    }
}
