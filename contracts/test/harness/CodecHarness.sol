// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {PayloadCodec} from "../../src/libraries/PayloadCodec.sol";

/// @notice Exposes PayloadCodec's internal functions as external calls, so tests can expect reverts.
contract CodecHarness {
    function decodeHeader(bytes memory p) external pure returns (PayloadCodec.Header memory) {
        return PayloadCodec.decodeHeader(p);
    }

    function decodeWorkerRegistered(bytes memory p) external pure returns (PayloadCodec.WorkerRegistered memory) {
        return PayloadCodec.decodeWorkerRegistered(p);
    }

    function decodeTaskAssigned(bytes memory p) external pure returns (PayloadCodec.TaskAssigned memory) {
        return PayloadCodec.decodeTaskAssigned(p);
    }

    function decodeUpdateCommitted(bytes memory p) external pure returns (PayloadCodec.UpdateCommitted memory) {
        return PayloadCodec.decodeUpdateCommitted(p);
    }

    function decodeUpdateCommittedHead(bytes memory p)
        external
        pure
        returns (uint64 jobId, uint32 round, uint256 count)
    {
        return PayloadCodec.decodeUpdateCommittedHead(p);
    }

    /// @notice `chainEntry` over every entry of an UPDATE_COMMITTED, from `start`.
    function chainEntries(bytes32 start, bytes memory p) external pure returns (bytes32 chain) {
        (,, uint256 count) = PayloadCodec.decodeUpdateCommittedHead(p);
        chain = start;
        for (uint256 i = 0; i < count; ++i) {
            chain = PayloadCodec.chainEntry(chain, p, i);
        }
    }

    function commitmentHash(PayloadCodec.Commitment memory c) external pure returns (bytes32) {
        return PayloadCodec.commitmentHash(c.updateHash, c.transcriptRoot, c.dataRoot, c.numSamples, c.trainLoss);
    }

    function chainCommitment(bytes32 previous, bytes32 workerKey, bytes32 commitment) external pure returns (bytes32) {
        return PayloadCodec.chainCommitment(previous, workerKey, commitment);
    }

    function decodeRoundSettled(bytes memory p) external pure returns (PayloadCodec.RoundSettled memory) {
        return PayloadCodec.decodeRoundSettled(p);
    }

    function decodeStakeChanged(bytes memory p) external pure returns (PayloadCodec.StakeChanged memory) {
        return PayloadCodec.decodeStakeChanged(p);
    }

    function encodeStakeChanged(PayloadCodec.StakeChanged memory m) external pure returns (bytes memory) {
        return PayloadCodec.encode(m);
    }

    function encodeWorkerRegistered(PayloadCodec.WorkerRegistered memory m) external pure returns (bytes memory) {
        return PayloadCodec.encode(m);
    }

    function encodeTaskAssigned(PayloadCodec.TaskAssigned memory m) external pure returns (bytes memory) {
        return PayloadCodec.encode(m);
    }

    function encodeUpdateCommitted(PayloadCodec.UpdateCommitted memory m) external pure returns (bytes memory) {
        return PayloadCodec.encode(m);
    }

    function encodeRoundSettled(PayloadCodec.RoundSettled memory m) external pure returns (bytes memory) {
        return PayloadCodec.encode(m);
    }

    /// @notice Decode any payload by its id and encode it again.
    function roundTrip(bytes memory p) external pure returns (bytes memory) {
        uint8 id = PayloadCodec.decodeHeader(p).payloadId;
        if (id == PayloadCodec.WORKER_REGISTERED) return PayloadCodec.encode(PayloadCodec.decodeWorkerRegistered(p));
        if (id == PayloadCodec.TASK_ASSIGNED) return PayloadCodec.encode(PayloadCodec.decodeTaskAssigned(p));
        if (id == PayloadCodec.UPDATE_COMMITTED) return PayloadCodec.encode(PayloadCodec.decodeUpdateCommitted(p));
        if (id == PayloadCodec.ROUND_SETTLED) return PayloadCodec.encode(PayloadCodec.decodeRoundSettled(p));
        return PayloadCodec.encode(PayloadCodec.decodeStakeChanged(p));
    }
}
