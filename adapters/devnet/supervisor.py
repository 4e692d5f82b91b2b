"""The devnet as a background process: a supervisor that holds the chains until SIGTERM.

``fedrelay devnet up`` launches the supervisor detached (its own session, its own log file),
then waits until the supervisor has written ``devnet.json``. The supervisor holds the anvils
(children that die with it) and the Solana RPC (a thread of its own), and exits on SIGTERM or
when a chain dies, removing its pid file and the state files on the way out.

Files in the state directory besides those of :mod:`fedrelay.adapters.devnet.state`:
``supervisor.pid`` (the supervisor's pid, created exclusively), ``supervisor.log`` (its output,
started afresh by each launch) and ``progress`` (the step it is at).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import traceback
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from fedrelay.adapters.devnet.network import Devnet, DevnetSettings
from fedrelay.adapters.devnet.process import wait_until
from fedrelay.adapters.devnet.state import (
    ChainInfo,
    DevnetError,
    DevnetInfo,
    DevnetStateError,
    process_alive,
    read_state,
    remove_state,
    write_atomically,
)

PID_FILE = "supervisor.pid"
LOG_FILE = "supervisor.log"
PROGRESS_FILE = "progress"
_HEALTH_INTERVAL = 1.0


class DevnetAlreadyUp(DevnetError):
    """A live supervisor already holds this state directory."""


# ---- processes ------------------------------------------------------------------------------


def _command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_supervisor(pid: int) -> bool:
    """Whether `pid` is a live devnet supervisor (not some process that reused the pid)."""
    argv = _command_line(pid)
    return process_alive(pid) and "devnet" in argv and "serve" in argv


def read_pid(state_dir: Path) -> int | None:
    """The pid in the supervisor's pid file, or None when there is none (or it is unreadable)."""
    try:
        return int((state_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def running_supervisor(state_dir: Path) -> int | None:
    """The pid of the live supervisor of `state_dir`, if there is one."""
    pid = read_pid(state_dir)
    return pid if pid is not None and is_supervisor(pid) else None


def clear_stale(state_dir: Path) -> int | None:
    """Remove a pid file whose supervisor is gone, and the state it left; return that pid."""
    pid = read_pid(state_dir)
    if (state_dir / PID_FILE).exists() and (pid is None or not is_supervisor(pid)):
        (state_dir / PID_FILE).unlink(missing_ok=True)
        remove_state(state_dir)
        return pid if pid is not None else -1
    return None


# ---- the supervisor itself ------------------------------------------------------------------


def _log(message: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"{stamp} {message}", flush=True)


def _claim_pid_file(state_dir: Path) -> None:
    path = state_dir / PID_FILE
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        holder = read_pid(state_dir)
        if holder is not None and is_supervisor(holder) and holder != os.getpid():
            raise DevnetAlreadyUp(f"a devnet is already up in {state_dir} (pid {holder})") from None
        path.unlink(missing_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"{os.getpid()}\n")


def serve(state_dir: Path, settings: DevnetSettings, evm_workers: int, solana_workers: int) -> int:
    """Run the devnet until SIGTERM or SIGINT; the body of ``fedrelay devnet serve``.

    Returns:
        The exit status: 0 after a requested stop, 1 when start-up failed or a chain died.
    """
    state_dir = state_dir.resolve()
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        _log(f"received {signal.Signals(signum).name}; stopping")
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        _claim_pid_file(state_dir)
    except DevnetAlreadyUp as exc:
        _log(f"error: {exc}")
        return 1

    def progress(step: str) -> None:
        _log(step)
        write_atomically(state_dir / PROGRESS_FILE, step + "\n")

    devnet = Devnet(state_dir, settings, progress)
    try:
        devnet.start(os.getpid())
        if evm_workers or solana_workers:
            progress(f"funding {evm_workers} EVM and {solana_workers} Solana workers")
            devnet.fund_workers(evm_workers, solana_workers)
        progress("ready")
        while not stop.wait(_HEALTH_INTERVAL):
            anvils = (devnet.coordinator, devnet.worker_evm)
            if any(anvil is None or not anvil.running for anvil in anvils):
                _log("error: an anvil chain exited; stopping the devnet")
                return 1
        return 0
    except Exception as exc:  # start-up failed: say why in the log, exit non-zero
        _log(f"error: {exc}")
        _log(traceback.format_exc(limit=8))
        return 1
    finally:
        devnet.close()
        (state_dir / PROGRESS_FILE).unlink(missing_ok=True)
        if read_pid(state_dir) == os.getpid():
            (state_dir / PID_FILE).unlink(missing_ok=True)
        _log("stopped")


def launch(state_dir: Path, arguments: list[str]) -> subprocess.Popen[bytes]:
    """Start ``fedrelay devnet serve`` detached, its output going to a fresh log file.

    Args:
        state_dir: The devnet's state directory (created with mode 0700).
        arguments: The options after ``devnet serve``.
    """
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (state_dir / PROGRESS_FILE).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "fedrelay.cli", "devnet", "serve", *arguments]
    with (state_dir / LOG_FILE).open("wb") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the terminal and the `up` command
        )


