"""`fedrelay bench ...`: benchmarks, each printing one JSON line of figures.

Benchmark implementations live beside the code they measure; this module only registers them.
`make bench` runs every command registered here (see `bench/run`).
"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum
from typing import Annotated, TypeVar, cast, get_args

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


_E = TypeVar("_E", bound=StrEnum)


def _one_of(choices: type[_E], value: str, hint: str) -> _E:
    """``value`` as a member of ``choices``, or the option's error naming them."""
    try:
        return choices(value)
    except ValueError:
        names = ", ".join(c.value for c in choices)
        raise typer.BadParameter(f"{value!r} is not one of {names}", param_hint=hint) from None


@app.command("cost")
def cost(
    workers: Annotated[
        list[int] | None,
        typer.Option("--workers", "-w", min=1, help="Workers per round (repeat; default 32 256)."),
    ] = None,
    rounds: Annotated[
        list[int] | None,
        typer.Option(
            "--rounds", "-r", min=1, help="Rounds at each --workers, in order (default 10 2)."
        ),
    ] = None,
    attestation: Annotated[
        str,
        typer.Option(
            help="v1: 13 guardian signatures per VAA; threshold: version-2 VAAs, one threshold "
            "signature of 13 of 19 shares (what the relayer's guardians produce under "
            "FEDRELAY_ATTESTATION=threshold)."
        ),
    ] = "v1",
    max_batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=32,
            help="Largest TASK_ASSIGNED / ROUND_SETTLED batch per message on both worker chains "
            "(JobMarket's maxBatch; default the devnet's: 16 on EVM, 8 on Solana).",
        ),
    ] = None,
    deliver_batch: Annotated[
        int,
        typer.Option(
            min=1,
            max=256,
            help="VAAs per receiveMessages transaction to the JobMarket and to the WorkerHub "
            "(the relayer's FEDRELAY_DELIVER_BATCH_MAX; default 1, one VAA per transaction).",
        ),
    ] = 1,
    core: Annotated[
        str,
        typer.Option(
            help="messagecore: fedrelay's core on both EVM chains; wormhole: Wormhole's own "
            "Ethereum core (its published bytecode), which takes version-1 VAAs only: with "
            "--attestation threshold the receivers verify through a ThresholdVerifier beside it."
        ),
    ] = "messagecore",
    commit: Annotated[
        str,
        typer.Option(
            help="own: each EVM worker commits with its own commitUpdate transaction; signed: "
            "the workers sign their commitments and one commitSignedAndPublish transaction "
            "per 32 records and publishes them (submitted by one of the workers, as the worker "
            "SDK does)."
        ),
    ] = "own",
    rewards: Annotated[
        str,
        typer.Option(
            help="credit: each rewarded worker's payout address is credited at settlement and "
            "withdraws; distributor: each round's total goes to a RewardDistributor once, and "
            "the workers are paid from one cumulative root in claimBatch transactions of 32."
        ),
    ] = "credit",
) -> None:
    """Gas, compute units, calldata and OP-stack L1 fee per worker-round of whole rounds on
    every chain (13 of 19 guardians), beside the recorded baseline and the goals."""
    from fedrelay.adapters.evm.core import CoreKind
    from fedrelay.bench.cost import Attestation, CommitPath, Design, RewardsPath, run

    chosen = _one_of(Attestation, attestation, "--attestation")
    path = _one_of(CommitPath, commit, "--commit")
    paid = _one_of(RewardsPath, rewards, "--rewards")
    counts = workers or [32, 256]
    numbers = rounds or ([10, 2] if workers is None else [10] * len(counts))
    if len(numbers) != len(counts):
        raise typer.BadParameter(
            f"give one --rounds per --workers ({len(counts)}), got {len(numbers)}",
            param_hint="--rounds",
        )
    kinds = {"messagecore": CoreKind.MESSAGE_CORE, "wormhole": CoreKind.WORMHOLE}
    if core not in kinds:
        raise typer.BadParameter(f"{core!r} is not one of {', '.join(kinds)}", param_hint="--core")
    try:
        design = Design(
            chosen, deliver_batch=deliver_batch, core=kinds[core], commit=path, rewards=paid
        )
    except ValueError as refused:
        raise typer.BadParameter(str(refused), param_hint="--attestation") from None
    if max_batch is not None:
        design = replace(design, evm_max_batch=max_batch, solana_max_batch=max_batch)
    run(counts, numbers, design)


@app.command("aggregate")
def aggregate(
    clients: int = typer.Option(100, help="Number of client updates."),
    parameters: int = typer.Option(1_000_000, help="float32 parameters per update."),
    repeats: int = typer.Option(5, help="Repetitions of each timing; the best is reported."),
    degree: int = typer.Option(14, help="SecAgg+ graph degree; 0 for the complete graph."),
    dropout: float = typer.Option(0.1, help="Fraction of clients dropping before sending input."),
) -> None:
    """FedAvg GB/s next to a numpy reference, and secure aggregation's cost relative to it."""
    from fedrelay.bench.aggregate import run

    run(clients, parameters, repeats, degree or None, dropout)


@app.command("blobs")
def blobs(
    size: int = typer.Option(2048, min=1, help="MiB of the model and of each update."),
    workers: int = typer.Option(8, min=1, max=64, help="Workers, each uploading one update."),
    directory: str = typer.Option("", "--dir", help="Where to write (default: system temp)."),
) -> None:
    """Updates uploaded in chunks over HTTP, hashed and aggregated as streams: coordinator RSS."""
    from fedrelay.bench.blobs import run

    run(size, workers, directory or None)


