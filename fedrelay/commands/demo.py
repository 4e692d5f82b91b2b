"""`fedrelay demo`: a training job across three chains with honest workers and one cheat.

Everything runs on embedded defaults (SQLite ledgers, the in-process bus) in this process and
its anvil children, or on Kafka (``--kafka``) and PostgreSQL (``--database-url``); see
:mod:`fedrelay.demo`. The report goes into ``--out`` (``summary.json``
and ``summary.md``); the exit status is 1 when an acceptance condition failed, 2 when the demo
could not run.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from fedrelay.demo import DemoResult

# The demo (torch, web3, the devnet) loads inside the command, so `fedrelay --help` starts fast.

_CONSOLE = Console(stderr=True)


def _now() -> str:
    return time.strftime("[%H:%M:%S]")


class _RichDemoProgress:
    """One live status line (step or round) and events printed above it."""

    def __init__(self, progress: Progress, rounds: int) -> None:
        self._progress = progress
        self._task = progress.add_task("starting", total=None)
        self._rounds = rounds

    def step(self, text: str) -> None:
        """Show the step on the status line and log it."""
        self._progress.update(self._task, description=text)
        self._progress.console.print(f"{_now()} [bold cyan]{text}[/]")

    def note(self, text: str) -> None:
        """Log the event."""
        self._progress.console.print(f"{_now()} {text}", highlight=False)

    def round(self, state: object, accuracy: float | None) -> None:
        """Show the job's round and phase on the status line."""
        from fedrelay.protocol.rounds import RoundState

        if not isinstance(state, RoundState):
            return
        shown = "-" if accuracy is None else f"{accuracy:.4f}"
        self._progress.update(
            self._task,
            description=(
                f"job {state.job_id}: round {min(state.round + 1, self._rounds)}/{self._rounds} "
                f"{state.phase.value}, last accuracy {shown}"
            ),
        )


