"""`fedrelay worker`: run a worker, and manage its stake and rewards.

`run` stakes, registers and works on a chain's assignments until stopped. SIGINT or SIGTERM stops
the worker at the next safe point (an unfinished training run is dropped, an upload or commitment
in flight completes); a restart with the same state file resumes.

`stake`, `unstake` and `withdraw-stake` read and move the stake on the worker's own chain;
`rewards` reads and withdraws what the payout address earned on the coordinator chain;
`dispute` disputes a slash of the worker from that payout address (the coordinator must answer
with the slash's evidence in time, or the slash is reversed when the round settles);
`check-proposal` checks a round's pending proposal against the market's rules and, given a key,
voids one that breaks a rule; `watch-proposals` does that for every proposal of a market as it is
made, until stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from fedrelay.commands.extras import requires
from fedrelay.protocol.redact import redact_text, remember

if TYPE_CHECKING:
    from fedrelay.training.trust import TrustPolicy
    from fedrelay.worker.process import WorkerConnection
    from fedrelay.worker.sdk import StakeStatus

app = typer.Typer(
    help="Run a worker that trains fedrelay jobs; manage its stake and rewards.",
    no_args_is_help=True,
)

_ERRORS = Console(stderr=True)
_T = TypeVar("_T")
_WEI_PER_ETH = Decimal(10**18)


class ChainKind(StrEnum):
    """Which kind of worker chain."""

    EVM = "evm"
    SOLANA = "solana"


class DeviceChoice(StrEnum):
    """Where to train."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


# Options shared by the commands that act on the worker's own chain.
ChainOption = Annotated[ChainKind, typer.Option(help="The worker's chain.")]
KeyFileOption = Annotated[
    Path,
    typer.Option(help="The worker's key: 64 hex characters (evm) or a solana-keygen JSON file."),
]
RpcUrlOption = Annotated[str, typer.Option(help="The worker chain's JSON-RPC endpoint.")]
HubAddressOption = Annotated[str | None, typer.Option(help="WorkerHub address (evm).")]
ProgramIdOption = Annotated[str | None, typer.Option(help="Worker program id (solana).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
# Which model bundles (the poster's code) this machine runs; docs/learning.md, "Custom models
# and trust". The coordinator's `run` takes the same options.
TrustModelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--trust-model",
        envvar="FEDRELAY_TRUST_MODELS",
        help="Run the model bundle with this hash (repeat; the variable: comma-separated). "
        "Loading a bundle runs the job poster's Python code on this machine.",
    ),
]
TrustSignerOption = Annotated[
    list[str] | None,
    typer.Option(
        "--trust-signer",
        envvar="FEDRELAY_TRUST_SIGNERS",
        help="Run every model bundle this key signed: an Ethereum address or secp256k1 public "
        "key (repeat; the variable: comma-separated).",
    ),
]
TrustFileOption = Annotated[
    Path | None,
    typer.Option(
        "--trust-file",
        envvar="FEDRELAY_TRUST_FILE",
        help="Trusted bundles, one per line: a hash, or 'signer KEY'; '#' starts a comment.",
    ),
]


