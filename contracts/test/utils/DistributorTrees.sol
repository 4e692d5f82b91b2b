// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {RewardDistributor} from "../../src/RewardDistributor.sol";
import {MerkleProofs} from "./MerkleProofs.sol";
import {Test} from "./Test.sol";

/// Builds distributor trees the way `fedrelay.protocol.rewards` does: leaf i of accounts[i].
abstract contract DistributorTrees is Test {
    function leavesOf(RewardDistributor d, address[] memory accounts, address token, uint256[] memory cumulative)
        internal
        view
        returns (bytes32[] memory leaves)
    {
        leaves = new bytes32[](accounts.length);
        for (uint256 i = 0; i < accounts.length; ++i) {
            leaves[i] = d.leafOf(accounts[i], token, cumulative[i]);
        }
    }

    function rootOf(bytes32[] memory leaves) internal pure returns (bytes32 root) {
        bytes32[] memory nodes = new bytes32[](leaves.length);
        for (uint256 i = 0; i < leaves.length; ++i) {
            nodes[i] = leaves[i];
        }
        uint256 n = nodes.length;
        while (n > 1) {
            for (uint256 i = 0; i < n / 2; ++i) {
                nodes[i] = keccak256(abi.encodePacked(nodes[2 * i], nodes[2 * i + 1]));
            }
            if (n % 2 == 1) nodes[n / 2] = nodes[n - 1];
            n = n / 2 + n % 2;
        }
        root = nodes[0];
    }

    function claimOf(bytes32[] memory leaves, address account, address token, uint256 cumulative, uint256 index)
        internal
        pure
        returns (RewardDistributor.Claim memory)
    {
        return RewardDistributor.Claim(account, token, cumulative, index, MerkleProofs.proofOf(leaves, index));
    }
}
