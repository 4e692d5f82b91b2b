// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IMessageCore} from "../../src/interfaces/IMessageCore.sol";
import {ThresholdVerifier} from "../../src/ThresholdVerifier.sol";

/// @notice A ThresholdVerifier whose keys a test can set directly (the shared vectors name the
/// verifier's state instead of the governance VAAs that would build it).
contract ThresholdVerifierHarness is ThresholdVerifier {
    constructor(IMessageCore core_) ThresholdVerifier(core_, 1, bytes32(uint256(4))) {}

    function forceKey(uint256 px, uint8 parity, uint32 guardianSetIndex, uint32 expirationTime) external {
        _keys.push(Key({px: px, parity: parity, guardianSetIndex: guardianSetIndex, expirationTime: expirationTime}));
    }
}
