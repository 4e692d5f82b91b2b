// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @notice The ERC-20 calls fedrelay makes.
interface IERC20Minimal {
    function balanceOf(address account) external view returns (uint256);
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

/// @title TokenTransfer
/// @notice Moves native currency (token address zero) or ERC-20 tokens, tolerating tokens that
/// return nothing and rejecting those that return false or revert.
library TokenTransfer {
    /// @notice A native or token transfer failed.
    error TransferFailed(address token, address to, uint256 amount);

    /// @notice Send `amount` of `token` (zero: native) from this contract to `to`.
    function send(address token, address to, uint256 amount) internal {
        bool ok;
        bytes memory data;
        if (token == address(0)) {
            (ok, data) = to.call{value: amount}("");
        } else {
            (ok, data) = token.call(abi.encodeCall(IERC20Minimal.transfer, (to, amount)));
            ok = ok && (data.length == 0 ? token.code.length > 0 : abi.decode(data, (bool)));
        }
        if (!ok) revert TransferFailed(token, to, amount);
    }

    /// @notice Pull `amount` of ERC-20 `token` from `from`; returns what actually arrived.
    function pull(address token, address from, uint256 amount) internal returns (uint256 received) {
        uint256 before = IERC20Minimal(token).balanceOf(address(this));
        (bool ok, bytes memory data) =
            token.call(abi.encodeCall(IERC20Minimal.transferFrom, (from, address(this), amount)));
        ok = ok && (data.length == 0 ? token.code.length > 0 : abi.decode(data, (bool)));
        if (!ok) revert TransferFailed(token, address(this), amount);
        received = IERC20Minimal(token).balanceOf(address(this)) - before;
    }
}
