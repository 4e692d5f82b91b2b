"""Digits partitioners: disjoint, complete, seeded, and shaped as requested."""

from __future__ import annotations

import numpy as np
import pytest

from fedrelay.training.data import (
    DataError,
    digits,
    partition_dirichlet,
    partition_iid,
    partition_k_classes,
    split_train_test,
)


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return digits().labels


def assert_disjoint_cover(parts: list[np.ndarray], size: int) -> None:
    joined = np.concatenate(parts)
    assert joined.shape[0] == size
    assert np.unique(joined).shape[0] == size


def test_digits_loads_offline_and_scaled() -> None:
    data = digits()
    assert data.features.shape == (1797, 64)
    assert data.features.dtype == np.float32
    assert float(data.features.min()) >= 0.0
    assert float(data.features.max()) <= 1.0
    assert data.num_classes == 10
    train, test = split_train_test(data, 0.2, seed=0)
    assert len(train) + len(test) == 1797
    assert len(test) == 359


def test_iid_is_balanced_disjoint_and_seeded(labels: np.ndarray) -> None:
    parts = partition_iid(labels, 7, seed=3)
    assert_disjoint_cover(parts, labels.shape[0])
    assert max(p.shape[0] for p in parts) - min(p.shape[0] for p in parts) <= 1
    again = partition_iid(labels, 7, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition_iid(labels, 7, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_k_classes_gives_each_client_exactly_k_classes(labels: np.ndarray) -> None:
    parts = partition_k_classes(labels, 20, 2, seed=0)
    assert_disjoint_cover(parts, labels.shape[0])
    assert all(np.unique(labels[p]).shape[0] == 2 for p in parts)


def test_dirichlet_skew_follows_alpha(labels: np.ndarray) -> None:
    def mean_classes(alpha: float) -> float:
        parts = partition_dirichlet(labels, 10, alpha, seed=0, min_examples=5)
        assert_disjoint_cover(parts, labels.shape[0])
        assert min(p.shape[0] for p in parts) >= 5
        # Classes holding at least 5% of a client's examples.
        counts = [np.bincount(labels[p], minlength=10) / p.shape[0] for p in parts]
        return float(np.mean([np.sum(c >= 0.05) for c in counts]))

    assert mean_classes(0.1) < 4.0
    assert mean_classes(100.0) > 9.0


def test_bad_requests_are_refused(labels: np.ndarray) -> None:
    with pytest.raises(DataError, match="at least one client"):
        partition_iid(labels, 0)
    with pytest.raises(DataError, match=r"classes_per_client must be in 1\.\.10"):
        partition_k_classes(labels, 5, 11)
    with pytest.raises(DataError, match="alpha must be > 0"):
        partition_dirichlet(labels, 5, 0.0)
    with pytest.raises(DataError, match="no Dirichlet"):
        partition_dirichlet(labels, 50, 0.01, min_examples=30, max_attempts=2)