def _fail(message: str) -> typer.Exit:
    _ERRORS.print(f"[red]error:[/red] {redact_text(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _guarded(work: Coroutine[Any, Any, _T]) -> _T:
    """Run ``work``; the errors a user can act on end the command with one line and exit 2.

    A package of the worker's extra that is not installed is named with the extra to install.
    """
    with requires("worker"):
        try:
            from fedrelay.worker.process import USER_ERRORS
        except ModuleNotFoundError:
            work.close()  # never started: close it so that it is not reported as never awaited
            raise
        try:
            return asyncio.run(work)
        except USER_ERRORS as exc:
            raise _fail(str(exc)) from None


def _connected(
    kind: ChainKind,
    key_file: Path,
    rpc_url: str,
    hub_address: str | None,
    program_id: str | None,
    wormhole_chain: int | None = None,
) -> AbstractAsyncContextManager[WorkerConnection]:
    """Load the worker's key and connect to its chain (closing the connection afterwards).

    Raises:
        ValueError: The chain's contract (--hub-address or --program-id) is missing or malformed.
        KeyFileError: The key file is missing, unreadable or holds no key of that kind.
        ChainUnavailable: The RPC endpoint does not answer.
    """
    from fedrelay.worker.process import WorkerChainTarget, open_worker_chain

    remember(rpc_url)  # its key is masked in every message of this process
    target = WorkerChainTarget(rpc_url, hub_address, program_id, wormhole_chain)
    return open_worker_chain(kind.value, target, key_file)


def trust_policy(
    models: list[str] | None, signers: list[str] | None, trust_file: Path | None
) -> TrustPolicy:
    """The model bundles this machine runs, from the trust options (commas split values).

    Raises:
        typer.Exit: A value is not a hash or a key, or the trust file is unreadable or malformed.
    """
    from fedrelay.training.trust import TrustFileError, TrustPolicy, split_entries

    try:
        return TrustPolicy.of(
            split_entries(models or ()),
            split_entries(signers or ()),
            [trust_file] if trust_file is not None else [],
        )
    except TrustFileError as exc:
        raise _fail(str(exc)) from None


# --- run ---------------------------------------------------------------------------------------


@app.command("run")
def run(
    chain: ChainOption,
    key_file: KeyFileOption,
    coordinator_url: Annotated[str, typer.Option(help="The coordinator API's base URL.")],
    rpc_url: RpcUrlOption,
    hub_address: HubAddressOption = None,
    program_id: ProgramIdOption = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="The worker's own data, for jobs that train on it: a .npz/.csv/.parquet file "
            "or folder, an image folder (one subfolder per class) or .txt corpus, checked "
            "against the job's schema. Jobs on published data train the shard their task "
            "names, whatever this is.",
        ),
    ] = None,
    device: Annotated[DeviceChoice, typer.Option(help="Where to train.")] = DeviceChoice.AUTO,
    state_file: Annotated[
        Path | None, typer.Option(help="Local state (default: ./fedrelay-worker-<key>.json).")
    ] = None,
    stake: Annotated[
        int, typer.Option(help="Stake to hold, in wei or lamports (0: do not stake).")
    ] = 0,
    payout: Annotated[
        str | None, typer.Option(help="Payout address on the coordinator chain (hex).")
    ] = None,
    wormhole_chain: Annotated[
        int | None, typer.Option(help="The worker chain's Wormhole id (evm; default 4).")
    ] = None,
    poll_interval: Annotated[float, typer.Option(help="Seconds between passes.")] = 2.0,
    publish_after: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Seconds a commitment waits on its chain for others of its round before this "
            "worker publishes them together (plus up to as much again, its own turn).",
        ),
    ] = 2.0,
    offer_commitments: Annotated[
        bool,
        typer.Option(
            help="On an EVM worker chain, sign each commitment and offer it through the "
            "coordinator so that one transaction records the round's (the worker records its "
            "own if nobody has); --no-offer-commitments: commit with a transaction of its own.",
        ),
    ] = True,
    coordinator_chain: Annotated[
        int,
        typer.Option(
            min=1,
            max=0xFFFF,
            help="The coordinator chain's Wormhole id: the worker's spans join each round's "
            "trace under it.",
        ),
    ] = 2,
    trust_model: TrustModelOption = None,
    trust_signer: TrustSignerOption = None,
    trust_file: TrustFileOption = None,
    watch_proposals: Annotated[
        bool,
        typer.Option(
            "--watch-proposals",
            help="Also check every round proposal of the coordinator chain's JobMarket inside "
            "its challenge window, as `fedrelay worker watch-proposals` does (needs "
            "--coordinator-rpc-url and --job-market).",
        ),
    ] = False,
    coordinator_rpc_url: Annotated[
        str | None,
        typer.Option(
            envvar="FEDRELAY_COORDINATOR_RPC_URL",
            help="With --watch-proposals: the coordinator chain's JSON-RPC endpoint.",
        ),
    ] = None,
    job_market: Annotated[
        str | None,
        typer.Option(
            envvar="FEDRELAY_COORDINATOR_JOB_MARKET",
            help="With --watch-proposals: the JobMarket's address.",
        ),
    ] = None,
    disprove_key_file: Annotated[
        Path | None,
        typer.Option(
            envvar="FEDRELAY_DISPROVE_KEY_FILE",
            help="With --watch-proposals: void each broken proposal from this funded key on "
            "the coordinator chain (without it, broken proposals are only logged).",
        ),
    ] = None,
) -> None:
    """Stake, register and work on assignments until SIGINT or SIGTERM.

    With --watch-proposals the worker also watches the JobMarket's proposals beside its work, so
    that a proposal that breaks a rule (pays a worker who did not commit, misses a slash, ...)
    is voided inside its window even where nobody else watches.

    Spans are exported when the standard OTEL_* variables name an exporter (see
    docs/operations.md).
    """
    with requires("worker"):
        from fedrelay.adapters.telemetry.tracing import configure_tracing
    from fedrelay.commands.logs import configure_command_logging

    if data is not None and not data.exists():
        raise _fail(f"--data {data}: no such file or folder")
    watch_market: tuple[str, str] | None = None
    if watch_proposals:
        if coordinator_rpc_url is None or job_market is None:
            raise _fail(
                "--watch-proposals needs --coordinator-rpc-url and --job-market (or "
                "FEDRELAY_COORDINATOR_RPC_URL and FEDRELAY_COORDINATOR_JOB_MARKET)"
            )
        remember(coordinator_rpc_url)
        watch_market = (coordinator_rpc_url, job_market)
    configure_command_logging("WARNING")
    trust = trust_policy(trust_model, trust_signer, trust_file)
    tracing = configure_tracing("fedrelay-worker")
    try:
        _guarded(
            _run(
                chain,
                key_file,
                coordinator_url,
                rpc_url,
                hub_address,
                program_id,
                data,
                device,
                state_file,
                stake,
                payout,
                wormhole_chain,
                poll_interval,
                publish_after,
                offer_commitments,
                coordinator_chain,
                trust,
                watch_market,
                disprove_key_file,
            )
        )
    finally:
        tracing.shutdown()  # exports the spans still buffered


