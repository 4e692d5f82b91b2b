"""Child processes that never outlive the harness that started them.

Every service is started through `ManagedProcess`, which
- writes the child's output to a log file and quotes its tail when the child fails to start;
- asks the kernel to SIGKILL the child if this Python process dies without cleaning up
  (``PR_SET_PDEATHSIG``), so even ``kill -9`` of a test run leaves nothing behind;
- registers the child so that normal exit, SIGTERM and SIGHUP stop it cleanly.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

_PR_SET_PDEATHSIG = 1
_LOG_TAIL_LINES = 40


class ServiceStartError(RuntimeError):
    """A service did not become ready; the message carries the tail of its log."""

    def __init__(self, service: str, reason: str, log_path: Path | None) -> None:
        tail = read_tail(log_path) if log_path else ""
        message = f"{service} failed to start: {reason}"
        if tail:
            message += f"\n--- last lines of {log_path} ---\n{tail}"
        super().__init__(message)
        self.service = service
        self.reason = reason
        self.log_tail = tail


def read_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on right now (all bound at
    once while they are picked, so no two are the same)."""
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.05,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll `condition` until it holds; raise TimeoutError naming `what` after `timeout` s.

    `alive`, when given, is checked too, so a crashed child is reported at once instead of
    after the whole timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if alive is not None and not alive():
            raise ChildProcessError(f"process exited while waiting for {what}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. PDEATHSIG survives exec (unless the binary is
    # setuid), so the service is killed by the kernel if the harness dies abruptly.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ManagedProcess:
    """One long-running child process with a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not the child
                preexec_fn=_die_with_parent,  # sets PDEATHSIG in the child
            )
        except OSError as exc:
            raise ServiceStartError(
                self.name, f"cannot execute {self.argv[0]}: {exc}", None
            ) from exc
        finally:
            log.close()
        _REGISTRY.add(self)

    def signal(self, sig: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; waits for the exit."""
        proc = self._proc
        _REGISTRY.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL without a chance to clean up (for fault tests)."""
        proc = self._proc
        _REGISTRY.discard(self)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        self._proc = None


class _Registry:
    """Running children of this process, stopped at exit and on SIGTERM/SIGHUP."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: list[ManagedProcess] = []
        self._hooks_installed = False

    def add(self, proc: ManagedProcess) -> None:
        with self._lock:
            if proc not in self._procs:
                self._procs.append(proc)
            if not self._hooks_installed:
                self._install_hooks()
                self._hooks_installed = True

    def discard(self, proc: ManagedProcess) -> None:
        with self._lock:
            if proc in self._procs:
                self._procs.remove(proc)

    def stop_all(self) -> None:
        with self._lock:
            procs = list(reversed(self._procs))
        for proc in procs:  # newest first: dependants before what they depend on
            try:
                proc.stop(timeout=10)
            except Exception:  # keep stopping the others
                proc.kill()

    def _install_hooks(self) -> None:
        atexit.register(self.stop_all)
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous = signal.getsignal(sig)
            signal.signal(sig, self._make_handler(sig, previous))

    def _make_handler(
        self, sig: int, previous: Callable[[int, FrameType | None], object] | int | None
    ) -> Callable[[int, FrameType | None], None]:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop_all()
            if callable(previous):
                previous(signum, frame)
                return
            # Default action: die by the same signal so the exit status tells the truth.
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)

        return handler


_REGISTRY = _Registry()


def stop_all_services() -> None:
    """Stop every child the harness started in this process."""
    _REGISTRY.stop_all()
