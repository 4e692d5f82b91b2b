"""The service harness: clear start failures, restarts, and nothing left running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fedrelay.adapters.devnet.process import ServiceStartError, wait_until
from fedrelay.adapters.devnet.services import Anvil, Postgres

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    """True when `pid` no longer runs (absent, or a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in {"Z", "X"}


def test_start_failure_raises_with_log_tail() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        chain = Anvil(chain_id=31399, port=port, start_timeout=20)
        with pytest.raises(ServiceStartError) as caught:
            chain.start()
        chain.close()
    message = str(caught.value)
    assert "anvil failed to start" in message
    assert "last lines of" in message
    assert "in use" in caught.value.log_tail.lower()


def test_postgres_restart_keeps_data() -> None:
    with Postgres() as cluster:
        cluster.psql("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42);")
        old_pid = cluster.pid
        cluster.stop()
        assert not cluster.running
        cluster.start()
        assert cluster.pid != old_pid
        assert cluster.psql("SELECT v FROM kept").strip() == "42"


def test_crashed_service_comes_back_on_same_port() -> None:
    with Anvil(chain_id=31398) as chain:
        port = chain.port
        chain.kill()
        assert not chain.running
        chain.start()
        assert chain.port == port
        assert int(chain.rpc("eth_chainId"), 16) == 31398


_CHILD = textwrap.dedent(
    """
    import sys, time
    from fedrelay.adapters.devnet.services import Anvil
    chain = Anvil(chain_id=31397).start()
    print(chain.pid, flush=True)
    while True:
        time.sleep(1)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGHUP])
def test_nothing_left_running_when_harness_is_interrupted(sig: int) -> None:
    harness = subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert harness.stdout is not None
        line = harness.stdout.readline()
        assert line.strip().isdigit(), f"harness did not report a pid (got {line!r})"
        anvil_pid = int(line)
        assert not _gone(anvil_pid)
        harness.send_signal(sig)
        harness.wait(timeout=30)
        wait_until(lambda: _gone(anvil_pid), timeout=20, what=f"anvil pid {anvil_pid} to exit")
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.wait()