async def _run(
    kind: ChainKind,
    key_file: Path,
    coordinator_url: str,
    rpc_url: str,
    hub_address: str | None,
    program_id: str | None,
    data: Path | None,
    device_choice: DeviceChoice,
    state_file: Path | None,
    stake: int,
    payout: str | None,
    wormhole_chain: int | None,
    poll_interval: float,
    publish_after: float,
    offer_commitments: bool,
    coordinator_chain: int,
    trust: TrustPolicy,
    watch_market: tuple[str, str] | None = None,
    disprove_key_file: Path | None = None,
) -> None:
    # Imported here so that `fedrelay --help` does not load torch, web3 or solana.
    from fedrelay.training.torch_trainer import default_device
    from fedrelay.worker.process import proposal_watch, worker_node
    from fedrelay.worker.sdk import FileSource, RichProgress, StateStore

    watch, watching_note = None, ""
    if watch_market is not None:  # built first: a bad address or key file stops nothing
        watch, disprover = proposal_watch(*watch_market, disprove_key_file)
        watching_note = f"watching the proposals of JobMarket {watch_market[1]}; " + (
            f"disproofs from {disprover}" if disprover else "no disproof key: reporting only"
        )

    remember(coordinator_url)
    shards = FileSource(data) if data is not None else None
    device = default_device() if device_choice is DeviceChoice.AUTO else device_choice.value
    try:
        payout_bytes = bytes.fromhex((payout or "").removeprefix("0x")).rjust(32, b"\0")
    except ValueError:
        raise ValueError(f"--payout must be hex, got {payout!r}") from None
    if len(payout_bytes) != 32:
        raise ValueError("--payout must be at most 32 bytes of hex")
    async with _connected(
        kind, key_file, rpc_url, hub_address, program_id, wormhole_chain
    ) as connected:
        signer = connected.signer
        store = StateStore(
            state_file or Path(f"fedrelay-worker-{signer.worker.key.hex()[-16:]}.json")
        )
        with RichProgress() as progress:
            async with worker_node(
                connected,
                coordinator_url,
                shards,
                store,
                device=device,
                progress=progress,
                poll_interval=poll_interval,
                publish_after=publish_after,
                offer_commitments=offer_commitments,
                coordinator_chain=coordinator_chain,
                trust=trust,
            ) as node:
                loop = asyncio.get_running_loop()

                def stop() -> None:
                    node.request_stop()
                    if watch is not None:
                        watch.request_stop()

                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(signum, stop)
                if stake > 0:
                    await node.register(stake, payout_bytes)
                progress.note(f"worker {signer.worker.key.hex()} on {kind.value}, device {device}")
                watching = None
                if watch is not None:
                    watching = asyncio.create_task(watch.run(), name="proposal watch")
                    watching.add_done_callback(_watch_ended)
                    progress.note(watching_note)
                try:
                    await node.run()
                finally:
                    if watching is not None:
                        stop()
                        await asyncio.gather(watching, return_exceptions=True)  # logged
                progress.note("stopped; state saved to " + str(store.path))


