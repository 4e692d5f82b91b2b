"""`fedrelay worker run` refuses bad key files and unreachable chains with clear messages."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from solders.keypair import Keypair
from support.relayer import wait_until
from support.worker_run import fake_worker_node
from typer.testing import CliRunner

from fedrelay.cli import app

SECRET = "ab" * 31  # a malformed key whose text must never be echoed


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["worker", "run", *args])
    return result.exit_code, result.output


def _evm(key_file: Path, rpc_url: str = "http://127.0.0.1:9") -> list[str]:
    return [
        "--chain", "evm",
        "--key-file", str(key_file),
        "--coordinator-url", "http://127.0.0.1:9",
        "--rpc-url", rpc_url,
        "--hub-address", "0x" + "11" * 20,
        "--state-file", str(key_file.parent / "state.json"),
    ]  # fmt: skip


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    code, output = _run(*_evm(tmp_path / "absent.key"))
    assert code == 2
    assert "key file" in output
    assert "absent.key: it does not exist" in output


def test_an_unreadable_key_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "folder.key"
    folder.mkdir()
    code, output = _run(*_evm(folder))
    assert code == 2
    assert "is not a regular file" in output


def test_a_malformed_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    key_file = tmp_path / "bad.key"
    key_file.write_text(SECRET)
    code, output = _run(*_evm(key_file))
    assert code == 2
    assert "does not hold an EVM private key" in output
    assert SECRET not in output


@pytest.mark.parametrize("chain", ["evm", "solana"])
def test_an_unreachable_rpc_is_reported_without_the_key(tmp_path: Path, chain: str) -> None:
    rpc_url = f"http://127.0.0.1:{_unused_port()}"
    if chain == "evm":
        key = "cd" * 32
        key_file = tmp_path / "evm.key"
        key_file.write_text(key)
        args = _evm(key_file, rpc_url)
    else:
        keypair = Keypair()
        key = str(keypair)
        key_file = tmp_path / "solana.json"
        key_file.write_text(json.dumps(list(bytes(keypair))))
        args = [
            "--chain", "solana",
            "--key-file", str(key_file),
            "--coordinator-url", "http://127.0.0.1:9",
            "--rpc-url", rpc_url,
            "--program-id", str(Keypair().pubkey()),
            "--state-file", str(tmp_path / "state.json"),
        ]  # fmt: skip
    code, output = _run(*args)
    assert code == 2
    assert "does not answer" in output
    assert key not in output
    assert not (tmp_path / "state.json").exists()


def test_watching_proposals_needs_the_coordinator_chain_and_a_market(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "worker.key"
    key_file.write_text("cd" * 32)
    monkeypatch.delenv("FEDRELAY_COORDINATOR_RPC_URL", raising=False)
    monkeypatch.delenv("FEDRELAY_COORDINATOR_JOB_MARKET", raising=False)
    code, output = _run(*_evm(key_file), "--watch-proposals", "--job-market", "0x" + "22" * 20)
    assert code == 2
    assert "--watch-proposals needs --coordinator-rpc-url and --job-market" in output
    code, output = _run(
        *_evm(key_file), "--watch-proposals",
        "--coordinator-rpc-url", "http://127.0.0.1:9", "--job-market", "0x12",
    )  # fmt: skip
    assert code == 2
    assert "--job-market" in output
    assert "0x12" in output


def test_a_watch_that_fails_is_logged_and_the_worker_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The watch beside a worker is a fake that fails at once; the worker (a fake node that
    works until the failure is logged) is not stopped by it, and exits cleanly."""
    worked: list[str] = []

    async def failing_run() -> None:
        raise RuntimeError("the chain answered nonsense")

    watch = SimpleNamespace(run=failing_run, request_stop=lambda: None)
    monkeypatch.setattr(
        "fedrelay.worker.process.proposal_watch", lambda *args, **kwargs: (watch, None)
    )

    async def work() -> None:  # until the watch's failure is logged
        await wait_until(lambda: "the proposal watch stopped" in caplog.text, 10)
        worked.append("after the watch failed")

    fake_worker_node(monkeypatch, work)
    key_file = tmp_path / "worker.key"
    key_file.write_text("cd" * 32)
    with caplog.at_level(logging.ERROR, logger="fedrelay.commands.worker"):
        code, output = _run(
            *_evm(key_file), "--watch-proposals",
            "--coordinator-rpc-url", "http://127.0.0.1:9", "--job-market", "0x" + "22" * 20,
        )  # fmt: skip
    assert code == 0, output
    assert worked == ["after the watch failed"]
    assert (
        "the proposal watch stopped: the chain answered nonsense; the worker goes on without it"
        in caplog.text
    )
