"""`fedrelay bench ...`: benchmarks, each printing one JSON line of figures.

Benchmark implementations live beside the code they measure; this module only registers them.
`make bench` runs every command registered here (see `bench/run`).
"""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Run a benchmark and print its figures as one JSON line.", no_args_is_help=True
)


@app.command("services")
def services() -> None:
    """Start and stop each real service of the harness; print start-up seconds per service."""
    from fedrelay.bench.services import run

    run()


@app.command("vaa")
def vaa() -> None:
    """Parse + verify throughput of VAAs (per second) with 1 signature and with 13 of 19."""
    from fedrelay.bench.vaa import run

    run()


@app.command("solana")
def solana() -> None:
    """Compute units of the Solana worker program's instructions on the LiteSVM devnet."""
    from fedrelay.bench.solana import run

    run()


@app.command("gas")
def gas() -> None:
    """Deploy the contracts on anvil; print gas per operation (publish, verify, receive, ...)."""
    from fedrelay.bench.gas import run

    run()
