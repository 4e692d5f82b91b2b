"""The workloads' jobs and the workers' files (provisional: replaced by fedrelay.demo.workloads).

- ``cnn``: scikit-learn's digits as 8x8 PNG files, one folder per worker with a subfolder per
  class, dealt IID among 4 workers; the poster's evaluation set is the held-out 20%.
- ``lm``: the documentation text CPython ships (``pydoc_data.topics``), byte-tokenized, split
  into one text file per worker; the last 10% is the evaluation set.
- ``lora``: the same text; low-rank adapters on a seeded transformer whose weights are the
  base-weights blob.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedrelay.bench.workloads import BenchWorkload, Target
from fedrelay.protocol.data_spec import EvaluationSpec, ImageSchema, TextSchema, WorkerData
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.model_spec import CnnSpec, LoraSpec, TransformerLMSpec
from fedrelay.protocol.training_config import AdamSpec, SgdSpec
from fedrelay.training import encode_blob, keccak256
from fedrelay.training.data import Dataset, TokenDataset, digits, partition_iid, split_train_test

WORKERS = 4
CONTEXT = 32


def _cnn(directory: Path) -> BenchWorkload:
    from PIL import Image

    from fedrelay.training.datasets import dataset_blob

    train, test = split_train_test(digits(), 0.2, seed=0)
    paths = []
    for worker, part in enumerate(partition_iid(train.labels, WORKERS, seed=0)):
        root = directory / f"worker-{worker}"
        for index in part:
            pixels = np.round(train.features[index].reshape(8, 8) * 255).astype(np.uint8)
            folder = root / str(int(train.labels[index]))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, mode="L").save(folder / f"{int(index):05d}.png")
        paths.append(root)
    quantized = np.round(test.features * 255) / 255
    evaluation = dataset_blob(
        Dataset(quantized.reshape(-1, 1, 8, 8).astype(np.float32), test.labels)
    )
    config = JobConfig(
        model=CnnSpec(height=8, width=8, filters=(16, 32), hidden=64),
        data=WorkerData(schema=ImageSchema(height=8, width=8, classes=10), replay="none"),
        evaluation=EvaluationSpec(data_hash=keccak256(evaluation).hex(), metric="accuracy"),
        local_epochs=1,
        batch_size=32,
        checkpoint_every=4,
        learning_rate=0.05,
        optimizer=SgdSpec(momentum=0.9),
    )
    return BenchWorkload(
        "cnn",
        config,
        tuple(paths),
        evaluation,
        Target("accuracy", value=0.9),
        rounds=15,
        description="digits as 8x8 PNG, IID over 4 workers; held-out 20% (seed 0)",
    )


def _text(directory: Path) -> tuple[tuple[Path, ...], bytes]:
    from pydoc_data.topics import topics

    from fedrelay.training.datasets import dataset_blob

    text = "\n".join(topics[key] for key in sorted(topics)).encode()
    cut = len(text) * 9 // 10
    tokens = np.frombuffer(text[cut:], dtype=np.uint8).astype(np.int64)
    evaluation = dataset_blob(TokenDataset(tokens, CONTEXT))
    body = text[:cut]
    paths = []
    for worker in range(WORKERS):
        path = directory / f"worker-{worker}.txt"
        size = len(body) // WORKERS
        chunk = body[worker * size : (worker + 1) * size]
        path.write_bytes(chunk.decode(errors="ignore").encode())
        paths.append(path)
    return tuple(paths), evaluation


_BASE = TransformerLMSpec(vocab=256, context=CONTEXT, width=64, heads=4, layers=2)


def _lm(directory: Path) -> BenchWorkload:
    paths, evaluation = _text(directory)
    config = JobConfig(
        model=_BASE,
        data=WorkerData(schema=TextSchema(context=CONTEXT), replay="none"),
        evaluation=EvaluationSpec(data_hash=keccak256(evaluation).hex(), metric="perplexity"),
        steps=30,
        checkpoint_every=10,
        batch_size=16,
        learning_rate=0.003,
        optimizer=AdamSpec(),
    )
    return BenchWorkload(
        "lm",
        config,
        paths,
        evaluation,
        Target("perplexity", factor=4.0),
        rounds=6,
        description="pydoc_data.topics, bytes, 4 workers; last 10% held out",
    )


def _lora(directory: Path) -> BenchWorkload:
    from fedrelay.training.models import build_factory, no_bundles, seeded_tensors

    paths, evaluation = _text(directory)
    base = encode_blob(seeded_tensors(build_factory(_BASE, bundle_loader=no_bundles), 0))
    config = JobConfig(
        model=LoraSpec(base=_BASE, base_weights=keccak256(base).hex(), rank=2),
        data=WorkerData(schema=TextSchema(context=CONTEXT), replay="none"),
        evaluation=EvaluationSpec(data_hash=keccak256(evaluation).hex(), metric="perplexity"),
        steps=30,
        checkpoint_every=10,
        batch_size=16,
        learning_rate=0.01,
        optimizer=AdamSpec(),
    )
    return BenchWorkload(
        "lora",
        config,
        paths,
        evaluation,
        Target("perplexity", factor=2.0),
        rounds=6,
        description="pydoc_data.topics, bytes, 4 workers; seeded base",
        blobs={keccak256(base).hex(): base},
    )


PREPARE: dict[str, Callable[[Path], BenchWorkload]] = {"cnn": _cnn, "lm": _lm, "lora": _lora}