@app.command("flower")
def flower(
    rounds: int = typer.Option(30, help="Federated rounds per side."),
    target: float = typer.Option(0.9, help="Test accuracy whose first round is reported."),
    flower_site: str = typer.Option(
        "", help="Directory from `pip install --target DIR flwr==1.41.0` (or FEDRELAY_FLOWER_SITE)."
    ),
) -> None:
    """Our FedAvg against Flower's FedAvg on the same digits split, model, seeds and rounds."""
    from fedrelay.bench.flower import run

    run(rounds, target, flower_site or None)


@app.command("relayer")
def relayer(
    messages: int = typer.Option(
        1_000, min=0, help="TASK_ASSIGNED messages to relay to the EVM worker chain (0: skip)."
    ),
    timeout: float = typer.Option(1800.0, min=1, help="Seconds to wait for every delivery."),
    window: int = typer.Option(32, min=1, help="Deliverer window (1: no pipelining)."),
    batch_max: int = typer.Option(
        1, min=1, max=32, help="Most VAAs per delivery transaction (1: no batching)."
    ),
    solana_messages: int = typer.Option(
        200,
        min=0,
        help="TASK_ASSIGNED messages to relay to the Solana worker program, on a devnet with "
        "400 ms slots; its figures are the solana_* keys (0: skip).",
    ),
    layout: str = typer.Option(
        "one-process",
        help="Where the EVM route's stages run: 'processes' (each workload its own fedrelay "
        "process, as the Helm chart deploys them) or 'one-process' (every stage in the "
        "benchmark's process).",
    ),
    attestation: str = typer.Option(
        "guardian",
        help="How the guardians sign: 'guardian' (each its own signature: version-1 VAAs) or "
        "'threshold' (together, one threshold signature: version-2 VAAs).",
    ),
) -> None:
    """Coordinator chain to the EVM and Solana worker chains on Kafka + PostgreSQL: msg/s,
    latency, raw capacity."""
    from fedrelay.bench.relayer import run

    if messages == 0 and solana_messages == 0:
        raise typer.BadParameter(
            "give at least one route messages", param_hint="--messages / --solana-messages"
        )
    from fedrelay.bench.relayer import LAYOUTS

    if layout not in LAYOUTS:
        raise typer.BadParameter(f"one of {', '.join(LAYOUTS)}", param_hint="--layout")
    from fedrelay.bench.relaying import ATTESTATIONS

    if attestation not in ATTESTATIONS:
        raise typer.BadParameter(f"one of {', '.join(ATTESTATIONS)}", param_hint="--attestation")
    run(messages, timeout, window, batch_max, solana_messages, layout, attestation)


@app.command("api-flood")
def api_flood(
    size_mib: int = typer.Option(512, min=1, help="MiB in each body."),
    unsigned: int = typer.Option(8, min=1, max=64, help="Concurrent bodies without credentials."),
    timeout: float = typer.Option(120.0, min=1, help="Seconds for start-up and for the flood."),
) -> None:
    """Unsigned and signed oversized bodies at once (loopback): the API server's peak memory."""
    from fedrelay.bench.api_flood import run

    run(size_mib * 1024 * 1024, unsigned, timeout)


@app.command("detection")
def detection(
    rounds: int = typer.Option(10_000, min=1, help="Challenged rounds simulated per setting."),
    segments: int = typer.Option(8, min=2, help="Transcript segments S (even)."),
    seed: int = typer.Option(0, help="Seed of the random source."),
) -> None:
    """The real challenge draw's catch rate per setting against the formula (99% Wilson CI)."""
    from fedrelay.bench.detection import run

    run(rounds, segments, seed)


@app.command("workloads")
def workloads(
    workload: Annotated[
        list[str] | None,
        typer.Option(
            "--workload", "-w", help="cnn, lm or lora (repeat for several; default: all three)."
        ),
    ] = None,
    workers: int = typer.Option(4, min=1, help="Workers per workload."),
    seed: int = typer.Option(0, min=0, help="Seed of the data split and of training."),
    split: str = typer.Option("", help="cnn's split: dirichlet or iid (default: the workload's)."),
    rounds: int = typer.Option(0, min=0, help="Rounds per workload (0: each workload's own)."),
    flower_site: str = typer.Option(
        "", help="Directory from `pip install --target DIR flwr==1.41.0` (or FEDRELAY_FLOWER_SITE)."
    ),
    no_flower: bool = typer.Option(False, "--no-flower", help="Run fedrelay's side only."),
    seeds: int = typer.Option(5, min=1, help="Seeds of the Flower comparison (from --seed on)."),
    directory: str = typer.Option("", "--dir", help="Where the workers' data is written."),
) -> None:
    """The CNN, language-model and LoRA jobs' rounds: rounds to target, metric, s/round, bytes."""
    from fedrelay.bench.workloads import run
    from fedrelay.demo.workloads import WORKLOAD_NAMES, Split

    unknown = [name for name in workload or [] if name not in WORKLOAD_NAMES]
    if unknown:
        raise typer.BadParameter(
            f"unknown workload {unknown[0]!r}: choose from {', '.join(WORKLOAD_NAMES)}",
            param_hint="--workload",
        )
    splits = get_args(Split)
    if split and split not in splits:
        raise typer.BadParameter(
            f"unknown split {split!r}: choose from {', '.join(splits)}", param_hint="--split"
        )
    names = [n for n in WORKLOAD_NAMES if n in workload] if workload else list(WORKLOAD_NAMES)
    run(
        names,
        workers=workers,
        seed=seed,
        split=cast("Split", split) if split else None,
        rounds=rounds or None,
        flower=None if no_flower else (flower_site or "auto"),
        seeds=seeds,
        directory=directory or None,
    )
