"""A job's workbench: its model, held-out set and data shards rebuilt from its configuration,
to evaluate models and replay challenged transcript segments.

Torch and the data load lazily, on first use, so the coordinator starts without them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

from fedrelay.coordinator.aggregation import ParameterLayout, Vector
from fedrelay.coordinator.verification.updates import (
    MALFORMED_INPUT_ERRORS,
    UpdateRejection,
    malformed,
)
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.rounds import Assignment
from fedrelay.protocol.wormhole import keccak256
from fedrelay.training import (
    ModelTensors,
    SegmentOpening,
    TrainingConfig,
    TrainingError,
    Verdict,
    encode_blob,
    verify_segment,
)

if TYPE_CHECKING:
    from torch import nn

    from fedrelay.training.data import Dataset


class JobWorkbench:
    """A job's model, held-out set and shards, rebuilt from its configuration (torch inside)."""

    def __init__(self, config: JobConfig) -> None:
        """Prepare (data and torch load lazily, on first use)."""
        self.config = config

    def initial_model(self) -> ModelTensors:
        """The seeded initial model of the job (what ``fedrelay job post`` uploads)."""
        from fedrelay.training.torch_trainer import initial_model

        return initial_model(self._factory_fn(), self.config.model.init_seed)

    def start_checkpoint(self, model: ModelTensors) -> bytes:
        """The blob of checkpoint 0 of a task starting from ``model``: what every committed
        transcript of the round must begin with (the model, zero optimizer state, step 0)."""
        from fedrelay.training.torch_trainer import TorchClassificationTrainer

        trainer = TorchClassificationTrainer(self._factory_fn(), self.held_out)
        return encode_blob(trainer.initial_checkpoint(model))

    def _factory_fn(self) -> Callable[[], nn.Module]:
        from fedrelay.training.torch_trainer import mlp

        spec = self.config.model
        return lambda: mlp(spec.inputs, spec.hidden, spec.classes)

    @cached_property
    def _split(self) -> tuple[Dataset, Dataset]:
        # scikit-learn (the digits data) loads on first use, not with the coordinator.
        from fedrelay.training.data import digits, split_train_test

        data = self.config.data
        return split_train_test(digits(), data.test_fraction, data.seed)

    @property
    def held_out(self) -> Dataset:
        """The held-out set models are scored and evaluated on."""
        return self._split[1]

    @cached_property
    def _shards(self) -> list[Dataset]:
        from fedrelay.training.data import deal_shards

        data = self.config.data
        return deal_shards(
            self._split[0],
            data.shards,
            data.partition,
            seed=data.seed,
            classes_per_client=data.classes_per_client,
            alpha=data.alpha,
            limit=data.max_examples_per_shard,
        )

    def shard(self, index: int) -> Dataset:
        """The data of shard ``index``.

        Raises:
            UpdateRejection: The job has no such shard.
        """
        if not 0 <= index < len(self._shards):
            raise UpdateRejection(f"shard {index} outside 0..{len(self._shards) - 1}")
        return self._shards[index]

    def shard_hash(self, index: int) -> str:
        """keccak256 (hex) of shard ``index``'s data blob, as a worker's trainer computes it."""
        shard = self.shard(index)
        return keccak256(encode_blob({"features": shard.features, "labels": shard.labels})).hex()

    def training_config(self) -> TrainingConfig:
        """The training configuration every task of the job uses."""
        return self.config.training_config()

    def evaluate(self, model: ModelTensors) -> tuple[float, float]:
        """``(loss, accuracy)`` of ``model`` on the held-out set."""
        from fedrelay.training.torch_trainer import evaluate

        result = evaluate(self._factory_fn(), model, self.held_out)
        return result.loss, result.accuracy

    def held_out_loss(self, layout: ParameterLayout) -> Callable[[Vector], float]:
        """Loss of a flat parameter vector on the held-out set (for scoring)."""

        def loss(params: Vector) -> float:
            return self.evaluate(layout.unflatten(params))[0]

        return loss

    def replay(
        self,
        job_id: int,
        round_number: int,
        assignment: Assignment,
        segment: int,
        opening: SegmentOpening,
    ) -> Verdict:
        """Replay a challenged segment of ``assignment``'s transcript.

        Returns:
            The verdict; a malformed answer is a rejection, not an error: the checkpoints are
            checked before the trainer uses them
            (:func:`~fedrelay.training.verify_segment`), and anything the replay still raises
            on them (:data:`~.updates.MALFORMED_INPUT_ERRORS`) is a rejection with its reason.
        """
        from fedrelay.training.torch_trainer import TorchClassificationTrainer

        commitment = assignment.commitment
        if commitment is None:
            return Verdict(False, "the task has no commitment")
        trainer = TorchClassificationTrainer(
            self._factory_fn(),
            self.shard(assignment.shard),
        )
        config = self.training_config()
        try:
            return verify_segment(
                trainer,
                config,
                commitment.transcript_root,
                segment,
                opening,
                self.config.replay_tolerance,
            )
        except TrainingError as exc:
            return Verdict(False, f"replay failed: {exc}")
        except MALFORMED_INPUT_ERRORS as exc:
            return Verdict(False, f"replay failed: {malformed(exc)}")
