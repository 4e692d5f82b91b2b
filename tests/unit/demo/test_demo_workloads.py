"""The demo's workloads: each worker's data as written, the job, the evaluation set and targets;
the demo settings and the report of a workload run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedrelay.demo import DemoError, DemoResult, DemoSettings, WorkerOutcome, write_summary
from fedrelay.demo.workloads import WORKLOAD_NAMES, Target, workload
from fedrelay.protocol.blobs import encode_blob
from fedrelay.protocol.data_spec import ImageSchema, TextSchema
from fedrelay.protocol.hashing import blob_name
from fedrelay.protocol.model_spec import LoraSpec
from fedrelay.training.data import Dataset, TokenDataset
from fedrelay.training.datasets import dataset_from_blob, evaluation_schema, load_examples


def test_the_workloads_are_cnn_lm_and_lora() -> None:
    assert WORKLOAD_NAMES == ("cnn", "lm", "lora")
    assert [workload(n).target.metric for n in WORKLOAD_NAMES] == [
        "accuracy",
        "perplexity",
        "perplexity",
    ]
    with pytest.raises(ValueError, match="unknown workload 'gpt': choose one of cnn, lm, lora"):
        workload("gpt")


def test_targets_are_an_accuracy_or_a_perplexity_factor() -> None:
    accuracy = Target("accuracy", 0.9, 4)
    assert accuracy.reached(0.1, 0.9)
    assert not accuracy.reached(0.1, 0.89)
    factor = Target("perplexity", 4.0, 2)
    assert factor.reached(200.0, 50.0)
    assert not factor.reached(200.0, 51.0)
    assert "4x in 2 rounds" in factor.describe()


def test_cnn_writes_each_workers_digits_as_png_class_folders(tmp_path: Path) -> None:
    prepared = workload("cnn").prepare(tmp_path, 4, seed=3)
    config = prepared.config
    data = config.worker_data
    assert data is not None
    assert data.replay == "none"
    assert isinstance(data.schema_, ImageSchema)
    assert config.evaluation.metric == "accuracy"
    assert config.evaluation.data_hash == blob_name(prepared.evaluation)

    assert [p.name for p in prepared.worker_data] == [f"worker-{i}" for i in range(4)]
    loaded = [load_examples(folder, data.schema_) for folder in prepared.worker_data]
    for folder, examples in zip(prepared.worker_data, loaded, strict=True):
        assert {p.suffix for p in folder.rglob("*") if p.is_file()} == {".png"}
        assert {p.name for p in folder.iterdir()} <= {str(c) for c in range(10)}
        assert isinstance(examples, Dataset)
        assert examples.features.shape[1:] == (1, 8, 8)
    held_out = dataset_from_blob(prepared.evaluation, evaluation_schema(config))
    assert isinstance(held_out, Dataset)
    assert sum(len(e) for e in loaded) + len(held_out) == 1797  # every digit, once
    # Non-IID by default: the workers' label mixes differ.
    counts = [np.bincount(e.labels, minlength=10) for e in loaded if isinstance(e, Dataset)]
    assert any(not np.array_equal(counts[0], c) for c in counts[1:])


def test_preparing_twice_gives_the_same_job_and_the_split_is_chosen(tmp_path: Path) -> None:
    cnn = workload("cnn")
    first = cnn.prepare(tmp_path / "a", 3)
    again = cnn.prepare(tmp_path / "a", 3)
    assert first.config.config_hash() == again.config.config_hash()
    iid = cnn.prepare(tmp_path / "b", 3, split="iid")
    sizes = [len(list(folder.rglob("*.png"))) for folder in iid.worker_data]
    assert max(sizes) - min(sizes) <= 1


def test_job_fields_go_on_top_and_the_workload_keeps_its_own(tmp_path: Path) -> None:
    cnn = workload("cnn")
    prepared = cnn.prepare(tmp_path, 2, job={"challenge_rate": 1.0, "collect_seconds": 30})
    assert prepared.config.challenge_rate == 1.0
    assert prepared.config.collect_seconds == 30
    with pytest.raises(ValueError, match="the workload decides model"):
        cnn.prepare(tmp_path, 2, job={"model": {"kind": "mlp"}})
    with pytest.raises(ValueError, match="invalid job configuration: challenge_rate"):
        cnn.prepare(tmp_path, 2, job={"challenge_rate": 2})
    with pytest.raises(ValueError, match="at least 1 worker"):
        cnn.prepare(tmp_path, 0)
    with pytest.raises(ValueError, match="split must be one of"):
        cnn.prepare(tmp_path, 2, split="skewed")  # type: ignore[arg-type]


def test_lm_deals_the_pydoc_text_without_sharing_it_with_the_evaluation(tmp_path: Path) -> None:
    prepared = workload("lm").prepare(tmp_path, 4)
    config = prepared.config
    assert config.evaluation.metric == "perplexity"
    data = config.worker_data
    assert data is not None
    assert isinstance(data.schema_, TextSchema)
    held_out = dataset_from_blob(prepared.evaluation, evaluation_schema(config))
    assert isinstance(held_out, TokenDataset)
    evaluation_text = bytes(held_out.tokens.astype(np.uint8))
    probes = [evaluation_text[i : i + 64] for i in range(0, len(evaluation_text) - 64, 997)]
    for folder in prepared.worker_data:
        assert sorted(p.name for p in folder.iterdir()) == ["part-0.txt", "part-1.txt"]
        text = b"".join(p.read_bytes() for p in sorted(folder.iterdir()))
        assert len(load_examples(folder, data.schema_)) > 100
        assert not any(probe in text for probe in probes)


def test_lora_updates_carry_adapters_far_below_the_base(tmp_path: Path) -> None:
    prepared = workload("lora").prepare(tmp_path, 2)
    spec = prepared.config.model
    assert isinstance(spec, LoraSpec)
    base = prepared.poster_blobs[spec.base_weights]
    assert prepared.base_model_bytes() == len(base)
    model = prepared.initial_model()
    adapters = {k: v for k, v in model.items() if spec.trainable(k)}
    assert adapters
    assert len(encode_blob(adapters)) < 0.05 * len(base)
    with pytest.raises(KeyError):
        prepared.fetch_blob("00" * 32)


def test_a_workload_demo_cheats_with_its_update_only() -> None:
    assert DemoSettings(workload="lm", dishonest="update").workload == "lm"
    with pytest.raises(DemoError, match="tampered transcript would go unnoticed"):
        DemoSettings(workload="cnn", dishonest="transcript")
    with pytest.raises(DemoError, match="unknown workload"):
        DemoSettings(workload="gpt", dishonest="update")


HONEST = WorkerOutcome(
    name="worker-1", chain="worker-solana", address="a1", payout_address="p1", dishonest="",
    tasks=2, accepted=2, slashed_rounds=(), reason="", reward=5, claimable=5, stake_before=10,
    stake_after=10,
)  # fmt: skip
CHEAT = replace(
    HONEST, name="worker-0", chain="worker-evm", dishonest="update", accepted=0,
    slashed_rounds=(0, 1), reason="tampered", reward=0, claimable=0, stake_after=8,
)  # fmt: skip


def _result(per_round: tuple[float, ...], initial: float) -> DemoResult:
    return DemoResult(
        job_id=1, rounds=2, accuracy_per_round=per_round,
        workers=(CHEAT, HONEST), messages_per_route={}, wall_time_s=1.0,
        settings=DemoSettings(rounds=2, workload="lm", dishonest="update"), workload="lm",
        proposal_watch={"valid": 2},
        metric="perplexity", initial_metric=initial,
        update_bytes_per_round=((100, 101), (100, 101)),
    )  # fmt: skip


def test_a_workload_report_judges_its_target_and_gives_metric_and_sizes(tmp_path: Path) -> None:
    passed = _result((60.0, 40.0), 250.0)
    assert passed.problems() == []
    summary = json.loads(write_summary(passed, tmp_path).read_text())
    assert summary["workload"] == "lm"
    assert summary["metric"] == "perplexity"
    assert summary["metric_per_round"] == [60.0, 40.0]
    assert summary["initial_metric"] == 250.0
    assert summary["update_bytes_per_round"] == [[100, 101], [100, 101]]
    assert summary["target"]["value"] == workload("lm").target.value
    assert (tmp_path / "accuracy.png").read_bytes().startswith(b"\x89PNG")
    assert "| 1 | 40.0000 | 100, 101 |" in (tmp_path / "summary.md").read_text()

    missed = _result((200.0, 100.0), 250.0)
    assert any("misses the lm target" in p for p in missed.problems()), missed.problems()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--workload", "gpt"], "unknown workload 'gpt'"),
        (["--workload", "cnn", "--dishonest", "transcript"], "tampered transcript would go"),
    ],
)
def test_the_command_refuses_a_bad_workload_before_starting_anything(
    tmp_path: Path, options: list[str], message: str
) -> None:
    from typer.testing import CliRunner

    from fedrelay.cli import app

    state = tmp_path / "state"
    result = CliRunner().invoke(app, ["demo", *options, "--state-dir", str(state)])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not state.exists()
