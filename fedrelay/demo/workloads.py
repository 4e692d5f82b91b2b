"""The demo's workloads: three jobs on data the workers own, each with its data, target and size.

The digits demo trains on data the poster publishes. A workload here is a job of the other kind:
every worker trains on files in its own folder (the job's configuration states only their
schema), and the poster evaluates on a held-out set it keeps with the coordinator. Each is
sized to run on a CPU in a few minutes, end to end on the devnet:

- ``cnn``: a small CNN on scikit-learn's digits, written as 8x8 grey PNG files into one
  subfolder per class, dealt among the workers non-IID (Dirichlet) or IID by a seed; the
  metric is accuracy and the target an accuracy to reach.
- ``lm``: a small decoder-only transformer on documentation text CPython ships
  (``pydoc_data.topics``), byte-level, each worker holding its own slice of the text as
  ``.txt`` files; the metric is perplexity and the target a factor by which training lowers
  it.
- ``lora``: LoRA adapters on the attention of a transformer like ``lm``'s, on the same text.
  The frozen base weights are a blob the configuration names. They are the base model briefly
  pretrained (a few deterministic steps on a slice of the text no worker holds and the
  evaluation does not use): adapters on a random, frozen base can only bend noise, so a
  fine-tuning job needs a base that already models text, as a real one would. The target is
  again a perplexity factor, and every update (the adapters only) is a small fraction of the
  base model's blob.

The public API (used by ``fedrelay demo --workload`` and ``fedrelay bench workloads``):

- :data:`WORKLOAD_NAMES` and :func:`workload` (a :class:`Workload` by name);
- :meth:`Workload.prepare` writes each worker's data under a directory and returns a
  :class:`PreparedWorkload`: the job's configuration, each worker's data folder, the
  evaluation blob the poster uploads (never sent to workers), the extra poster blobs the
  initial model needs (LoRA's base weights) and :meth:`PreparedWorkload.initial_model`;
- :class:`Target`: the metric, the value to reach and the rounds that takes;
  :meth:`Target.reached` tells whether a round's metric reaches it.

Everything is deterministic: the same name, worker count, seed and split give the same files,
blobs and configuration (so the same job).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from fedrelay.protocol.blobs import encode_blob
from fedrelay.protocol.data_spec import Metric
from fedrelay.protocol.hashing import blob_name
from fedrelay.protocol.job_config import InvalidJobConfig, JobConfig
from fedrelay.training.trainer import ModelTensors

__all__ = [
    "WORKLOAD_NAMES",
    "PreparedWorkload",
    "Split",
    "Target",
    "Workload",
    "WorkloadName",
    "corpus_text",
    "perplexity_factor",
    "workload",
]

WorkloadName = Literal["cnn", "lm", "lora"]
#: Every workload's name, in the order the demo and the benchmark list them.
WORKLOAD_NAMES: tuple[WorkloadName, ...] = get_args(WorkloadName)

Split = Literal["dirichlet", "iid"]
"""How the ``cnn`` workload deals the digits among workers (the text workloads deal the text in
blocks either way)."""

#: Dirichlet concentration of the ``cnn`` workload's non-IID split.
CNN_ALPHA = 1.0
#: Fraction of the digits kept as the poster's evaluation set.
CNN_TEST_FRACTION = 0.2

#: Bytes of the blocks the corpus is dealt in (see ``_slices``).
TEXT_BLOCK_BYTES = 512
#: Bytes of text each worker holds in the ``lm`` and ``lora`` workloads.
TEXT_BYTES_PER_WORKER = 16_384
#: Bytes of text in the poster's evaluation set.
TEXT_EVAL_BYTES = 8_192
#: Bytes of text the LoRA base model is pretrained on (no worker holds them, nor does the
#: evaluation set).
TEXT_PRETRAIN_BYTES = 32_768
#: Files each worker's text slice is written as (a worker's corpus may be a folder of files).
TEXT_FILES_PER_WORKER = 2
#: Optimizer steps and step size of the LoRA base model's pretraining.
PRETRAIN_STEPS = 40
PRETRAIN_LEARNING_RATE = 0.003

_TRANSFORMER: dict[str, Any] = {
    "kind": "transformer_lm", "vocab": 256, "context": 32, "width": 32, "heads": 2,
    "layers": 2, "mlp_ratio": 4, "init_seed": 3,
}  # fmt: skip


@dataclass(frozen=True)
class Target:
    """What a workload must reach, and in how many rounds.

    Attributes:
        metric: ``accuracy`` (higher is better) or ``perplexity`` (lower is better).
        value: The accuracy to reach, or the factor by which perplexity must fall below the
            initial model's (``initial / final >= value``).
        rounds: The rounds the job runs (the target is reached by its last round).
    """

    metric: Metric
    value: float
    rounds: int

    def reached(self, initial: float, current: float) -> bool:
        """Whether ``current`` (a round's metric) reaches the target, ``initial`` being the
        initial model's metric (used by perplexity factors only)."""
        if self.metric == "accuracy":
            return current >= self.value
        return current > 0 and initial / current >= self.value

    def describe(self) -> str:
        """The target in words, e.g. ``accuracy >= 0.85 in 4 rounds``."""
        if self.metric == "accuracy":
            return f"accuracy >= {self.value:.2f} in {self.rounds} rounds"
        return f"perplexity lowered {self.value:g}x in {self.rounds} rounds"


@dataclass(frozen=True)
class PreparedWorkload:
    """A workload written out for ``workers`` workers: the job to post and each worker's data.

    Attributes:
        workload: The workload.
        config: The job's configuration (the poster uploads its blob).
        worker_data: Each worker's own data folder (``fedrelay worker run --data``), worker
            ``i`` at index ``i``.
        evaluation: The evaluation blob the poster uploads to the coordinator's evaluation
            domain (``fedrelay job post --eval-data``); never sent to a worker.
        poster_blobs: Other blobs the poster uploads, by name (the LoRA base weights).
    """

    workload: Workload
    config: JobConfig
    worker_data: tuple[Path, ...]
    evaluation: bytes
    poster_blobs: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def target(self) -> Target:
        """The workload's target."""
        return self.workload.target

    def fetch_blob(self, name: str) -> bytes:
        """A poster blob by name (what :meth:`initial_model` reads LoRA's base weights with).

        Raises:
            KeyError: No such blob belongs to the workload.
        """
        return self.poster_blobs[name]

    def initial_model(self) -> ModelTensors:
        """The job's initial model (seeded; LoRA's base from its blob)."""
        from fedrelay.training.models import build_factory, initial_tensors, no_bundles

        spec = self.config.model
        factory = build_factory(spec, bundle_loader=no_bundles)
        return initial_tensors(spec, factory, self.fetch_blob)

    def base_model_bytes(self) -> int | None:
        """Size of the LoRA base model's blob (what updates are compared with), else None."""
        blobs = list(self.poster_blobs.values())
        return len(blobs[0]) if self.workload.name == "lora" and blobs else None


@dataclass(frozen=True)
class Workload:
    """A job on data the workers own: its model, recipe, data and target (see the module).

    Attributes:
        name: ``cnn``, ``lm`` or ``lora``.
        title: One line saying what it trains.
        target: What it must reach, and in how many rounds.
    """

    name: WorkloadName
    title: str
    target: Target

    def prepare(
        self,
        root: Path,
        workers: int,
        *,
        seed: int = 0,
        split: Split = "dirichlet",
        job: Mapping[str, object] | None = None,
    ) -> PreparedWorkload:
        """Write each worker's data under ``root`` and build the job.

        Args:
            root: A folder; worker ``i``'s data goes to ``root/worker-i`` (replaced if there).
            workers: Number of workers (at least 1).
            seed: Seed of the data split (and of the job's training).
            split: ``dirichlet`` (non-IID) or ``iid``; used by ``cnn``.
            job: Job configuration fields set on top of the workload's (e.g. the demo's
                ``challenge_rate`` or ``collect_seconds``); the model, data and evaluation are
                the workload's and may not be set here.

        Raises:
            ValueError: ``workers`` below 1, an unknown split, more workers than the data can
                serve, or ``job`` sets a field the workload owns or makes an invalid job.
        """
        if workers < 1:
            raise ValueError(f"a workload needs at least 1 worker, got {workers}")
        if split not in get_args(Split):
            raise ValueError(f"split must be one of {list(get_args(Split))}, got {split!r}")
        owned = sorted({"model", "data", "evaluation"} & set(job or {}))
        if owned:
            raise ValueError(f"the workload decides {', '.join(owned)}; do not set them in job")
        root.mkdir(parents=True, exist_ok=True)
        if self.name == "cnn":
            return _prepare_cnn(self, root, workers, seed, split, dict(job or {}))
        return _prepare_text(self, root, workers, seed, dict(job or {}))


_WORKLOADS: dict[WorkloadName, Workload] = {
    "cnn": Workload(
        "cnn",
        "a CNN on digits written as PNG files, one class subfolder each, split among workers",
        Target("accuracy", 0.88, 4),
    ),
    "lm": Workload(
        "lm",
        "a byte-level transformer language model on CPython's pydoc_data text",
        Target("perplexity", 5.0, 2),
    ),
    "lora": Workload(
        "lora",
        "LoRA adapters on a briefly pretrained transformer, on the same text",
        Target("perplexity", 1.04, 3),
    ),
}


def workload(name: str) -> Workload:
    """The workload called ``name``.

    Raises:
        ValueError: No workload has that name (the message lists them).
    """
    if name not in _WORKLOADS:
        raise ValueError(f"unknown workload {name!r}: choose one of {', '.join(WORKLOAD_NAMES)}")
    return _WORKLOADS[name]


# --- job configurations ---------------------------------------------------------------------


def _job(
    fields: dict[str, object], overrides: dict[str, object], metric: Metric, evaluation: bytes
) -> JobConfig:
    merged = {
        **fields,
        **overrides,
        "evaluation": {"data_hash": blob_name(evaluation), "metric": metric},
    }
    try:
        return JobConfig.from_bytes(json.dumps(merged).encode())
    except InvalidJobConfig as exc:
        raise ValueError(f"the workload's job: {exc}") from None


def _worker_folder(root: Path, index: int) -> Path:
    import shutil

    folder = root / f"worker-{index}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


# --- cnn ------------------------------------------------------------------------------------

_CNN_MODEL: dict[str, Any] = {
    "kind": "cnn", "channels": 1, "height": 8, "width": 8, "classes": 10,
    "filters": [8, 16], "hidden": 32, "init_seed": 1,
}  # fmt: skip
_IMAGE_SCHEMA: dict[str, Any] = {
    "kind": "image", "channels": 1, "height": 8, "width": 8, "classes": 10,
}  # fmt: skip


def _grey(features: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Digits pixels (0..1, 64 per example) as 8x8 grey levels 0..255."""
    return np.rint(features.reshape(-1, 8, 8) * 255.0).astype(np.uint8)


def _prepare_cnn(
    spec: Workload, root: Path, workers: int, seed: int, split: Split, job: dict[str, object]
) -> PreparedWorkload:
    from PIL import Image

    from fedrelay.training.data import Dataset, deal_shards, digits, split_train_test
    from fedrelay.training.datasets import dataset_blob

    train, held_out = split_train_test(digits(), CNN_TEST_FRACTION, seed)
    if workers > len(train) // 20:
        raise ValueError(f"{workers} workers: the digits serve at most {len(train) // 20}")
    shards = deal_shards(train, workers, split, seed=seed, alpha=CNN_ALPHA)
    folders: list[Path] = []
    for index, shard in enumerate(shards):
        folder = _worker_folder(root, index)
        pairs = zip(_grey(shard.features), shard.labels, strict=True)
        for number, (pixels, label) in enumerate(pairs):
            target = folder / str(int(label))
            target.mkdir(exist_ok=True)
            Image.fromarray(pixels, mode="L").save(target / f"{number:05d}.png")
        folders.append(folder)
    # The evaluation set goes through the same 8-bit quantisation as the workers' files.
    grey = _grey(held_out.features).astype(np.float32) / np.float32(255.0)
    evaluation = dataset_blob(Dataset(grey[:, None, :, :], held_out.labels))
    fields: dict[str, object] = {
        "seed": seed, "steps": 40, "checkpoint_every": 20, "batch_size": 32,
        "learning_rate": 0.1, "optimizer": {"name": "sgd", "momentum": 0.9},
        "model": _CNN_MODEL,
        "data": {"source": "worker", "replay": "none", "schema": _IMAGE_SCHEMA},
    }  # fmt: skip
    config = _job(fields, job, "accuracy", evaluation)
    return PreparedWorkload(spec, config, tuple(folders), evaluation)


# --- lm and lora ----------------------------------------------------------------------------


def corpus_text() -> str:
    """The text corpus of ``lm`` and ``lora``: CPython's ``pydoc_data.topics`` (the help
    topics of the interpreter's own documentation), topics in name order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def _slices(workers: int) -> tuple[bytes, bytes, list[bytes]]:
    """The corpus dealt in :data:`TEXT_BLOCK_BYTES` blocks: the evaluation slice, the
    pretraining slice, and each worker's slice, none sharing a block.

    Blocks go round in a fixed cycle (evaluation once, pretraining four times, each worker
    twice), so every part samples the whole documentation rather than a few topics: a worker
    whose text covered only topics the evaluation never sees would make updates that cannot
    lower the evaluation loss, score zero and go unpaid for honest work.
    """
    data = corpus_text().encode()
    quotas = [TEXT_EVAL_BYTES, TEXT_PRETRAIN_BYTES, *([TEXT_BYTES_PER_WORKER] * workers)]
    cycle = [0, *([1] * 4), *(part for worker in range(workers) for part in [2 + worker] * 2)]
    parts: list[list[bytes]] = [[] for _ in quotas]
    held = [0] * len(quotas)
    blocks = (data[i : i + TEXT_BLOCK_BYTES] for i in range(0, len(data), TEXT_BLOCK_BYTES))
    for number, block in enumerate(blocks):
        owner = cycle[number % len(cycle)]
        if held[owner] < quotas[owner]:
            parts[owner].append(block)
            held[owner] += len(block)
        if all(h >= q for h, q in zip(held, quotas, strict=True)):
            break
    else:
        raise ValueError(f"{workers} workers: the corpus of {len(data)} bytes is too short")
    texts = [b"".join(blocks_of)[:quota] for blocks_of, quota in zip(parts, quotas, strict=True)]
    return texts[0], texts[1], texts[2:]


def _write_text(folder: Path, text: bytes) -> None:
    """``text`` as :data:`TEXT_FILES_PER_WORKER` files, cut at line ends (each valid UTF-8)."""
    cut = len(text) // TEXT_FILES_PER_WORKER
    pieces, rest = [], text
    for _ in range(TEXT_FILES_PER_WORKER - 1):
        end = rest.find(b"\n", cut) + 1 or len(rest)
        pieces.append(rest[:end])
        rest = rest[end:]
    pieces.append(rest)
    for number, piece in enumerate(pieces):
        (folder / f"part-{number}.txt").write_bytes(piece)


def _utf8(text: bytes) -> bytes:
    """``text`` less any character cut in two at either end."""
    return text.decode("utf-8", errors="ignore").encode()


def _tokens(text: bytes) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.frombuffer(text, dtype=np.uint8).astype(np.int64)


def _pretrained_base(text: bytes) -> bytes:
    """The LoRA base: the ``lm`` transformer trained :data:`PRETRAIN_STEPS` Adam steps on
    ``text``, as a tensor blob (deterministic: the same bytes every time)."""
    from fedrelay.protocol.model_spec import TransformerLMSpec
    from fedrelay.protocol.training_config import AdamSpec, TrainingConfig
    from fedrelay.training.data import TokenDataset
    from fedrelay.training.models import build_factory, no_bundles, seeded_tensors
    from fedrelay.training.torch_trainer import TorchTrainer

    spec = TransformerLMSpec.model_validate(_TRANSFORMER)
    factory = build_factory(spec, bundle_loader=no_bundles)
    data = TokenDataset(_tokens(text), spec.context)
    trainer = TorchTrainer(factory, "language_model", data)
    config = TrainingConfig(
        seed=11, steps=PRETRAIN_STEPS, checkpoint_every=PRETRAIN_STEPS, batch_size=32,
        learning_rate=PRETRAIN_LEARNING_RATE, data_hash="", optimizer=AdamSpec(),
    )  # fmt: skip
    trained = trainer.train(seeded_tensors(factory, spec.init_seed), config)
    return encode_blob(dict(sorted(trained.items())))


def _prepare_text(
    spec: Workload, root: Path, workers: int, seed: int, job: dict[str, object]
) -> PreparedWorkload:
    from fedrelay.training.data import TokenDataset
    from fedrelay.training.datasets import dataset_blob

    evaluation_text, pretrain_text, parts = _slices(workers)
    folders = []
    for index, part in enumerate(parts):
        folder = _worker_folder(root, index)
        _write_text(folder, _utf8(part))
        folders.append(folder)
    context = int(_TRANSFORMER["context"])
    evaluation = dataset_blob(TokenDataset(_tokens(_utf8(evaluation_text)), context))
    schema = {"kind": "text", "tokenizer": "bytes", "vocab": 256, "context": context}
    data = {"source": "worker", "replay": "none", "schema": schema}
    poster_blobs: dict[str, bytes] = {}
    if spec.name == "lm":
        model: dict[str, object] = dict(_TRANSFORMER)
        recipe: dict[str, object] = {"learning_rate": 0.003, "optimizer": {"name": "adam"}}
    else:
        base = _pretrained_base(_utf8(pretrain_text))
        poster_blobs[blob_name(base)] = base
        model = {
            "kind": "lora", "base": _TRANSFORMER, "base_weights": blob_name(base), "rank": 4,
            "alpha": 8.0, "targets": ["attention"], "init_seed": 5,
        }  # fmt: skip
        recipe = {
            "learning_rate": 0.03, "optimizer": {"name": "adam"}, "steps": 40,
            "checkpoint_every": 20,
        }  # fmt: skip
    fields: dict[str, object] = {
        "seed": seed, "steps": 20, "checkpoint_every": 10, "batch_size": 16,
        **recipe, "model": model, "data": data,
    }  # fmt: skip
    config = _job(fields, job, "perplexity", evaluation)
    return PreparedWorkload(spec, config, tuple(folders), evaluation, poster_blobs)


def perplexity_factor(initial: float, final: float) -> float:
    """By how much perplexity fell: ``initial / final`` (``inf`` if ``final`` is 0)."""
    return math.inf if final <= 0 else initial / final
