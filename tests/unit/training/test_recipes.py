"""The recipe's update rules against torch.optim and hand-computed values: SGD (momentum, weight
decay, Nesterov), Adam, AdamW, the learning-rate schedules, global-norm clipping and FedProx's
proximal term, each through the trainer's own step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedrelay.protocol.job_config import InvalidJobConfig, JobConfig
from fedrelay.protocol.training_config import (
    AdamSpec,
    ConstantSchedule,
    CosineSchedule,
    LinearSchedule,
    SgdSpec,
    StepSchedule,
    TrainingConfig,
)
from fedrelay.training import model_of
from fedrelay.training.data import Dataset
from fedrelay.training.models import ModelFactory, seeded_tensors
from fedrelay.training.optim import add_proximal, clip_global_norm
from fedrelay.training.torch_trainer import TorchClassificationTrainer, batch_indices


def factory() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))


FACTORY: ModelFactory = factory


def data() -> Dataset:
    rng = np.random.default_rng(3)
    return Dataset(
        rng.normal(size=(40, 5)).astype(np.float32), rng.integers(0, 3, 40).astype(np.int64)
    )


def reference(
    config: TrainingConfig, optimizer: type[torch.optim.Optimizer], **options: object
) -> dict[str, np.ndarray]:
    """``config.steps`` steps with torch.optim (single-tensor loops), the same batches, the
    proximal term added to the loss and ``clip_grad_norm_``."""
    examples = data()
    model = seeded_tensors(FACTORY, 0)
    module = factory()
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.items()})
    anchor = {k: torch.from_numpy(v.copy()) for k, v in model.items()}
    opt = optimizer(module.parameters(), lr=config.learning_rate, foreach=False, **options)  # type: ignore[call-arg]
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: config.schedule.factor(step, config.steps)
    )
    for step in range(config.steps):
        rows = torch.from_numpy(batch_indices(config.seed, step, len(examples), config.batch_size))
        out = module(torch.from_numpy(examples.features)[rows])
        loss = nn.functional.cross_entropy(out, torch.from_numpy(examples.labels)[rows])
        if config.proximal_mu:
            loss = loss + config.proximal_mu / 2 * sum(
                ((p - anchor[n]) ** 2).sum() for n, p in module.named_parameters()
            )
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        if config.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip_norm, foreach=False)
        opt.step()
        schedule.step()
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def ours(config: TrainingConfig) -> dict[str, np.ndarray]:
    trainer = TorchClassificationTrainer(FACTORY, data())
    start = trainer.initial_checkpoint(seeded_tensors(FACTORY, 0), config)
    return model_of(trainer.advance(start, config.steps, config))


def recipe(**fields: object) -> TrainingConfig:
    base: dict[str, object] = {"seed": 4, "steps": 6, "checkpoint_every": 3, "batch_size": 8}
    return TrainingConfig(**{**base, **fields})  # type: ignore[arg-type]


CASES = [
    (
        recipe(learning_rate=0.1, optimizer=SgdSpec(momentum=0.9, weight_decay=0.01)),
        torch.optim.SGD,
        {"momentum": 0.9, "weight_decay": 0.01},
    ),
    (
        recipe(learning_rate=0.1, optimizer=SgdSpec(momentum=0.5, nesterov=True)),
        torch.optim.SGD,
        {"momentum": 0.5, "nesterov": True},
    ),
    (recipe(learning_rate=0.2), torch.optim.SGD, {}),
    (
        recipe(learning_rate=0.01, optimizer=AdamSpec(weight_decay=0.1)),
        torch.optim.Adam,
        {"weight_decay": 0.1},
    ),
    (
        recipe(learning_rate=0.01, optimizer=AdamSpec(name="adamw", weight_decay=0.1)),
        torch.optim.AdamW,
        {"weight_decay": 0.1},
    ),
    (
        recipe(
            learning_rate=0.02,
            optimizer=AdamSpec(beta1=0.8, beta2=0.99, eps=1e-6),
            schedule=CosineSchedule(warmup_steps=2, min_factor=0.1),
            grad_clip_norm=0.05,
            proximal_mu=0.5,
        ),
        torch.optim.Adam,
        {"betas": (0.8, 0.99), "eps": 1e-6},
    ),
    (
        recipe(
            learning_rate=0.1,
            optimizer=SgdSpec(momentum=0.9),
            schedule=StepSchedule(every=2, gamma=0.5),
            proximal_mu=1.0,
        ),
        torch.optim.SGD,
        {"momentum": 0.9},
    ),
]


@pytest.mark.parametrize(
    ("config", "optimizer", "options"),
    CASES,
    ids=[
        "sgd-momentum-wd",
        "sgd-nesterov",
        "sgd-plain",
        "adam-l2",
        "adamw",
        "adam-cosine-clip-prox",
        "sgd-step-prox",
    ],
)
def test_trainer_steps_match_torch_optim(
    config: TrainingConfig, optimizer: type[torch.optim.Optimizer], options: dict[str, object]
) -> None:
    expected = reference(config, optimizer, **options)
    got = ours(config)
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    start = seeded_tensors(FACTORY, 0)
    assert any(not np.array_equal(got[n], start[n]) for n in got)


def test_schedules_are_the_hand_computed_factors() -> None:
    total = 10
    assert [ConstantSchedule().factor(s, total) for s in (0, 9)] == [1.0, 1.0]
    assert [StepSchedule(every=3, gamma=0.5).factor(s, total) for s in (0, 2, 3, 6, 9)] == [
        1.0,
        1.0,
        0.5,
        0.25,
        0.125,
    ]
    cosine = CosineSchedule(warmup_steps=2, min_factor=0.2)
    assert cosine.factor(0, total) == pytest.approx(0.5)
    assert cosine.factor(1, total) == pytest.approx(1.0)
    assert cosine.factor(2, total) == pytest.approx(1.0)
    assert cosine.factor(6, total) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert cosine.factor(10, total) == pytest.approx(0.2)
    linear = LinearSchedule(warmup_steps=0, end_factor=0.0)
    assert [linear.factor(s, total) for s in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])
    config = recipe(steps=10, learning_rate=0.4, schedule=StepSchedule(every=5, gamma=0.1))
    assert config.learning_rate_at(4) == pytest.approx(0.4)
    assert config.learning_rate_at(5) == pytest.approx(0.04)


def test_clipping_scales_to_the_global_norm_like_torch() -> None:
    grads = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[0.0], [4.0]])}
    norm = clip_global_norm(grads, 1.0)
    assert norm == pytest.approx(5.0)
    assert float(torch.linalg.vector_norm(torch.cat([g.ravel() for g in grads.values()]))) == (
        pytest.approx(1.0, rel=1e-5)
    )
    np.testing.assert_allclose(grads["a"].numpy(), [3.0 / (5 + 1e-6), 0.0], rtol=1e-6)
    small = {"a": torch.tensor([0.3, 0.4])}
    clip_global_norm(small, 1.0)
    np.testing.assert_array_equal(small["a"].numpy(), np.array([0.3, 0.4], np.float32))


def test_proximal_term_adds_mu_times_the_distance_to_the_anchor() -> None:
    grads = {"w": torch.tensor([1.0, 1.0])}
    add_proximal(grads, {"w": torch.tensor([2.0, -1.0])}, {"w": torch.tensor([0.0, 1.0])}, 0.5)
    np.testing.assert_allclose(grads["w"].numpy(), [1.0 + 0.5 * 2.0, 1.0 + 0.5 * -2.0])


def test_checkpoints_hold_the_whole_optimizer_state_and_the_anchor() -> None:
    config = recipe(learning_rate=0.01, optimizer=AdamSpec(), proximal_mu=0.1)
    trainer = TorchClassificationTrainer(FACTORY, data())
    model = seeded_tensors(FACTORY, 0)
    start = trainer.initial_checkpoint(model, config)
    names = sorted(model)
    assert sorted(start) == sorted(
        [f"model/{n}" for n in names]
        + [f"optim/{n}/{slot}" for n in names for slot in ("exp_avg", "exp_avg_sq")]
        + [f"anchor/{n}" for n in names]
        + ["step"]
    )
    middle = trainer.advance(start, 3, config)
    assert all(np.array_equal(middle[f"anchor/{n}"], model[n]) for n in names)
    # Resuming from the middle checkpoint is the uninterrupted run, bit for bit.
    straight = trainer.advance(start, 6, config)
    resumed = trainer.advance(middle, 3, config)
    assert all(np.array_equal(straight[k], resumed[k]) for k in straight)


def test_job_config_carries_the_recipe_into_the_training_config_and_its_hash() -> None:
    plain = JobConfig()
    config = JobConfig.model_validate(
        {
            "optimizer": {"name": "adamw", "weight_decay": 0.01},
            "schedule": {"kind": "cosine", "warmup_steps": 2},
            "grad_clip_norm": 1.0,
            "proximal_mu": 0.01,
        }
    )
    training = config.training_config()
    assert training.optimizer == AdamSpec(name="adamw", weight_decay=0.01)
    assert training.schedule == CosineSchedule(warmup_steps=2)
    assert (training.grad_clip_norm, training.proximal_mu) == (1.0, 0.01)
    assert JobConfig.from_bytes(config.to_bytes()) == config
    hashes = {
        c.training_config().config_hash()
        for c in (
            plain,
            config,
            plain.model_copy(update={"optimizer": SgdSpec(momentum=0.9)}),
            plain.model_copy(update={"schedule": StepSchedule(every=2, gamma=0.5)}),
            plain.model_copy(update={"grad_clip_norm": 2.0}),
            plain.model_copy(update={"proximal_mu": 0.5}),
        )
    }
    assert len(hashes) == 6  # every recipe field is in the committed hash


def test_local_epochs_resolve_a_tasks_steps_from_its_examples() -> None:
    config = JobConfig.model_validate({"local_epochs": 2, "batch_size": 16})
    assert config.training_config(33).steps == 2 * 3
    with pytest.raises(ValueError, match="example count"):
        config.training_config()
    with pytest.raises(InvalidJobConfig, match="leave steps out"):
        JobConfig.from_bytes(b'{"local_epochs": 2, "steps": 30}')


def test_top_level_momentum_is_refused_saying_where_it_went() -> None:
    with pytest.raises(InvalidJobConfig, match=r"momentum moved to optimizer\.momentum"):
        JobConfig.from_bytes(b'{"momentum": 0.9}')
