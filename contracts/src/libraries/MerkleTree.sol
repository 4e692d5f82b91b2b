// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title MerkleTree
/// @notice Positional binary Merkle trees over keccak256, as `fedrelay.protocol.merkle` builds
/// them: parent = keccak256(left || right), levels pair their nodes in order, and the last node of
/// a level with an odd number of nodes moves up unchanged. The shape follows from the leaf count,
/// so a proof is read with the leaf's index and the count.
library MerkleTree {
    /// @notice The root of `leaves` (at least one). Overwrites `leaves` with the upper levels.
    function root(bytes32[] memory leaves) internal pure returns (bytes32) {
        uint256 n = leaves.length;
        while (n > 1) {
            uint256 half = n / 2;
            for (uint256 i = 0; i < half; ++i) {
                leaves[i] = _parent(leaves[2 * i], leaves[2 * i + 1]);
            }
            if (n % 2 == 1) leaves[half] = leaves[n - 1];
            n = half + n % 2;
        }
        return leaves[0];
    }

    /// @notice Whether `leaf` sits at `index` of a tree of `count` leaves whose root is `expected`.
    /// @dev `proof` holds the siblings bottom up, none for the levels where the node moved up
    /// alone; a proof with siblings left over, or too few, is refused.
    function verify(bytes32 leaf, uint256 index, uint256 count, bytes32[] calldata proof, bytes32 expected)
        internal
        pure
        returns (bool)
    {
        if (index >= count) return false;
        bytes32 node = leaf;
        uint256 used = 0;
        while (count > 1) {
            if (index % 2 == 1) {
                if (used == proof.length) return false;
                node = _parent(proof[used++], node);
            } else if (index + 1 < count) {
                if (used == proof.length) return false;
                node = _parent(node, proof[used++]);
            }
            index /= 2;
            count = (count + 1) / 2;
        }
        return used == proof.length && node == expected;
    }

    function _parent(bytes32 left, bytes32 right) private pure returns (bytes32 parent) {
        assembly ("memory-safe") {
            mstore(0x00, left)
            mstore(0x20, right)
            parent := keccak256(0x00, 0x40)
        }
    }
}