def _watch_ended(task: asyncio.Task[None]) -> None:
    """Log a proposal watch beside a worker that stopped with an error (the worker goes on)."""
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger(__name__).error(
            "the proposal watch stopped: %s; the worker goes on without it", task.exception()
        )


# --- stake -------------------------------------------------------------------------------------


def _when(unix_time: int) -> str:
    return datetime.fromtimestamp(unix_time, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _stake_fields(kind: ChainKind, name: str, status: StakeStatus) -> dict[str, Any]:
    return {
        "chain": kind.value,
        "worker": name,
        "registered": status.registered,
        "staked": status.staked,
        "unbonding": status.unbonding,
        "unlocks_at": status.unlocks_at or None,
        "open_tasks": status.open_tasks,
    }


def _show_stake(kind: ChainKind, name: str, status: StakeStatus, as_json: bool) -> None:
    fields = _stake_fields(kind, name, status)
    if as_json:
        typer.echo(json.dumps(fields))
        return
    unit = "wei" if kind is ChainKind.EVM else "lamports"
    out = Console()
    out.print(f"worker      {name} ({kind.value})", highlight=False, soft_wrap=True)
    out.print(f"registered  {'yes' if status.registered else 'no'}", highlight=False)
    out.print(f"staked      {status.staked} {unit}", highlight=False)
    if status.unbonding:
        out.print(
            f"unbonding   {status.unbonding} {unit}, withdrawable from " + _when(status.unlocks_at),
            highlight=False,
            soft_wrap=True,
        )
    else:
        out.print("unbonding   nothing", highlight=False)
    out.print(f"tasks       {status.open_tasks} locking stake", highlight=False)


@app.command("bundle-hash")
def bundle_hash_command(
    folder: Annotated[
        Path, typer.Argument(help="A model bundle: manifest.json and the .py sources.")
    ],
    as_json: JsonOption = False,
) -> None:
    """The hash of a model bundle folder, as a job names it: read the code, then trust this.

    Nothing of the bundle runs. The hash is what `--trust-model` and a trust file take; the same
    sources give the same hash on every machine (docs/learning.md, "Custom models and trust").
    """
    from fedrelay.training.bundles import BundleError, bundle_hash, pack_bundle, read_bundle

    try:
        blob = pack_bundle(folder)
    except BundleError as exc:
        raise _fail(f"{folder}: {exc}") from None
    bundle = read_bundle(blob)
    name = bundle_hash(blob)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "bundle": name,
                    "factory": bundle.factory,
                    "files": sorted(bundle.files),
                    "bytes": len(blob),
                }
            )
        )
        return
    typer.echo(name)


