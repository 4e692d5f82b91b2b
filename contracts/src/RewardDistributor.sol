// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Owned} from "./base/Owned.sol";
import {ReentrancyGuard} from "./base/ReentrancyGuard.sol";
import {MerkleTree} from "./libraries/MerkleTree.sol";
import {IERC20Minimal, TokenTransfer} from "./libraries/TokenTransfer.sol";

/// @notice The part of JobMarket a distributor draws on: its claimable balance there.
interface IRewardSource {
    function claimable(address account, address token) external view returns (uint256);
    function withdraw(address token) external;
}

/// @title RewardDistributor
/// @notice Pays a JobMarket's rewards from cumulative roots, so that a settled round costs the
/// coordinator chain one credit (the round's total, to this contract) instead of one per rewarded
/// worker, and a worker collects any number of rounds and jobs with one proof.
///
/// The updater (the market's aggregator) publishes the root of a tree whose leaf i is
/// `keccak256(abi.encode(address(this), block.chainid, account, token, cumulative))`: everything
/// `account` has earned in `token` through this distributor since it began, rounds and jobs
/// together (`fedrelay.protocol.rewards` builds it from the settled rounds' results). A proposed root
/// goes live `disputeWindow` seconds after it was proposed unless the disputer vetoes it first; a
/// new proposal replaces a pending one and starts its window again. Anyone may submit claims, one
/// or a batch: each pays `cumulative - claimed[account][token]` to `account` and records the new
/// `claimed`, so a claim under an older root, or twice, pays nothing more.
///
/// A root cannot pay out more than the market credited here: per token, `paid` never exceeds
/// `received` (what `withdraw` brought from the market; a claim that needs more pulls first).
/// A wrong root can misdirect what was credited, not create funds; the dispute window is where the
/// disputer (the market's challenger) checks it against the rounds' results.
/// @dev Conservation per token: received = paid + (balance held for it).
contract RewardDistributor is Owned, ReentrancyGuard {
    /// @notice A root and the number of leaves of its tree (a proof is read with both).
    struct Root {
        bytes32 root;
        uint64 count;
        uint64 epoch; // 1 for the first root proposed, +1 for each proposal after
        uint64 liveAt; // when it goes (or went) live
        bytes32 content; // hash of the published list of leaves (account, token, cumulative)
    }

    /// @notice One claim: the leaf's fields, its index and the proof against the live root.
    struct Claim {
        address account;
        address token;
        uint256 cumulative;
        uint256 index;
        bytes32[] proof;
    }

    /// @notice Where the rewards come from (the JobMarket crediting each settled round's total here).
    IRewardSource public immutable source;
    /// @notice Account that proposes roots (the market's aggregator).
    address public updater;
    /// @notice Account that may veto a pending root within its window (the market's challenger).
    address public disputer;
    /// @notice Seconds between a root's proposal and its going live.
    uint64 public disputeWindow;

    Root private _live;
    Root private _pending;
    uint64 private _epochs;

    /// @notice What has been paid to `account` in `token`, rounds and jobs together.
    mapping(address account => mapping(address token => uint256)) public claimed;
    /// @notice Per token: what the source paid this contract, and what it paid on.
    mapping(address token => uint256) public received;
    mapping(address token => uint256) public paid;

    event UpdaterSet(address indexed updater);
    event DisputerSet(address indexed disputer);
    event DisputeWindowSet(uint64 window);
    event RootProposed(uint64 indexed epoch, bytes32 root, uint64 count, bytes32 content, uint64 liveAt);
    event RootVetoed(uint64 indexed epoch, bytes32 root, bytes32 reason);
    event RootLive(uint64 indexed epoch, bytes32 root, uint64 count);
    event Pulled(address indexed token, uint256 amount);
    event Claimed(address indexed account, address indexed token, uint256 amount, uint256 cumulative);

    error NotUpdater(address caller);
    error NotDisputer(address caller);
    error EmptyRoot();
    error NoPendingRoot();
    error DisputeWindowClosed(uint64 liveAt);
    error DisputeWindowTooLong(uint64 window, uint64 max);
    error NoLiveRoot();
    error InvalidClaimProof(address account, address token, uint256 cumulative);
    error NothingToClaim(address account, address token, uint256 cumulative, uint256 claimed);
    error Underfunded(address token, uint256 needed, uint256 available);
    error UnexpectedPayment(address sender);

    /// @notice Longest `disputeWindow` the owner may set.
    uint64 public constant MAX_DISPUTE_WINDOW = 30 days;

    /// @param source_ The JobMarket whose `rewardsAccount` this contract is.
    /// @param initialOwner Account that sets the updater, disputer and window.
    /// @param updater_ Account that proposes roots.
    /// @param disputer_ Account that may veto a pending root.
    /// @param disputeWindow_ Seconds a proposed root waits before it goes live.
    constructor(IRewardSource source_, address initialOwner, address updater_, address disputer_, uint64 disputeWindow_)
        Owned(initialOwner)
    {
        if (disputeWindow_ > MAX_DISPUTE_WINDOW) revert DisputeWindowTooLong(disputeWindow_, MAX_DISPUTE_WINDOW);
        source = source_;
        updater = updater_;
        disputer = disputer_;
        disputeWindow = disputeWindow_;
        emit UpdaterSet(updater_);
        emit DisputerSet(disputer_);
        emit DisputeWindowSet(disputeWindow_);
    }

    /// @notice Native rewards arrive from the source's `withdraw` only.
    receive() external payable {
        if (msg.sender != address(source)) revert UnexpectedPayment(msg.sender);
    }

    // ------------------------------------------------------------------ administration

    function setUpdater(address account) external onlyOwner {
        updater = account;
        emit UpdaterSet(account);
    }

    function setDisputer(address account) external onlyOwner {
        disputer = account;
        emit DisputerSet(account);
    }

    /// @notice Set the window for roots proposed from now on (a pending root keeps its own).
    function setDisputeWindow(uint64 window) external onlyOwner {
        if (window > MAX_DISPUTE_WINDOW) revert DisputeWindowTooLong(window, MAX_DISPUTE_WINDOW);
        disputeWindow = window;
        emit DisputeWindowSet(window);
    }

    // ------------------------------------------------------------------ roots

    /// @notice Propose the root of `count` leaves (replacing a pending one); it goes live after
    /// `disputeWindow` unless vetoed. `content` is the hash of the published leaves.
    function proposeRoot(bytes32 root, uint64 count, bytes32 content) external {
        if (msg.sender != updater) revert NotUpdater(msg.sender);
        if (root == bytes32(0) || count == 0) revert EmptyRoot();
        _promote();
        uint64 epoch = ++_epochs;
        uint64 liveAt = uint64(block.timestamp) + disputeWindow;
        _pending = Root(root, count, epoch, liveAt, content);
        emit RootProposed(epoch, root, count, content, liveAt);
    }

    /// @notice Veto the pending root before it goes live; the live root stays.
    function vetoRoot(bytes32 reason) external {
        if (msg.sender != disputer) revert NotDisputer(msg.sender);
        Root memory pending = _pending;
        if (pending.epoch == 0) revert NoPendingRoot();
        if (block.timestamp >= pending.liveAt) revert DisputeWindowClosed(pending.liveAt);
        delete _pending;
        emit RootVetoed(pending.epoch, pending.root, reason);
    }

    /// @notice The root claims are checked against now (a pending root past its window included).
    function liveRoot() public view returns (Root memory) {
        Root memory pending = _pending;
        if (pending.epoch != 0 && block.timestamp >= pending.liveAt) return pending;
        return _live;
    }

    /// @notice The root waiting for its window (epoch zero: none).
    function pendingRoot() external view returns (Root memory) {
        Root memory pending = _pending;
        if (pending.epoch != 0 && block.timestamp >= pending.liveAt) return Root(0, 0, 0, 0, 0);
        return pending;
    }

    /// @dev Make a pending root past its window the live one.
    function _promote() private {
        Root memory pending = _pending;
        if (pending.epoch == 0 || block.timestamp < pending.liveAt) return;
        _live = pending;
        delete _pending;
        emit RootLive(pending.epoch, pending.root, pending.count);
    }

    // ------------------------------------------------------------------ claims

    /// @notice The leaf `account`'s cumulative earnings in `token` have in this distributor's
    /// trees: bound to this contract and chain, so a proof for another distributor proves nothing.
    function leafOf(address account, address token, uint256 cumulative) public view returns (bytes32) {
        return keccak256(abi.encode(address(this), block.chainid, account, token, cumulative));
    }

    /// @notice Pay one claim against the live root; reverts when it pays nothing.
    function claim(Claim calldata c) external nonReentrant returns (uint256 amount) {
        _promote();
        Root memory live = _live;
        amount = _settle(c, live);
        if (amount == 0) revert NothingToClaim(c.account, c.token, c.cumulative, claimed[c.account][c.token]);
    }

    /// @notice Pay a batch of claims (anyone may submit them). A claim already paid up to its
    /// cumulative amount (by an earlier claim or batch) is passed over; an invalid proof, or a
    /// payment an account refuses, reverts the batch.
    /// @return payments How many claims paid something.
    function claimBatch(Claim[] calldata claims) external nonReentrant returns (uint256 payments) {
        _promote();
        Root memory live = _live;
        for (uint256 i = 0; i < claims.length; ++i) {
            if (_settle(claims[i], live) != 0) ++payments;
        }
    }

    /// @notice Bring what the source holds for this contract in `token` (anyone).
    function pull(address token) external nonReentrant returns (uint256 amount) {
        amount = _pull(token);
    }

    /// @dev Check `c` against `live`, record and pay what it adds; 0 when it adds nothing.
    function _settle(Claim calldata c, Root memory live) private returns (uint256 amount) {
        if (live.epoch == 0) revert NoLiveRoot();
        bytes32 leaf = leafOf(c.account, c.token, c.cumulative);
        if (!MerkleTree.verify(leaf, c.index, live.count, c.proof, live.root)) {
            revert InvalidClaimProof(c.account, c.token, c.cumulative);
        }
        uint256 before = claimed[c.account][c.token];
        if (c.cumulative <= before) return 0;
        amount = c.cumulative - before;
        uint256 available = received[c.token] - paid[c.token];
        if (available < amount) {
            available += _pull(c.token);
            if (available < amount) revert Underfunded(c.token, amount, available);
        }
        claimed[c.account][c.token] = c.cumulative;
        paid[c.token] += amount;
        emit Claimed(c.account, c.token, amount, c.cumulative);
        TokenTransfer.send(c.token, c.account, amount);
    }

    /// @dev Withdraw this contract's claimable balance of `token` from the source; what arrived.
    function _pull(address token) private returns (uint256 amount) {
        if (source.claimable(address(this), token) == 0) return 0;
        uint256 before = _held(token);
        source.withdraw(token);
        amount = _held(token) - before;
        received[token] += amount;
        emit Pulled(token, amount);
    }

    function _held(address token) private view returns (uint256) {
        return token == address(0) ? address(this).balance : IERC20Minimal(token).balanceOf(address(this));
    }
}
