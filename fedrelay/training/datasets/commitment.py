"""The data commitment of a data set: each example's canonical bytes and their Merkle root.

An example is what the dataset interface yields at its index: row ``i`` of a
:class:`~fedrelay.training.data.Dataset` (features and label), or window ``i`` of a
:class:`~fedrelay.training.data.TokenDataset` (its ``context + 1`` tokens). Its bytes and hash,
and the tree, are the protocol's (:mod:`fedrelay.protocol.data_commitment`); this module only
walks a data set in example order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from fedrelay.protocol.data_commitment import (
    DataCommitment,
    DataTree,
    ExampleKind,
    ExampleOpening,
    commit_leaves,
    example_hash,
    labelled_example,
    token_window,
)
from fedrelay.protocol.data_spec import ImageSchema, TabularSchema, TextSchema
from fedrelay.training.data import DataError, Dataset, OpenedData, TokenDataset

__all__ = [
    "ExampleLayout",
    "data_commitment",
    "data_tree",
    "example_body",
    "example_hashes",
    "example_layout",
    "open_examples",
    "opened_data",
]


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


class ExampleLayout:
    """The kind, shape and byte length of one example of a job's schema."""

    def __init__(self, kind: ExampleKind, shape: tuple[int, ...]) -> None:
        """``shape``: a labelled example's features, or a token window's ``(context + 1,)``."""
        self.kind = kind
        self.shape = shape
        width = math.prod(shape)
        self.body_length = width * 8 if kind is ExampleKind.TOKEN_WINDOW else width * 4 + 8


def example_layout(schema: TabularSchema | ImageSchema | TextSchema) -> ExampleLayout:
    """How an example of ``schema`` is laid out in its canonical bytes."""
    if isinstance(schema, TextSchema):
        return ExampleLayout(ExampleKind.TOKEN_WINDOW, (schema.context + 1,))
    if isinstance(schema, ImageSchema):
        return ExampleLayout(ExampleKind.LABELLED, (schema.channels, schema.height, schema.width))
    return ExampleLayout(ExampleKind.LABELLED, tuple(schema.features))


def open_examples(
    data: Dataset | TokenDataset, tree: DataTree, indices: Sequence[int]
) -> list[ExampleOpening]:
    """The openings of ``data``'s examples at ``indices`` (ascending), with ``tree``'s proofs.

    Raises:
        DataError: An index outside the data.
    """
    return [
        ExampleOpening(int(i), example_body(data, int(i))[1], tree.proof(int(i))) for i in indices
    ]


def opened_data(layout: ExampleLayout, openings: Sequence[ExampleOpening], size: int) -> OpenedData:
    """The opened examples as data a trainer draws from (their bodies are checked already:
    :func:`fedrelay.protocol.data_commitment.check_openings`).

    Raises:
        DataError: A body of another length than the layout's, or indices that do not ascend.
    """
    if any(len(o.body) != layout.body_length for o in openings):
        raise DataError(f"an opened example is not {layout.body_length} bytes")
    indices = np.asarray([o.index for o in openings], dtype=np.int64)
    if layout.kind is ExampleKind.TOKEN_WINDOW:
        tokens = np.frombuffer(b"".join(o.body for o in openings), dtype="<i8")
        return OpenedData(TokenDataset(tokens.astype(np.int64), layout.shape[0] - 1), indices, size)
    width = layout.body_length - 8
    features = (
        np.stack(
            [np.frombuffer(o.body[:width], dtype="<f4").reshape(layout.shape) for o in openings]
        )
        if openings
        else np.zeros((0, *layout.shape), dtype=np.float32)
    )
    labels = np.asarray(
        [int.from_bytes(o.body[width:], "little", signed=True) for o in openings], dtype=np.int64
    )
    return OpenedData(Dataset(features.astype(np.float32), labels), indices, size)
