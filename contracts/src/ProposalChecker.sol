// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {JobMarket} from "./JobMarket.sol";
import {MerkleTree} from "./libraries/MerkleTree.sol";
import {PayloadCodec} from "./libraries/PayloadCodec.sol";
import {ResultsHash} from "./libraries/ResultsHash.sol";

/// @title ProposalChecker
/// @notice The rules a JobMarket proposal must keep, and the way anyone voids one that breaks a
/// rule. The market takes a round's proposal optimistically (`finalizeRound` checks the count
/// and the budget and stores hashes: constant work beside the results' calldata); this contract
/// holds the per-result work, done only by an `eth_call` (the aggregator's own check before it
/// proposes, anyone's audit) or by a disproof (`disprove`), which voids the proposal through the
/// market's `voidProposal` within its challenge window. The market creates it and is the only
/// one it acts on; it reads the market through its views.
contract ProposalChecker {
    /// @notice The market this checker serves (its creator).
    JobMarket public immutable market;

    bytes32 private constant CHAIN_START = bytes32(uint256(1));

    error ResultCountMismatch(uint256 given, uint256 assigned);
    error WrongRound(uint64 jobId, uint32 round, uint32 currentRound);
    error RoundNotProposed(uint64 jobId, uint32 round);
    error ResultsOutOfOrder(uint256 index);
    error AssignmentMismatch(uint16 chain);
    /// @notice The commitments given do not rebuild the lane's hash chain (evidence, not a rule).
    error CommitsMismatch(uint16 chain);
    error InvalidOutcome(bytes32 taskId, uint8 outcome);
    error AcceptedWithoutCommitment(bytes32 taskId);
    /// @notice A MISSED slash for a task whose commitment the lane received: its worker chain
    /// took it before the task's deadline, so the worker did not miss it.
    error CommittedTaskMissed(bytes32 taskId);
    error RewardWithoutAcceptance(bytes32 taskId, uint128 reward);
    /// @notice A fault that is unknown, missing from a SLASHED result or on one that is not.
    error InvalidFault(bytes32 taskId, uint8 outcome, uint8 fault);
    /// @notice Evidence missing from a SLASHED result, or on one that is not.
    error InvalidEvidence(bytes32 taskId, uint8 outcome);
    error RefusedTaskNotDropped(bytes32 taskId);
    error ReleasedTaskSlashed(bytes32 taskId);
    error RewardExceedsBudget(uint256 total, uint256 budget);
    error TotalMismatch(uint256 total, uint256 sum);
    error ResultsRootMismatch(bytes32 resultsRoot);
    /// @notice The proposal keeps every rule: nothing to disprove.
    error ProposalValid(uint64 jobId, uint32 round);

    constructor() {
        market = JobMarket(msg.sender);
    }

    /// @notice Void the pending proposal of `jobId` round `round` by showing that it breaks a
    /// rule of `checkProposal`; anyone may, within its challenge window (the market checks it).
    /// @dev `results` are the proposal's, as its `finalizeRound` call gave them (the market
    /// checks their hash), `commits` the evidence `checkProposal` takes. Reverts `ProposalValid`
    /// when the proposal keeps every rule, and with the check's own error when the evidence is
    /// wrong (`CommitsMismatch`) or the check did not finish (no error data: out of gas; a panic),
    /// so neither voids a valid proposal.
    function disprove(
        uint64 jobId,
        uint32 round,
        JobMarket.Result[] calldata results,
        JobMarket.Commit[] calldata commits
    ) external {
        JobMarket.Round memory r = market.getRound(jobId, round);
        if (r.phase != JobMarket.RoundPhase.Proposed) revert RoundNotProposed(jobId, round);
        try this.checkProposal(jobId, round, r.proposedTotal, r.resultsRoot, results, commits) {
            revert ProposalValid(jobId, round);
        } catch (bytes memory reason) {
            bytes4 selector = reason.length < 4 ? bytes4(0) : bytes4(reason);
            if (
                selector == bytes4(0) || selector == CommitsMismatch.selector || selector == 0x4e487b71
                    || selector == 0x08c379a0
            ) {
                assembly ("memory-safe") {
                    revert(add(reason, 32), mload(reason))
                }
            }
            market.voidProposal(jobId, round, ResultsHash.digest(results), msg.sender, reason);
        }
    }

    /// @notice Check a proposal of the job's current round against every rule; reverts naming
    /// the first it breaks, returns when it keeps them all. Anyone may call it (the aggregator
    /// does before proposing; `disprove` does on a pending proposal).
    /// @dev The rules: `results` go lane by lane, in the order of the job's worker chains, each
    /// lane's in the order its tasks were assigned (increasing worker keys), so rebuilding each
    /// lane's `assignedChain` from them proves they are exactly the round's tasks, each once
    /// (`ResultsOutOfOrder`, `AssignmentMismatch`); an ACCEPTED result's worker has a commitment
    /// in its lane (`AcceptedWithoutCommitment`) and only an ACCEPTED result has a reward
    /// (`RewardWithoutAcceptance`); a SLASHED result names its fault and the hash of the evidence
    /// blob the aggregator published (the amount is the job's policy for that fault, `slashOf`),
    /// never on a task its worker chain refused or released, and never as MISSED on a task whose
    /// worker's commitment the lane received, however late it was relayed; the rewards sum to
    /// `total` (`TotalMismatch`) within the round's budget; `resultsRoot` is the results' Merkle
    /// root (`ResultsRootMismatch`).
    /// `commits` are the evidence: every lane's commitments in the same lane order, each lane's in
    /// arrival order, checked against its `commitChain` (`CommitsMismatch` says they are not,
    /// which says nothing of the results).
    function checkProposal(
        uint64 jobId,
        uint32 round,
        uint256 total,
        bytes32 resultsRoot,
        JobMarket.Result[] calldata results,
        JobMarket.Commit[] calldata commits
    ) external view {
        JobMarket.Job memory job = market.getJob(jobId);
        if (round != job.currentRound) revert WrongRound(jobId, round, job.currentRound);
        uint16 assigned = market.getRound(jobId, round).assigned;
        if (results.length != assigned) revert ResultCountMismatch(results.length, assigned);
        uint256 sum = 0;
        uint256 next = 0; // the next result
        uint256 firstCommit = 0; // the current lane's first entry in `commits`
        uint16[] memory chains = market.jobWorkerChains(jobId);
        for (uint256 c = 0; c < chains.length; ++c) {
            JobMarket.Lane memory lane = market.getLane(jobId, chains[c]);
            if (lane.round != round || lane.assigned == 0) continue;
            uint256 endCommit = firstCommit + lane.committed;
            if (endCommit > commits.length || _commitChain(commits, firstCommit, endCommit) != lane.commitChain) {
                revert CommitsMismatch(chains[c]);
            }
            bytes32 assignedChain = CHAIN_START;
            for (uint256 end = next + lane.assigned; next < end; ++next) {
                JobMarket.Result calldata result = results[next];
                if (result.workerChain != chains[c]) revert ResultsOutOfOrder(next);
                assignedChain = keccak256(abi.encode(assignedChain, result.workerKey));
                bool committed = false;
                for (uint256 k = firstCommit; k < endCommit && !committed; ++k) {
                    committed = commits[k].workerKey == result.workerKey;
                }
                _checkResult(jobId, round, result, committed);
                sum += result.reward;
            }
            if (assignedChain != lane.assignedChain) revert AssignmentMismatch(chains[c]);
            firstCommit = endCommit;
        }
        if (firstCommit != commits.length) revert CommitsMismatch(0);
        if (sum != total) revert TotalMismatch(total, sum);
        if (total > job.rewardPerRound) revert RewardExceedsBudget(total, job.rewardPerRound);
        if (_resultsRoot(jobId, round, results) != resultsRoot) revert ResultsRootMismatch(resultsRoot);
    }

    /// @dev The hash chain of `commits[from:to]` (`commitChain` of a lane holding them).
    function _commitChain(JobMarket.Commit[] calldata commits, uint256 from, uint256 to)
        private
        pure
        returns (bytes32 chain)
    {
        chain = CHAIN_START;
        for (uint256 i = from; i < to; ++i) {
            chain = PayloadCodec.chainCommitment(chain, commits[i].workerKey, commits[i].commitment);
        }
    }

    /// @dev One result's rules (see `checkProposal`); `committed`: its lane received its
    /// worker's commitment.
    function _checkResult(uint64 jobId, uint32 round, JobMarket.Result calldata result, bool committed) private view {
        bytes32 taskId = market.taskIdOf(jobId, round, result.workerChain, result.workerKey);
        if (result.outcome > PayloadCodec.OUTCOME_SLASHED) revert InvalidOutcome(taskId, result.outcome);
        if (result.outcome == PayloadCodec.OUTCOME_ACCEPTED) {
            if (!committed) revert AcceptedWithoutCommitment(taskId);
        } else if (result.reward != 0) {
            revert RewardWithoutAcceptance(taskId, result.reward);
        }
        if (result.fault > uint8(JobMarket.Fault.Missed)) revert InvalidFault(taskId, result.outcome, result.fault);
        if (result.outcome == PayloadCodec.OUTCOME_SLASHED) {
            if (result.fault == uint8(JobMarket.Fault.None)) revert InvalidFault(taskId, result.outcome, result.fault);
            if (result.evidence == bytes32(0)) revert InvalidEvidence(taskId, result.outcome);
            // Only a slash reads the task's flags: an accepted task has a commitment, so its
            // worker chain created it (never refused), and a dropped one may be either.
            JobMarket.TaskFlags memory flags = market.getTaskFlags(taskId);
            if (flags.refused) revert RefusedTaskNotDropped(taskId);
            if (flags.released) revert ReleasedTaskSlashed(taskId);
            if (result.fault == uint8(JobMarket.Fault.Missed) && committed) revert CommittedTaskMissed(taskId);
        } else if (result.fault != uint8(JobMarket.Fault.None)) {
            revert InvalidFault(taskId, result.outcome, result.fault);
        } else if (result.evidence != bytes32(0)) {
            revert InvalidEvidence(taskId, result.outcome);
        }
    }

    /// @dev The Merkle root of `results`' leaves (`JobMarket`'s `_resultLeaf`:
    /// keccak256(abi.encode(jobId, round, result))), in the order given (at least one result).
    function _resultsRoot(uint64 jobId, uint32 round, JobMarket.Result[] calldata results)
        private
        pure
        returns (bytes32)
    {
        bytes32[] memory leaves = new bytes32[](results.length);
        for (uint256 i = 0; i < results.length; ++i) {
            leaves[i] = keccak256(abi.encode(jobId, round, results[i]));
        }
        return MerkleTree.root(leaves);
    }
}
