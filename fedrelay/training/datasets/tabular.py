"""Tabular examples from ``.npz``, CSV and Parquet files, checked against a tabular schema.

* ``.npz``: arrays ``features`` ``(n, *features)`` of the schema's dtype and ``labels`` ``(n,)``
  of integers.
* CSV and Parquet (read with pyarrow): one row per example, every column but the schema's
  ``label_column`` a feature, in file order (reshaped to the schema's ``features``). A Parquet
  column's type must be the schema's dtype; a CSV column must read as numbers (integers under an
  integer dtype) with no empty cell.

The features are converted to float32 to train; what was read is checked first, so a mismatch
names the file and the column, row or array that differs from the schema.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedrelay.protocol.data_spec import TabularSchema
from fedrelay.training.data import Dataset
from fedrelay.training.datasets.schema import SchemaMismatch, check_labels

__all__ = ["TABULAR_SUFFIXES", "load_csv", "load_npz", "load_parquet", "load_table"]

TABULAR_SUFFIXES = (".npz", ".csv", ".parquet", ".pq")


def _dataset(features: npt.NDArray[np.generic], labels: npt.NDArray[np.generic]) -> Dataset:
    return Dataset(
        np.ascontiguousarray(features, dtype=np.float32),
        np.ascontiguousarray(labels, dtype=np.int64),
    )


def load_npz(path: Path, schema: TabularSchema) -> Dataset:
    """The examples of an ``.npz`` file with arrays ``features`` and ``labels``.

    Raises:
        SchemaMismatch: An array is missing, or its dtype, shape or labels differ from the
            schema.
        OSError: The file cannot be read.
    """
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = sorted({"features", "labels"} - set(arrays.files))
            if missing:
                raise SchemaMismatch(
                    f"{path}: no array {', '.join(repr(m) for m in missing)} (found "
                    f"{sorted(arrays.files)}); an .npz holds 'features' and 'labels'"
                )
            features, labels = arrays["features"], arrays["labels"]
    except ValueError as exc:
        raise SchemaMismatch(f"{path}: not a readable .npz of plain arrays: {exc}") from None
    if features.dtype != np.dtype(schema.dtype):
        raise SchemaMismatch(
            f"{path}: features are {features.dtype}, the job's schema says {schema.dtype}"
        )
    shape = tuple(int(d) for d in features.shape[1:])
    if features.ndim < 2 or shape != schema.features:
        raise SchemaMismatch(
            f"{path}: features of shape {shape} per example, the job's schema says "
            f"{schema.features}"
        )
    if labels.shape != (features.shape[0],):
        raise SchemaMismatch(
            f"{path}: labels of shape {labels.shape} for {features.shape[0]} examples"
        )
    check_labels(labels, schema.classes, f"{path} labels")
    return _dataset(features, labels)


def _columns(path: Path, names: list[str], schema: TabularSchema) -> list[str]:
    """The feature columns of a table with columns ``names`` (all but the label column)."""
    if schema.label_column not in names:
        raise SchemaMismatch(
            f"{path}: no label column {schema.label_column!r} (columns: {', '.join(names[:20])})"
        )
    features = [n for n in names if n != schema.label_column]
    if len(features) != schema.width:
        raise SchemaMismatch(
            f"{path}: {len(features)} feature columns, the job's schema says {schema.width} "
            f"(features {list(schema.features)})"
        )
    return features


def _table_dataset(
    path: Path, table: object, features: list[str], schema: TabularSchema
) -> Dataset:
    import pyarrow as pa

    assert isinstance(table, pa.Table)
    for name in [*features, schema.label_column]:
        column = table.column(name)
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise SchemaMismatch(f"{path}: column {name!r} has an empty value in row {row}")
    labels = table.column(schema.label_column).to_numpy()
    check_labels(labels, schema.classes, f"{path} column {schema.label_column!r}")
    matrix = (
        np.stack([table.column(n).to_numpy().astype(schema.dtype) for n in features], axis=1)
        if table.num_rows
        else np.zeros((0, schema.width), dtype=schema.dtype)
    )
    return _dataset(matrix.reshape((table.num_rows, *schema.features)), labels)


def load_parquet(path: Path, schema: TabularSchema) -> Dataset:
    """The examples of a Parquet file: feature columns of the schema's dtype, a label column.

    Raises:
        SchemaMismatch: A column is missing, of another type, or has an empty value; the
            feature count or a label differs from the schema.
        OSError: The file cannot be read.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except pa.ArrowInvalid as exc:
        raise SchemaMismatch(f"{path}: not a Parquet file: {exc}") from None
    features = _columns(path, table.column_names, schema)
    wanted = pa.from_numpy_dtype(np.dtype(schema.dtype))
    for name in features:
        found = table.schema.field(name).type
        if found != wanted:
            raise SchemaMismatch(
                f"{path}: column {name!r} is {found}, the job's schema says {schema.dtype}"
            )
    label_type = table.schema.field(schema.label_column).type
    if not pa.types.is_integer(label_type):
        raise SchemaMismatch(
            f"{path}: label column {schema.label_column!r} is {label_type}, the job's schema "
            f"needs integer class labels 0..{schema.classes - 1}"
        )
    return _table_dataset(path, table, features, schema)


def load_csv(path: Path, schema: TabularSchema) -> Dataset:
    """The examples of a CSV file with a header row: numeric feature columns, a label column.

    Raises:
        SchemaMismatch: A column is missing, not numeric (the first value that is not is
            named), fractional under an integer dtype, or has an empty value; the feature
            count or a label differs from the schema.
        OSError: The file cannot be read.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import csv

    try:
        table = csv.read_csv(path)
    except pa.ArrowInvalid as exc:
        raise SchemaMismatch(f"{path}: not a CSV file with a header row: {exc}") from None
    features = _columns(path, table.column_names, schema)
    integer = np.issubdtype(np.dtype(schema.dtype), np.integer)
    for name in [*features, schema.label_column]:
        found = table.schema.field(name).type
        whole = pa.types.is_integer(found)
        if whole or (pa.types.is_floating(found) and not integer and name != schema.label_column):
            continue
        if pa.types.is_null(found):
            raise SchemaMismatch(f"{path}: column {name!r} is empty")
        wants = "integers" if integer or name == schema.label_column else "numbers"
        column = table.column(name)
        if pa.types.is_floating(found):
            bad = pc.not_equal(column, pc.floor(column)).to_numpy(zero_copy_only=False)
        else:
            bad = np.array([not _number(v) for v in column.to_pylist()], dtype=bool)
        row = int(np.flatnonzero(bad)[0]) if bad.any() else 0
        raise SchemaMismatch(
            f"{path}: column {name!r} holds {column[row].as_py()!r} in row {row}; the job's "
            f"schema needs {wants} there ({schema.dtype} features, integer labels)"
        )
    return _table_dataset(path, table, features, schema)


def _number(value: object) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def load_table(path: Path, schema: TabularSchema) -> Dataset:
    """The examples of one ``.npz``, ``.csv`` or ``.parquet`` file, by its suffix.

    Raises:
        SchemaMismatch: The file's suffix is not one of these, or its contents do not match.
        OSError: The file cannot be read.
    """
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(path, schema)
    if suffix == ".csv":
        return load_csv(path, schema)
    if suffix in (".parquet", ".pq"):
        return load_parquet(path, schema)
    raise SchemaMismatch(f"{path}: tabular data is a file ending in {', '.join(TABULAR_SUFFIXES)}")