def _render(result: DemoResult, summary: Path) -> None:
    from fedrelay.adapters.devnet.state import WORKER_EVM

    console = Console(width=max(Console().width, 120))
    rounds = Table(title=f"job {result.job_id} ({result.workload}): test {result.metric} per round")
    rounds.add_column("round", justify="right")
    rounds.add_column(result.metric, justify="right")
    for number, accuracy in enumerate(result.accuracy_per_round):
        rounds.add_row(str(number), f"{accuracy:.4f}")
    console.print(rounds)
    workers = Table(title="workers (rewards in ETH; stake taken in ETH or SOL)")
    for column in ("worker", "chain", "cheat", "accepted", "slashed in", "reward", "claimable",
                   "stake taken"):  # fmt: skip
        workers.add_column(column, no_wrap=True)
    for w in result.workers:
        unit = 10**18 if w.chain == WORKER_EVM else 10**9
        workers.add_row(
            w.name, w.chain.removeprefix("worker-"), w.dishonest or "-", f"{w.accepted}/{w.tasks}",
            ",".join(map(str, w.slashed_rounds)) or "-", f"{w.reward / 10**18:.4f}",
            f"{w.claimable / 10**18:.4f}", f"{w.slashed_on_chain / unit:g}",
        )  # fmt: skip
    console.print(workers)
    routes = Table(title="messages relayed per route")
    routes.add_column("route")
    routes.add_column("deliveries")
    for route, counts in result.messages_per_route.items():
        routes.add_row(route, ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    console.print(routes)
    costs = result.costs
    if costs.gas or costs.compute_units:
        spent = Table(title="gas and compute units spent (since the devnet started)")
        for column in ("chain", "sender role", "transactions", "spent", "fees"):
            spent.add_column(column, no_wrap=True)
        for name, gas in costs.gas.items():
            for role, s in (("all", gas.total), *sorted(gas.by_role.items())):
                spent.add_row(
                    name,
                    role,
                    str(s.transactions),
                    f"{s.units:,} gas",
                    f"{s.fees / 10**18:.6f} ETH",
                )
        for name, compute in costs.compute_units.items():
            for role, s in (("all", compute.total), *sorted(compute.by_role.items())):
                spent.add_row(
                    name, role, str(s.transactions), f"{s.units:,} CU", f"{s.fees / 10**9:.6f} SOL"
                )
        console.print(spent)
    if result.detections:
        caught = Table(title="detections (every task the coordinator slashed)")
        for column in ("worker", "chain", "cheat", "round", "reason"):
            caught.add_column(column)
        for d in result.detections:
            caught.add_row(
                d.worker, d.chain.removeprefix("worker-"), d.dishonest or "-", str(d.round),
                d.reason,
            )  # fmt: skip
        console.print(caught)
    for cheat in result.cheats:
        console.print(
            f"dishonest {cheat.name} ({cheat.chain}, {cheat.dishonest}): "
            f"{cheat.reason or 'not caught'}",
            highlight=False,
        )
    console.print(
        f"data: {result.settings.mode}; secure aggregation "
        f"{'on' if result.settings.secure_aggregation else 'off'}; "
        f"{result.settings.attestation} attestation",
        highlight=False,
    )
    if result.privacy_cost:
        shown = ", ".join(f"{n} {c:.3f}" for n, c in result.privacy_cost.items())
        console.print(
            f"privacy cost (expected fraction of a worker's examples revealed per round): {shown}",
            highlight=False,
        )
    console.print(
        f"final {result.metric} [bold]{result.final_accuracy:.4f}[/], wall time "
        f"{result.wall_time_s:.0f} s; report in {summary}"
    )


def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the report.")] = Path(
        ".fedrelay/demo"
    ),
    rounds: Annotated[
        int | None,
        typer.Option(
            "--rounds", min=1, help="Rounds of the job (default: 10, or the workload's rounds)."
        ),
    ] = None,
    evm_workers: Annotated[int, typer.Option("--evm-workers", min=2)] = 3,
    solana_workers: Annotated[int, typer.Option("--solana-workers", min=2)] = 3,
    dishonest: Annotated[
        str | None,
        typer.Option(
            "--dishonest",
            help="What the cheat does: update or transcript (default: transcript; update "
            "with --workload; skip or otherdata with --private-data; sum with "
            "--secure-aggregation).",
        ),
    ] = None,
    dishonest_chain: Annotated[
        str, typer.Option("--dishonest-chain", help="The cheat's chain: evm or solana.")
    ] = "evm",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Local steps per task.")] = 40,
    min_accuracy: Annotated[float, typer.Option("--min-accuracy")] = 0.90,
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", help="Devnet, ledgers and blobs (default: a temporary one)."),
    ] = None,
    kafka: Annotated[
        str | None,
        typer.Option(
            "--kafka",
            metavar="BOOTSTRAP",
            help="Run the relayer on this Kafka (host:port) instead of the in-process bus.",
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            metavar="URL",
            envvar="FEDRELAY_DEMO_DATABASE_URL",
            help="Keep both ledgers in this empty database (postgresql+asyncpg://...) instead "
            "of SQLite files.",
        ),
    ] = None,
    restart_coordinator_in_round: Annotated[
        int | None,
        typer.Option(
            "--restart-coordinator-in-round",
            min=0,
            help="Stop the coordinator in the middle of this round and start it again.",
        ),
    ] = None,
    workload: Annotated[
        str | None,
        typer.Option(
            "--workload",
            metavar="cnn|lm|lora",
            help="Run a workload on data each worker owns instead of the digits job: cnn "
            "(PNG digits), lm (a transformer on pydoc_data text) or lora (adapters on one).",
        ),
    ] = None,
    private_data: Annotated[
        bool,
        typer.Option(
            "--private-data",
            help="Train the digits on data each worker owns (a Parquet file in its own "
            "folder); a challenged worker opens the replayed segment's examples. Cheats: "
            "skip (default), otherdata, transcript, update.",
        ),
    ] = False,
    secure_aggregation: Annotated[
        bool,
        typer.Option(
            "--secure-aggregation",
            help="Mask every update (only the sum is seen). Cheats: transcript (default), sum.",
        ),
    ] = False,
    attestation: Annotated[
        str,
        typer.Option(
            "--attestation",
            help="How the guardians sign VAAs: threshold (one threshold signature, version 2) "
            "or guardian (a quorum of guardian signatures, version 1).",
        ),
    ] = "threshold",
    rewards: Annotated[
        str,
        typer.Option(
            "--rewards",
            help="How the workers are paid: distributor (each round's total to a "
            "RewardDistributor, cumulative roots, one claim per worker at the end) or credit "
            "(each worker's payout credited in JobMarket at settlement).",
        ),
    ] = "distributor",
) -> None:
    """Run a job on digits (or a workload) across three chains; write summary.json; fail if a
    check fails."""
    from fedrelay.commands.logs import configure_command_logging
    from fedrelay.demo import DemoBackends, DemoError, DemoSettings, run_demo, write_summary

    configure_command_logging(logging.WARNING)
    try:
        if rounds is None:
            rounds = 10 if workload is None else _workload_rounds(workload)
        cheat = dishonest or _default_cheat(workload, private_data, secure_aggregation)
        settings = DemoSettings(
            rounds=rounds,
            evm_workers=evm_workers,
            solana_workers=solana_workers,
            dishonest=cheat,  # type: ignore[arg-type]  # checked by DemoSettings
            dishonest_chain=dishonest_chain,  # type: ignore[arg-type]
            steps=steps,
            checkpoint_every=_checkpoint_every(steps, private_data),
            min_accuracy=min_accuracy,
            restart_coordinator_in_round=restart_coordinator_in_round,
            workload=workload,
            private_data=private_data,
            secure_aggregation=secure_aggregation,
            attestation=attestation,  # type: ignore[arg-type]  # checked by DemoSettings
            rewards=rewards,  # type: ignore[arg-type]  # checked by DemoSettings
        )
    except DemoError as exc:
        _CONSOLE.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    work = state_dir or Path(tempfile.mkdtemp(prefix="fedrelay-demo-"))
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=_CONSOLE,
        ) as progress:
            result = run_demo(
                settings,
                work,
                _RichDemoProgress(progress, rounds),
                DemoBackends(kafka_bootstrap=kafka, database_url=database_url),
            )
    except DemoError as exc:
        _CONSOLE.print(f"[red]demo failed:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        if state_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    summary = write_summary(result, out)
    _render(result, summary)
    problems = result.problems()
    if problems:
        for problem in problems:
            _CONSOLE.print(f"[red]acceptance failed:[/red] {problem}", highlight=False)
        raise typer.Exit(1)
    _CONSOLE.print("[green]every acceptance condition holds[/green]")


def _default_cheat(workload: str | None, private_data: bool, secure_aggregation: bool) -> str:
    """The cheat of a run that names none: the first its kind of job catches."""
    from fedrelay.demo.settings import CHEATS_BY_MODE

    if workload is not None:
        return CHEATS_BY_MODE["workload"][0]
    if private_data:
        return CHEATS_BY_MODE["private"][0]
    return CHEATS_BY_MODE["secure" if secure_aggregation else "digits"][0]


def _checkpoint_every(steps: int, private_data: bool) -> int:
    """Two segments a task; on private data segments of 4 steps (when they divide ``steps``),
    so that one replayed segment opens only part of a worker's examples."""
    if private_data and steps % 4 == 0 and steps > 4:
        return 4
    return steps // 2 if steps % 2 == 0 else steps


def _workload_rounds(name: str) -> int:
    """The rounds the workload's target needs (DemoSettings refuses an unknown name)."""
    from fedrelay.demo.workloads import workload

    try:
        return workload(name).target.rounds
    except ValueError:
        return 10
