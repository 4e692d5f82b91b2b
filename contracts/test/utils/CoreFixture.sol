// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IMessageCore} from "../../src/interfaces/IMessageCore.sol";
import {MessageCore} from "../../src/MessageCore.sol";
import {MessageReceiver} from "../../src/base/MessageReceiver.sol";
import {Guardians} from "./Guardians.sol";
import {RequireStyleCore} from "./RequireStyleCore.sol";

/// @notice What the receiver tests use of a core besides `IMessageCore`; both cores have it.
interface TestCore is IMessageCore {
    function parseVM(bytes calldata encoded) external pure returns (VM memory vm);
    function nextSequence(address emitter) external view returns (uint64);
}

/// @notice The core a receiver test runs against: fedrelay's MessageCore (owner-administered,
/// returns its refusals), or, when a test contract's constructor sets `requireStyleCore`, a
/// `RequireStyleCore` (Wormhole's behaviour: reverts `Error(string)`, accepts high s, governed by
/// VAAs). Fee and guardian changes go through `setCoreFee` and `rotateGuardians` on both.
abstract contract CoreFixture is Guardians {
    /// @dev Governance emitter of the RequireStyleCore: chain 1, address 4 (Wormhole's choice).
    uint16 internal constant GOVERNANCE_CHAIN = 1;
    bytes32 internal constant GOVERNANCE_EMITTER = bytes32(uint256(4));
    bytes32 internal constant CORE_MODULE = bytes32(uint256(0x436f7265)); // "Core"

    bool internal requireStyleCore;
    TestCore internal core;
    /// @dev Key offset of the current guardian set (see `Guardians.guardianAddresses`).
    uint256 internal currentKeyOffset;
    uint32 internal currentSetIndex;
    uint64 internal governanceSequence;

    /// @dev Whether `receiver` consumed the message `vaa` carries (its emitter chain, emitter and
    /// sequence: the receiver's key, whatever the VAA's version or signatures).
    function consumedBy(MessageReceiver receiver, bytes memory vaa) internal view returns (bool) {
        IMessageCore.VM memory vm = core.parseVM(vaa);
        return receiver.isConsumed(vm.emitterChainId, vm.emitterAddress, vm.sequence);
    }

    /// @dev Deploy the chosen core for `chain`, guardians 0..3 (keys offset 0) as set 0.
    function deployCore(uint16 chain) internal {
        address[] memory keys = guardianAddresses(4, 0);
        if (requireStyleCore) {
            core = TestCore(address(new RequireStyleCore(chain, keys, GOVERNANCE_CHAIN, GOVERNANCE_EMITTER)));
        } else {
            core = TestCore(address(new MessageCore(chain, keys, 1 days, address(this))));
        }
    }

    /// @dev Set the publication fee: by the owner, or by a governance VAA (action 3).
    function setCoreFee(uint256 fee) internal {
        if (!requireStyleCore) return MessageCore(address(core)).setMessageFee(fee);
        RequireStyleCore(address(core))
            .submitSetMessageFee(governanceVaa(abi.encodePacked(CORE_MODULE, uint8(3), core.chainId(), fee)));
    }

    /// @dev Make guardians `offset..offset+count-1` the next set; the replaced one expires in a day
    /// on both cores. By the owner, or by a governance VAA (action 2) of the current set.
    function rotateGuardians(uint256 count, uint256 offset) internal {
        address[] memory keys = guardianAddresses(count, offset);
        if (requireStyleCore) {
            bytes memory payload =
                abi.encodePacked(CORE_MODULE, uint8(2), core.chainId(), currentSetIndex + 1, uint8(count));
            for (uint256 i = 0; i < count; ++i) {
                payload = bytes.concat(payload, abi.encodePacked(keys[i]));
            }
            RequireStyleCore(address(core)).submitNewGuardianSet(governanceVaa(payload));
        } else {
            MessageCore(address(core)).submitNewGuardianSet(keys);
        }
        currentSetIndex += 1;
        currentKeyOffset = offset;
    }

    /// @dev A governance VAA carrying `payload`, signed by a quorum of the current set.
    function governanceVaa(bytes memory payload) internal returns (bytes memory) {
        uint256 size = core.getGuardianSet(currentSetIndex).keys.length;
        bytes memory body = vaaBody(GOVERNANCE_CHAIN, GOVERNANCE_EMITTER, governanceSequence++, payload);
        return signVaa(currentSetIndex, currentKeyOffset, firstIndices(size * 2 / 3 + 1), body);
    }
}