@app.command("stake")
def stake_status(
    chain: ChainOption,
    key_file: KeyFileOption,
    rpc_url: RpcUrlOption,
    hub_address: HubAddressOption = None,
    program_id: ProgramIdOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the worker's stake: bonded, unbonding and from when withdrawable, registration."""

    async def read() -> tuple[str, StakeStatus]:
        async with _connected(chain, key_file, rpc_url, hub_address, program_id) as connected:
            return connected.name, await connected.chain.stake_status()

    name, status = _guarded(read())
    _show_stake(chain, name, status, as_json)


def _parse_amount(amount: str) -> int | None:
    """``all`` as None, otherwise a positive integer."""
    if amount.strip().lower() == "all":
        return None
    try:
        value = int(amount)
    except ValueError:
        raise _fail(f"--amount must be a positive integer or 'all', got {amount!r}") from None
    if value <= 0:
        raise _fail(f"--amount must be positive, got {value}")
    return value


@app.command("unstake")
def unstake(
    chain: ChainOption,
    key_file: KeyFileOption,
    rpc_url: RpcUrlOption,
    amount: Annotated[
        str,
        typer.Option(help="Stake to unbond, in wei or lamports, or 'all'."),
    ],
    hub_address: HubAddressOption = None,
    program_id: ProgramIdOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start unbonding stake; `withdraw-stake` takes it back once the delay has passed."""
    wanted = _parse_amount(amount)

    async def begin() -> tuple[str, StakeStatus]:
        async with _connected(chain, key_file, rpc_url, hub_address, program_id) as connected:
            before = await connected.chain.stake_status()
            if before.staked == 0:
                raise ValueError("no bonded stake to unbond")
            if wanted is not None and wanted > before.staked:
                raise ValueError(f"--amount {wanted} is more than the bonded {before.staked}")
            await connected.chain.begin_unstake(before.staked if wanted is None else wanted)
            return connected.name, await connected.chain.stake_status()

    name, status = _guarded(begin())
    _show_stake(chain, name, status, as_json)


@app.command("withdraw-stake")
def withdraw_stake(
    chain: ChainOption,
    key_file: KeyFileOption,
    rpc_url: RpcUrlOption,
    hub_address: HubAddressOption = None,
    program_id: ProgramIdOption = None,
    as_json: JsonOption = False,
) -> None:
    """Take the unbonded stake back (after the unbonding delay, with no task open)."""
    from fedrelay.worker.sdk import ChainRejected

    async def withdraw() -> int:
        async with _connected(chain, key_file, rpc_url, hub_address, program_id) as connected:
            before = await connected.chain.stake_status()
            if before.unbonding == 0:
                raise ValueError("nothing is unbonding; start with `fedrelay worker unstake`")
            try:
                await connected.chain.withdraw_stake()
            except ChainRejected as exc:
                raise ChainRejected(
                    f"{exc} (the stake is withdrawable from {_when(before.unlocks_at)})"
                ) from None
            return before.unbonding

    withdrawn = _guarded(withdraw())
    unit = "wei" if chain is ChainKind.EVM else "lamports"
    if as_json:
        typer.echo(json.dumps({"chain": chain.value, "withdrawn": withdrawn}))
    else:
        Console().print(f"withdrew {withdrawn} {unit} of stake", highlight=False)


# --- rewards -----------------------------------------------------------------------------------


@app.command("rewards")
def rewards(
    payout_key_file: Annotated[
        Path, typer.Option(help="The payout address's key (64 hex characters).")
    ],
    rpc_url: Annotated[str, typer.Option(help="The coordinator chain's JSON-RPC endpoint.")],
    job_market: Annotated[str, typer.Option(help="The JobMarket's address.")],
    withdraw: Annotated[
        bool, typer.Option("--withdraw", help="Withdraw the claimable reward.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Show the payout address's claimable reward (native token); --withdraw takes it."""
    from fedrelay.worker.process import reward_account

    async def settle() -> tuple[str, int, int | None]:
        payout, account = reward_account(rpc_url, job_market, payout_key_file)
        claimable = await account.claimable()
        withdrawn = await account.withdraw() if withdraw else None
        return payout, claimable, withdrawn

    payout, claimable, withdrawn = _guarded(settle())
    if as_json:
        fields: dict[str, Any] = {
            "payout": payout,
            "claimable_wei": claimable,
            "claimable_eth": str(Decimal(claimable) / _WEI_PER_ETH),
        }
        if withdrawn is not None:
            fields["withdrawn_wei"] = withdrawn
        typer.echo(json.dumps(fields))
        return
    out = Console()
    eth = Decimal(claimable) / _WEI_PER_ETH
    out.print(f"payout     {payout}", highlight=False)
    out.print(f"claimable  {claimable} wei ({eth} ETH)", highlight=False)
    if withdrawn is None:
        return
    if withdrawn == 0:
        out.print("nothing to withdraw", highlight=False)
    else:
        out.print(
            f"withdrew   {withdrawn} wei ({Decimal(withdrawn) / _WEI_PER_ETH} ETH)", highlight=False
        )


@app.command("claim")
def claim(
    payout_key_file: Annotated[
        Path, typer.Option(help="The payout address's key (64 hex characters).")
    ],
    rpc_url: Annotated[str, typer.Option(help="The coordinator chain's JSON-RPC endpoint.")],
    distributor: Annotated[
        str, typer.Option(help="The RewardDistributor the JobMarket credits (its address).")
    ],
    coordinator_url: Annotated[
        str, typer.Option(help="The coordinator API's base URL (it serves the root's leaves).")
    ],
    chain: ChainOption,
    key_file: KeyFileOption,
    wormhole_chain: Annotated[
        int | None, typer.Option(help="The worker chain's Wormhole id (evm; default 4).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what a claim would pay; send nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Claim the payout address's rewards from a RewardDistributor's live root (native token).

    The root's leaves come from the coordinator (signed with the worker's key, as `run` signs);
    the tree is rebuilt and checked against the root on chain before anything is sent.
    """
    from fedrelay.worker.process import distributor_account, request_signer
    from fedrelay.worker.sdk.api_client import CoordinatorClient

    async def settle() -> tuple[str, Any]:
        payout, account = distributor_account(rpc_url, distributor, payout_key_file)
        signer = request_signer(chain.value, key_file, wormhole_chain)
        async with CoordinatorClient(coordinator_url, signer) as api:
            if dry_run:
                return payout, await account.distributed(distributor, api.download_blob)
            return payout, await account.claim_distributed(distributor, api.download_blob)

    payout, owed = _guarded(settle())
    if as_json:
        fields: dict[str, Any] = {
            "payout": payout,
            "epoch": owed.epoch,
            "cumulative_wei": owed.cumulative,
            "claimed_wei": owed.claimed,
            "claimable_wei": owed.claimable,
            "paid_wei": owed.paid,
            "pending_root_live_at": owed.pending_at,
        }
        typer.echo(json.dumps(fields))
        return
    out = Console()
    out.print(f"payout      {payout}", highlight=False)
    if owed.epoch == 0:
        out.print("no live reward root yet", highlight=False)
    else:
        out.print(f"root        epoch {owed.epoch}", highlight=False)
        out.print(f"earned      {owed.cumulative} wei in all", highlight=False)
        out.print(f"claimed     {owed.claimed} wei", highlight=False)
        if dry_run:
            out.print(f"claimable   {owed.claimable} wei", highlight=False)
        elif owed.paid:
            eth = Decimal(owed.paid) / _WEI_PER_ETH
            out.print(f"paid        {owed.paid} wei ({eth} ETH)", highlight=False)
        else:
            out.print("nothing to claim", highlight=False)
    if owed.pending_at is not None:
        out.print(f"next root   live from {_when(owed.pending_at)}", highlight=False)


# --- check-proposal ----------------------------------------------------------------------------


@app.command("check-proposal")
def check_proposal(
    job_id: Annotated[int, typer.Argument(min=0, help="The job id on the coordinator chain.")],
    round_number: Annotated[int, typer.Argument(min=0, help="The proposed round.")],
    rpc_url: Annotated[str, typer.Option(help="The coordinator chain's JSON-RPC endpoint.")],
    job_market: Annotated[str, typer.Option(help="The JobMarket's address.")],
    disprove_key_file: Annotated[
        Path | None,
        typer.Option(
            help="Void the proposal if it breaks a rule, sending the disproof from this funded "
            "EVM key (64 hex characters). Without it, only check."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check a round's pending proposal against the JobMarket's rules, inside its window.

    The market takes proposals optimistically: a proposal that pays a worker without a
    commitment, slashes a committed worker as MISSED, misstates its total or root (or breaks
    another rule) stands unless somebody disproves it before its window closes. Exit code 0: it
    keeps every rule; 1: it breaks one (voided with --disprove-key-file); 2: an error.
    """
    from fedrelay.worker.process import check_proposal as audit

    found = _guarded(audit(rpc_url, job_market, job_id, round_number, disprove_key_file))
    if as_json:
        fields = {
            "job_id": job_id,
            "round": round_number,
            "proposal": found.proposal,
            "valid": found.broken is None,
            "broken": found.broken,
            "voided": found.voided,
        }
        typer.echo(json.dumps(fields))
    elif found.broken is None:
        Console().print(
            f"job {job_id} round {round_number} proposal {found.proposal} keeps every rule",
            highlight=False,
        )
    else:
        outcome = "voided it" if found.voided else "pass --disprove-key-file to void it"
        Console().print(
            f"job {job_id} round {round_number} proposal {found.proposal} breaks a rule: "
            f"{found.broken}; {outcome}",
            highlight=False,
            soft_wrap=True,
        )
    if found.broken is not None:
        raise typer.Exit(1)


# --- watch-proposals ---------------------------------------------------------------------------


@app.command("watch-proposals")
def watch_proposals(
    rpc_url: Annotated[
        str,
        typer.Option(
            envvar="FEDRELAY_COORDINATOR_RPC_URL", help="The coordinator chain's JSON-RPC endpoint."
        ),
    ],
    job_market: Annotated[
        str, typer.Option(envvar="FEDRELAY_COORDINATOR_JOB_MARKET", help="The JobMarket's address.")
    ],
    disprove_key_file: Annotated[
        Path | None,
        typer.Option(
            envvar="FEDRELAY_DISPROVE_KEY_FILE",
            help="Void each proposal that breaks a rule, sending the disproof from this funded "
            "EVM key (64 hex characters). Without it, broken proposals are only reported.",
        ),
    ] = None,
    job: Annotated[
        list[int] | None,
        typer.Option(min=0, help="Watch only this job's proposals (repeat for several)."),
    ] = None,
    from_block: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Read proposals from this block on (default: the first block of the current "
            "challenge window; older proposals can no longer be disproved).",
        ),
    ] = None,
    poll_interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between looks at the chain.")
    ] = 2.0,
    recheck_interval: Annotated[
        float,
        typer.Option(min=0.1, help="Seconds between checks of a valid proposal still open."),
    ] = 15.0,
    health_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            envvar="FEDRELAY_HEALTH_PORT",
            help="Serve /healthz, /readyz and /metrics on this port.",
        ),
    ] = None,
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="Check the proposals whose windows are open now, report, and exit (0: none "
            "stands broken; 1: one does; 2: an error).",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --once: print one JSON object.")
    ] = False,
) -> None:
    """Check every round proposal of a JobMarket inside its challenge window; void the broken.

    The market's rules bind a proposal only when somebody checks it before its window closes:
    one honest watch per market keeps every job's rounds honest. Each new proposal is checked
    at once and a valid one again every --recheck-interval seconds until its window closes.
    Runs until SIGTERM or SIGINT (or, with --once, one pass).
    """
    from importlib.util import find_spec

    from fedrelay.commands.logs import configure_command_logging

    if as_json and not once:
        raise _fail("--json needs --once (a running watch reports in its log)")
    served = ("fastapi", "uvicorn", "prometheus_client")
    if health_port is not None and not all(find_spec(name) for name in served):
        raise _fail(
            "--health-port serves /metrics with FastAPI, uvicorn and prometheus-client, which "
            "the worker's extra does not bring: `pip install 'fedrelay[relayer]'` as well"
        )
    if not once:
        configure_command_logging(logging.INFO)
    remember(rpc_url)
    _guarded(
        _watch_proposals(
            rpc_url,
            job_market,
            disprove_key_file,
            None if not job else frozenset(job),
            from_block,
            poll_interval,
            recheck_interval,
            health_port,
            once,
            as_json,
        )
    )


