"""`fedrelay job post --model-zoo NAME --model-param KEY=VALUE`: the posted configuration's model
is the zoo's, sized by the parameters and the job's data schema; bad names, parameters and
conflicting model options are refused before anything is uploaded or sent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedrelay.cli import app
from fedrelay.commands.coordinator import _load_config, _with_zoo_model
from fedrelay.protocol.model_spec import CnnSpec, MlpSpec

runner = CliRunner()
COMMON = ["job", "post", "--rounds", "1", "--workers-per-round", "2", "--reward-per-round", "10"]
NO_CHAIN = "say where the coordinator chain is"
IMAGES = {  # images as arrays (channels, height, width) in an .npz
    "data": {
        "source": "worker",
        "replay": "none",
        "schema": {"kind": "tabular", "features": [1, 8, 8], "classes": 4},
    }
}


@pytest.fixture(autouse=True)
def _no_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FEDRELAY_CHAINS_FILE", "FEDRELAY_COORDINATOR_RPC_URL",
                 "FEDRELAY_COORDINATOR_JOB_MARKET"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def _said(output: str) -> str:
    return " ".join(output.split())


def _image_job(tmp_path: Path, extra: dict[str, object] | None = None) -> tuple[Path, Path]:
    config = tmp_path / "job.json"
    config.write_text(json.dumps({**IMAGES, **(extra or {})}))
    evaluation = tmp_path / "eval.npz"
    rng = np.random.default_rng(3)
    np.savez(evaluation, features=rng.random((12, 1, 8, 8)).astype(np.float32),
             labels=rng.integers(0, 4, 12))  # fmt: skip
    return config, evaluation


def test_a_zoo_model_with_parameters_passes_every_check_before_the_chain(tmp_path: Path) -> None:
    config, evaluation = _image_job(tmp_path)
    posted = runner.invoke(app, [*COMMON, "--config", str(config), "--eval-data", str(evaluation),
                                 "--model-zoo", "cnn", "--model-param", "filters=4,8",
                                 "--model-param", "hidden=16"])  # fmt: skip
    # Model, data and evaluation set are all accepted; the command stops at the missing chain.
    assert posted.exit_code == 2
    assert NO_CHAIN in _said(posted.output)


def test_the_zoo_model_replaces_the_default_model_sized_by_the_schema(tmp_path: Path) -> None:
    config_file, _ = _image_job(tmp_path)
    config = _with_zoo_model(
        _load_config(config_file, evaluation=True), config_file, "cnn", ["filters=4,8"]
    )
    assert config.model == CnnSpec(channels=1, height=8, width=8, classes=4, filters=(4, 8))
    assert json.loads(config.to_bytes())["model"]["filters"] == [4, 8]


def test_the_default_digits_job_takes_a_resized_perceptron() -> None:
    config = _with_zoo_model(_load_config(None), None, "mlp", ["hidden=32", "init_seed=5"])
    assert config.model == MlpSpec(hidden=32, init_seed=5)
    stopped = runner.invoke(app, [*COMMON, "--model-zoo", "mlp", "--model-param", "hidden=32"])
    assert stopped.exit_code == 2
    assert NO_CHAIN in _said(stopped.output)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--model-zoo", "resnet"], "--model-zoo 'resnet' is not in the zoo; its models are mlp, "
         "cnn, transformer_lm, lora (a model of your own: --model-bundle DIR)"),
        (["--model-zoo", "mlp", "--model-param", "depth=2"], "--model-param depth: mlp has no "
         "parameter 'depth'; its parameters are inputs, hidden, classes, init_seed"),
        (["--model-zoo", "mlp", "--model-param", "hidden=wide"],
         "--model-param hidden=wide: Input should be a valid integer"),
        (["--model-zoo", "mlp", "--model-param", "hidden"],
         "--model-param 'hidden' is not KEY=VALUE"),
        (["--model-zoo", "transformer_lm"], "transformer_lm needs --model-param vocab=VALUE and "
         "--model-param context=VALUE (no default)"),
        (["--model-param", "hidden=32"], "--model-param needs --model-zoo NAME"),
        (["--model-zoo", "mlp", "--model-bundle", "some_folder"],
         "--model-zoo mlp and --model-bundle both name the model: drop one"),
    ],
)  # fmt: skip
def test_refusals_name_what_was_wrong(options: list[str], message: str) -> None:
    refused = runner.invoke(app, [*COMMON, *options])
    assert refused.exit_code == 2
    assert message in _said(refused.output)
    assert NO_CHAIN not in _said(refused.output)  # refused before the chain is looked up


def test_a_configuration_that_names_its_model_conflicts_with_the_zoo(tmp_path: Path) -> None:
    config, evaluation = _image_job(tmp_path, {"model": {"kind": "cnn", "height": 8, "width": 8}})
    refused = runner.invoke(app, [*COMMON, "--config", str(config), "--eval-data",
                                  str(evaluation), "--model-zoo", "cnn"])  # fmt: skip
    assert refused.exit_code == 2
    assert f"--model-zoo cnn and the model in {config} both name the job's model: drop one" in (
        _said(refused.output)
    )


def test_a_size_against_the_jobs_schema_is_refused(tmp_path: Path) -> None:
    config, evaluation = _image_job(tmp_path)
    refused = runner.invoke(app, [*COMMON, "--config", str(config), "--eval-data",
                                  str(evaluation), "--model-zoo", "cnn",
                                  "--model-param", "height=28"])  # fmt: skip
    assert refused.exit_code == 2
    assert "--model-param height=28 contradicts the job's data schema, whose height is 8" in (
        _said(refused.output)
    )
