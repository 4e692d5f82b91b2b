// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IMessageCore} from "./interfaces/IMessageCore.sol";
import {MessageReceiver} from "./base/MessageReceiver.sol";
import {ReentrancyGuard} from "./base/ReentrancyGuard.sol";
import {MerkleTree} from "./libraries/MerkleTree.sol";
import {PayloadCodec} from "./libraries/PayloadCodec.sol";
import {ResultsHash} from "./libraries/ResultsHash.sol";
import {ProposalChecker} from "./ProposalChecker.sol";
import {TokenTransfer} from "./libraries/TokenTransfer.sol";

/// @title JobMarket
/// @notice The coordinator chain's book of federated training jobs. A poster escrows the whole
/// reward (native or ERC-20) up front. Each round, the aggregator assigns tasks to registered
/// workers (one batched TASK_ASSIGNED per worker chain), collects UPDATE_COMMITTED messages,
/// proposes the round's outcome with `finalizeRound`, and after an unchallenged window anyone
/// settles it: rewards become claimable balances (`withdraw`) and ROUND_SETTLED goes to every
/// worker chain involved.
///
/// Workers' stakes are those their worker chains last reported (WORKER_REGISTERED for a worker not
/// yet known, then STAKE_CHANGED in nonce order), so a worker that unbonded, withdrew or was
/// slashed below a job's minimum is not assignable. Slashing is the job's: the poster fixes the
/// amount per fault kind (each at most the minimum stake) and where slashed funds go; the
/// aggregator only names the fault and the evidence blob, and a slashed worker may dispute within
/// the challenge window (an unanswered dispute reverses the slash). A job whose round makes no
/// progress for its `progressTimeout` can be cancelled by its poster in any phase.
/// The aggregator can still answer a dispute with evidence that does not hold up; holding it to
/// account for that is not this contract's job yet.
/// @dev Escrow conservation per token: deposited = escrowed + claimable + withdrawn + refunded.
contract JobMarket is MessageReceiver, ReentrancyGuard {
    enum JobStatus {
        None,
        Open,
        Completed,
        Cancelled
    }

    enum RoundPhase {
        Idle,
        Collecting,
        Proposed,
        Settled
    }

    /// @notice The fault a SLASHED result names; the job's policy gives its amount.
    enum Fault {
        None,
        Rejected,
        Missed
    }

    /// @notice What a poster supplies to post a job.
    struct JobSpec {
        address token; // zero: native currency
        bytes32 modelHash;
        bytes32 configHash;
        uint32 numRounds;
        uint16 workersPerRound;
        uint256 rewardPerRound;
        uint64 minStake; // 8 decimals, as WORKER_REGISTERED reports stake
        uint16[] workerChains;
        uint64 rejectedSlash; // 8 decimals, <= minStake: slash for a rejected update
        uint64 missedSlash; // 8 decimals, <= minStake: slash for a missed commitment
        uint8 slashMode; // PayloadCodec.SLASH_TO_RECIPIENT or SLASH_TO_HONEST
        bytes32[] slashRecipients; // one per workerChains entry, nonzero
        uint64 releaseAfter; // seconds after a round's deadline before a worker may release its task
        uint64 progressTimeout; // seconds without progress after which the poster may cancel
    }

    struct Job {
        address poster;
        address token;
        JobStatus status;
        uint32 numRounds;
        uint32 currentRound;
        uint16 workersPerRound;
        uint64 minStake;
        bytes32 modelHash;
        bytes32 configHash;
        uint256 rewardPerRound;
        uint256 escrow;
        uint64 rejectedSlash;
        uint64 missedSlash;
        uint8 slashMode;
        uint64 releaseAfter;
        uint64 progressTimeout;
        uint64 lastProgress;
    }

    /// @dev A proposal is stored as its model hash, total and the root of its results (constant
    /// storage whatever the number of workers); the results themselves are the calldata of the
    /// `finalizeRound` that emitted `ResultsProposed` in the block `proposedBlock`, and are
    /// supplied again to settle or dispute.
    /// @notice A round as `getRound` reports it: its own record and, while it is proposed, its
    /// pending proposal (zero otherwise: a settled round's model and total are in `RoundSettled`,
    /// its root in `ResultsProposed`).
    struct Round {
        RoundPhase phase;
        uint16 assigned;
        uint32 proposal;
        uint64 challengeDeadline;
        uint64 proposedBlock;
        uint64 openedBlock; // block of the round's first assignment
        bytes32 proposedModelHash;
        uint256 proposedTotal;
        bytes32 resultsRoot;
    }

    /// @dev A round's own record: one storage slot, written fresh once per round.
    struct RoundState {
        RoundPhase phase;
        uint16 assigned;
        uint32 proposal;
        uint64 challengeDeadline;
        uint64 proposedBlock;
        uint64 openedBlock;
    }

    /// @dev A job's pending proposal. Only the job's current round can be proposed, so one record
    /// per job serves every round: each proposal rewrites its four slots instead of filling fresh
    /// ones. `resultsHash` is keccak256 of the results' ABI encoding (`ResultsHash.digest`): it
    /// pins the results that `settleRound` and a disproof (`ProposalChecker.disprove`) must
    /// present.
    struct Proposal {
        bytes32 modelHash;
        uint256 total;
        bytes32 resultsRoot;
        bytes32 resultsHash;
    }

    struct Worker {
        bool registered;
        uint64 stake;
        address payout;
        uint32 capabilities;
        uint64 stakeNonce;
    }

    /// @notice A job's tasks on one worker chain in its current round, in constant storage
    /// whatever the number of workers: how many were assigned and committed, the last worker key
    /// assigned (a round assigns a chain's keys in strictly increasing order, so each worker at
    /// most once) and two hash chains, `assignedChain` over the keys in assignment order and
    /// `commitChain` over the commitments in the order their UPDATE_COMMITTED entries arrived
    /// (each step as `CHAIN_START` says). The job's next round on the chain starts the lane afresh,
    /// overwriting the same slots.
    struct Lane {
        uint32 round;
        uint16 assigned;
        uint16 committed;
        bytes32 lastKey;
        bytes32 assignedChain;
        bytes32 commitChain;
    }

    /// @notice What a worker chain reported about one task (STAKE_CHANGED TASK_REFUSED or
    /// TASK_RELEASED); the only record kept per task.
    struct TaskFlags {
        bool refused;
        bool released;
    }

    /// @notice One commitment as a proposal's check takes it (`ProposalChecker`): the worker and the
    /// `PayloadCodec.commitmentHash` of its UPDATE_COMMITTED entry (from the `UpdatesReceived` events, in their order).
    struct Commit {
        bytes32 workerKey;
        bytes32 commitment;
    }

    /// @notice One worker's outcome in a round, as the aggregator proposes it.
    /// @dev Field order packs a stored result into three slots.
    struct Result {
        bytes32 workerKey;
        uint16 workerChain;
        uint8 outcome; // PayloadCodec.OUTCOME_*
        uint8 fault; // Fault: nonzero exactly for SLASHED
        uint128 reward; // in the job's token
        bytes32 evidence; // hash of the evidence blob; nonzero exactly when fault is
    }

    /// @notice A slashed worker's dispute of one result of a proposal.
    struct Dispute {
        uint32 proposal; // the proposal disputed (0: none)
        uint64 answerBy;
        bool answered;
        bytes32 answer;
    }

    /// @notice Totals per token, for the conservation invariant.
    struct Ledger {
        uint256 deposited;
        uint256 escrowed;
        uint256 claimable;
        uint256 withdrawn;
        uint256 refunded;
    }

    /// @notice Checks proposals against the rules and voids those that break one (created with
    /// this market).
    ProposalChecker public immutable proposalChecker;
    /// @notice Account that assigns tasks and proposes round outcomes.
    address public aggregator;
    /// @notice Account that may challenge a proposed outcome within the window.
    address public challenger;
    /// @notice Seconds a proposed outcome stays open to challenge.
    uint64 public challengeWindow;
    /// @notice Id the next posted job receives (ids start at 1; 0 means "no job").
    uint64 public nextJobId = 1;
    /// @notice Seconds the aggregator has to answer a dispute.
    uint64 public disputeAnswerWindow = 1 hours;
    /// @notice Longest `releaseAfter` a job may state.
    uint64 internal constant MAX_RELEASE_AFTER = 30 days;
    /// @notice Longest `progressTimeout` a job may state.
    uint64 internal constant MAX_PROGRESS_TIMEOUT = 365 days;
    /// @dev Where a lane's hash chains start: each step is keccak256(abi.encode(previous, key))
    /// for an assignment and `PayloadCodec.chainCommitment(previous, key, commitment)` for a
    /// commitment.
    bytes32 private constant CHAIN_START = bytes32(uint256(1));

    mapping(uint64 => Job) private _jobs;
    mapping(uint64 => uint16[]) private _jobChains;
    mapping(uint64 => mapping(uint16 => bool)) private _chainAllowed;
    mapping(uint64 => mapping(uint32 => RoundState)) private _rounds;
    mapping(uint64 => Proposal) private _proposals;
    mapping(bytes32 => Worker) private _workers;
    mapping(uint64 => mapping(uint16 => Lane)) private _lanes;
    mapping(bytes32 => TaskFlags) private _taskFlags;
    mapping(uint64 => mapping(uint16 => bytes32)) private _slashRecipients;
    mapping(bytes32 => Dispute) private _disputes;
    /// @notice Where settled rounds' rewards are credited: zero, each rewarded worker's payout
    /// address; otherwise this account (a RewardDistributor), credited each round's total once.
    address public rewardsAccount;
    /// @notice Largest TASK_ASSIGNED / ROUND_SETTLED batch each worker chain accepts (0: none).
    mapping(uint16 => uint8) public maxBatch;
    /// @notice Withdrawable balance per account and token.
    mapping(address => mapping(address => uint256)) public claimable;
    /// @notice Conservation totals per token.
    mapping(address => Ledger) public ledgers;

    event AggregatorSet(address indexed aggregator);
    event ChallengerSet(address indexed challenger);
    event ChallengeWindowSet(uint64 window);
    event MaxBatchSet(uint16 indexed chain, uint8 size);
    event RewardsAccountSet(address indexed account);
    event DisputeAnswerWindowSet(uint64 window);
    event StakeUpdated(bytes32 indexed workerId, uint64 stake, uint64 nonce, uint8 reason);
    event StakeUpdateIgnored(bytes32 indexed workerId, uint64 nonce, uint64 storedNonce);
    event TaskRefused(bytes32 indexed taskId, bytes32 indexed workerId);
    event TaskReleased(bytes32 indexed taskId, bytes32 indexed workerId);
    event SlashDisputed(uint64 indexed jobId, uint32 indexed round, bytes32 indexed taskId, uint64 answerBy);
    event DisputeAnswered(uint64 indexed jobId, uint32 indexed round, bytes32 indexed taskId, bytes32 answer);
    event SlashReversed(uint64 indexed jobId, uint32 indexed round, bytes32 indexed taskId);
    event JobPosted(uint64 indexed jobId, address indexed poster, address token, uint256 escrow, uint32 numRounds);
    event JobCancelled(uint64 indexed jobId, uint256 refund);
    event JobCompleted(uint64 indexed jobId);
    event WorkerRegistered(
        bytes32 indexed workerId, uint16 workerChain, bytes32 workerKey, uint64 stake, address payout
    );
    event TasksAssigned(uint64 indexed jobId, uint32 indexed round, uint16 workerChain, uint64 sequence, uint8 count);
    /// @notice An UPDATE_COMMITTED from `workerChain` was applied: `payload` is the message's
    /// (docs/protocol.md), its commitments in the order they joined the lane.
    event UpdatesReceived(uint64 indexed jobId, uint32 indexed round, uint16 workerChain, bytes payload);
    event RoundFinalized(
        uint64 indexed jobId, uint32 indexed round, bytes32 modelHash, uint256 total, uint64 challengeDeadline
    );
    /// @notice A proposal (`finalizeRound`): `resultsRoot` is the root of its results' leaves
    /// (keccak256(abi.encode(jobId, round, result))) in the order given. The results themselves are
    /// the `results` argument of the transaction that emitted it: available wherever the
    /// transaction is, so not repeated here (a rollup posts the calldata, not the logs).
    event ResultsProposed(uint64 indexed jobId, uint32 indexed round, uint32 proposal, bytes32 resultsRoot);
    event ProposalDisproved(
        uint64 indexed jobId, uint32 indexed round, uint32 proposal, address disprover, bytes reason
    );
    event RoundChallenged(uint64 indexed jobId, uint32 indexed round, address challenger, bytes32 evidence);
    event RoundSettled(uint64 indexed jobId, uint32 indexed round, bytes32 modelHash, uint256 total);
    event SettlementPublished(
        uint64 indexed jobId, uint32 indexed round, uint16 workerChain, uint64 sequence, uint8 count
    );
    event RewardCredited(address indexed account, address indexed token, uint256 amount);
    event Withdrawn(address indexed account, address indexed token, uint256 amount);

    error NotAggregator(address caller);
    /// @notice `finalizeRound` must be its transaction's own call from an account without code
    /// (`tx.origin`, no code, no EIP-7702 delegation), so the results are the transaction's input.
    error ProposerNotExternallyOwned(address caller);
    error NotProposalChecker(address caller);
    error NotChallenger(address caller);
    error NotPoster(address caller);
    error NoRounds();
    error NoWorkersPerRound();
    error NoRewardPerRound();
    error NoModelHash();
    error NoWorkerChains();
    /// @notice A job's worker chain is zero, the coordinator chain itself, or named twice.
    error InvalidWorkerChain(uint16 chain);
    error SlashAboveMinStake(uint64 slash, uint64 minStake);
    error UnknownSlashMode(uint8 mode);
    /// @notice Not one nonzero slash recipient per worker chain.
    error InvalidSlashRecipients();
    error ReleaseAfterOutOfRange(uint64 releaseAfter, uint64 max);
    error ProgressTimeoutOutOfRange(uint64 progressTimeout, uint64 max);
    error WrongDeposit(uint256 received, uint256 required);
    error JobNotOpen(uint64 jobId);
    error NothingToRefund(uint64 jobId);
    error RoundInProgress(uint64 jobId, uint32 round);
    error ChainNotAllowed(uint64 jobId, uint16 chain);
    error UnknownPeer(uint16 chain);
    error BatchTooLarge(uint256 count, uint256 max);
    error DeadlinePassed(uint64 deadline);
    error TooManyWorkers(uint256 assigned, uint16 workersPerRound);
    error UnknownWorker(uint16 chain, bytes32 workerKey);
    error InsufficientStake(bytes32 workerId, uint64 stake, uint64 minStake);
    error AssignmentOutOfOrder(bytes32 workerKey, bytes32 lastKey);
    error UnexpectedCommitment(uint64 jobId, uint32 round, uint16 chain, uint256 count);
    error WrongRound(uint64 jobId, uint32 round, uint32 currentRound);
    error RoundNotCollecting(uint64 jobId, uint32 round);
    error RoundAlreadyFinalized(uint64 jobId, uint32 round);
    error RoundNotProposed(uint64 jobId, uint32 round);
    error ResultCountMismatch(uint256 given, uint256 assigned);
    error ResultsMismatch(uint64 jobId, uint32 round);
    error RewardsNotTotal(uint256 rewards, uint256 total);
    error InvalidResultProof(bytes32 taskId);
    error EmptyAnswer(bytes32 taskId);
    error RewardExceedsBudget(uint256 total, uint256 budget);
    error ChallengeWindowOpen(uint64 deadline);
    error ChallengeWindowClosed(uint64 deadline);
    error InvalidPayoutAddress(bytes32 payout);
    error NothingToWithdraw(address account, address token);
    error NotWorkerPayout(address caller);
    error NotSlashed(bytes32 taskId);
    error AlreadyDisputed(bytes32 taskId);
    error NoOpenDispute(bytes32 taskId);
    error AnswerWindowClosed(uint64 answerBy);
    error DisputeOpen(bytes32 taskId, uint64 answerBy);

    modifier onlyAggregator() {
        if (msg.sender != aggregator) revert NotAggregator(msg.sender);
        _;
    }

    /// @param core_ The message core (Wormhole core in production).
    /// @param verifier_ What verifies incoming VAAs: zero for the core, or a ThresholdVerifier beside it.
    /// @param consistencyLevel_ Consistency level of published messages (202: finalized).
    /// @param initialOwner Account that manages peers, roles and batch sizes.
    /// @param aggregator_ Account that assigns tasks and proposes outcomes.
    /// @param challenger_ Account that may challenge proposed outcomes.
    /// @param challengeWindow_ Seconds a proposal stays open to challenge.
    constructor(
        IMessageCore core_,
        IMessageCore verifier_,
        uint8 consistencyLevel_,
        address initialOwner,
        address aggregator_,
        address challenger_,
        uint64 challengeWindow_
    ) MessageReceiver(core_, verifier_, consistencyLevel_, initialOwner) {
        proposalChecker = new ProposalChecker();
        aggregator = aggregator_;
        challenger = challenger_;
        challengeWindow = challengeWindow_;
        emit AggregatorSet(aggregator_);
        emit ChallengerSet(challenger_);
        emit ChallengeWindowSet(challengeWindow_);
    }

    // ------------------------------------------------------------------ administration

    /// @notice Credit the rounds settled from now on to `account` (zero: to each worker's payout).
    function setRewardsAccount(address account) external onlyOwner {
        rewardsAccount = account;
        emit RewardsAccountSet(account);
    }

    /// @notice Set the account that assigns tasks and proposes outcomes.
    function setAggregator(address account) external onlyOwner {
        aggregator = account;
        emit AggregatorSet(account);
    }

    /// @notice Set the account that may challenge proposed outcomes.
    function setChallenger(address account) external onlyOwner {
        challenger = account;
        emit ChallengerSet(account);
    }

    /// @notice Set the challenge window for proposals made from now on.
    function setChallengeWindow(uint64 window) external onlyOwner {
        challengeWindow = window;
        emit ChallengeWindowSet(window);
    }

    /// @notice Set how long the aggregator has to answer a dispute (disputes raised from now on).
    function setDisputeAnswerWindow(uint64 window) external onlyOwner {
        disputeAnswerWindow = window;
        emit DisputeAnswerWindowSet(window);
    }

    /// @notice Set how many assignments or settlements one message to `chain` may carry (1..32).
    function setMaxBatch(uint16 chain, uint8 size) external onlyOwner {
        if (size == 0 || size > PayloadCodec.MAX_BATCH) revert BatchTooLarge(size, PayloadCodec.MAX_BATCH);
        maxBatch[chain] = size;
        emit MaxBatchSet(chain, size);
    }

    // ------------------------------------------------------------------ jobs

    /// @notice Post a job, escrowing `rewardPerRound * numRounds` of `spec.token`.
    /// @dev Native jobs send the escrow as `msg.value`; ERC-20 jobs approve it beforehand.
    /// @return jobId The new job's id.
    function postJob(JobSpec calldata spec) external payable nonReentrant returns (uint64 jobId) {
        _checkSpec(spec);
        uint256 total = spec.rewardPerRound * spec.numRounds;
        jobId = nextJobId++;
        Job storage job = _jobs[jobId];
        job.poster = msg.sender;
        job.token = spec.token;
        job.status = JobStatus.Open;
        job.numRounds = spec.numRounds;
        job.workersPerRound = spec.workersPerRound;
        job.minStake = spec.minStake;
        job.modelHash = spec.modelHash;
        job.configHash = spec.configHash;
        job.rewardPerRound = spec.rewardPerRound;
        job.escrow = total;
        job.rejectedSlash = spec.rejectedSlash;
        job.missedSlash = spec.missedSlash;
        job.slashMode = spec.slashMode;
        job.releaseAfter = spec.releaseAfter;
        job.progressTimeout = spec.progressTimeout;
        job.lastProgress = uint64(block.timestamp);
        for (uint256 i = 0; i < spec.workerChains.length; ++i) {
            uint16 chain = spec.workerChains[i];
            if (chain == 0 || chain == chainId || _chainAllowed[jobId][chain]) {
                revert InvalidWorkerChain(chain);
            }
            _chainAllowed[jobId][chain] = true;
            _jobChains[jobId].push(chain);
            _slashRecipients[jobId][chain] = spec.slashRecipients[i];
        }
        Ledger storage ledger = ledgers[spec.token];
        ledger.deposited += total;
        ledger.escrowed += total;
        emit JobPosted(jobId, msg.sender, spec.token, total, spec.numRounds);
        if (spec.token == address(0)) {
            if (msg.value != total) revert WrongDeposit(msg.value, total);
        } else {
            if (msg.value != 0) revert WrongDeposit(msg.value, 0);
            uint256 received = TokenTransfer.pull(spec.token, msg.sender, total);
            if (received != total) revert WrongDeposit(received, total);
        }
    }

    /// @notice Cancel an open job between rounds, or in any phase once it has made no progress for
    /// its `progressTimeout`, or close a completed one, refunding the unspent escrow to the poster.
    /// @dev Progress is posting, assigning, finalizing and settling; challenges and disputes are
    /// not, so they cannot hold the escrow. Tasks still open on worker chains are released there by
    /// their workers after the job's release time.
    function cancelJob(uint64 jobId) external nonReentrant {
        Job storage job = _jobs[jobId];
        if (job.poster != msg.sender) revert NotPoster(msg.sender);
        if (job.status == JobStatus.Open) {
            if (
                _rounds[jobId][job.currentRound].phase != RoundPhase.Idle
                    && block.timestamp <= uint256(job.lastProgress) + job.progressTimeout
            ) {
                revert RoundInProgress(jobId, job.currentRound);
            }
            job.status = JobStatus.Cancelled;
        } else if (job.status != JobStatus.Completed) {
            revert JobNotOpen(jobId);
        }
        uint256 refund = job.escrow;
        if (refund == 0) revert NothingToRefund(jobId);
        job.escrow = 0;
        Ledger storage ledger = ledgers[job.token];
        ledger.escrowed -= refund;
        ledger.refunded += refund;
        emit JobCancelled(jobId, refund);
        TokenTransfer.send(job.token, msg.sender, refund);
    }

    // ------------------------------------------------------------------ messages in

    /// @notice Act on a guardian-signed WORKER_REGISTERED, UPDATE_COMMITTED or STAKE_CHANGED VAA.
    /// @dev Reverts `AlreadyConsumed` when the VAA was delivered before.
    function receiveMessage(bytes calldata encodedVaa) external {
        (IMessageCore.VM memory vm, PayloadCodec.Header memory header) = _consume(encodedVaa);
        if (header.payloadId == PayloadCodec.WORKER_REGISTERED) {
            _onWorkerRegistered(vm.emitterChainId, PayloadCodec.decodeWorkerRegistered(vm.payload));
        } else if (header.payloadId == PayloadCodec.STAKE_CHANGED) {
            _onStakeChanged(vm.emitterChainId, PayloadCodec.decodeStakeChanged(vm.payload));
        } else if (header.payloadId == PayloadCodec.UPDATE_COMMITTED) {
            _onUpdateCommitted(vm.emitterChainId, vm.payload);
        } else {
            revert UnexpectedPayload(header.payloadId);
        }
    }

    /// @notice Act on each of `vaas` on its own, as `receiveMessage` does; a consumed or refused
    /// entry does not revert the others (see `MessageReceiver` for the results and `BatchEntry`).
    /// @return results Per entry: APPLIED 1, CONSUMED 2, INVALID 3, FAILED 4.
    function receiveMessages(bytes[] calldata vaas) external nonReentrant returns (uint8[] memory results) {
        results = _receiveBatch(vaas);
    }

    function _onWorkerRegistered(uint16 chain, PayloadCodec.WorkerRegistered memory m) private {
        if (uint256(m.payoutAddress) >> 160 != 0) revert InvalidPayoutAddress(m.payoutAddress);
        address payout = address(uint160(uint256(m.payoutAddress)));
        if (payout == address(0)) revert InvalidPayoutAddress(m.payoutAddress);
        bytes32 workerId = workerIdOf(chain, m.workerKey);
        Worker storage worker = _workers[workerId];
        // The stake of a known worker changes only through STAKE_CHANGED, in nonce order, so a
        // WORKER_REGISTERED delivered late cannot bring back a stake that has since left.
        if (!worker.registered && worker.stakeNonce == 0) worker.stake = m.stake;
        worker.registered = true;
        worker.payout = payout;
        worker.capabilities = m.capabilities;
        emit WorkerRegistered(workerId, chain, m.workerKey, worker.stake, payout);
    }

    function _onStakeChanged(uint16 chain, PayloadCodec.StakeChanged memory m) private {
        bytes32 workerId = workerIdOf(chain, m.workerKey);
        if (m.reason == PayloadCodec.STAKE_TASK_REFUSED) {
            _taskFlags[m.taskId].refused = true;
            emit TaskRefused(m.taskId, workerId);
        } else if (m.reason == PayloadCodec.STAKE_TASK_RELEASED) {
            _taskFlags[m.taskId].released = true;
            emit TaskReleased(m.taskId, workerId);
        }
        Worker storage worker = _workers[workerId];
        if (m.nonce <= worker.stakeNonce) {
            emit StakeUpdateIgnored(workerId, m.nonce, worker.stakeNonce);
            return;
        }
        worker.stakeNonce = m.nonce;
        worker.stake = m.stake;
        emit StakeUpdated(workerId, m.stake, m.nonce, m.reason);
    }

    function _onUpdateCommitted(uint16 chain, bytes memory payload) private {
        (uint64 jobId, uint32 round, uint256 count) = PayloadCodec.decodeUpdateCommittedHead(payload);
        if (_jobs[jobId].status != JobStatus.Open || round != _jobs[jobId].currentRound) {
            revert WrongRound(jobId, round, _jobs[jobId].currentRound);
        }
        if (_rounds[jobId][round].phase != RoundPhase.Collecting) revert RoundNotCollecting(jobId, round);
        // The worker chain takes one commitment per task it created; more commitments on a chain
        // than tasks assigned there cannot come from it. Which workers committed is checked when
        // the round is proposed, against the assignments.
        Lane storage lane = _lanes[jobId][chain];
        if (lane.round != round || lane.committed + count > lane.assigned) {
            revert UnexpectedCommitment(jobId, round, chain, count);
        }
        bytes32 chained = lane.commitChain;
        for (uint256 i = 0; i < count; ++i) {
            chained = PayloadCodec.chainEntry(chained, payload, i);
        }
        lane.committed += uint16(count); // at most `assigned`, checked above
        lane.commitChain = chained;
        emit UpdatesReceived(jobId, round, chain, payload);
    }

    // ------------------------------------------------------------------ rounds

    /// @notice Assign the current round's tasks on `workerChain` and publish one TASK_ASSIGNED.
    /// @dev Pays the core's fee for one message as `msg.value`. May be called several times per
    /// round (several chains, or batches), up to `workersPerRound` assignments in total.
    /// @return sequence The published message's sequence.
    function assignTasks(
        uint64 jobId,
        uint16 workerChain,
        uint64 deadline,
        PayloadCodec.Assignment[] calldata assignments
    ) external payable onlyAggregator returns (uint64 sequence) {
        uint256 fee = _requireFees(1);
        Job storage job = _jobs[jobId];
        if (job.status != JobStatus.Open) revert JobNotOpen(jobId);
        if (!_chainAllowed[jobId][workerChain]) revert ChainNotAllowed(jobId, workerChain);
        bytes32 peer = peers[workerChain];
        if (peer == bytes32(0)) revert UnknownPeer(workerChain);
        uint256 count = assignments.length;
        if (count == 0 || count > maxBatch[workerChain]) revert BatchTooLarge(count, maxBatch[workerChain]);
        if (deadline <= block.timestamp) revert DeadlinePassed(deadline);
        uint32 round = job.currentRound;
        RoundState storage r = _rounds[jobId][round];
        if (r.phase == RoundPhase.Proposed) revert RoundAlreadyFinalized(jobId, round);
        if (r.assigned + count > job.workersPerRound) revert TooManyWorkers(r.assigned + count, job.workersPerRound);
        if (r.phase == RoundPhase.Idle) r.openedBlock = uint64(block.number);
        Lane storage lane = _lanes[jobId][workerChain];
        if (lane.round != round || lane.assigned == 0) {
            lane.round = round;
            lane.assigned = 0;
            lane.committed = 0;
            lane.lastKey = bytes32(0);
            lane.assignedChain = CHAIN_START;
            lane.commitChain = CHAIN_START;
        }
        // The entries are written into the payload as they are checked.
        bytes memory payload = _taskAssignedFixed(job, jobId, workerChain, peer, round, deadline, count);
        (lane.lastKey, lane.assignedChain) =
            _assign(workerChain, job.minStake, assignments, payload, lane.lastKey, lane.assignedChain);
        lane.assigned += uint16(count);
        r.assigned += uint16(count);
        r.phase = RoundPhase.Collecting;
        job.lastProgress = uint64(block.timestamp);
        sequence = _publish(payload, fee);
        emit TasksAssigned(jobId, round, workerChain, sequence, uint8(count));
    }

    /// @dev A TASK_ASSIGNED payload for `count` entries of `job`'s round `round` on `workerChain`,
    /// its fixed part written.
    function _taskAssignedFixed(
        Job storage job,
        uint64 jobId,
        uint16 workerChain,
        bytes32 peer,
        uint32 round,
        uint64 deadline,
        uint256 count
    ) private view returns (bytes memory) {
        PayloadCodec.TaskAssigned memory message;
        message.header = PayloadCodec.Header(PayloadCodec.TASK_ASSIGNED, workerChain, peer, jobId);
        message.round = round;
        message.deadline = deadline;
        message.modelHash = job.modelHash;
        message.configHash = job.configHash;
        message.minStake = job.minStake;
        message.stakeLock = job.rejectedSlash > job.missedSlash ? job.rejectedSlash : job.missedSlash;
        message.releaseAt = deadline + job.releaseAfter;
        return PayloadCodec.taskAssignedFixed(message, count);
    }

    /// @dev Check each assignment (keys in increasing order after `lastKey`, each a registered
    /// worker with the job's minimum stake), write it into `payload` and extend the lane's
    /// assignment chain; the lane's new last key and chain.
    function _assign(
        uint16 workerChain,
        uint64 minStake,
        PayloadCodec.Assignment[] calldata assignments,
        bytes memory payload,
        bytes32 lastKey,
        bytes32 assignedChain
    ) private view returns (bytes32, bytes32) {
        for (uint256 i = 0; i < assignments.length; ++i) {
            bytes32 key = assignments[i].workerKey;
            if (key <= lastKey) revert AssignmentOutOfOrder(key, lastKey);
            _checkAssignable(workerChain, key, minStake);
            assignedChain = _chainKey(assignedChain, key);
            PayloadCodec.putAssignment(payload, i, key, assignments[i].shard);
            lastKey = key;
        }
        return (lastKey, assignedChain);
    }

    /// @dev One step of a lane's assignment chain: keccak256(abi.encode(previous, key)).
    function _chainKey(bytes32 previous, bytes32 key) private pure returns (bytes32 next) {
        assembly ("memory-safe") {
            mstore(0x00, previous)
            mstore(0x20, key)
            next := keccak256(0x00, 0x40)
        }
    }

    function _checkAssignable(uint16 chain, bytes32 workerKey, uint64 minStake) private view {
        bytes32 workerId = workerIdOf(chain, workerKey);
        Worker storage worker = _workers[workerId];
        if (!worker.registered) revert UnknownWorker(chain, workerKey);
        if (worker.stake < minStake) revert InsufficientStake(workerId, worker.stake, minStake);
    }

    /// @notice Propose the outcome of the current round: the new model hash, the rewards' total,
    /// the Merkle root of the results and the results themselves (one per assigned task, lane by
    /// lane as `checkProposal` takes them). Opens the challenge window; nothing is paid until
    /// `settleRound`.
    /// @dev Optimistic: only the count and the budget are checked here, and the proposal is
    /// stored as its model hash, total, root and the hash of the results (`ResultsHash.digest`),
    /// in the job's one proposal record; the results stay in this call's calldata, where anyone
    /// reads them. Within the challenge window anyone may void a proposal that breaks a rule of
    /// `ProposalChecker.checkProposal` (`ProposalChecker.disprove`), so the work of checking falls
    /// on a proposal that is wrong, not on every round. The aggregator checks its own first.
    /// The aggregator proposes from an externally owned account, in a transaction of its own
    /// (`ProposerNotExternallyOwned`): the results that a disproof or a dispute needs are then
    /// that transaction's input, which no contract wallet or delegation can hide in an inner call.
    function finalizeRound(
        uint64 jobId,
        uint32 round,
        bytes32 modelHash,
        uint256 total,
        bytes32 resultsRoot,
        Result[] calldata results
    ) external onlyAggregator {
        // The results are read back from this call's calldata by whoever checks the proposal
        // (they are not logged): the call must be the transaction itself, from an account with
        // no code, so that the transaction's input is this call's on every node.
        if (msg.sender != tx.origin || msg.sender.code.length != 0) revert ProposerNotExternallyOwned(msg.sender);
        Job storage job = _jobs[jobId];
        if (job.status != JobStatus.Open) revert JobNotOpen(jobId);
        if (round != job.currentRound) revert WrongRound(jobId, round, job.currentRound);
        RoundState storage r = _rounds[jobId][round];
        if (r.phase == RoundPhase.Proposed) revert RoundAlreadyFinalized(jobId, round);
        if (r.phase != RoundPhase.Collecting) revert RoundNotCollecting(jobId, round);
        if (results.length != r.assigned) revert ResultCountMismatch(results.length, r.assigned);
        if (total > job.rewardPerRound) revert RewardExceedsBudget(total, job.rewardPerRound);
        uint32 proposal = ++r.proposal;
        uint64 deadline = uint64(block.timestamp) + challengeWindow;
        job.lastProgress = uint64(block.timestamp);
        r.phase = RoundPhase.Proposed;
        r.challengeDeadline = deadline;
        r.proposedBlock = uint64(block.number);
        _proposals[jobId] = Proposal(modelHash, total, resultsRoot, ResultsHash.digest(results));
        emit ResultsProposed(jobId, round, proposal, resultsRoot);
        emit RoundFinalized(jobId, round, modelHash, total, deadline);
    }

    /// @dev The leaf a result has in its proposal's results root:
    /// keccak256(abi.encode(jobId, round, result)), so a proof for one job or round proves
    /// nothing in another.
    function _resultLeaf(uint64 jobId, uint32 round, Result calldata result) private pure returns (bytes32) {
        return keccak256(abi.encode(jobId, round, result));
    }

    /// @notice The slash (8 decimals) the job's policy sets for `fault`.
    function slashOf(uint64 jobId, uint8 fault) internal view returns (uint64) {
        if (fault == uint8(Fault.Rejected)) return _jobs[jobId].rejectedSlash;
        if (fault == uint8(Fault.Missed)) return _jobs[jobId].missedSlash;
        return 0;
    }

    // ------------------------------------------------------------------ disputes

    /// @notice Dispute a SLASHED result of the pending proposal, within its challenge window.
    /// @dev Only the worker's payout address, with the result, its index among the proposal's
    /// results and its Merkle proof against the results root (the `finalizeRound` calldata has
    /// them all).
    /// The aggregator must answer within `disputeAnswerWindow`; until then the round cannot
    /// settle, and after it an unanswered dispute turns the result into DROPPED with no slash.
    function disputeSlash(uint64 jobId, uint32 round, uint256 index, Result calldata result, bytes32[] calldata proof)
        external
    {
        RoundState storage r = _rounds[jobId][round];
        if (r.phase != RoundPhase.Proposed) revert RoundNotProposed(jobId, round);
        if (block.timestamp >= r.challengeDeadline) revert ChallengeWindowClosed(r.challengeDeadline);
        if (_workers[workerIdOf(result.workerChain, result.workerKey)].payout != msg.sender) {
            revert NotWorkerPayout(msg.sender);
        }
        bytes32 taskId = taskIdOf(jobId, round, result.workerChain, result.workerKey);
        bytes32 root = _proposals[jobId].resultsRoot;
        if (!MerkleTree.verify(_resultLeaf(jobId, round, result), index, r.assigned, proof, root)) {
            revert InvalidResultProof(taskId);
        }
        if (result.outcome != PayloadCodec.OUTCOME_SLASHED) revert NotSlashed(taskId);
        Dispute storage d = _disputes[taskId];
        if (d.proposal == r.proposal) revert AlreadyDisputed(taskId);
        uint64 answerBy = uint64(block.timestamp) + disputeAnswerWindow;
        _disputes[taskId] = Dispute(r.proposal, answerBy, false, bytes32(0));
        emit SlashDisputed(jobId, round, taskId, answerBy);
    }

    /// @notice Answer a dispute with the hash of a published blob holding the evidence.
    function answerDispute(uint64 jobId, uint32 round, uint16 workerChain, bytes32 workerKey, bytes32 answer)
        external
        onlyAggregator
    {
        bytes32 taskId = taskIdOf(jobId, round, workerChain, workerKey);
        Dispute storage d = _disputes[taskId];
        RoundState storage r = _rounds[jobId][round];
        if (r.phase != RoundPhase.Proposed || d.proposal != r.proposal || d.answered) revert NoOpenDispute(taskId);
        if (block.timestamp > d.answerBy) revert AnswerWindowClosed(d.answerBy);
        if (answer == bytes32(0)) revert EmptyAnswer(taskId);
        d.answered = true;
        d.answer = answer;
        emit DisputeAnswered(jobId, round, taskId, answer);
    }

    /// @notice A task's dispute record.
    function getDispute(bytes32 taskId) external view returns (Dispute memory) {
        return _disputes[taskId];
    }

    /// @dev The round's disputes: revert while one is unanswered within its time; a SLASHED result
    /// whose dispute went unanswered settles as DROPPED without slash (`reversed[i]`).
    function _resolveDisputes(uint64 jobId, uint32 round, uint32 proposal, Result[] calldata results)
        private
        returns (bool[] memory reversed)
    {
        reversed = new bool[](results.length);
        for (uint256 i = 0; i < results.length; ++i) {
            (bytes32 workerKey, uint8 outcome,) = _resultAt(results, i);
            if (outcome != PayloadCodec.OUTCOME_SLASHED) continue;
            bytes32 taskId = taskIdOf(jobId, round, _chainAt(results, i), workerKey);
            Dispute storage d = _disputes[taskId];
            if (d.proposal != proposal || d.answered) continue;
            if (block.timestamp <= d.answerBy) revert DisputeOpen(taskId, d.answerBy);
            reversed[i] = true;
            emit SlashReversed(jobId, round, taskId);
        }
    }

    /// @notice Reject a proposed outcome within its challenge window; the aggregator proposes again.
    function challengeRound(uint64 jobId, uint32 round, bytes32 evidence) external {
        if (msg.sender != challenger) revert NotChallenger(msg.sender);
        RoundState storage r = _rounds[jobId][round];
        if (r.phase != RoundPhase.Proposed) revert RoundNotProposed(jobId, round);
        if (block.timestamp >= r.challengeDeadline) revert ChallengeWindowClosed(r.challengeDeadline);
        r.phase = RoundPhase.Collecting;
        emit RoundChallenged(jobId, round, msg.sender, evidence);
    }

    /// @notice Void the pending proposal of `jobId` round `round`: only this market's
    /// `proposalChecker`, when `disprover` showed it there to break a rule (`reason`, the rule's
    /// error) of results that hash to `resultsHash`. The aggregator proposes again.
    function voidProposal(uint64 jobId, uint32 round, bytes32 resultsHash, address disprover, bytes calldata reason)
        external
    {
        if (msg.sender != address(proposalChecker)) revert NotProposalChecker(msg.sender);
        RoundState storage r = _rounds[jobId][round];
        if (r.phase != RoundPhase.Proposed) revert RoundNotProposed(jobId, round);
        if (block.timestamp >= r.challengeDeadline) revert ChallengeWindowClosed(r.challengeDeadline);
        if (resultsHash != _proposals[jobId].resultsHash) revert ResultsMismatch(jobId, round);
        r.phase = RoundPhase.Collecting;
        emit ProposalDisproved(jobId, round, r.proposal, disprover, reason);
    }

    /// @notice Settle an unchallenged proposal after its window: credit rewards, advance the job's
    /// model and round, and publish ROUND_SETTLED to each worker chain in the round.
    /// @dev `results` are the proposal's, as its `finalizeRound` gave them (checked against the
    /// stored hash). Pays the core's fee for every published batch as `msg.value`
    /// (per worker chain, its results in batches of `maxBatch`).
    function settleRound(uint64 jobId, uint32 round, Result[] calldata results) external payable nonReentrant {
        Job storage job = _jobs[jobId];
        if (job.status != JobStatus.Open) revert JobNotOpen(jobId);
        RoundState storage r = _rounds[jobId][round];
        if (r.phase != RoundPhase.Proposed) revert RoundNotProposed(jobId, round);
        if (block.timestamp < r.challengeDeadline) revert ChallengeWindowOpen(r.challengeDeadline);
        Proposal storage p = _proposals[jobId];
        if (results.length != r.assigned || ResultsHash.digest(results) != p.resultsHash) {
            revert ResultsMismatch(jobId, round);
        }
        uint256 fee = _requireFees(_settlementBatches(results));
        bool[] memory reversed = _resolveDisputes(jobId, round, r.proposal, results);
        job.lastProgress = uint64(block.timestamp);
        uint256 total = p.total;
        address pooled = rewardsAccount;
        if (pooled != address(0)) {
            _credit(pooled, job.token, total);
        } else {
            uint256 credited = 0;
            for (uint256 i = 0; i < results.length; ++i) {
                bytes32 workerId = workerIdOf(results[i].workerChain, results[i].workerKey);
                _credit(_workers[workerId].payout, job.token, results[i].reward);
                credited += results[i].reward;
            }
            // A proposal whose rewards are not its total breaks a rule that a disproof may not
            // have caught; crediting it would pay from other escrow. It cannot settle.
            if (credited != total) revert RewardsNotTotal(credited, total);
        }
        Ledger storage ledger = ledgers[job.token];
        ledger.escrowed -= total;
        ledger.claimable += total;
        job.escrow -= total;
        bytes32 modelHash = p.modelHash;
        job.modelHash = modelHash;
        r.phase = RoundPhase.Settled;
        job.currentRound = round + 1;
        emit RoundSettled(jobId, round, modelHash, total);
        if (job.currentRound == job.numRounds) {
            job.status = JobStatus.Completed;
            emit JobCompleted(jobId);
        }
        for (uint256 start = 0; start < results.length;) {
            uint256 end = _laneEnd(results, start);
            uint16 chain = _chainAt(results, start);
            uint256 size = maxBatch[chain];
            for (uint256 from = start; from < end; from += size) {
                uint256 to = from + size < end ? from + size : end;
                _publishSettlement(jobId, round, chain, results, reversed, from, to, fee);
            }
            start = end;
        }
    }

    /// @dev Add `amount` (if any) to `account`'s claimable balance of `token`.
    function _credit(address account, address token, uint256 amount) private {
        if (amount == 0) return;
        claimable[account][token] += amount;
        emit RewardCredited(account, token, amount);
    }

    /// @dev Where the lane of `results[start]` ends: a proposal's results go lane by lane.
    function _laneEnd(Result[] calldata results, uint256 start) private pure returns (uint256 end) {
        uint16 chain = _chainAt(results, start);
        for (end = start + 1; end < results.length && _chainAt(results, end) == chain; ++end) {}
    }

    /// @dev Number of ROUND_SETTLED messages settling a proposal with `results` publishes (its
    /// fee multiplier): per lane, its results in batches of its chain's `maxBatch`.
    function _settlementBatches(Result[] calldata results) private view returns (uint256 batches) {
        for (uint256 start = 0; start < results.length;) {
            uint256 end = _laneEnd(results, start);
            uint256 size = maxBatch[_chainAt(results, start)];
            batches += (end - start + size - 1) / size;
            start = end;
        }
    }

    /// @dev Publish one ROUND_SETTLED for the proposal's results `from..to` (one lane's).
    function _publishSettlement(
        uint64 jobId,
        uint32 round,
        uint16 chain,
        Result[] calldata results,
        bool[] memory reversed,
        uint256 from,
        uint256 to,
        uint256 fee
    ) private {
        bytes32 peer = peers[chain];
        if (peer == bytes32(0)) revert UnknownPeer(chain);
        PayloadCodec.RoundSettled memory message;
        message.header = PayloadCodec.Header(PayloadCodec.ROUND_SETTLED, chain, peer, jobId);
        message.round = round;
        message.modelHash = _jobs[jobId].modelHash;
        message.slashMode = _jobs[jobId].slashMode;
        message.slashRecipient = _slashRecipients[jobId][chain];
        bytes memory payload = PayloadCodec.roundSettledFixed(message, to - from);
        _putSettlements(payload, jobId, results, reversed, from, to);
        uint64 sequence = _publish(payload, fee);
        emit SettlementPublished(jobId, round, chain, sequence, uint8(to - from));
    }

    /// @dev Write results `from..to` as the entries of a ROUND_SETTLED `payload`: a reversed
    /// slash settles as DROPPED, a slash takes the job's amount for its fault.
    function _putSettlements(
        bytes memory payload,
        uint64 jobId,
        Result[] calldata results,
        bool[] memory reversed,
        uint256 from,
        uint256 to
    ) private view {
        for (uint256 i = from; i < to; ++i) {
            (bytes32 workerKey, uint8 outcome, uint8 fault) = _resultAt(results, i);
            if (reversed[i]) outcome = PayloadCodec.OUTCOME_DROPPED;
            uint64 slash = outcome == PayloadCodec.OUTCOME_SLASHED ? slashOf(jobId, fault) : 0;
            PayloadCodec.putSettlement(payload, i - from, workerKey, outcome, slash);
        }
    }

    /// @dev Result `i` (below the count) of results whose fields `ResultsHash.digest` checked:
    /// its worker key, outcome and fault, read in place.
    function _resultAt(Result[] calldata results, uint256 i)
        private
        pure
        returns (bytes32 workerKey, uint8 outcome, uint8 fault)
    {
        assembly ("memory-safe") {
            let at := add(results.offset, mul(i, 192))
            workerKey := calldataload(at)
            outcome := calldataload(add(at, 64))
            fault := calldataload(add(at, 96))
        }
    }

    /// @dev The worker chain of result `i` (below the count), read as `_resultAt` reads.
    function _chainAt(Result[] calldata results, uint256 i) private pure returns (uint16 chain) {
        assembly ("memory-safe") {
            chain := calldataload(add(add(results.offset, mul(i, 192)), 32))
        }
    }

    // ------------------------------------------------------------------ payouts

    /// @notice Withdraw the caller's whole claimable balance of `token` (zero: native).
    function withdraw(address token) external nonReentrant {
        uint256 amount = claimable[msg.sender][token];
        if (amount == 0) revert NothingToWithdraw(msg.sender, token);
        claimable[msg.sender][token] = 0;
        Ledger storage ledger = ledgers[token];
        ledger.claimable -= amount;
        ledger.withdrawn += amount;
        emit Withdrawn(msg.sender, token, amount);
        TokenTransfer.send(token, msg.sender, amount);
    }

    // ------------------------------------------------------------------ views

    /// @notice worker_id = keccak256(u16 worker chain || worker_key).
    function workerIdOf(uint16 chain, bytes32 workerKey) public pure returns (bytes32 id) {
        assembly ("memory-safe") {
            // 34 bytes in the scratch space
            mstore(0x00, shl(240, chain))
            mstore(0x02, workerKey)
            id := keccak256(0x00, 34)
        }
    }

    /// @notice task_id = keccak256(u64 job_id || u32 round || u16 worker chain || worker_key).
    function taskIdOf(uint64 jobId, uint32 round, uint16 chain, bytes32 workerKey) public pure returns (bytes32) {
        return PayloadCodec.computeTaskId(jobId, round, chain, workerKey);
    }

    /// @notice A job's stored state.
    function getJob(uint64 jobId) external view returns (Job memory) {
        return _jobs[jobId];
    }

    /// @notice Where a job's slashed funds go on `chain` (bytes32 account on that chain).
    function slashRecipientOf(uint64 jobId, uint16 chain) external view returns (bytes32) {
        return _slashRecipients[jobId][chain];
    }

    /// @notice The worker chains a job allows.
    function jobWorkerChains(uint64 jobId) external view returns (uint16[] memory chains) {
        uint16[] storage stored = _jobChains[jobId];
        chains = new uint16[](stored.length);
        for (uint256 i = 0; i < chains.length; ++i) {
            chains[i] = stored[i];
        }
    }

    /// @notice A round's stored state.
    function getRound(uint64 jobId, uint32 round) external view returns (Round memory found) {
        RoundState storage r = _rounds[jobId][round];
        found = Round(r.phase, r.assigned, r.proposal, r.challengeDeadline, r.proposedBlock, r.openedBlock, 0, 0, 0);
        if (r.phase == RoundPhase.Proposed) {
            Proposal storage p = _proposals[jobId];
            (found.proposedModelHash, found.proposedTotal, found.resultsRoot) = (p.modelHash, p.total, p.resultsRoot);
        }
    }

    /// @notice Whether a task's worker chain refused or released it.
    function getTaskFlags(bytes32 taskId) external view returns (TaskFlags memory) {
        return _taskFlags[taskId];
    }

    /// @notice A registered worker's record.
    function getWorker(bytes32 workerId) external view returns (Worker memory) {
        return _workers[workerId];
    }

    /// @notice A job's lane on `chain` (its tasks there in the lane's round).
    function getLane(uint64 jobId, uint16 chain) external view returns (Lane memory) {
        return _lanes[jobId][chain];
    }

    function _checkSpec(JobSpec calldata spec) private pure {
        if (spec.numRounds == 0) revert NoRounds();
        if (spec.workersPerRound == 0) revert NoWorkersPerRound();
        if (spec.rewardPerRound == 0) revert NoRewardPerRound();
        if (spec.modelHash == bytes32(0)) revert NoModelHash();
        if (spec.workerChains.length == 0) revert NoWorkerChains();
        if (spec.rejectedSlash > spec.minStake) revert SlashAboveMinStake(spec.rejectedSlash, spec.minStake);
        if (spec.missedSlash > spec.minStake) revert SlashAboveMinStake(spec.missedSlash, spec.minStake);
        if (spec.slashMode > PayloadCodec.SLASH_TO_HONEST) revert UnknownSlashMode(spec.slashMode);
        if (spec.slashRecipients.length != spec.workerChains.length) revert InvalidSlashRecipients();
        for (uint256 i = 0; i < spec.slashRecipients.length; ++i) {
            if (spec.slashRecipients[i] == bytes32(0)) revert InvalidSlashRecipients();
        }
        if (spec.releaseAfter == 0 || spec.releaseAfter > MAX_RELEASE_AFTER) {
            revert ReleaseAfterOutOfRange(spec.releaseAfter, MAX_RELEASE_AFTER);
        }
        if (spec.progressTimeout == 0 || spec.progressTimeout > MAX_PROGRESS_TIMEOUT) {
            revert ProgressTimeoutOutOfRange(spec.progressTimeout, MAX_PROGRESS_TIMEOUT);
        }
    }
}
