// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IMessageCore} from "../../src/interfaces/IMessageCore.sol";
import {ThresholdKeys} from "../../src/base/ThresholdKeys.sol";
import {MessageCore} from "../../src/MessageCore.sol";
import {ThresholdVerifier} from "../../src/ThresholdVerifier.sol";

/// @notice What the threshold tests call on a contract that verifies version-2 VAAs
/// (ThresholdVerifier or MessageCore), with the harnesses' `forceKey`.
interface IThresholdTarget {
    function appendKey(bytes calldata governanceVaa) external;
    function keyCount() external view returns (uint256);
    function getKey(uint32 index) external view returns (ThresholdKeys.Key memory);
    function parseAndVerifyVM(bytes calldata encoded)
        external
        view
        returns (IMessageCore.VM memory vm, bool valid, string memory reason);
    function forceKey(uint256 px, uint8 parity, uint32 guardianSetIndex, uint32 expirationTime) external;
}

/// @notice A ThresholdVerifier whose keys a test can set directly (the shared vectors name the
/// verifier's state instead of the governance VAAs that would build it).
contract ThresholdVerifierHarness is ThresholdVerifier {
    constructor(IMessageCore core_) ThresholdVerifier(core_, 1, bytes32(uint256(4))) {}

    function forceKey(uint256 px, uint8 parity, uint32 guardianSetIndex, uint32 expirationTime) external {
        _keys.push(Key({px: px, parity: parity, guardianSetIndex: guardianSetIndex, expirationTime: expirationTime}));
    }
}

/// @notice The same for MessageCore's own threshold keys.
contract MessageCoreHarness is MessageCore {
    constructor(uint16 chainId_, address[] memory guardians, uint32 expiry, address owner_)
        MessageCore(chainId_, guardians, expiry, owner_)
    {}

    function forceKey(uint256 px, uint8 parity, uint32 guardianSetIndex, uint32 expirationTime) external {
        _keys.push(Key({px: px, parity: parity, guardianSetIndex: guardianSetIndex, expirationTime: expirationTime}));
    }
}
