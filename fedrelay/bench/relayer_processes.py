"""The relayer's stages as separate ``fedrelay`` processes, as the Helm chart deploys them.

:func:`stage_processes` starts one process per workload the chart runs, from the benchmark's
settings (passed as ``FEDRELAY_*`` variables) and the deployment's chains file:

- a watcher per chain: ``fedrelay relayer run --stage watch --chain NAME``;
- one guardian per key: ``fedrelay guardian run --guardian-key-file F --guardian-index I``;
- assemble, with the route stage: ``fedrelay relayer run --stage assemble``;
- a deliverer per chain: ``fedrelay relayer run --stage deliver --chain NAME
  --signer-key-file F``.

Each has its own health port; the block starts once every one answers ``/readyz``. It yields a
reader of every process's stage metrics (their ``/metrics``, summed per stage), and ends by
sending each SIGTERM (a stage drains its in-flight batch) and waiting for it to exit. A process
that exits early fails the benchmark with the end of its log.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from fedrelay.adapters.devnet.process import free_ports
from fedrelay.relayer.settings import RelayerSettings

FEDRELAY = Path(sys.executable).parent / "fedrelay"
READY_S = 120.0  # how long every process may take to answer /readyz
STOP_S = 60.0  # how long every process may take to drain and exit after SIGTERM
_LOG_TAIL = 2_000


class StageProcessFailed(RuntimeError):
    """A stage process did not become ready, or exited while the benchmark ran."""


@dataclass(frozen=True)
class StageCommand:
    """One process to start: its name (for its log and errors) and its arguments."""

    name: str
    args: tuple[str, ...]


def settings_env(settings: RelayerSettings) -> dict[str, str]:
    """`settings` as the ``FEDRELAY_*`` variables a stage process reads them from."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        key = f"FEDRELAY_{name.upper()}"
        env[key] = json.dumps(list(value)) if isinstance(value, list | tuple) else str(value)
    return env


def chart_layout(
    chains: Sequence[str],
    guardian_keys: Sequence[Path],
    signer_key: Path,
    threshold_shares: Sequence[Path] = (),
) -> list[StageCommand]:
    """The processes the Helm chart runs for `chains`: watch and deliver per chain, one
    guardian per key (under threshold attestation with its share, `threshold_shares[i]` for
    guardian i), assemble (with route)."""
    if threshold_shares and len(threshold_shares) != len(guardian_keys):
        raise ValueError(
            f"{len(threshold_shares)} threshold shares for {len(guardian_keys)} guardians"
        )
    commands = [
        StageCommand(f"watch-{chain}", ("relayer", "run", "--stage", "watch", "--chain", chain))
        for chain in chains
    ]
    for index, key in enumerate(guardian_keys):
        args = ["guardian", "run", "--guardian-key-file", str(key), "--guardian-index", str(index)]
        if threshold_shares:
            args += ["--threshold-share-file", str(threshold_shares[index])]
        commands.append(StageCommand(f"guardian-{index}", tuple(args)))
    commands.append(StageCommand("assemble", ("relayer", "run", "--stage", "assemble")))
    deliver = ("relayer", "run", "--stage", "deliver", "--signer-key-file", str(signer_key))
    commands += [StageCommand(f"deliver-{chain}", (*deliver, "--chain", chain)) for chain in chains]
    return commands


@dataclass
class _Running:
    command: StageCommand
    port: int
    log: Path
    popen: subprocess.Popen[bytes]

    def failure(self, what: str) -> StageProcessFailed:
        tail = self.log.read_text(errors="replace")[-_LOG_TAIL:] if self.log.exists() else ""
        return StageProcessFailed(
            f"stage process {self.command.name} {what}; its log ends:\n{tail}"
        )


async def _ready(client: httpx.AsyncClient, one: _Running) -> bool:
    if one.popen.poll() is not None:
        raise one.failure(f"exited with {one.popen.returncode} before it was ready")
    try:
        answer = await client.get(f"http://127.0.0.1:{one.port}/readyz")
    except httpx.TransportError:
        return False  # not listening yet
    return answer.status_code == 200


