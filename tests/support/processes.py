"""A fedrelay process under test (`fedrelay relayer run`, `fedrelay coordinator run`, ...): its
child, its log and its health port, with the waits the tests need (readiness, metrics, exit)."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from fedrelay.adapters.devnet.process import wait_until


@dataclass(frozen=True)
class Running:
    """A fedrelay process under test: its child, log and health port."""

    process: subprocess.Popen[bytes]
    log: Path
    port: int

    def get(self, path: str) -> httpx.Response | None:
        """GET `path` on the health port; None while nothing answers."""
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=10)
        except httpx.TransportError:
            return None

    def alive(self) -> bool:
        """Whether the child still runs."""
        return self.process.poll() is None

    def wait_ready(self, ready: bool, timeout: float = 60) -> dict[str, dict[str, object]]:
        """Wait until ``/readyz`` answers 200 (`ready`) or 503 (not); returns its checks."""
        want = 200 if ready else 503
        answers: list[httpx.Response] = []

        def answered() -> bool:
            answer = self.get("/readyz")
            if answer is None:
                return False
            answers.append(answer)
            return answer.status_code == want

        try:
            wait_until(answered, timeout, f"/readyz to answer {want}", 0.2, self.alive)
        except (TimeoutError, ChildProcessError) as exc:
            raise AssertionError(f"{exc}\n{self.log.read_text()[-6000:]}") from None
        checks: dict[str, dict[str, object]] = answers[-1].json()["checks"]
        return checks

    def families(self) -> dict[str, set[tuple[tuple[str, str], ...]]]:
        """The metric families ``/metrics`` exports, each with the label sets of its samples."""
        answer = self.get("/metrics")
        assert answer is not None, self.log.read_text()[-6000:]
        assert answer.status_code == 200
        return {
            family.name: {tuple(sorted(sample.labels.items())) for sample in family.samples}
            for family in text_string_to_metric_families(answer.text)
        }

    def wait_stages_running(self, stages: set[str], timeout: float = 60) -> None:
        """Wait until each of `stages` has connected to its bus and reported its DLQ gauge."""

        def running() -> bool:
            labels = self.families().get("fedrelay_dlq_entries", set())
            return stages <= {dict(label).get("stage") for label in labels}

        try:
            wait_until(running, timeout, f"stages {sorted(stages)} to run", 0.2, self.alive)
        except (TimeoutError, ChildProcessError) as exc:
            raise AssertionError(f"{exc}\n{self.log.read_text()[-6000:]}") from None

    def stop(self) -> int:
        """SIGTERM, then wait for the exit (kill after 30 s); the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def stopped_log(self) -> str:
        """Stop the process (:meth:`stop`) and return its whole log."""
        self.stop()
        return self.log.read_text(errors="replace")


def spawn(
    argv: list[str], env: dict[str, str], log: Path, port: int, cwd: Path | None = None
) -> Running:
    """Start `argv` with `env` (in `cwd`), its output (stdout and stderr) into `log`; health on
    `port`."""
    with log.open("wb") as sink:
        child = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=cwd)
    return Running(child, log, port)
