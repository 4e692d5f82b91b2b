// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Test} from "./utils/Test.sol";
import {MerkleTree} from "../src/libraries/MerkleTree.sol";
import {MerkleProofs} from "./utils/MerkleProofs.sol";

/// Calls the library with calldata proofs, as JobMarket does.
contract MerkleTreeHarness {
    function verify(bytes32 leaf, uint256 index, uint256 count, bytes32[] calldata proof, bytes32 root)
        external
        pure
        returns (bool)
    {
        return MerkleTree.verify(leaf, index, count, proof, root);
    }

    function root(bytes32[] memory leaves) external pure returns (bytes32) {
        return MerkleTree.root(leaves);
    }
}

contract MerkleTreeTest is Test {
    MerkleTreeHarness internal tree = new MerkleTreeHarness();

    function leaves(uint256 n, uint256 salt) internal pure returns (bytes32[] memory out) {
        out = new bytes32[](n);
        for (uint256 i = 0; i < n; ++i) {
            out[i] = keccak256(abi.encode(salt, i));
        }
    }

    function test_rootOfSmallTrees() public view {
        bytes32[] memory l = leaves(3, 1);
        assertEq(tree.root(l), keccak256(abi.encodePacked(keccak256(abi.encodePacked(l[0], l[1])), l[2])), "three");
        l = leaves(1, 2);
        assertEq(tree.root(l), l[0], "one leaf is the root");
        l = leaves(5, 3);
        bytes32 left = keccak256(
            abi.encodePacked(keccak256(abi.encodePacked(l[0], l[1])), keccak256(abi.encodePacked(l[2], l[3])))
        );
        assertEq(tree.root(l), keccak256(abi.encodePacked(left, l[4])), "five: the odd leaf moves up twice");
    }

    function test_everyLeafOfEverySizeUpTo33Verifies() public view {
        for (uint256 n = 1; n <= 33; ++n) {
            bytes32[] memory l = leaves(n, n);
            bytes32 root = tree.root(leaves(n, n));
            for (uint256 i = 0; i < n; ++i) {
                bytes32[] memory proof = MerkleProofs.proofOf(l, i);
                assertTrue(tree.verify(l[i], i, n, proof, root), "leaf verifies");
                if (n > 1) {
                    assertFalse(tree.verify(l[i], (i + 1) % n, n, proof, root), "not at another index");
                }
            }
        }
    }

    function testFuzz_aChangedLeafOrSiblingDoesNotVerify(uint8 size, uint8 at, uint8 flip, bytes32 other) public view {
        uint256 n = bound(size, 2, 64);
        uint256 index = bound(at, 0, n - 1);
        bytes32[] memory l = leaves(n, 7);
        bytes32 root = tree.root(leaves(n, 7));
        bytes32[] memory proof = MerkleProofs.proofOf(l, index);
        vm.assume(other != l[index]);
        assertFalse(tree.verify(other, index, n, proof, root), "another leaf");
        uint256 k = bound(flip, 0, proof.length - 1);
        vm.assume(other != proof[k]);
        proof[k] = other;
        assertFalse(tree.verify(l[index], index, n, proof, root), "another sibling");
    }

    function test_indexPastTheLeavesIsRefused() public view {
        bytes32[] memory l = leaves(4, 9);
        bytes32 root = tree.root(leaves(4, 9));
        assertFalse(tree.verify(l[0], 4, 4, MerkleProofs.proofOf(l, 0), root), "index 4 of 4");
        assertFalse(tree.verify(root, 0, 1, new bytes32[](0), bytes32(0)), "wrong root");
        assertTrue(tree.verify(root, 0, 1, new bytes32[](0), root), "a one-leaf tree is its leaf");
    }
}