def add_stage_figures(figures: dict[str, dict[str, float]], text: str) -> None:
    """Add one process's stage counters (Prometheus text) to `figures`, per stage."""
    names = {
        "fedrelay_stage_processed": "records",
        "fedrelay_stage_batches": "batches",
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_total") or "stage" not in sample.labels:
                continue
            base = sample.name.removesuffix("_total")
            if base in names:
                key = names[base]
            elif base == "fedrelay_stage_step_seconds":
                key = f"{sample.labels['step']}_s"
            else:
                continue
            stage = figures.setdefault(sample.labels["stage"], {})
            stage[key] = round(stage.get(key, 0.0) + sample.value, 3)


def _spawn(command: StageCommand, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `command` with its output going to `log` (returns at once)."""
    with log.open("wb") as sink:
        return subprocess.Popen(
            [str(FEDRELAY), *command.args], env=env, stdout=sink, stderr=subprocess.STDOUT
        )


@asynccontextmanager
async def stage_processes(
    settings: RelayerSettings,
    chains_yaml: str,
    commands: Sequence[StageCommand],
    directory: Path,
) -> AsyncIterator[Callable[[], Awaitable[dict[str, dict[str, float]]]]]:
    """Run `commands` as ``fedrelay`` processes for the block (see the module docstring).

    Args:
        settings: The relayer's settings, every process's (its health port aside).
        chains_yaml: The chains file's text.
        commands: The processes.
        directory: Where the chains file and each process's log go.

    Yields:
        A reader of the processes' stage figures: per stage, ``records``, ``batches`` and the
        seconds per step (``process_s``, ``handoff_s``), as :func:`~fedrelay.bench.relaying.
        stage_figures` gives them for one process.

    Raises:
        StageProcessFailed: A process did not become ready in time, or exited early.
    """
    chains_file = directory / "chains.yaml"
    chains_file.write_text(chains_yaml)
    base = {
        **os.environ, **settings_env(settings), "FEDRELAY_CHAINS_FILE": str(chains_file),
        "OTEL_TRACES_EXPORTER": "none", "FEDRELAY_LOG_FORMAT": "text",
    }  # fmt: skip
    running: list[_Running] = []
    client = httpx.AsyncClient(timeout=5.0)
    try:
        for command, port in zip(commands, free_ports(len(commands)), strict=True):
            log = directory / f"{command.name}.log"
            env = {**base, "FEDRELAY_HEALTH_PORT": str(port)}
            running.append(_Running(command, port, log, _spawn(command, env, log)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_S
        waiting = list(running)
        while waiting:
            waiting = [one for one in waiting if not await _ready(client, one)]
            if waiting and loop.time() >= deadline:
                raise waiting[0].failure(f"was not ready after {READY_S:.0f} s")
            if waiting:
                await asyncio.sleep(0.2)  # a process has no readiness event to wait on

        async def figures() -> dict[str, dict[str, float]]:
            gathered: dict[str, dict[str, float]] = {}
            for one in running:
                if one.popen.poll() is not None:
                    raise one.failure(f"exited with {one.popen.returncode}")
                answer = await client.get(f"http://127.0.0.1:{one.port}/metrics")
                answer.raise_for_status()
                add_stage_figures(gathered, answer.text)
            return dict(sorted(gathered.items()))

        yield figures
        for one in running:
            if one.popen.poll() is not None:
                raise one.failure(f"exited with {one.popen.returncode} while the benchmark ran")
    finally:
        await client.aclose()
        for one in running:
            if one.popen.poll() is None:
                one.popen.send_signal(signal.SIGTERM)
        for one in running:
            try:
                await asyncio.to_thread(one.popen.wait, STOP_S)
            except subprocess.TimeoutExpired:
                one.popen.kill()
                await asyncio.to_thread(one.popen.wait)
