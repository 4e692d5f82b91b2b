// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title ReentrancyGuard
/// @notice Rejects a call that re-enters a guarded function of the same contract.
/// @dev The flag lives in transient storage (EIP-1153): it only has to last the transaction, and
/// costs a few hundred gas per guarded call instead of a cold slot's read and two writes.
abstract contract ReentrancyGuard {
    uint256 private transient _entered;

    /// @notice A guarded function was re-entered.
    error Reentrancy();

    modifier nonReentrant() {
        if (_entered != 0) revert Reentrancy();
        _entered = 1;
        _;
        _entered = 0;
    }
}
