// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IMessageCore} from "../interfaces/IMessageCore.sol";

/// @title VaaBody
/// @notice The signed body of a VAA, the same in versions 1 and 2: timestamp u32, nonce u32,
/// emitter chain u16, emitter address 32, sequence u64, consistency level u8, then the payload.
library VaaBody {
    /// @dev Bytes of the body before the payload.
    uint256 internal constant FIXED_SIZE = 51;

    /// @dev Fill `vm`'s body fields and its digest keccak256(keccak256(body)) from `body`
    /// (at least `FIXED_SIZE` bytes; the caller checks).
    function read(bytes calldata body, IMessageCore.VM memory vm) internal pure {
        vm.timestamp = uint32(bytes4(body[0:4]));
        vm.nonce = uint32(bytes4(body[4:8]));
        vm.emitterChainId = uint16(bytes2(body[8:10]));
        vm.emitterAddress = bytes32(body[10:42]);
        vm.sequence = uint64(bytes8(body[42:50]));
        vm.consistencyLevel = uint8(body[50]);
        vm.payload = body[FIXED_SIZE:];
        vm.hash = keccak256(abi.encodePacked(keccak256(body)));
    }
}
