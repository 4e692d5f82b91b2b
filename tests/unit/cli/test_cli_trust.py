"""`--trust-model`, `--trust-signer` and `--trust-file` on `worker run` and `coordinator run`, and
`job post --model-bundle`: bad entries are refused up front, good ones reach the node and service.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from support.worker_run import fake_worker_node
from typer.testing import CliRunner

from fedrelay.cli import app
from fedrelay.protocol.job_config import JobConfig
from fedrelay.training.trust import TrustPolicy

runner = CliRunner()
BUNDLE = "ab" * 32
OTHER = "cd" * 32
SIGNER_KEY = "0x" + "5f" * 32
SIGNER = Account.from_key(SIGNER_KEY).address.lower()


def _worker_args(tmp_path: Path) -> list[str]:
    key_file = tmp_path / "worker.key"
    key_file.write_text("cd" * 32)
    return [
        "worker", "run",
        "--chain", "evm",
        "--key-file", str(key_file),
        "--coordinator-url", "http://127.0.0.1:9",
        "--rpc-url", "http://127.0.0.1:9",
        "--hub-address", "0x" + "11" * 20,
        "--state-file", str(tmp_path / "state.json"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--trust-model", "abc"], "not a bundle hash"),
        (["--trust-signer", "0x12"], "is not a signer"),
        (["--trust-file", "absent-trust-file"], "cannot read trust file absent-trust-file"),
    ],
)
def test_worker_run_refuses_bad_trust_entries_before_starting(
    tmp_path: Path, options: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*_worker_args(tmp_path), *options])
    assert result.exit_code == 2
    assert message in result.output


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Runs `worker run` up to the node, capturing the trust policy it gets."""
    seen: dict[str, Any] = {}

    async def run() -> None:
        return None

    fake_worker_node(monkeypatch, run, seen=seen)
    return seen


