"""Scoring ranks honest contributions above free-riders; payouts split exactly."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from fedrelay.coordinator.aggregation import ClientUpdate, ParameterLayout, Vector
from fedrelay.coordinator.scoring import (
    ScoringError,
    leave_one_out_scores,
    loss_reduction_scores,
    mix_with_samples,
    split_payout,
)
from fedrelay.coordinator.simulation.fit import LocalTraining, SimulatedClient, client_updates
from fedrelay.training.data import digits, partition_iid, split_train_test
from fedrelay.training.torch_trainer import evaluate, initial_model, mlp


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_split_payout_by_hand() -> None:
    assert split_payout(10, {"b": 1.0, "a": 1.0, "c": 1.0}) == {"a": 4, "b": 3, "c": 3}
    assert split_payout(100, {"a": 3.0, "b": 1.0, "c": 0.0}) == {"a": 75, "b": 25, "c": 0}
    assert split_payout(7, {"a": 0.0, "b": 0.0}) == {"a": 0, "b": 0}
    with pytest.raises(ScoringError, match="finite and >= 0"):
        split_payout(10, {"a": -1.0})
    with pytest.raises(ScoringError, match="must be >= 0"):
        split_payout(-1, {"a": 1.0})


def test_mix_with_samples_never_pays_a_zero_score() -> None:
    mixed = mix_with_samples({"a": 3.0, "b": 1.0, "c": 0.0}, {"a": 10, "b": 30, "c": 1000}, 0.5)
    assert mixed["c"] == 0.0
    assert mixed["a"] == pytest.approx(0.5 * 0.75 + 0.5 * 0.25)
    assert mixed["b"] == pytest.approx(0.5 * 0.25 + 0.5 * 0.75)


def test_honest_workers_outscore_zero_and_noise_updates() -> None:
    data = digits()
    train, test = split_train_test(data, 0.2, seed=0)
    model = initial_model(mlp, 0)
    layout = ParameterLayout.of(model)
    params = layout.flatten(model)
    parts = partition_iid(train.labels, 4, seed=0)
    clients = [SimulatedClient(f"honest-{i}", train.subset(p)) for i, p in enumerate(parts)]
    updates = client_updates(mlp, clients, model, LocalTraining(steps=20, batch_size=32), 0)
    typical_norm = float(np.linalg.norm(updates[0].delta))
    raw = np.random.default_rng(5).standard_normal((params.shape[0],))
    noise: Vector = (raw * (typical_norm / float(np.linalg.norm(raw)))).astype(np.float32)
    updates += [
        ClientUpdate("free-rider-zero", np.zeros_like(params), 300),
        ClientUpdate("free-rider-noise", noise, 300),
    ]

    def held_out_loss(vector: Vector) -> float:
        return evaluate(mlp, layout.unflatten(vector), test).loss

    honest = [u.client_id for u in updates if u.client_id.startswith("honest")]
    riders = ["free-rider-zero", "free-rider-noise"]
    for scores in (
        loss_reduction_scores(held_out_loss, params, updates),
        leave_one_out_scores(held_out_loss, params, updates),
    ):
        assert min(scores[c] for c in honest) > max(scores[c] for c in riders)
        payout = split_payout(1_000_000, scores)
        assert sum(payout.values()) == 1_000_000
        assert all(payout[c] <= 10_000 for c in riders)  # about nothing: at most 1%
        assert all(payout[c] >= 100_000 for c in honest)
    assert loss_reduction_scores(held_out_loss, params, updates)["free-rider-zero"] == 0.0
