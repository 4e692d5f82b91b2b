"""Cumulative reward trees: the leaf encoding, the canonical order, proofs and bad input."""

from __future__ import annotations

import pytest
from eth_abi import encode

from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.merkle import MerkleTree, verify_proof
from fedrelay.protocol.rewards import RewardLeaf, RewardTree, RewardTreeError, build_tree

DISTRIBUTOR = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
NATIVE = bytes(20)


def account(i: int) -> bytes:
    return bytes([i]) * 20


def test_a_leaf_is_the_abi_encoding_the_contract_hashes() -> None:
    leaf = RewardLeaf(account(7), NATIVE, 10**18 + 5)
    expected = keccak256(
        encode(
            ["address", "uint256", "address", "address", "uint256"],
            [DISTRIBUTOR, 31337, account(7), NATIVE, 10**18 + 5],
        )
    )
    assert leaf.hash(DISTRIBUTOR, 31337) == expected
    assert leaf.hash(DISTRIBUTOR, 31338) != expected
    assert leaf.hash(account(1), 31337) != expected
    assert leaf.encode() == account(7) + NATIVE + (10**18 + 5).to_bytes(32, "big")


def test_build_tree_orders_by_account_and_token_and_leaves_out_zero() -> None:
    token = account(0xEE)
    earned = {(account(3), NATIVE): 3, (account(1), token): 2, (account(1), NATIVE): 1}
    earned[(account(2), NATIVE)] = 0
    tree = build_tree(DISTRIBUTOR, 1, earned)
    assert [(leaf.account, leaf.token) for leaf in tree.leaves] == [
        (account(1), NATIVE),
        (account(1), token),
        (account(3), NATIVE),
    ]
    again = build_tree(DISTRIBUTOR, 1, dict(reversed(list(earned.items()))))
    assert again.root == tree.root
    assert tree.content_hash() == keccak256(tree.content())
    assert len(tree.content()) == 72 * 3


def test_every_claim_verifies_against_the_root() -> None:
    earned = {(account(i), NATIVE): i * 10 for i in range(1, 12)}
    tree = build_tree(DISTRIBUTOR, 10, earned)
    leaves = [leaf.hash(DISTRIBUTOR, 10) for leaf in tree.leaves]
    assert tree.root == MerkleTree(leaves).root
    for claim in tree.claims():
        assert verify_proof(claim.leaf.hash(DISTRIBUTOR, 10), claim.proof, tree.root)
    five = tree.claim(account(5), NATIVE)
    assert five.leaf.cumulative == 50
    with pytest.raises(KeyError, match="no leaf for account"):
        tree.claim(account(99), NATIVE)


def test_bad_input_is_named() -> None:
    with pytest.raises(RewardTreeError, match="account must be a 20-byte address"):
        RewardLeaf(b"\x01" * 19, NATIVE, 1)
    with pytest.raises(RewardTreeError, match="token must be a 20-byte address"):
        RewardLeaf(account(1), b"", 1)
    with pytest.raises(RewardTreeError, match="cumulative must fit in 256 bits"):
        RewardLeaf(account(1), NATIVE, -1)
    with pytest.raises(RewardTreeError, match="at least one leaf"):
        build_tree(DISTRIBUTOR, 1, {(account(1), NATIVE): 0})
    twice = [RewardLeaf(account(1), NATIVE, 1), RewardLeaf(account(1), NATIVE, 2)]
    with pytest.raises(RewardTreeError, match="appears twice"):
        RewardTree(DISTRIBUTOR, 1, twice)
    with pytest.raises(RewardTreeError, match="distributor must be a 20-byte address"):
        RewardLeaf(account(1), NATIVE, 1).hash(b"\x01", 1)


def test_a_published_list_of_leaves_rebuilds_the_same_tree() -> None:
    earned = {(account(i), NATIVE): i for i in range(1, 6)}
    tree = build_tree(DISTRIBUTOR, 5, earned)
    again = RewardTree.from_content(DISTRIBUTOR, 5, tree.content())
    assert again.root == tree.root
    assert again.leaves == tree.leaves
    with pytest.raises(RewardTreeError, match="positive multiple of 72 bytes, got 71"):
        RewardTree.from_content(DISTRIBUTOR, 5, tree.content()[:71])
    with pytest.raises(RewardTreeError, match="got 0"):
        RewardTree.from_content(DISTRIBUTOR, 5, b"")
