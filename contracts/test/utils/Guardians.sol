// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Test} from "./Test.sol";

/// @notice Test guardians: deterministic private keys, VAA bodies and signed Wormhole v1 VAAs.
abstract contract Guardians is Test {
    uint256 internal constant CURVE_ORDER = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141;
    uint256 internal constant FIRST_GUARDIAN_KEY = 0xA11CE;

    uint32 internal vaaTimestamp = 1_700_000_000;

    function guardianKey(uint256 index) internal pure returns (uint256) {
        return FIRST_GUARDIAN_KEY + index;
    }

    function guardianAddresses(uint256 count, uint256 offset) internal pure returns (address[] memory keys) {
        keys = new address[](count);
        for (uint256 i = 0; i < count; ++i) {
            keys[i] = vm.addr(guardianKey(offset + i));
        }
    }

    function vaaBody(uint16 emitterChain, bytes32 emitter, uint64 sequence, bytes memory payload)
        internal
        view
        returns (bytes memory)
    {
        return abi.encodePacked(vaaTimestamp, uint32(7), emitterChain, emitter, sequence, uint8(202), payload);
    }

    function digestOf(bytes memory body) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(keccak256(body)));
    }

    /// @dev One signature entry: guardian index, r, s, v (0/1).
    function signatureEntry(uint8 index, uint256 privateKey, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(privateKey, digest);
        return abi.encodePacked(index, r, s, v - 27);
    }

    /// @dev Sign `body` with the guardians at `indices` (keys offset by `keyOffset`) of set `setIndex`.
    function signVaa(uint32 setIndex, uint256 keyOffset, uint8[] memory indices, bytes memory body)
        internal
        pure
        returns (bytes memory vaa)
    {
        bytes32 digest = digestOf(body);
        vaa = abi.encodePacked(uint8(1), setIndex, uint8(indices.length));
        for (uint256 i = 0; i < indices.length; ++i) {
            vaa = bytes.concat(vaa, signatureEntry(indices[i], guardianKey(keyOffset + indices[i]), digest));
        }
        vaa = bytes.concat(vaa, body);
    }

    /// @dev The first `count` guardian indices: 0, 1, ..., count - 1.
    function firstIndices(uint256 count) internal pure returns (uint8[] memory indices) {
        indices = new uint8[](count);
        for (uint256 i = 0; i < count; ++i) {
            indices[i] = uint8(i);
        }
    }

    /// @dev `vaa` with signature `i` replaced by its high-s twin (s' = n - s, the recovery id
    /// flipped): the same signer over the same digest, so the same body and digest.
    function highSTwin(bytes memory vaa, uint256 i) internal pure returns (bytes memory twin) {
        twin = bytes.concat(vaa);
        uint256 at = 6 + 66 * i + 33;
        bytes32 s;
        assembly {
            s := mload(add(twin, add(32, at)))
        }
        bytes32 flipped = bytes32(CURVE_ORDER - uint256(s));
        for (uint256 k = 0; k < 32; ++k) {
            twin[at + k] = flipped[k];
        }
        twin[at + 32] = bytes1(uint8(twin[at + 32]) ^ 1);
    }
}
