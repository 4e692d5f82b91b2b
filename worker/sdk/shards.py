"""Where a task's training data comes from: the job decides, never a command-line flag.

* A job on **published** data (``data.source == "published"``): the worker trains shard
  ``task.shard`` of the partition the job's configuration describes
  (:func:`fedrelay.training.datasets.published.published_shard`, the function the coordinator
  rebuilds shards with to replay). Nothing the worker is started with changes which examples
  that is, so an honest worker with defaults always trains what its task asked for.
* A job on the **workers' own** data (``data.source == "worker"``): the worker's
  :class:`~fedrelay.training.datasets.ExampleSource` (``fedrelay worker run --data PATH``, or a
  Python source) loads its examples, which are checked against the job's schema before
  training; a mismatch refuses the task, naming it.

:class:`DigitsShards` and :class:`FixedShard` remain as SDK helpers; given to a
:class:`~fedrelay.worker.sdk.node.WorkerNode` they supply the worker's own data on a
worker-data job and are not consulted on a published one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fedrelay.training.data import (
    DataError,
    Dataset,
    Partition,
    TokenDataset,
    deal_shards,
    digits,
    split_train_test,
)
from fedrelay.training.datasets import (
    Examples,
    ExampleSource,
    FileSource,
    InMemorySource,
    Schema,
)

__all__ = [
    "DigitsShards",
    "ExampleSource",
    "FileSource",
    "FixedShard",
    "InMemorySource",
    "OwnData",
    "ShardSource",
    "own_examples",
]


class ShardSource(Protocol):
    """Gives training data by shard number (an SDK helper's interface)."""

    def dataset(self, shard: int) -> Dataset:
        """The examples of ``shard``."""
        ...


@dataclass(frozen=True)
class FixedShard:
    """The same examples whatever the shard (a worker's own data held in memory)."""

    data: Dataset | TokenDataset

    def dataset(self, shard: int) -> Dataset:
        """Always the same data."""
        assert isinstance(self.data, Dataset), "token streams are read through load()"
        return self.data

    def load(self, schema: Schema, vocabulary: bytes | None) -> Examples:
        """The data, checked against ``schema``."""
        return InMemorySource(self.data).load(schema, vocabulary)


@dataclass(frozen=True)
class DigitsShards:
    """The digits training set (80% split) dealt into ``count`` shards (a helper for tests and
    notebooks: a worker on a published job takes its shard from the job, not from this).

    Attributes:
        count: Number of shards.
        seed: Seed of the train/test split and of the partition.
        classes_per_client: Deal by classes (``partition_k_classes``) when set.
        alpha: Deal by a Dirichlet draw (``partition_dirichlet``) when set.
        limit: At most this many examples per shard.
    """

    count: int
    seed: int = 0
    classes_per_client: int | None = None
    alpha: float | None = None
    limit: int | None = None

    def dataset(self, shard: int) -> Dataset:
        """Shard ``shard``.

        Raises:
            DataError: The shard number is outside ``0..count-1``.
        """
        if not 0 <= shard < self.count:
            raise DataError(f"shard {shard} outside 0..{self.count - 1}")
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
        )[shard]


OwnData = ExampleSource | ShardSource
"""What a node may be given as the worker's own data."""


def own_examples(source: OwnData, schema: Schema, vocabulary: bytes | None) -> Examples:
    """The worker's own examples from ``source``, checked against ``schema``.

    Raises:
        SchemaMismatch: They do not match the schema (the message names the mismatch).
        OSError: A file cannot be read.
    """
    load = getattr(source, "load", None)
    if load is not None:
        examples: Examples = load(schema, vocabulary)
        return examples
    assert hasattr(source, "dataset")
    return InMemorySource(source.dataset(0)).load(schema, vocabulary)
