"""Checking examples against the schema a job states, before anything trains on them.

Every loader checks what it reads as it reads it (naming the file, column, row or class); the
functions here check examples already in memory (an SDK user's own :class:`Dataset`, the
poster's evaluation blob) with the same rules and the same kind of message: what was expected,
what was found, and where.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedrelay.protocol.data_spec import ImageSchema, TabularSchema, TextSchema
from fedrelay.training.data import DataError, Dataset, TokenDataset

__all__ = ["SchemaMismatch", "check_dataset", "check_labels", "example_shape"]

Schema = TabularSchema | ImageSchema | TextSchema


class SchemaMismatch(DataError):
    """The data does not match the job's schema; the message names the mismatch and where."""


def example_shape(schema: TabularSchema | ImageSchema) -> tuple[int, ...]:
    """The shape of one example's features under ``schema``."""
    if isinstance(schema, ImageSchema):
        return (schema.channels, schema.height, schema.width)
    return schema.features


def check_labels(labels: npt.NDArray[np.generic], classes: int, where: str) -> None:
    """Refuse labels that are not integers in ``0..classes-1``.

    Args:
        labels: The labels as read.
        classes: The job's label space.
        where: What the labels are (a file, a column) for the message.

    Raises:
        SchemaMismatch: A label is not an integer or outside the label space (the first one
            and its row are named).
    """
    if not np.issubdtype(labels.dtype, np.integer):
        raise SchemaMismatch(
            f"{where}: labels are {labels.dtype}, the job's schema needs integer class labels "
            f"0..{classes - 1}"
        )
    values = labels.astype(np.int64)
    outside = np.flatnonzero((values < 0) | (values >= classes))
    if outside.size:
        row = int(outside[0])
        raise SchemaMismatch(
            f"{where}: label {int(values[row])} in row {row} is outside the job's classes "
            f"0..{classes - 1} ({outside.size} such rows)"
        )


def check_dataset(data: Dataset | TokenDataset, schema: Schema, where: str) -> None:
    """Refuse examples in memory that do not match ``schema``.

    Args:
        data: The examples.
        schema: The job's schema.
        where: What the examples are, for the message.

    Raises:
        SchemaMismatch: Wrong kind of examples (tokens for a classification schema, or the
            reverse), feature shape, label space, vocabulary or context, or no example at all.
    """
    if isinstance(schema, TextSchema):
        if not isinstance(data, TokenDataset):
            raise SchemaMismatch(f"{where}: features and labels, the job's schema is a text corpus")
        if data.context != schema.context:
            raise SchemaMismatch(
                f"{where}: windows of context {data.context}, the job's schema says "
                f"{schema.context}"
            )
        tokens = data.tokens
        outside = np.flatnonzero((tokens < 0) | (tokens >= schema.vocab))
        if outside.size:
            at = int(outside[0])
            raise SchemaMismatch(
                f"{where}: token {int(tokens[at])} at position {at} is outside the job's "
                f"vocabulary 0..{schema.vocab - 1}"
            )
        if len(data) == 0:
            raise SchemaMismatch(
                f"{where}: {tokens.shape[0]} tokens, fewer than one window of {schema.context + 1}"
            )
        return
    if not isinstance(data, Dataset):
        raise SchemaMismatch(f"{where}: a token stream, the job's schema is {schema.kind} data")
    expected = example_shape(schema)
    found = tuple(int(d) for d in data.features.shape[1:])
    if found != expected:
        raise SchemaMismatch(
            f"{where}: examples of shape {found}, the job's schema says {expected}"
        )
    if len(data) == 0:
        raise SchemaMismatch(f"{where}: no examples")
    check_labels(data.labels, schema.classes, where)
