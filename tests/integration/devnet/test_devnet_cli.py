"""`fedrelay devnet up|status|down` as a user runs them: real subprocesses, a temporary state."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedrelay.adapters.devnet.process import free_port
from fedrelay.adapters.devnet.state import process_alive

pytestmark = pytest.mark.integration

TIMEOUT = 300


def fedrelay(
    *args: str, env: dict[str, str] | None = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run the `fedrelay` command line in a child interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "fedrelay.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {}), "COLUMNS": "200"},
    )


def _ports() -> list[str]:
    return [
        "--coordinator-port", str(free_port()), "--worker-port", str(free_port()),
        "--solana-port", str(free_port()),
    ]  # fmt: skip


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state directory whose devnet is stopped after the test, whatever happened."""
    path = tmp_path / "devnet"
    yield path
    if (path / "supervisor.pid").exists():
        fedrelay("devnet", "down", "--state-dir", str(path))


def test_up_status_down_leaves_nothing_running(state_dir: Path) -> None:
    up = fedrelay("devnet", "up", "--state-dir", str(state_dir), *_ports(), "--solana-workers", "1")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "devnet up" in up.stdout
    info = json.loads((state_dir / "devnet.json").read_text())
    pids = [info["supervisor_pid"], *(c["pid"] for c in info["chains"])]
    assert all(process_alive(pid) for pid in pids)
    assert [w["chain"] for w in info["workers"]] == ["worker-solana"]

    status = fedrelay("devnet", "status", "--state-dir", str(state_dir))
    assert status.returncode == 0, status.stdout + status.stderr
    for name in ("coordinator", "worker-evm", "worker-solana"):
        assert name in status.stdout
    assert status.stdout.count("yes") == 3

    again = fedrelay("devnet", "up", "--state-dir", str(state_dir), *_ports())
    assert again.returncode == 1
    assert "already up" in again.stderr

    down = fedrelay("devnet", "down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(process_alive(pid) for pid in pids)
    assert not (state_dir / "devnet.json").exists()
    assert not (state_dir / "keys").exists()

    after = fedrelay("devnet", "status", "--state-dir", str(state_dir))
    assert after.returncode == 1
    assert "down" in after.stderr


def test_a_failed_start_shows_the_log_and_leaves_nothing_running(state_dir: Path) -> None:
    missing = str(state_dir.parent / "no-anvil-here")
    up = fedrelay("devnet", "up", "--state-dir", str(state_dir), *_ports(),
                  env={"FEDRELAY_ANVIL": missing})  # fmt: skip
    assert up.returncode == 1
    assert "did not start" in up.stderr
    assert "last lines of" in up.stderr
    assert "anvil not found" in up.stderr
    assert not (state_dir / "supervisor.pid").exists()
    assert not (state_dir / "devnet.json").exists()


def test_a_port_in_use_is_refused_before_anything_starts(state_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        others = ["--worker-port", str(free_port()), "--solana-port", str(free_port())]
        up = fedrelay("devnet", "up", "--state-dir", str(state_dir), "--coordinator-port", port,
                      *others)  # fmt: skip
    assert up.returncode == 1
    assert f"port in use: coordinator (port {port})" in up.stderr
    assert not (state_dir / "supervisor.pid").exists()


def test_a_stale_pid_file_is_reported_and_cleared(state_dir: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    state_dir.mkdir(parents=True)
    (state_dir / "supervisor.pid").write_text(f"{gone.pid}\n")
    status = fedrelay("devnet", "status", "--state-dir", str(state_dir))
    assert status.returncode == 1
    down = fedrelay("devnet", "down", "--state-dir", str(state_dir))
    assert down.returncode == 0
    assert "not running" in down.stdout
    assert f"stale pid file of pid {gone.pid}" in down.stdout
    assert not (state_dir / "supervisor.pid").exists()
