"""A job's workbench: its model, evaluation set and data shards rebuilt from its configuration,
to evaluate models and replay challenged transcript segments.

The model is built from the job's ``model`` spec by :func:`fedrelay.training.models.build_factory`
(the one construction of a job's model, the worker's too); a bundle model goes through the
``bundle_loader`` the coordinator's process was given (its trust policy), and none is run
without one.

The evaluation set is the poster's (the blob ``evaluation.data_hash`` names, handed in by the
service, which keeps it and never publishes it); only the published digits job without one is
evaluated on the digits' held-out split. Published shards come from
:mod:`fedrelay.training.datasets.published`, the function the workers train their shards
from. A job on the workers' own data has no shard to rebuild: a challenged segment is replayed
on the examples the worker opened for it (:meth:`JobWorkbench.opened_examples`, checked
against the worker's committed data root and count; the count weighs its update), or, when the
poster turned that off (``replay: "none"``), not at all, each update weighing 1.

Torch and the data load lazily, on first use, so the coordinator starts without them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

from fedrelay.coordinator.aggregation import ParameterLayout, Vector
from fedrelay.coordinator.verification.updates import (
    MALFORMED_INPUT_ERRORS,
    UpdateRejection,
    malformed,
)
from fedrelay.protocol.batches import segment_indices
from fedrelay.protocol.data_commitment import (
    DataCommitment,
    DataCommitmentError,
    check_openings,
    decode_openings,
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
    from fedrelay.training.data import Dataset, OpenedData, TokenDataset
    from fedrelay.training.models import BundleLoader, FetchBlob, ModelFactory
    from fedrelay.training.torch_trainer import TorchTrainer


class JobWorkbench:
    """A job's model, evaluation set and shards, rebuilt from its configuration (torch inside)."""

    def __init__(
        self,
        config: JobConfig,
        evaluation: bytes | None = None,
        *,
        bundle_loader: BundleLoader | None = None,
    ) -> None:
        """Prepare (data and torch load lazily, on first use).

        Args:
            config: The job's configuration.
            evaluation: The poster's evaluation blob (``config.evaluation.data_hash``); None
                when the configuration names none (the digits job) or only the initial model
                and checkpoint 0 are wanted.
            bundle_loader: Loads a trusted model bundle (a bundle job is refused without one).
        """
        self.config = config
        self._evaluation = evaluation
        self._bundle_loader = bundle_loader
        self._commitments: dict[int, DataCommitment] = {}

    def initial_model(self, fetch_blob: FetchBlob | None = None) -> ModelTensors:
        """The seeded initial model of the job (what ``fedrelay job post`` uploads).

        Args:
            fetch_blob: Gets a blob by name: a LoRA job's base weights (required for one).

        Raises:
            TrainingError: A LoRA job without ``fetch_blob``, or base weights that do not fit.
        """
        from fedrelay.training.models import initial_tensors

        def no_blobs(name: str) -> bytes:
            raise TrainingError(f"blob {name} (the base weights) is needed and none can be read")

        return initial_tensors(self.config.model, self.factory, fetch_blob or no_blobs)

    def start_checkpoint(self, model: ModelTensors) -> bytes:
        """The blob of checkpoint 0 of a task starting from ``model``: what every committed
        transcript of the round must begin with (the model, zero optimizer state, the FedProx
        anchor when there is one, step 0)."""
        from fedrelay.training.torch_trainer import start_checkpoint

        # Checkpoint 0 does not depend on the step count: any task's recipe will do.
        config = self.config.training_config(1 if self.config.local_epochs else None)
        return encode_blob(
            start_checkpoint(self.factory, self.config.model.trainable, model, config)
        )

    @cached_property
    def factory(self) -> ModelFactory:
        """Builds the job's model (:func:`fedrelay.training.models.build_factory`)."""
        from fedrelay.training.models import build_factory, no_bundles

        return build_factory(self.config.model, bundle_loader=self._bundle_loader or no_bundles)

    def trainer(self, data: Dataset | OpenedData) -> TorchTrainer:
        """The job's trainer over ``data`` (the worker's, on the CPU)."""
        from fedrelay.training.torch_trainer import TorchTrainer

        spec = self.config.model
        return TorchTrainer(self.factory, spec.objective, data, trainable=spec.trainable)

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
        """The example count of published shard ``index``.

        Raises:
            UpdateRejection: The job has no such shard, or trains on the workers' own data.
        """
        return len(self.shard(index))

    def task_weight(self, assignment: Assignment) -> int:
        """The weight of ``assignment``'s update: its shard's example count on published data
        (the coordinator rebuilds the shard); on the workers' own data the committed count,
        which the spot reveals check (0 before a commitment), or 1 when the poster turned
        those off (:meth:`~fedrelay.protocol.job_config.JobConfig.update_weight`). No count a
        worker states elsewhere buys weight or pay."""
        if self.config.worker_data is None:
            return self.config.update_weight(self.shard_size(assignment.shard))
        commitment = assignment.commitment
        return self.config.update_weight(commitment.num_samples if commitment else 0)

    def task_config(self, assignment: Assignment) -> TrainingConfig:
        """The training configuration of ``assignment``'s task: the job's, with
        ``local_epochs`` its steps following from its example count (the shard's on published
        data, the committed count on the workers' own data).

        Raises:
            UpdateRejection: The job has no such shard, or a job with ``local_epochs`` on
                private data whose task has no commitment.
        """
        if self.config.worker_data is None:
            return self.training_config(assignment.shard)
        if self.config.local_epochs is None:
            return self.config.training_config()
        if assignment.commitment is None:
            raise UpdateRejection("the task has no commitment: its step count is unknown")
        return self.config.training_config(assignment.commitment.num_samples)

    @property
    def spot_reveals(self) -> bool:
        """Whether challenged segments are replayed on examples the workers open (a job on
        their own data with ``replay: "segments"``)."""
        private = self.config.worker_data
        return private is not None and private.replay == "segments"

    def opened_examples(self, assignment: Assignment, segment: int, examples: bytes) -> OpenedData:
        """The examples a worker opened for ``segment`` of ``assignment``'s task, checked:
        exactly the indices the segment consumed (from the task's seed, batch size and the
        committed count), each of the job's example size and under the committed data root.

        Raises:
            UpdateRejection: The opening does not decode or does not hold (the reason says
                which example and why).
        """
        from fedrelay.training.datasets import example_layout, opened_data

        private = self.config.worker_data
        commitment = assignment.commitment
        if private is None or commitment is None:
            raise UpdateRejection("only a committed task on the workers' own data opens examples")
        try:
            data = DataCommitment(commitment.data_root, commitment.num_samples)
            layout = example_layout(private.schema_)
            wanted = segment_indices(self.task_config(assignment), segment, data.count)
            openings = decode_openings(examples)
            check_openings(data, layout.kind, wanted.tolist(), openings, layout.body_length)
            return opened_data(layout, openings, data.count)
        except (DataCommitmentError, TrainingError) as exc:
            raise UpdateRejection(f"the opened examples do not hold: {exc}") from None

    def shard_commitment(self, index: int) -> DataCommitment:
        """The data commitment of published shard ``index`` (the root over its example hashes
        and its count), what a worker training it must commit; computed once per shard.

        Raises:
            UpdateRejection: The job has no such shard, or trains on the workers' own data.
        """
        from fedrelay.training.datasets import data_commitment

        if index not in self._commitments:
            self._commitments[index] = data_commitment(self.shard(index))
        return self._commitments[index]

    def shard_hash(self, index: int) -> str:
        """keccak256 (hex) of shard ``index``'s data blob, as a worker's trainer computes it."""
        from fedrelay.training.datasets import dataset_hash

        return dataset_hash(self.shard(index))

    def training_config(self, shard: int | None = None) -> TrainingConfig:
        """The training configuration of the task on ``shard``: the job's; with
        ``local_epochs`` its steps follow from that shard's size (``shard`` is then needed).

        Raises:
            UpdateRejection: The job has no such shard.
            ValueError: ``local_epochs`` without a shard.
        """
        examples = None
        if self.config.local_epochs is not None and shard is not None:
            examples = len(self.shard(shard))
        return self.config.training_config(examples)

    def evaluate(self, model: ModelTensors) -> tuple[float, float]:
        """``(loss, metric)`` of ``model`` on the evaluation set, the metric the job's
        ``evaluation.metric`` (accuracy, the loss itself, or perplexity: exp of the loss)."""
        from fedrelay.training.torch_trainer import evaluate

        result = evaluate(self.factory, model, self.held_out, objective=self.config.model.objective)
        metric = self.config.evaluation.metric
        if metric == "loss":
            return result.loss, result.loss
        if metric == "perplexity":
            return result.loss, math.exp(min(result.loss, 700.0))
        return result.loss, result.accuracy if result.accuracy is not None else 0.0

    def held_out_loss(
        self, layout: ParameterLayout, frozen: ModelTensors | None = None
    ) -> Callable[[Vector], float]:
        """Loss on the held-out set of a flat vector of the trainable tensors, the ``frozen``
        ones (the round model's) beside them (for scoring)."""
        fixed = dict(frozen or {})

        def loss(params: Vector) -> float:
            return self.evaluate({**fixed, **layout.unflatten(params)})[0]

        return loss

    def replay(
        self,
        job_id: int,
        round_number: int,
        assignment: Assignment,
        segment: int,
        opening: SegmentOpening,
        opened: OpenedData | None = None,
    ) -> Verdict:
        """Replay a challenged segment of ``assignment``'s transcript: on its published shard,
        or on the worker's ``opened`` examples (:meth:`opened_examples`) on its own data.

        Returns:
            The verdict; a malformed answer is a rejection, not an error: the checkpoints are
            checked before the trainer uses them
            (:func:`~fedrelay.training.verify_segment`), and anything the replay still raises
            on them (:data:`~.updates.MALFORMED_INPUT_ERRORS`) is a rejection with its reason.
        """
        commitment = assignment.commitment
        if commitment is None:
            return Verdict(False, "the task has no commitment")
        if self.config.worker_data is not None and not self.spot_reveals:
            # Only checkpoint 0 and the final checkpoint are checked (by the caller): the
            # poster turned replays of private data off (replay "none").
            return Verdict(True, "not replayed: the worker's own data (replay none)")
        if self.spot_reveals and opened is None:
            return Verdict(False, "the examples the segment consumed were not opened")
        try:
            trainer = self.trainer(opened if opened is not None else self.shard(assignment.shard))
            config = self.task_config(assignment)
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
