"""scikit-learn's bundled digits (1,797 8x8 images, 10 classes) and ways to split it across clients.

Everything here runs offline: the data set ships inside scikit-learn. Partitioners return index
arrays into a :class:`Dataset`, are deterministic for a given seed, and never share an example
between two clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Indices = npt.NDArray[np.int64]


class DataError(ValueError):
    """A data set or partition request is unusable; the message says why."""


@dataclass(frozen=True)
class Dataset:
    """Features and labels: the examples of a classification job.

    Attributes:
        features: float32 array ``(n, *shape)``: ``(n, d)`` for tabular data, ``(n, c, h, w)``
            for images.
        labels: int64 array ``(n,)`` with classes ``0..num_classes-1``.
    """

    features: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        if self.features.ndim < 2 or self.labels.shape != (self.features.shape[0],):
            raise DataError(
                f"features {self.features.shape} and labels {self.labels.shape} do not match"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        """One more than the largest label."""
        return int(self.labels.max()) + 1 if len(self) else 0

    def subset(self, indices: Indices) -> Dataset:
        """The examples at ``indices``, in that order."""
        return Dataset(self.features[indices], self.labels[indices])


@dataclass(frozen=True)
class TokenDataset:
    """A token stream cut into training windows: the examples of a language-model job.

    Example ``i`` is the window ``tokens[i*(context+1) : (i+1)*(context+1)]``: the model reads
    its first ``context`` tokens and is scored on predicting each next one. Windows are disjoint,
    so an example is a fixed slice of the stream, its index names it, and any subset of windows
    is again a stream of whole windows.

    Attributes:
        tokens: int64 array ``(t,)`` of token ids ``0..vocab-1``.
        context: Tokens the model reads per example.
    """

    tokens: npt.NDArray[np.int64]
    context: int

    def __post_init__(self) -> None:
        if self.tokens.ndim != 1 or self.context < 1:
            raise DataError(
                f"a token stream is one-dimensional with context >= 1, got shape "
                f"{self.tokens.shape} and context {self.context}"
            )

    def __len__(self) -> int:
        return int(self.tokens.shape[0]) // (self.context + 1)

    def windows(self, indices: Indices) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Inputs and next-token targets of the examples at ``indices``, each ``(b, context)``."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= len(self)):
            raise DataError(f"window index outside 0..{len(self) - 1}")
        width = self.context + 1
        rows = self.tokens[indices[:, None] * width + np.arange(width, dtype=np.int64)[None, :]]
        return rows[:, :-1], rows[:, 1:]

    def subset(self, indices: Indices) -> TokenDataset:
        """The windows at ``indices``, in that order, as a new stream (same context)."""
        inputs, targets = self.windows(indices)
        rows = np.concatenate([inputs, targets[:, -1:]], axis=1)
        return TokenDataset(rows.reshape(-1).astype(np.int64), self.context)


@dataclass(frozen=True)
class OpenedData:
    """Some examples of a data set of ``size`` examples: what a verifier holds of a worker's
    own data after the worker opened the examples a challenged segment consumed.

    A trainer over it draws batches over ``size`` examples, as the worker's did, and reads
    each drawn example from ``data``; drawing one that was not opened is an error.

    Attributes:
        data: The opened examples, in ascending index order.
        indices: Their indices in the worker's data set, ascending and distinct.
        size: The worker's committed example count.
    """

    data: Dataset | TokenDataset
    indices: Indices
    size: int

    def __post_init__(self) -> None:
        indices = np.asarray(self.indices)
        if indices.ndim != 1 or indices.shape[0] != len(self.data):
            raise DataError(f"{len(self.data)} opened examples, {indices.shape} indices")
        if indices.size and (
            np.any(np.diff(indices) <= 0) or int(indices[0]) < 0 or int(indices[-1]) >= self.size
        ):
            raise DataError(
                f"opened indices must ascend, be distinct and lie in 0..{self.size - 1}"
            )

    def __len__(self) -> int:
        return self.size

    def locate(self, rows: Indices) -> Indices:
        """The positions in :attr:`data` of the examples at ``rows``.

        Raises:
            DataError: One of them was not opened.
        """
        rows = np.asarray(rows, dtype=np.int64)
        positions = np.searchsorted(self.indices, rows)
        found = positions < self.indices.shape[0]
        found[found] = self.indices[positions[found]] == rows[found]
        if not np.all(found):
            missing = rows[~found][:5].tolist()
            raise DataError(f"the replay draws examples {missing}, which were not opened")
        return positions.astype(np.int64)


def digits() -> Dataset:
    """The digits data set, pixel values scaled from 0..16 to 0..1."""
    # Imported here: scikit-learn (and SciPy under it) is only needed once digits are loaded, so
    # the worker SDK and the data helpers import without it.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    features = (np.asarray(bunch.data, dtype=np.float64) / 16.0).astype(np.float32)
    return Dataset(features, np.asarray(bunch.target, dtype=np.int64))


def split_train_test(
    dataset: Dataset, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Dataset, Dataset]:
    """A seeded random split into a training set and a held-out test set."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(dataset))
    cut = round(len(dataset) * (1.0 - test_fraction))
    return dataset.subset(np.sort(order[:cut])), dataset.subset(np.sort(order[cut:]))


