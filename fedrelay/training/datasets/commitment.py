"""The data commitment of a data set: each example's canonical bytes and their Merkle root.

An example is what the dataset interface yields at its index: row ``i`` of a
:class:`~fedrelay.training.data.Dataset` (features and label), or window ``i`` of a
:class:`~fedrelay.training.data.TokenDataset` (its ``context + 1`` tokens). Its bytes and hash,
and the tree, are the protocol's (:mod:`fedrelay.protocol.data_commitment`); this module only
walks a data set in example order.
"""

from __future__ import annotations

from collections.abc import Iterator

from fedrelay.protocol.data_commitment import (
    DataCommitment,
    DataTree,
    ExampleKind,
    commit_leaves,
    example_hash,
    labelled_example,
    token_window,
)
from fedrelay.training.data import DataError, Dataset, TokenDataset

__all__ = ["data_commitment", "data_tree", "example_body", "example_hashes"]


def example_body(data: Dataset | TokenDataset, index: int) -> tuple[ExampleKind, bytes]:
    """The kind and canonical bytes of example ``index`` of ``data``.

    Raises:
        DataError: No such example.
    """
    if not 0 <= index < len(data):
        raise DataError(f"example {index} outside 0..{len(data) - 1}")
    if isinstance(data, TokenDataset):
        width = data.context + 1
        window = data.tokens[index * width : (index + 1) * width]
        return ExampleKind.TOKEN_WINDOW, token_window(window)
    return ExampleKind.LABELLED, labelled_example(data.features[index], int(data.labels[index]))


def example_hashes(data: Dataset | TokenDataset) -> Iterator[bytes]:
    """The hash of every example of ``data``, in example order."""
    for index in range(len(data)):
        yield example_hash(*example_body(data, index))


def data_commitment(data: Dataset | TokenDataset) -> DataCommitment:
    """The root over ``data``'s example hashes and its example count, in one pass.

    Raises:
        DataCommitmentError: ``data`` has no example (or more than a u32 counts).
    """
    return commit_leaves(example_hashes(data))


def data_tree(data: Dataset | TokenDataset) -> DataTree:
    """The whole tree over ``data``'s examples, to open some of them with proofs.

    Raises:
        DataCommitmentError: ``data`` has no example (or more than a u32 counts).
    """
    return DataTree(list(example_hashes(data)))
