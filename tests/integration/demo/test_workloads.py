"""The demo's workloads end to end on the devnet: CNN on image folders, a transformer LM, LoRA.

Each test runs the whole system (devnet chains, relayer stages with guardians, the coordinator
and its API) with two workers on the EVM worker chain and two on Solana, one of which commits
an update its transcript does not end in. Every worker trains only on the files of its own
folder; the poster's evaluation set goes to the coordinator's evaluation domain. Each test
asserts the workload's target (set in :mod:`fedrelay.demo.workloads`), that every honest worker
was paid and never slashed and that the cheat was; the CNN test that the coordinator's blob
store never held a worker's image (file bytes, or the data set decoded from a folder), the LoRA
test that every update blob is under 5% of the base model's blob.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrelay.adapters.devnet.state import WORKER_EVM, WORKER_SOLANA
from fedrelay.demo import DemoResult, DemoSettings, run_demo, write_summary
from fedrelay.demo.workloads import Target, workload
from fedrelay.protocol.data_spec import ImageSchema
from fedrelay.protocol.hashing import keccak256
from fedrelay.training.datasets import dataset_hash, load_examples

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The LoRA update's size bound, as a fraction of the base model's blob.
LORA_UPDATE_FRACTION = 0.05


def _run(name: str, tmp_path: Path, dishonest_chain: str) -> tuple[DemoResult, Target]:
    target = workload(name).target
    settings = DemoSettings(
        rounds=target.rounds,
        evm_workers=2,
        solana_workers=2,
        dishonest="update",
        dishonest_chain=dishonest_chain,  # type: ignore[arg-type]
        collect_seconds=120,
        timeout_s=300,
        workload=name,
    )
    result = run_demo(settings, tmp_path / "state")
    write_summary(result, tmp_path / "report")
    return result, target


def _check_outcome(result: DemoResult, target: Target) -> None:
    """The target reached, the honest paid and never slashed, the cheat slashed; on both
    worker chains."""
    assert result.problems() == [], result.problems()
    assert len(result.accuracy_per_round) == target.rounds
    assert result.initial_metric is not None
    assert target.reached(result.initial_metric, result.accuracy_per_round[-1]), (
        result.initial_metric,
        result.accuracy_per_round,
        target.describe(),
    )
    assert {w.chain for w in result.workers} == {WORKER_EVM, WORKER_SOLANA}
    honest = [w for w in result.workers if not w.dishonest]
    assert len(honest) == 3
    for worker in honest:
        assert worker.slashed_rounds == (), worker
        assert worker.slashed_on_chain == 0, worker
        assert worker.accepted == worker.tasks > 0, worker
        assert worker.reward > 0, worker
        assert worker.claimable == worker.reward, worker
    assert result.dishonest.slashed_rounds, result.dishonest
    assert result.dishonest.slashed_on_chain > 0, result.dishonest


def _stored_files(blob_root: Path) -> list[Path]:
    return [p for p in blob_root.rglob("*") if p.is_file()]


def test_cnn_workers_train_on_their_own_image_folders(tmp_path: Path) -> None:
    result, target = _run("cnn", tmp_path, "evm")
    _check_outcome(result, target)
    assert result.metric == "accuracy"
    assert result.accuracy_per_round[-1] >= target.value

    folders = sorted((tmp_path / "state" / "data").iterdir())
    assert len(folders) == 4
    images = [p for folder in folders for p in folder.rglob("*.png")]
    assert images
    schema = ImageSchema(channels=1, height=8, width=8, classes=10)
    private = {keccak256(p.read_bytes()).hex() for p in images}
    private |= {dataset_hash(load_examples(folder, schema)) for folder in folders}

    stored = _stored_files(tmp_path / "state" / "blobs")
    assert stored, "the coordinator's blob store is empty"
    for path in stored:
        data = path.read_bytes()
        assert PNG_SIGNATURE not in data, f"{path} holds a PNG image"
        assert keccak256(data).hex() not in private, f"{path} is a worker's image or data set"
        assert not any(name in path.name for name in private), path


def test_language_model_lowers_perplexity_on_pydoc_text(tmp_path: Path) -> None:
    result, target = _run("lm", tmp_path, "solana")
    _check_outcome(result, target)
    assert result.metric == "perplexity"
    assert result.initial_metric is not None
    factor = result.initial_metric / result.accuracy_per_round[-1]
    assert factor >= target.value, (result.initial_metric, result.accuracy_per_round)


def test_lora_updates_are_under_five_percent_of_the_base(tmp_path: Path) -> None:
    result, target = _run("lora", tmp_path, "evm")
    _check_outcome(result, target)
    base = result.base_model_bytes
    assert base is not None
    assert base > 0
    assert len(result.update_bytes_per_round) == target.rounds
    sizes = [size for per_round in result.update_bytes_per_round for size in per_round]
    assert len(sizes) >= 3 * target.rounds  # the honest workers' updates at least
    assert max(sizes) < LORA_UPDATE_FRACTION * base, (max(sizes), base)