def wait_ready(
    state_dir: Path,
    process: subprocess.Popen[bytes],
    timeout: float,
    on_progress: Callable[[str], None],
) -> DevnetInfo:
    """Wait until the launched supervisor has written ``devnet.json``.

    Raises:
        DevnetError: The supervisor exited first, or `timeout` seconds passed.
    """
    seen = ""
    found: list[DevnetInfo] = []

    def ready() -> bool:
        nonlocal seen
        try:
            step = (state_dir / PROGRESS_FILE).read_text().strip()
        except OSError:
            step = ""
        if step and step != seen:
            seen = step
            on_progress(step)
        if step != "ready":
            return False
        with contextlib.suppress(DevnetStateError):
            info = read_state(state_dir)
            if info.supervisor_pid == process.pid:
                found.append(info)
                return True
        return False

    try:
        wait_until(ready, timeout, "the devnet", interval=0.1, alive=lambda: process.poll() is None)
    except ChildProcessError:
        raise DevnetError(
            f"the devnet supervisor exited with status {process.wait()} while starting"
        ) from None
    except TimeoutError as exc:
        raise DevnetError(str(exc)) from None
    return found[0]


def terminate(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM `pid` and wait for it to go; SIGKILL it if it is still there after `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        wait_until(lambda: not process_alive(pid), timeout, f"process {pid} to exit", 0.1)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not process_alive(pid), 10.0, f"process {pid} to die", 0.1)


# ---- probing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainProbe:
    """What a chain's RPC answered.

    Attributes:
        chain: The chain as ``devnet.json`` describes it.
        reachable: The RPC answered.
        height: The block number (EVM) or slot (Solana) when reachable.
        deployed: The fedrelay contract has code, or the program account is executable.
        error: Why it is not reachable or not deployed.
    """

    chain: ChainInfo
    reachable: bool
    height: int | None = None
    deployed: bool = False
    error: str = ""

    @property
    def healthy(self) -> bool:
        """Reachable with fedrelay deployed."""
        return self.reachable and self.deployed


def _rpc(url: str, method: str, params: list[Any]) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(  # noqa: S310 - a devnet URL from devnet.json
        url, data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=3) as response:  # noqa: S310
        reply = json.loads(response.read())
    if "error" in reply:
        raise DevnetError(f"{method}: {reply['error']}")
    return reply["result"]


def probe(chain: ChainInfo) -> ChainProbe:
    """Ask a chain for its height and whether fedrelay is deployed there."""
    try:
        if chain.kind == "evm":
            height = int(_rpc(chain.rpc_url, "eth_blockNumber", []), 16)
            code = str(_rpc(chain.rpc_url, "eth_getCode", [chain.address, "latest"]))
            deployed = code not in ("0x", "")
        else:
            height = int(_rpc(chain.rpc_url, "getSlot", []))
            account = _rpc(chain.rpc_url, "getAccountInfo", [chain.address, {"encoding": "base64"}])
            deployed = bool(account["value"] and account["value"]["executable"])
    except (OSError, ValueError, DevnetError) as exc:
        return ChainProbe(chain, reachable=False, error=str(exc))
    return ChainProbe(chain, True, height, deployed, "" if deployed else "nothing deployed")