async def _watch_proposals(
    rpc_url: str,
    job_market: str,
    key_file: Path | None,
    jobs: frozenset[int] | None,
    from_block: int | None,
    poll_interval: float,
    recheck_interval: float,
    health_port: int | None,
    once: bool,
    as_json: bool,
) -> None:
    from fedrelay.worker.process import proposal_watch, serve_proposal_watch
    from fedrelay.worker.proposal_watch import Verdict, WatchMetrics

    watch, disprover = proposal_watch(
        rpc_url,
        job_market,
        key_file,
        jobs=jobs,
        poll_interval=poll_interval,
        recheck_interval=recheck_interval,
        metrics=None if once or health_port is None else WatchMetrics(),
    )
    if not once:
        logging.getLogger(__name__).info(
            "watching the proposals of JobMarket %s%s; %s",
            job_market,
            "" if jobs is None else f" (jobs {', '.join(map(str, sorted(jobs)))})",
            "disproofs from " + disprover if disprover else "no disproof key: reporting only",
        )
        await serve_proposal_watch(watch, health_port=health_port, from_block=from_block)
        return
    start = await watch.start(from_block)
    findings = await watch.step()
    if as_json:
        shown = {
            "from_block": start,
            "to_block": (watch.cursor or start) - 1,
            "disprover": disprover,
            "findings": [
                {
                    "job_id": f.made.job_id,
                    "round": f.made.round,
                    "proposal": f.made.proposal,
                    "block": f.made.block,
                    "verdict": f.verdict.value,
                    "broken": f.rule,
                }
                for f in findings
            ],
        }
        typer.echo(json.dumps(shown))
    else:
        console = Console()
        console.print(
            f"blocks {start}..{(watch.cursor or start) - 1}: {len(findings)} proposal(s) checked",
            highlight=False,
        )
        for finding in findings:
            console.print(finding.describe(), highlight=False, soft_wrap=True)
    if any(f.verdict in (Verdict.BROKEN, Verdict.MISSED) for f in findings):
        raise typer.Exit(1)


