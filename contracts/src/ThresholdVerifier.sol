// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IMessageCore} from "./interfaces/IMessageCore.sol";
import {ThresholdKeys} from "./base/ThresholdKeys.sol";

/// @title ThresholdVerifier
/// @notice Verifies version-2 VAAs (docs/protocol.md, section 2a) beside a core that holds the
/// guardian sets and verifies the governance VAAs: for a core that does not take version 2 itself,
/// such as Wormhole's. MessageCore takes version 2 in its own `parseAndVerifyVM`.
/// @dev `parseAndVerifyVM` has the core's signature and hands every version but 2 to the core, so a
/// receiver deployed with this contract as its verifier (`MessageReceiver`'s `verifier_`) takes
/// both versions and still publishes through the core. The digest is the same for both versions of
/// one body, so one consumed flag covers both.
contract ThresholdVerifier is ThresholdKeys {
    /// @notice The core whose guardian sets sign the governance VAAs.
    IMessageCore public immutable core;
    /// @notice The emitter chain and address of governance VAAs.
    uint16 public immutable governanceChain;
    bytes32 public immutable governanceEmitter;
    uint16 internal immutable _chainId;

    /// @param core_ The core that verifies governance VAAs and holds the guardian sets.
    /// @param governanceChain_ Emitter chain of governance VAAs (Wormhole: 1).
    /// @param governanceEmitter_ Emitter address of governance VAAs (Wormhole: 0x00…04).
    constructor(IMessageCore core_, uint16 governanceChain_, bytes32 governanceEmitter_) {
        core = core_;
        governanceChain = governanceChain_;
        governanceEmitter = governanceEmitter_;
        _chainId = core_.chainId();
    }

    /// @notice Parse and verify a VAA with the core's interface: a version-2 VAA here (its
    /// threshold signature; `vm.guardianSetIndex` is the key's guardian set and `vm.signatures` is
    /// empty; `MalformedVaa` on truncated input), anything else (an empty input too) by the core,
    /// whose verdict or revert is returned unchanged. A receiver on a core that takes version 1
    /// only (Wormhole's) verifies through this contract and so takes both versions.
    function parseAndVerifyVM(bytes calldata encoded)
        external
        view
        returns (IMessageCore.VM memory vm, bool valid, string memory reason)
    {
        if (encoded.length == 0 || uint8(encoded[0]) != 2) _handToCore();
        return _parseAndVerifyThreshold(encoded);
    }

    /// @dev Send this call's own calldata (`parseAndVerifyVM(bytes)`, the core's selector) to the
    /// core and end with its return or revert data as they are: not decoded and encoded again,
    /// which for a 13-signature VAA cost more than the call itself.
    function _handToCore() private view {
        address target = address(core);
        assembly ("memory-safe") {
            let at := mload(0x40)
            calldatacopy(at, 0, calldatasize())
            let ok := staticcall(gas(), target, at, calldatasize(), 0, 0)
            returndatacopy(at, 0, returndatasize())
            if ok { return(at, returndatasize()) }
            revert(at, returndatasize())
        }
    }

    function _verifyGovernance(bytes calldata vaa)
        internal
        view
        override
        returns (IMessageCore.VM memory, bool, string memory)
    {
        return core.parseAndVerifyVM(vaa);
    }

    function _currentGuardianSet() internal view override returns (uint32) {
        return core.getCurrentGuardianSetIndex();
    }

    function _guardianSetExpiration(uint32 index) internal view override returns (uint32) {
        return core.getGuardianSet(index).expirationTime;
    }

    function _governance() internal view override returns (uint16, bytes32, uint16) {
        return (governanceChain, governanceEmitter, _chainId);
    }
}
