"""Where a worker's training data comes from: a fixed private shard, or the digits split.

``--data-shard`` on the command line takes one of:

- ``PATH.npz`` with arrays ``features`` (float32, n x d) and ``labels`` (int64, n): the
  worker's own data, whatever shard the task names.
- ``digits:I/N``: shard ``I`` of the digits training set dealt IID into ``N`` parts.
- ``digits:N``: the shard each task names, of the digits training set dealt IID into ``N``
  parts (the coordinator's shard numbering).

Either digits form takes options after commas, matching the job's data split:
``k_classes=C`` or ``dirichlet=A`` (non-IID partitions), ``seed=S`` (split and partition seed,
default 0), ``limit=L`` (at most L examples per shard). Example: ``digits:8,k_classes=2``.
The held-out 20% of the digits data is never in a shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from fedrelay.training.data import (
    DataError,
    Dataset,
    Partition,
    deal_shards,
    digits,
    split_train_test,
)


class ShardSource(Protocol):
    """Gives the training data for a task's shard."""

    def dataset(self, shard: int) -> Dataset:
        """The examples to train on for ``shard``."""
        ...


@dataclass(frozen=True)
class FixedShard:
    """The worker's own data; the task's shard number is not used."""

    data: Dataset

    def dataset(self, shard: int) -> Dataset:
        """Always the same data."""
        return self.data


@dataclass(frozen=True)
class DigitsShards:
    """The digits training set (80% split) dealt into ``count`` shards.

    Attributes:
        count: Number of shards.
        seed: Seed of the train/test split and of the partition.
        only: A fixed shard, whatever the task names; None to follow the task.
        classes_per_client: Deal by classes (``partition_k_classes``) when set.
        alpha: Deal by a Dirichlet draw (``partition_dirichlet``) when set.
        limit: At most this many examples per shard.
    """

    count: int
    seed: int = 0
    only: int | None = None
    classes_per_client: int | None = None
    alpha: float | None = None
    limit: int | None = None

    def dataset(self, shard: int) -> Dataset:
        """Shard ``only`` if fixed, else the task's ``shard``.

        Raises:
            DataError: The shard number is outside ``0..count-1``.
        """
        index = shard if self.only is None else self.only
        if not 0 <= index < self.count:
            raise DataError(f"shard {index} outside 0..{self.count - 1}")
        train, _ = split_train_test(digits(), seed=self.seed)
        partition: Partition = "iid"
        if self.classes_per_client is not None:
            partition = "k_classes"
        elif self.alpha is not None:
            partition = "dirichlet"
        return deal_shards(
            train,
            self.count,
            partition,
            seed=self.seed,
            classes_per_client=self.classes_per_client or 2,
            alpha=self.alpha or 0.5,
            limit=self.limit,
        )[index]


def _digits(spec: str) -> DigitsShards:
    head, *options = spec.removeprefix("digits:").split(",")
    index, slash, count = head.partition("/")
    values: dict[str, int | float] = {}
    kinds = {"k_classes": int, "dirichlet": float, "seed": int, "limit": int}
    try:
        for option in options:
            name, _, value = option.partition("=")
            values[name] = kinds[name](value)
        return DigitsShards(
            int(count) if slash else int(head),
            seed=int(values.get("seed", 0)),
            only=int(index) if slash else None,
            classes_per_client=int(values["k_classes"]) if "k_classes" in values else None,
            alpha=float(values["dirichlet"]) if "dirichlet" in values else None,
            limit=int(values["limit"]) if "limit" in values else None,
        )
    except (KeyError, ValueError):
        raise DataError(
            f"expected digits:N or digits:I/N with options k_classes=C, dirichlet=A, seed=S, "
            f"limit=L; got {spec!r}"
        ) from None


def parse_shard(spec: str) -> ShardSource:
    """A shard source from its command-line form (see the module docstring).

    Raises:
        DataError: The form is not recognised or the file cannot be read.
    """
    if spec.startswith("digits:"):
        return _digits(spec)
    path = Path(spec)
    try:
        with np.load(path) as arrays:
            features = np.asarray(arrays["features"], dtype=np.float32)
            labels = np.asarray(arrays["labels"], dtype=np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(
            f"cannot read data shard {spec!r} (an .npz with 'features' and 'labels', or "
            f"digits:N): {exc}"
        ) from exc
    return FixedShard(Dataset(features, labels))
