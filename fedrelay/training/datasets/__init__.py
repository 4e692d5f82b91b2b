"""Data a worker owns, read from its files and checked against the job's schema.

A job on the workers' own data states a schema (:mod:`fedrelay.protocol.data_spec`); a worker
points at its data (``fedrelay worker run --data PATH``) and gets :class:`FileSource`, or plugs
in its own :class:`ExampleSource` from Python. Either way the examples are checked against the
schema before anything trains on them, and a mismatch is refused with a
:class:`SchemaMismatch` naming the file, column, row or class and what was expected.

Loaders, by schema kind:

* tabular: ``.npz``, CSV, Parquet (:mod:`.tabular`), one file or a folder of them;
* image: a folder with one subfolder per class (:mod:`.images`);
* text: ``.txt`` files, tokenized by bytes, characters or a named tokenizer (:mod:`.text`).

Tensor blobs (:func:`dataset_blob`, :func:`dataset_from_blob`) carry a data set as the poster's
evaluation set: ``features`` and ``labels``, or ``tokens``.

A worker commits to the examples it trains on with :func:`data_commitment` (the Merkle root over
the example hashes and their count, :mod:`.commitment`), and opens some of them later from
:func:`data_tree`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from fedrelay.protocol.blobs import decode_blob, encode_blob
from fedrelay.protocol.data_spec import ImageSchema, TabularSchema, TextSchema
from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.job_config import JobConfig
from fedrelay.training.data import DataError, Dataset, TokenDataset
from fedrelay.training.datasets.commitment import (
    ExampleLayout,
    data_commitment,
    data_tree,
    example_hashes,
    example_layout,
    open_examples,
    opened_data,
)
from fedrelay.training.datasets.images import load_image_folder
from fedrelay.training.datasets.schema import SchemaMismatch, check_dataset, check_labels
from fedrelay.training.datasets.tabular import TABULAR_SUFFIXES, load_table
from fedrelay.training.datasets.text import NAMED_TOKENIZERS, load_corpus
from fedrelay.training.errors import BlobError

__all__ = [
    "NAMED_TOKENIZERS",
    "ExampleLayout",
    "ExampleSource",
    "Examples",
    "FileSource",
    "InMemorySource",
    "Schema",
    "SchemaMismatch",
    "check_dataset",
    "data_commitment",
    "data_tree",
    "dataset_blob",
    "dataset_from_blob",
    "dataset_hash",
    "evaluation_schema",
    "example_hashes",
    "example_layout",
    "load_examples",
    "open_examples",
    "opened_data",
]

Schema = TabularSchema | ImageSchema | TextSchema
Examples = Dataset | TokenDataset


class ExampleSource(Protocol):
    """A worker's own examples, produced for the schema a job states."""

    def load(self, schema: Schema, vocabulary: bytes | None) -> Examples:
        """The examples, checked against ``schema``.

        Args:
            schema: The job's schema.
            vocabulary: The job's vocabulary blob (text schemas with a vocabulary), else None.

        Raises:
            SchemaMismatch: The data does not match the schema (the message names where).
        """
        ...


def load_examples(path: Path, schema: Schema, vocabulary: bytes | None = None) -> Examples:
    """Read the examples at ``path`` with the loader of ``schema``'s kind, checked.

    A tabular ``path`` may be a folder: its ``.npz``, ``.csv`` and ``.parquet`` files, in name
    order, are concatenated.

    Raises:
        SchemaMismatch: The data does not match (see the loaders) or ``path`` does not exist.
        OSError: A file cannot be read.
    """
    if not path.exists():
        raise SchemaMismatch(f"{path}: no such file or folder")
    if isinstance(schema, TextSchema):
        data: Examples = load_corpus(path, schema, vocabulary)
    elif isinstance(schema, ImageSchema):
        data = load_image_folder(path, schema)
    elif path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix.lower() in TABULAR_SUFFIXES
        )
        if not files:
            raise SchemaMismatch(f"{path}: no {', '.join(TABULAR_SUFFIXES)} file in the folder")
        parts = [load_table(f, schema) for f in files]
        data = Dataset(
            np.concatenate([p.features for p in parts]), np.concatenate([p.labels for p in parts])
        )
    else:
        data = load_table(path, schema)
    check_dataset(data, schema, str(path))
    return data


@dataclass(frozen=True)
class FileSource:
    """Examples read from a file or folder (``fedrelay worker run --data PATH``)."""

    path: Path

    def load(self, schema: Schema, vocabulary: bytes | None) -> Examples:
        """The examples at :attr:`path`, checked (see :func:`load_examples`)."""
        return load_examples(self.path, schema, vocabulary)


@dataclass(frozen=True)
class InMemorySource:
    """Examples a program already holds (checked against the schema all the same)."""

    data: Examples

    def load(self, schema: Schema, vocabulary: bytes | None) -> Examples:
        """:attr:`data`, checked against ``schema``."""
        check_dataset(self.data, schema, "the worker's examples")
        return self.data


def dataset_blob(data: Examples) -> bytes:
    """The tensor blob of ``data``: ``features`` (float32) and ``labels`` (int64), or
    ``tokens`` (int64)."""
    if isinstance(data, TokenDataset):
        return encode_blob({"tokens": data.tokens})
    return encode_blob({"features": data.features, "labels": data.labels})


def dataset_hash(data: Examples) -> str:
    """keccak256 (hex) of :func:`dataset_blob` (what a trainer's ``data_hash`` binds a run to)."""
    return keccak256(dataset_blob(data)).hex()


def dataset_from_blob(blob: bytes, schema: Schema, where: str = "the data blob") -> Examples:
    """The data set in a tensor blob, checked against ``schema``.

    Raises:
        SchemaMismatch: The blob is not a data set's tensor blob, or does not match.
    """
    try:
        tensors = decode_blob(blob)
    except BlobError as exc:
        raise SchemaMismatch(f"{where} is not a tensor blob: {exc}") from None
    try:
        if set(tensors) == {"tokens"} and isinstance(schema, TextSchema):
            data: Examples = TokenDataset(
                np.asarray(tensors["tokens"], dtype=np.int64), schema.context
            )
        elif set(tensors) == {"features", "labels"}:
            labels = tensors["labels"]
            check_labels(labels, _classes(schema), where)
            data = Dataset(
                np.asarray(tensors["features"], dtype=np.float32),
                np.asarray(labels, dtype=np.int64),
            )
        else:
            wanted = "'tokens'" if isinstance(schema, TextSchema) else "'features' and 'labels'"
            raise SchemaMismatch(f"{where} holds {sorted(tensors)}, expected {wanted}")
    except DataError as exc:
        raise SchemaMismatch(f"{where}: {exc}") from None
    check_dataset(data, schema, where)
    return data


def evaluation_schema(config: JobConfig) -> Schema:
    """The schema the poster's evaluation set must match: the workers' data schema, or for
    published digits the digits' 64 float32 features and 10 classes."""
    if config.worker_data is not None:
        return config.worker_data.schema_
    return TabularSchema(features=(64,), dtype="float32", classes=10)


def _classes(schema: Schema) -> int:
    return schema.vocab if isinstance(schema, TextSchema) else schema.classes
