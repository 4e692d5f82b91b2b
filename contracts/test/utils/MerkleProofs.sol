// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// Builds proofs for `MerkleTree` (the positional tree: pairs hashed in order, an odd node moves
/// up alone), the way an off-chain prover would, for the tests.
library MerkleProofs {
    /// Siblings of leaf `index` of `leaves`, bottom up; a level where the node moves up alone
    /// adds none.
    function proofOf(bytes32[] memory leaves, uint256 index) internal pure returns (bytes32[] memory proof) {
        bytes32[] memory path = new bytes32[](64);
        uint256 used = 0;
        uint256 n = leaves.length;
        bytes32[] memory nodes = new bytes32[](n);
        for (uint256 i = 0; i < n; ++i) {
            nodes[i] = leaves[i];
        }
        while (n > 1) {
            if ((index ^ 1) < n) path[used++] = nodes[index ^ 1];
            for (uint256 i = 0; i < n / 2; ++i) {
                nodes[i] = keccak256(abi.encodePacked(nodes[2 * i], nodes[2 * i + 1]));
            }
            if (n % 2 == 1) nodes[n / 2] = nodes[n - 1];
            n = n / 2 + n % 2;
            index /= 2;
        }
        proof = new bytes32[](used);
        for (uint256 i = 0; i < used; ++i) {
            proof[i] = path[i];
        }
    }
}
