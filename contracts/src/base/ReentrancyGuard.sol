// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title ReentrancyGuard
/// @notice Rejects a call that re-enters a guarded function of the same contract.
abstract contract ReentrancyGuard {
    uint256 private _entered = 1;

    /// @notice A guarded function was re-entered.
    error Reentrancy();

    modifier nonReentrant() {
        if (_entered == 2) revert Reentrancy();
        _entered = 2;
        _;
        _entered = 1;
    }
}
