"""A job's workbench: its model, evaluation set and data shards rebuilt from its configuration,
to evaluate models and replay challenged transcript segments.

The evaluation set is the poster's (the blob ``evaluation.data_hash`` names, handed in by the
service, which keeps it and never publishes it); only the published digits job without one is
evaluated on the digits' held-out split. Published shards come from
:mod:`fedrelay.training.datasets.published`, the function the workers train their shards
from. A job on the workers' own data has no shard to rebuild: its segments are not replayed
(the poster accepted that with ``replay: "none"``), and each update weighs 1.

Torch and the data load lazily, on first use, so the coordinator starts without them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, cast

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

    from fedrelay.training.data import Dataset, TokenDataset


class JobWorkbench:
    """A job's model, evaluation set and shards, rebuilt from its configuration (torch inside)."""

    def __init__(self, config: JobConfig, evaluation: bytes | None = None) -> None:
        """Prepare (data and torch load lazily, on first use).

        Args:
            config: The job's configuration.
            evaluation: The poster's evaluation blob (``config.evaluation.data_hash``); None
                when the configuration names none (the digits job) or only the initial model
                and checkpoint 0 are wanted.
        """
        self.config = config
        self._evaluation = evaluation

    def initial_model(self) -> ModelTensors:
        """The seeded initial model of the job (what ``fedrelay job post`` uploads)."""
        from fedrelay.training.torch_trainer import initial_model

        return initial_model(self._factory_fn(), self.config.model.init_seed)

    def start_checkpoint(self, model: ModelTensors) -> bytes:
        """The blob of checkpoint 0 of a task starting from ``model``: what every committed
        transcript of the round must begin with (the model, zero optimizer state, step 0)."""
        from fedrelay.training.torch_trainer import TorchClassificationTrainer

        trainer = TorchClassificationTrainer(self._factory_fn(), cast("Dataset", self.held_out))
        return encode_blob(trainer.initial_checkpoint(model))

    def _factory_fn(self) -> Callable[[], nn.Module]:
        from fedrelay.training.torch_trainer import mlp

        spec = self.config.model
        return lambda: mlp(spec.inputs, spec.hidden, spec.classes)

    @cached_property
    def held_out(self) -> Dataset | TokenDataset:
        """The evaluation set models are scored and evaluated on: the poster's, else (the
        published digits job only) the digits' held-out split.

        Raises:
            UpdateRejection: The configuration names an evaluation blob that was not handed in
                or does not match the job's schema.
        """
        from fedrelay.training.datasets import (
            SchemaMismatch,
            dataset_from_blob,
            evaluation_schema,
        )
        from fedrelay.training.datasets.published import published_held_out

        wanted = self.config.evaluation.data_hash
        if wanted:
            if self._evaluation is None or keccak256(self._evaluation).hex() != wanted:
                raise UpdateRejection(f"the job's evaluation set {wanted} is not at hand")
            schema = evaluation_schema(self.config)
            try:
                return dataset_from_blob(self._evaluation, schema, "the evaluation set")
            except SchemaMismatch as exc:
                raise UpdateRejection(str(exc)) from None
        published = self.config.published_data
        assert published is not None  # JobConfig refuses any other job without one
        return published_held_out(published)

    def shard(self, index: int) -> Dataset:
        """The data of published shard ``index``.

        Raises:
            UpdateRejection: The job has no such shard, or trains on the workers' own data.
        """
        from fedrelay.training.data import DataError
        from fedrelay.training.datasets.published import published_shard

        published = self.config.published_data
        if published is None:
            raise UpdateRejection("the job trains on the workers' own data: no shard to rebuild")
        try:
            return published_shard(published, index)
        except DataError as exc:
            raise UpdateRejection(str(exc)) from None

    def shard_size(self, index: int) -> int:
        """The weight of an update of shard ``index``: its example count on published data, 1
        on the workers' own data (no self-reported count buys weight or pay)."""
        if self.config.worker_data is not None:
            return 1
        return len(self.shard(index))

    def shard_hash(self, index: int) -> str:
        """keccak256 (hex) of shard ``index``'s data blob, as a worker's trainer computes it."""
        from fedrelay.training.datasets import dataset_hash

        return dataset_hash(self.shard(index))

    def training_config(self) -> TrainingConfig:
        """The training configuration every task of the job uses."""
        return self.config.training_config()

    def evaluate(self, model: ModelTensors) -> tuple[float, float]:
        """``(loss, metric)`` of ``model`` on the evaluation set, the metric the job's
        ``evaluation.metric`` (accuracy, the loss itself, or perplexity: exp of the loss)."""
        from fedrelay.training.torch_trainer import evaluate

        result = evaluate(self._factory_fn(), model, cast("Dataset", self.held_out))
        metric = self.config.evaluation.metric
        if metric == "loss":
            return result.loss, result.loss
        if metric == "perplexity":
            return result.loss, math.exp(min(result.loss, 700.0))
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
        if self.config.worker_data is not None:
            # Only checkpoint 0 and the final checkpoint are checked (by the caller): the
            # poster accepted unverified private data (replay "none").
            return Verdict(True, "not replayed: the worker's own data (replay none)")
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