def _check_clients(labels: npt.NDArray[np.int64], num_clients: int) -> None:
    if num_clients < 1:
        raise DataError(f"need at least one client, got {num_clients}")
    if num_clients > labels.shape[0]:
        raise DataError(f"{num_clients} clients but only {labels.shape[0]} examples")


def partition_iid(labels: npt.NDArray[np.int64], num_clients: int, seed: int = 0) -> list[Indices]:
    """Shuffle and deal the examples into ``num_clients`` near-equal parts."""
    _check_clients(labels, num_clients)
    order = np.random.default_rng(seed).permutation(labels.shape[0])
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, num_clients)]


def partition_k_classes(
    labels: npt.NDArray[np.int64], num_clients: int, classes_per_client: int, seed: int = 0
) -> list[Indices]:
    """Each client holds exactly ``classes_per_client`` classes.

    Classes are dealt round-robin over a seeded class order (client i gets classes
    ``i*k .. i*k + k - 1`` modulo the class count), then each class's examples are split evenly
    among the clients that hold it.

    Raises:
        DataError: ``classes_per_client`` outside ``1..num_classes`` or a class left too small.
    """
    _check_clients(labels, num_clients)
    num_classes = int(labels.max()) + 1
    if not 1 <= classes_per_client <= num_classes:
        raise DataError(f"classes_per_client must be in 1..{num_classes}, got {classes_per_client}")
    rng = np.random.default_rng(seed)
    class_order = rng.permutation(num_classes)
    holders: dict[int, list[int]] = {c: [] for c in range(num_classes)}
    for client in range(num_clients):
        for j in range(classes_per_client):
            holders[int(class_order[(client * classes_per_client + j) % num_classes])].append(
                client
            )
    parts: list[list[npt.NDArray[np.int64]]] = [[] for _ in range(num_clients)]
    for cls, owners in holders.items():
        if not owners:
            continue
        members = rng.permutation(np.flatnonzero(labels == cls))
        if members.shape[0] < len(owners):
            raise DataError(
                f"class {cls} has {members.shape[0]} examples for {len(owners)} clients"
            )
        for owner, chunk in zip(owners, np.array_split(members, len(owners)), strict=True):
            parts[owner].append(chunk)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def partition_dirichlet(
    labels: npt.NDArray[np.int64],
    num_clients: int,
    alpha: float,
    seed: int = 0,
    min_examples: int = 1,
    max_attempts: int = 100,
) -> list[Indices]:
    """Label skew: each class is split among clients in proportions drawn from Dirichlet(alpha).

    Small ``alpha`` (0.1) gives clients few dominant classes; large ``alpha`` (100) is close to
    IID. Draws repeat (seeded) until every client has ``min_examples``.

    Raises:
        DataError: ``alpha`` not positive, or no draw within ``max_attempts`` gave every client
            ``min_examples`` examples.
    """
    _check_clients(labels, num_clients)
    if not alpha > 0:
        raise DataError(f"Dirichlet alpha must be > 0, got {alpha}")
    if min_examples * num_clients > labels.shape[0]:
        raise DataError(f"cannot give {num_clients} clients {min_examples} examples each")
    rng = np.random.default_rng(seed)
    num_classes = int(labels.max()) + 1
    for _ in range(max_attempts):
        parts: list[list[npt.NDArray[np.int64]]] = [[] for _ in range(num_clients)]
        for cls in range(num_classes):
            members = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * members.shape[0]).astype(np.int64)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].append(chunk)
        result = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
        if min(r.shape[0] for r in result) >= min_examples:
            return result
    raise DataError(
        f"no Dirichlet({alpha}) draw in {max_attempts} attempts gave all {num_clients} clients "
        f"{min_examples} examples; raise alpha or lower min_examples"
    )


Partition = Literal["iid", "k_classes", "dirichlet"]
"""How a training set is dealt into shards (a job's ``data.partition``)."""


def deal_shards(
    train: Dataset,
    count: int,
    partition: Partition = "iid",
    *,
    seed: int = 0,
    classes_per_client: int = 2,
    alpha: float = 0.5,
    limit: int | None = None,
) -> list[Dataset]:
    """The ``count`` shards of ``train``: the one place a shard's examples are decided.

    The coordinator rebuilds a job's shards with it (to replay, and to know the number of
    examples each assigned shard has: the weight of its update), and the worker SDK builds the
    shard it trains with it, so both always agree on a shard's size.

    Args:
        train: The training set (the held-out part already removed).
        count: Number of shards.
        partition: ``iid``, ``k_classes`` (:func:`partition_k_classes`) or ``dirichlet``
            (:func:`partition_dirichlet`).
        seed: Partition seed.
        classes_per_client: Classes per shard under ``k_classes``.
        alpha: Concentration under ``dirichlet``.
        limit: At most this many examples per shard (the first ones of each part).

    Raises:
        DataError: The partition cannot be made (see the partitioners).
    """
    if partition == "k_classes":
        parts = partition_k_classes(train.labels, count, classes_per_client, seed)
    elif partition == "dirichlet":
        parts = partition_dirichlet(train.labels, count, alpha, seed)
    else:
        parts = partition_iid(train.labels, count, seed)
    return [train.subset(p[:limit] if limit else p) for p in parts]