def test_worker_run_gives_the_node_the_trusted_hashes_and_signers(
    tmp_path: Path, captured: dict[str, Any]
) -> None:
    trust_file = tmp_path / "trusted"
    trust_file.write_text(f"# reviewed\n{OTHER}\nsigner {SIGNER}\n")
    result = runner.invoke(
        app,
        [
            *_worker_args(tmp_path),
            "--trust-model", BUNDLE,
            "--trust-file", str(trust_file),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert captured["trust"] == TrustPolicy(frozenset({BUNDLE, OTHER}), frozenset({SIGNER}))


def test_worker_run_reads_the_trust_variables(tmp_path: Path, captured: dict[str, Any]) -> None:
    result = runner.invoke(
        app,
        _worker_args(tmp_path),
        env={"FEDRELAY_TRUST_MODELS": f"{BUNDLE},{OTHER}", "FEDRELAY_TRUST_SIGNERS": SIGNER},
    )
    assert result.exit_code == 0, result.output
    assert captured["trust"] == TrustPolicy(frozenset({BUNDLE, OTHER}), frozenset({SIGNER}))


def test_worker_run_trusts_no_bundle_by_default(
    tmp_path: Path, captured: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("FEDRELAY_TRUST_MODELS", "FEDRELAY_TRUST_SIGNERS", "FEDRELAY_TRUST_FILE"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(app, _worker_args(tmp_path))
    assert result.exit_code == 0, result.output
    assert captured["trust"] == TrustPolicy()


def _coordinator_args(tmp_path: Path) -> list[str]:
    key_file = tmp_path / "coordinator.key"
    key_file.write_text(SIGNER_KEY)
    return [
        "coordinator", "run",
        "--rpc-url", "http://127.0.0.1:1",
        "--job-market", "0x" + "11" * 20,
        "--signer-key-file", str(key_file),
    ]  # fmt: skip


def test_coordinator_run_refuses_a_bad_trust_entry_and_passes_good_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDRELAY_COORDINATOR_ADMIN_TOKEN", "a-test-admin-token-0123")
    monkeypatch.setenv("FEDRELAY_TRUST_MODELS", OTHER)
    monkeypatch.delenv("FEDRELAY_TRUST_FILE", raising=False)
    bad = runner.invoke(app, [*_coordinator_args(tmp_path), "--trust-model", "abc"])
    assert bad.exit_code == 2
    assert "not a bundle hash" in bad.output

    seen: dict[str, Any] = {}

    async def serve(settings: object, target: object, key: str, trust: TrustPolicy) -> None:
        seen["trust"] = trust

    monkeypatch.setattr("fedrelay.coordinator.process.serve", serve)
    good = runner.invoke(
        app, [*_coordinator_args(tmp_path), "--trust-model", BUNDLE, "--trust-signer", SIGNER]
    )
    assert good.exit_code == 0, good.output
    assert seen["trust"] == TrustPolicy(frozenset({BUNDLE, OTHER}), frozenset({SIGNER}))


def _post(tmp_path: Path, *options: str) -> tuple[int, str]:
    key_file = tmp_path / "poster.key"
    key_file.write_text(SIGNER_KEY)
    common = ["--rounds", "1", "--workers-per-round", "1", "--reward-per-round", "10"]
    result = runner.invoke(
        app, ["job", "post", *common, "--signer-key-file", str(key_file), *options]
    )
    return result.exit_code, result.output


def test_job_post_refuses_a_folder_that_is_no_bundle_before_touching_the_chain(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.py").write_text("def build(): ...\n")
    code, output = _post(tmp_path, "--model-bundle", str(folder))
    assert code == 2
    assert "no manifest.json" in output

    (folder / "manifest.json").write_text('{"format": 1, "factory": "model:build"}')
    code, output = _post(tmp_path, "--model-bundle", str(folder), "--bundle-args", "[1]")
    assert code == 2
    assert "--bundle-args must be a JSON object" in output

    code, output = _post(tmp_path, "--bundle-args", "{}")
    assert code == 2
    assert "need --model-bundle" in output


def test_job_post_writes_the_signed_bundle_entry(tmp_path: Path) -> None:
    from fedrelay.commands.coordinator import _with_bundle
    from fedrelay.training.bundles import bundle_hash
    from fedrelay.training.trust import bundle_signer

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"format": 1, "factory": "model:build"}')
    (folder / "model.py").write_text("def build(width=4): ...\n")
    config, blob, signer = _with_bundle(
        JobConfig(), folder, '{"width": 8}', "classification", SIGNER_KEY
    )
    model: Any = config.model
    assert model.kind == "bundle"
    assert model.bundle == bundle_hash(blob)
    assert dict(model.args) == {"width": 8}
    assert signer == SIGNER
    assert bundle_signer(model.bundle, model.signature) == SIGNER


def test_bundle_hash_prints_what_to_trust_without_running_the_bundle(tmp_path: Path) -> None:
    from support.bundles import write_bundle

    from fedrelay.training.bundles import bundle_hash, pack_bundle

    marker = tmp_path / "ran.marker"
    folder = write_bundle(tmp_path / "model", marker, "cli_hash")
    expected = bundle_hash(pack_bundle(folder))
    plain = runner.invoke(app, ["worker", "bundle-hash", str(folder)])
    assert plain.exit_code == 0, plain.output
    assert plain.output.strip() == expected
    described = runner.invoke(app, ["worker", "bundle-hash", str(folder), "--json"])
    assert described.exit_code == 0, described.output
    assert json.loads(described.output) == {
        "bundle": expected,
        "factory": "model_cli_hash:build",
        "files": ["layers/__init__.py", "model_cli_hash.py"],
        "bytes": len(pack_bundle(folder)),
    }
    assert not marker.exists()
    (folder / "notes.txt").write_text("not code")
    refused = runner.invoke(app, ["worker", "bundle-hash", str(folder)])
    assert refused.exit_code == 2
    assert "notes.txt: only Python sources (.py)" in refused.output
