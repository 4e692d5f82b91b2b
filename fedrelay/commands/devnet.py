"""`fedrelay devnet up|status|down`: three local chains with fedrelay deployed, in the background.

``up`` launches a supervisor (the hidden ``serve`` command) detached from the terminal and
returns once the chains run, the contracts and the program are deployed and linked, and
``devnet.json``, ``chains.yaml`` and the key files are in the state directory
(:mod:`fedrelay.adapters.devnet.network`). ``status`` asks each chain; ``down`` stops the
supervisor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedrelay.adapters.devnet.network import DevnetPorts, DevnetSettings, ports_in_use
from fedrelay.adapters.devnet.process import read_tail, wait_until
from fedrelay.adapters.devnet.state import (
    DevnetError,
    DevnetStateError,
    process_alive,
    read_state,
    remove_state,
)
from fedrelay.adapters.devnet.supervisor import (
    LOG_FILE,
    PID_FILE,
    clear_stale,
    is_supervisor,
    launch,
    probe,
    read_pid,
    running_supervisor,
    serve,
    terminate,
    wait_ready,
)

app = typer.Typer(
    help="Run the local devnet: two anvil chains and a Solana RPC.", no_args_is_help=True
)

_OUT = Console()
_ERR = Console(stderr=True)

StateDir = Annotated[
    Path, typer.Option("--state-dir", help="Where devnet.json, chains.yaml, keys and logs go.")
]
Guardians = Annotated[int, typer.Option(help="Number of devnet guardians (1..19).")]
CoordinatorPort = Annotated[int, typer.Option(help="RPC port of the coordinator chain.")]
WorkerPort = Annotated[int, typer.Option(help="RPC port of the EVM worker chain.")]
SolanaPort = Annotated[int, typer.Option(help="RPC port of the Solana devnet.")]
EvmWorkers = Annotated[int, typer.Option(help="Worker keys to fund on the EVM worker chain.")]
SolanaWorkers = Annotated[int, typer.Option(help="Worker keys to fund on Solana.")]
DEFAULT_STATE_DIR = Path(".fedrelay/devnet")


def _fail(message: str, status: int = 1) -> typer.Exit:
    _ERR.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(status)


def _settings(guardians: int, coordinator: int, worker: int, solana: int) -> DevnetSettings:
    try:
        return DevnetSettings(guardians=guardians, ports=DevnetPorts(coordinator, worker, solana))
    except DevnetError as exc:
        raise _fail(str(exc), 2) from None


@app.command("up")
def up(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    guardians: Guardians = 3,
    coordinator_port: CoordinatorPort = 8545,
    worker_port: WorkerPort = 8546,
    solana_port: SolanaPort = 8899,
    evm_workers: EvmWorkers = 0,
    solana_workers: SolanaWorkers = 0,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the devnet.")] = 300.0,
) -> None:
    """Start the devnet in the background; return when it is deployed and devnet.json written."""
    state_dir = state_dir.resolve()
    settings = _settings(guardians, coordinator_port, worker_port, solana_port)
    if min(evm_workers, solana_workers) < 0:
        raise _fail("worker counts must not be negative", 2)
    holder = running_supervisor(state_dir)
    if holder is not None:
        raise _fail(
            f"the devnet is already up in {state_dir} (supervisor pid {holder}); "
            "`fedrelay devnet down` stops it"
        )
    stale = clear_stale(state_dir)
    if stale is not None:
        _ERR.print(f"removed a stale pid file in {state_dir} (pid {stale} no longer runs)")
    busy = ports_in_use(settings.ports)
    if busy:
        raise _fail(f"port in use: {', '.join(busy)}; stop what holds it or choose other ports")
    arguments = [
        "--state-dir", str(state_dir), "--guardians", str(guardians),
        "--coordinator-port", str(coordinator_port), "--worker-port", str(worker_port),
        "--solana-port", str(solana_port), "--evm-workers", str(evm_workers),
        "--solana-workers", str(solana_workers),
    ]  # fmt: skip
    process = launch(state_dir, arguments)
    try:
        with _OUT.status("starting the devnet") as status:
            info = wait_ready(
                state_dir, process, timeout, lambda step: status.update(f"devnet: {step}")
            )
    except (DevnetError, KeyboardInterrupt) as exc:
        if process.poll() is None:
            terminate(process.pid)
        process.wait()
        log = state_dir / LOG_FILE
        _ERR.print(f"--- last lines of {log} ---\n{read_tail(log)}", highlight=False, markup=False)
        raise _fail(f"the devnet did not start: {exc or 'interrupted'}") from None
    _OUT.print(f"devnet up (supervisor pid {info.supervisor_pid})")
    for chain in info.chains:
        line = f"  {chain.name:<14} {chain.rpc_url:<26} {chain.address}"
        _OUT.print(line, highlight=False, soft_wrap=True)
    _OUT.print(f"state: {state_dir}/devnet.json  chains file: {info.chains_file}", soft_wrap=True)


@app.command("serve", hidden=True)
def serve_command(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    guardians: Guardians = 3,
    coordinator_port: CoordinatorPort = 8545,
    worker_port: WorkerPort = 8546,
    solana_port: SolanaPort = 8899,
    evm_workers: EvmWorkers = 0,
    solana_workers: SolanaWorkers = 0,
) -> None:
    """Hold the devnet in the foreground until SIGTERM (what `up` runs in the background)."""
    settings = _settings(guardians, coordinator_port, worker_port, solana_port)
    raise typer.Exit(serve(state_dir, settings, evm_workers, solana_workers))


@app.command("status")
def status(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Show each chain of the devnet: reachable, height, addresses. Exit 1 when it is down."""
    state_dir = state_dir.resolve()
    holder = running_supervisor(state_dir)
    if holder is None:
        raise _fail(f"the devnet in {state_dir} is down (no running supervisor)")
    try:
        info = read_state(state_dir)
    except DevnetStateError as exc:
        raise _fail(f"the devnet in {state_dir} is not ready: {exc}") from None
    table = Table(title=f"devnet in {state_dir} (supervisor pid {holder})")
    for column in ("chain", "kind", "wormhole id", "reachable", "block/slot"):
        table.add_column(column, no_wrap=True)
    probes = [probe(chain) for chain in info.chains]
    for result in probes:
        chain = result.chain
        state = "[green]yes[/green]" if result.healthy else f"[red]no[/red] {result.error}"
        height = "" if result.height is None else str(result.height)
        table.add_row(chain.name, chain.kind, str(chain.wormhole_chain_id), state, height)
    _OUT.print(table)
    for chain in info.chains:
        core = f"  core {chain.message_core}" if chain.message_core else ""
        _OUT.print(
            f"{chain.name:<14} {chain.rpc_url}  {chain.address}{core}",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    guardians = ", ".join(info.guardian_addresses)
    _OUT.print(f"guardian set {info.guardian_set_index}: {guardians}", soft_wrap=True)
    _OUT.print(f"chains file: {info.chains_file}", soft_wrap=True)
    if not all(result.healthy for result in probes):
        raise typer.Exit(1)


@app.command("down")
def down(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a clean stop.")] = 30.0,
) -> None:
    """Stop the devnet and check nothing of it is left running (idempotent)."""
    state_dir = state_dir.resolve()
    pid = read_pid(state_dir)
    if pid is None or not is_supervisor(pid):
        stale = clear_stale(state_dir)
        note = f" (removed a stale pid file of pid {stale})" if stale is not None else ""
        _OUT.print(f"the devnet in {state_dir} is not running{note}")
        return
    try:
        chain_pids = [p for p in read_state(state_dir).pids if p != pid]
    except DevnetStateError:
        chain_pids = []
    terminate(pid, timeout)
    try:
        wait_until(
            lambda: not any(process_alive(p) for p in chain_pids), 15.0, "the chains to stop", 0.1
        )
    except TimeoutError:
        left = [p for p in chain_pids if process_alive(p)]
        raise _fail(f"processes of the devnet are still running: {left}") from None
    (state_dir / PID_FILE).unlink(missing_ok=True)
    remove_state(state_dir)
    _OUT.print(f"devnet stopped (pids {', '.join(str(p) for p in [pid, *chain_pids])} are gone)")
