"""The private-data demo job: the digits on data each worker owns, checked by spot reveals.

``fedrelay demo --private-data`` runs the digits job on data the workers own instead of data the
poster publishes. The demo deals the digits' training split among the workers (IID, by a seed)
and writes each worker's shard as a Parquet file into that worker's own folder
(``<state>/data/worker-N/digits.parquet``: 64 float32 pixel columns and an integer ``label``);
each worker's node reads only its folder, as ``fedrelay worker run --data`` does. The job states
the data's schema and ``replay: "segments"``: a challenged worker opens, to the verifier only,
the examples the challenged segment consumed, with Merkle proofs against the data root it
committed, and the coordinator replays the segment on them. The poster keeps the digits'
held-out split as its evaluation set (uploaded to the coordinator's evaluation domain, never
served to a worker).

**The privacy cost** is the expected fraction of a worker's examples revealed per round
(:func:`fedrelay.protocol.challenges.privacy_cost`). Every transcript is challenged (rate 1) and
one segment of each replayed, so a cheat that deviates in every segment (trains fewer steps, or
on other data) is always caught, while a round opens only the examples one segment consumed.
The split is IID so that every shard is larger than a segment's draws: on a shard smaller than
one segment's batches every segment consumes every example and the cost would be 1.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedrelay.protocol.hashing import blob_name
from fedrelay.protocol.job_config import JobConfig
from fedrelay.training.data import Dataset

__all__ = [
    "DATA_FILE",
    "PrivateDigits",
    "evaluation_blob",
    "prepare_private_data",
    "privacy_costs",
    "private_data_fields",
]

#: The file each worker's shard is written to, in its own folder.
DATA_FILE = "digits.parquet"
#: Seed of the split into training and held-out examples and of the deal among workers.
SPLIT_SEED = 0
#: Fraction of the digits the poster keeps as its evaluation set.
TEST_FRACTION = 0.2
#: The label column of the workers' Parquet files.
LABEL_COLUMN = "label"

_SCHEMA: dict[str, Any] = {
    "kind": "tabular", "features": [64], "dtype": "float32", "classes": 10,
    "label_column": LABEL_COLUMN,
}  # fmt: skip


@dataclass(frozen=True)
class PrivateDigits:
    """The workers' digits written out.

    Attributes:
        worker_data: Worker ``i``'s own folder at index ``i``.
        examples: Worker ``i``'s example count at index ``i``.
        evaluation: The evaluation blob the poster uploads (the digits' held-out split).
    """

    worker_data: tuple[Path, ...]
    examples: tuple[int, ...]
    evaluation: bytes


@functools.cache
def _split() -> tuple[Dataset, Dataset]:
    from fedrelay.training.data import digits, split_train_test

    return split_train_test(digits(), TEST_FRACTION, SPLIT_SEED)


def evaluation_blob() -> bytes:
    """The poster's evaluation set: the digits' held-out split as a tensor blob."""
    from fedrelay.training.datasets import dataset_blob

    return dataset_blob(_split()[1])


def private_data_fields() -> dict[str, object]:
    """The job fields of the private-data digits job: its data (the workers' own, of the
    tabular digits schema, replayed by segments) and the poster's evaluation set."""
    return {
        "data": {"source": "worker", "replay": "segments", "schema": dict(_SCHEMA)},
        "evaluation": {"data_hash": blob_name(evaluation_blob()), "metric": "accuracy"},
    }


def _write_parquet(path: Path, shard: Dataset) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, Any] = {
        f"pixel_{i:02d}": pa.array(shard.features[:, i], type=pa.float32())
        for i in range(shard.features.shape[1])
    }
    columns[LABEL_COLUMN] = pa.array(shard.labels.astype(np.int64), type=pa.int64())
    pq.write_table(pa.table(columns), path)


def prepare_private_data(root: Path, workers: int) -> PrivateDigits:
    """Deal the digits' training split among ``workers`` (IID) and write worker ``i``'s shard
    to ``root/worker-i/digits.parquet`` (the folder replaced if there).

    Raises:
        ValueError: ``workers`` below 1 or more than the digits serve (20 examples each).
    """
    import shutil

    from fedrelay.training.data import deal_shards

    train, _ = _split()
    if not 1 <= workers <= len(train) // 20:
        raise ValueError(f"{workers} workers: the digits serve 1 to {len(train) // 20}")
    folders = []
    shards = deal_shards(train, workers, "iid", seed=SPLIT_SEED)
    for index, shard in enumerate(shards):
        folder = root / f"worker-{index}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        _write_parquet(folder / DATA_FILE, shard)
        folders.append(folder)
    return PrivateDigits(tuple(folders), tuple(len(s) for s in shards), evaluation_blob())


def privacy_costs(config: JobConfig, examples: tuple[int, ...]) -> tuple[float, ...]:
    """Each worker's privacy cost under ``config``: the expected fraction of its examples
    revealed per round (:func:`fedrelay.protocol.challenges.privacy_cost`)."""
    from fedrelay.protocol.challenges import privacy_cost

    return tuple(
        privacy_cost(
            config.training_config(count), count, config.challenge_rate, config.challenge_segments
        )
        for count in examples
    )
