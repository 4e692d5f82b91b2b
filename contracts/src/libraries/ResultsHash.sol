// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {JobMarket} from "../JobMarket.sol";

/// @notice The hash that pins a proposal's results: keccak256 of their ABI encoding (six words
/// each, contiguous in calldata), taken once every field is checked to fit its type, so results
/// that would not decode are refused when proposed instead of being neither settleable nor
/// disprovable.
library ResultsHash {
    /// @notice Result `index` has a field wider than its type.
    error MalformedResult(uint256 index);

    function digest(JobMarket.Result[] calldata results) internal pure returns (bytes32 hash) {
        uint256 bad = type(uint256).max;
        assembly ("memory-safe") {
            let size := mul(results.length, 192)
            for { let i := 0 } lt(i, results.length) { i := add(i, 1) } {
                let p := add(results.offset, mul(i, 192))
                // words 1..4: workerChain (16 bits), outcome (8), fault (8), reward (128)
                if or(
                    or(gt(calldataload(add(p, 32)), 0xffff), gt(calldataload(add(p, 64)), 0xff)),
                    or(gt(calldataload(add(p, 96)), 0xff), shr(128, calldataload(add(p, 128))))
                ) {
                    bad := i
                    break
                }
            }
            let free := mload(0x40)
            calldatacopy(free, results.offset, size)
            hash := keccak256(free, size)
        }
        if (bad != type(uint256).max) revert MalformedResult(bad);
    }
}