# --- dispute -----------------------------------------------------------------------------------


def _worker_key(text: str) -> bytes:
    """A worker key: 64 hex characters (an EVM worker's address left-padded), or an EVM address
    (40 hex characters) padded here, or a base58 Solana public key."""
    raw = text.removeprefix("0x")
    try:
        if len(raw) == 64:
            return bytes.fromhex(raw)
        if len(raw) == 40:
            return bytes(12) + bytes.fromhex(raw)
    except ValueError:
        pass
    from solders.pubkey import Pubkey

    try:
        return bytes(Pubkey.from_string(text))
    except ValueError:
        raise _fail(
            f"--worker-key {text!r} is neither 32 bytes of hex, an EVM address nor a Solana key"
        ) from None


@app.command("dispute")
def dispute(
    job_id: Annotated[int, typer.Argument(min=0, help="The job id on the coordinator chain.")],
    round_number: Annotated[int, typer.Argument(min=0, help="The round of the slash.")],
    worker_chain: Annotated[
        int, typer.Option(min=0, max=0xFFFF, help="The worker's Wormhole chain id.")
    ],
    worker_key: Annotated[
        str, typer.Option(help="The worker's key: an EVM address or a Solana public key.")
    ],
    payout_key_file: Annotated[
        Path, typer.Option(help="The payout address's key (64 hex characters).")
    ],
    rpc_url: Annotated[str, typer.Option(help="The coordinator chain's JSON-RPC endpoint.")],
    job_market: Annotated[str, typer.Option(help="The JobMarket's address.")],
    as_json: JsonOption = False,
) -> None:
    """Dispute the worker's slash in a proposed round, inside its challenge window."""
    from fedrelay.worker.process import reward_account

    key = _worker_key(worker_key)

    async def send() -> tuple[str, int]:
        payout, account = reward_account(rpc_url, job_market, payout_key_file)
        return payout, await account.dispute_slash(job_id, round_number, worker_chain, key)

    payout, answer_by = _guarded(send())
    if as_json:
        fields = {"job_id": job_id, "round": round_number, "payout": payout, "answer_by": answer_by}
        typer.echo(json.dumps(fields))
        return
    Console().print(
        f"disputed the slash of job {job_id} round {round_number}: the coordinator must answer "
        f"with its evidence by {_when(answer_by)}, or the slash is reversed at settlement",
        highlight=False,
    )
