"""The shards of a job's published data, as its configuration deals them.

The one place a published job's data is decided: the coordinator rebuilds a shard from it to
replay a challenged segment and to know the shard's size (the weight of its update), and the
worker SDK trains the shard its task names from it. Both read the job's
:class:`~fedrelay.protocol.data_spec.PublishedData` only, so no option of either side can make
them disagree. The last few splits are cached (dealing a partition is cheap, loading the data
set less so).
"""

from __future__ import annotations

from functools import lru_cache

from fedrelay.protocol.data_spec import PublishedData
from fedrelay.training.data import DataError, Dataset, deal_shards, digits, split_train_test

__all__ = ["published_held_out", "published_shard", "published_shards"]


@lru_cache(maxsize=8)
def _split(spec: PublishedData) -> tuple[Dataset, Dataset]:
    # scikit-learn (the digits data) loads on first use only.
    return split_train_test(digits(), spec.test_fraction, spec.seed)


@lru_cache(maxsize=8)
def _shards(spec: PublishedData) -> tuple[Dataset, ...]:
    return tuple(
        deal_shards(
            _split(spec)[0],
            spec.shards,
            spec.partition,
            seed=spec.seed,
            classes_per_client=spec.classes_per_client,
            alpha=spec.alpha,
            limit=spec.max_examples_per_shard,
        )
    )


def published_shards(spec: PublishedData) -> tuple[Dataset, ...]:
    """Every shard of ``spec``'s training split, shard ``i`` at index ``i``.

    Raises:
        DataError: The partition cannot be made (see :func:`~fedrelay.training.data.deal_shards`).
    """
    return _shards(spec)


def published_shard(spec: PublishedData, index: int) -> Dataset:
    """Shard ``index`` of ``spec``.

    Raises:
        DataError: No such shard, or the partition cannot be made.
    """
    shards = _shards(spec)
    if not 0 <= index < len(shards):
        raise DataError(f"shard {index} outside the job's 0..{len(shards) - 1}")
    return shards[index]


def published_held_out(spec: PublishedData) -> Dataset:
    """The held-out split of ``spec``'s data set (the digits job's own evaluation set)."""
    return _split(spec)[1]
