"""`fedrelay relayer ...` and `fedrelay guardian run`: run relayer stages, inspect, requeue, and
unstick a deliverer's signer nonce.

Everything is configured as docs/operations.md (section 1) describes: ``FEDRELAY_*`` variables
(:class:`~fedrelay.relayer.settings.RelayerSettings`), the chains file ``FEDRELAY_CHAINS_FILE``,
and keys
in files (``--signer-key-file``, ``--guardian-key-file``) or one environment variable each
(``FEDRELAY_SIGNER_KEY``, ``FEDRELAY_GUARDIAN_KEY``). Keys are never printed or logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import ValidationError

from fedrelay.adapters.kafka import KafkaBus
from fedrelay.adapters.ledger.database import LedgerError, create_engine, upgrade
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger
from fedrelay.adapters.telemetry.tracing import configure_tracing
from fedrelay.commands.logs import configure_command_logging
from fedrelay.protocol.redact import redact_text, remember
from fedrelay.protocol.wormhole import WormholeError
from fedrelay.relayer import operations
from fedrelay.relayer.chains_file import ChainConfig, ChainsConfig
from fedrelay.relayer.errors import RelayerError
from fedrelay.relayer.nonces import NonceDoctor, NonceError, NonceReport
from fedrelay.relayer.process import STAGES, StageRequest, build_process, chains_of
from fedrelay.relayer.settings import RelayerSettings

app = typer.Typer(help="Run the relayer's stages and look after its work.", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter queue.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
nonce_app = typer.Typer(
    help="The deliverer's signer nonce on an EVM chain: show it, unstick it.", no_args_is_help=True
)
app.add_typer(nonce_app, name="nonce")
guardian_app = typer.Typer(help="A devnet guardian (the attest stage).", no_args_is_help=True)

log = logging.getLogger("fedrelay.relayer")
_T = TypeVar("_T")

_SIGNER_HELP = (
    "Deliverer key file, [CHAIN=]PATH; repeat for several chains (--stage all). An EVM key is "
    "0x + 64 hex digits, a Solana key the JSON array solana-keygen writes. Default: "
    "$FEDRELAY_SIGNER_KEY."
)
_GUARDIAN_HELP = (
    "Guardian key file (0x + 64 hex digits); repeat for several guardians (--stage all)."
)
_SHARE_HELP = (
    "Under FEDRELAY_ATTESTATION=threshold: the guardian's threshold share file (64 hex digits); "
    "repeat in --guardian-key-file order (--stage all). Default: $FEDRELAY_THRESHOLD_SHARE."
)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {redact_text(message)}", err=True)
    return typer.Exit(code)


def _settings() -> RelayerSettings:
    """The settings; their URLs' secrets are masked in every later message of this process."""
    try:
        settings = RelayerSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"FEDRELAY_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise _fail(f"invalid settings: {problems}") from None
    remember(settings.database_url, settings.guardian_api_url)
    return settings


def _run(work: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run `work`, turning the domain's errors into a message and exit status 2."""
    try:
        return asyncio.run(work())
    except (RelayerError, LedgerError, WormholeError) as exc:
        raise _fail(str(exc)) from None


def _configure_logging() -> None:
    configure_command_logging(logging.INFO)


def _signer_keys(values: list[str]) -> dict[str, Path]:
    keys: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = "", value
        if name in keys:
            raise _fail(f"--signer-key-file given twice for {name or 'every chain'}")
        keys[name] = Path(path)
    return keys


# --- run ------------------------------------------------------------------------------------------


async def _serve(settings: RelayerSettings, request: StageRequest, service_name: str) -> None:
    chains = chains_of(settings)
    if request.stage == "all":
        try:
            await asyncio.to_thread(upgrade, settings.database_url)
        except Exception as exc:  # the database may come later; /readyz says so meanwhile
            log.error(
                "relayer: cannot bring the ledger to the current schema: %s",
                redact_text(str(exc), [settings.database_url]),
            )
    process = await build_process(settings, chains, request)
    configure_tracing(service_name)  # once the process is built: nothing to trace before
    await process.run()


@app.command("run")
def run_command(
    stage: str = typer.Option(..., "--stage", help=f"One of: {', '.join(STAGES)}."),
    chain: str | None = typer.Option(None, "--chain", help="The chain (watch, deliver)."),
    signer_key_file: list[str] = typer.Option([], "--signer-key-file", help=_SIGNER_HELP),  # noqa: B008
    guardian_key_file: list[Path] = typer.Option([], "--guardian-key-file", help=_GUARDIAN_HELP),  # noqa: B008
    threshold_share_file: list[Path] = typer.Option([], "--threshold-share-file", help=_SHARE_HELP),  # noqa: B008
    guardian_index: int | None = typer.Option(
        None,
        "--guardian-index",
        min=0,
        max=255,
        help="The guardian's index (attest); default: its place in FEDRELAY_GUARDIAN_ADDRESSES.",
    ),
) -> None:
    """Run one stage (or all: --stage all) until SIGTERM; serve /healthz, /readyz, /metrics."""
    if stage not in STAGES:
        raise _fail(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    _configure_logging()
    settings = _settings()
    name = f"fedrelay-relayer-{stage}" + (f"-{chain}" if chain else "")
    request = StageRequest(
        stage=stage, chain=chain, signer_keys=_signer_keys(signer_key_file),
        guardian_keys=tuple(guardian_key_file), guardian_index=guardian_index,
        threshold_shares=tuple(threshold_share_file),
    )  # fmt: skip
    _run(lambda: _serve(settings, request, name))


@guardian_app.command("run")
def guardian_run_command(
    guardian_key_file: Path | None = typer.Option(  # noqa: B008
        None,
        "--guardian-key-file",
        help="The guardian's key file; default: $FEDRELAY_GUARDIAN_KEY.",
    ),
    threshold_share_file: Path | None = typer.Option(  # noqa: B008
        None, "--threshold-share-file", help=_SHARE_HELP
    ),
    guardian_index: int | None = typer.Option(
        None,
        "--guardian-index",
        min=0,
        max=255,
        help="The guardian's index; default: its place in FEDRELAY_GUARDIAN_ADDRESSES.",
    ),
) -> None:
    """Run a devnet guardian: re-read each observed message on its chain and sign it (under
    threshold attestation, also commit to a nonce and answer the signing packages naming it)."""
    _configure_logging()
    settings = _settings()
    keys = (guardian_key_file,) if guardian_key_file is not None else ()
    shares = (threshold_share_file,) if threshold_share_file is not None else ()
    request = StageRequest(
        stage="attest", guardian_keys=keys, guardian_index=guardian_index, threshold_shares=shares
    )
    _run(lambda: _serve(settings, request, "fedrelay-relayer-attest"))


# --- status ---------------------------------------------------------------------------------------


async def _watch_lags(chains: ChainsConfig, positions: dict[str, int]) -> dict[str, int | None]:
    """Blocks (or slots, sequences) each watcher is behind its chain's final head."""
    from fedrelay.relayer.process import ChainConnections

    connections = ChainConnections()
    lags: dict[str, int | None] = {}
    try:
        for chain in chains.chains:
            try:
                source = await asyncio.wait_for(connections.source(chain), 5)
                head = await asyncio.wait_for(source.head(), 5)
            except Exception:  # an unreachable chain shows as unknown lag
                lags[chain.name] = None
                continue
            position = positions.get(source.source)
            lags[chain.name] = None if position is None else max(0, head.number - position)
    finally:
        await connections.close()
    return lags


async def _status(settings: RelayerSettings) -> dict[str, Any]:
    engine = create_engine(settings.database_url)
    try:
        ledger = await operations.ledger_status(SqlRelayerLedger.on(engine))
    finally:
        await engine.dispose()
    chains = chains_of(settings) if settings.chains_file is not None else None
    report: dict[str, Any] = {
        "sources": [asdict(s) for s in ledger.sources],
        "deliveries": [asdict(d) for d in ledger.deliveries],
        "dead_letters": ledger.dead_letters,
    }
    if chains is not None:
        report["watch_lag"] = await _watch_lags(
            chains, {s.source: s.position for s in ledger.sources}
        )
    if settings.kafka_bootstrap:
        ids = [c.wormhole_chain_id for c in chains.chains] if chains is not None else []
        try:
            report["queue_depth"] = await asyncio.wait_for(
                operations.queue_depths(KafkaBus(settings.kafka_bootstrap), settings, ids), 30
            )
        except Exception as exc:  # the ledger's part of the report is still worth showing
            report["queue_depth"] = {}
            report["queue_depth_error"] = (
                f"cannot read Kafka: {type(exc).__name__}: {redact_text(str(exc))}"
            )
    else:
        report["queue_depth"] = None  # the in-process bus: see /metrics of the running process
    return report


def _show(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return "-" if value is None else str(value)


@app.command("status")
def status_command(
    as_json: bool = typer.Option(False, "--json", help="One JSON document instead of tables."),
) -> None:
    """Per stage: lag, queue depth, last seen per source, pending and failed deliveries."""
    settings = _settings()
    report = _run(lambda: _status(settings))
    if as_json:
        typer.echo(json.dumps(report, default=_show, sort_keys=True))
        return
    typer.echo("sources (watch)")
    lags = report.get("watch_lag") or {}
    typer.echo(f"  {'source':<58} {'position':>10} {'cursor moved':>26} {'last observed':>26}")
    for s in report["sources"]:
        typer.echo(
            f"  {s['source']:<58} {s['position']:>10} {_show(s['cursor_updated_at']):>26} "
            f"{_show(s['last_observed_at']):>26}"
        )
    for name, lag in lags.items():
        typer.echo(f"  lag behind the final head of {name}: {_show(lag)}")
    typer.echo("queue depth (records waiting per stage)")
    depths = report["queue_depth"]
    if "queue_depth_error" in report:
        typer.echo(f"  {report['queue_depth_error']}")
    if depths is None:
        typer.echo("  in-process bus: read fedrelay_stage_queue_depth on the process's /metrics")
    else:
        for stage, depth in depths.items():
            typer.echo(f"  {stage:<24} {depth:>8}")
    typer.echo("deliveries")
    typer.echo(f"  {'chain':>6} {'pending':>8} {'confirmed':>10} {'already':>8} {'dead':>6}")
    for d in report["deliveries"]:
        typer.echo(
            f"  {d['chain_id']:>6} {d['pending']:>8} {d['confirmed']:>10} "
            f"{d['already_delivered']:>8} {d['dead']:>6}"
        )
    typer.echo("dead letters not requeued")
    for stage, count in sorted(report["dead_letters"].items()):
        typer.echo(f"  {stage:<24} {count:>8}")


# --- retry and the DLQ ----------------------------------------------------------------------------


def _kafka(settings: RelayerSettings) -> KafkaBus:
    if not settings.kafka_bootstrap:
        raise _fail(
            "requeuing publishes to Kafka: set FEDRELAY_KAFKA_BOOTSTRAP (an embedded relayer's "
            "in-process bus cannot be reached from another process)"
        )
    return KafkaBus(settings.kafka_bootstrap)


@app.command("retry")
def retry_command(
    message_id: str = typer.Argument(..., help="CHAIN/EMITTER_HEX/SEQUENCE, as logs show it."),
    chain: int | None = typer.Option(None, "--chain", help="Only this destination (Wormhole id)."),
) -> None:
    """Reopen a message's dead delivery and put it back on its chain's delivery topic."""
    settings = _settings()
    try:
        parsed = operations.parse_message_id(message_id)
    except RelayerError as exc:
        raise _fail(str(exc)) from None
    bus = _kafka(settings)

    async def work() -> list[int]:
        engine = create_engine(settings.database_url)
        try:
            ledger = SqlRelayerLedger.on(engine)
            return await operations.retry_message(ledger, bus, settings, parsed, chain)
        finally:
            await engine.dispose()

    chains = _run(work)
    typer.echo(f"requeued {message_id} for chain(s) {', '.join(map(str, chains))}")


@dlq_app.command("list")
def dlq_list_command(
    stage: str | None = typer.Option(None, "--stage", help="Only this stage (e.g. deliver-4)."),
    everything: bool = typer.Option(False, "--all", help="Include entries requeued before."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table."),
) -> None:
    """Dead-letter entries not yet requeued, oldest first, with their reasons."""
    settings = _settings()

    async def work() -> list[operations.DeadLetterEntry]:
        engine = create_engine(settings.database_url)
        try:
            return await operations.dead_letters(SqlRelayerLedger.on(engine), stage, everything)
        finally:
            await engine.dispose()

    for entry in _run(work):
        if as_json:
            typer.echo(json.dumps(asdict(entry), default=_show, sort_keys=True))
        else:
            typer.echo(
                f"{entry.id:>6}  {entry.stage:<14} {_show(entry.created_at)}  "
                f"{entry.message or entry.position}  {entry.reason}"
            )


@dlq_app.command("requeue")
def dlq_requeue_command(
    entry_id: int = typer.Argument(..., help="The entry's id (dlq list)."),
) -> None:
    """Republish a dead letter to its stage's input topic and mark it requeued."""
    settings = _settings()
    bus = _kafka(settings)

    async def work() -> str:
        engine = create_engine(settings.database_url)
        try:
            ledger = SqlRelayerLedger.on(engine)
            return await operations.requeue_dead_letter(ledger, bus, settings, entry_id)
        finally:
            await engine.dispose()

    topic = _run(work)
    typer.echo(f"requeued DLQ entry {entry_id} to {topic}")


# --- the signer nonce -----------------------------------------------------------------------------

_NONCE_KEY_HELP = "The deliverer's key file of the chain; default: $FEDRELAY_SIGNER_KEY."


def _evm_chain(settings: RelayerSettings, name: str) -> ChainConfig:
    try:
        chain = chains_of(settings).named(name)
    except RelayerError as exc:
        raise _fail(str(exc)) from None
    if chain.kind != "evm":
        raise _fail(
            f"chain {name!r} is a Solana chain: Solana has no account nonces (a transaction "
            "carries a recent blockhash instead), so there is no nonce to show or unstick"
        )
    return chain


async def _with_doctor(
    settings: RelayerSettings,
    chain: ChainConfig,
    key_file: Path | None,
    work: Callable[[NonceDoctor], Coroutine[Any, Any, _T]],
) -> _T:
    from fedrelay.relayer.process import ChainConnections, read_signer_key

    key = read_signer_key(chain, key_file)
    connections = ChainConnections()
    engine = create_engine(settings.database_url)
    try:
        destination = await connections.destination(chain, key)
        account = connections.signer_account(chain, key)
        assert account is not None  # an EVM chain: _evm_chain checked
        ledger = SqlRelayerLedger.on(engine)
        return await work(NonceDoctor(chain.name, destination, account, ledger))
    except (RelayerError, LedgerError):
        raise
    except Exception as exc:  # the chain or the ledger failed under the command: say which
        detail = redact_text(str(exc), [chain.rpc_url, settings.database_url])
        raise NonceError(
            f"on chain {chain.name!r}, its RPC or the ledger failed: {type(exc).__name__}: {detail}"
        ) from None
    finally:
        await connections.close()
        await engine.dispose()


def _print_report(report: NonceReport) -> None:
    typer.echo(f"chain {report.chain} (Wormhole {report.chain_id}), signer {report.signer}")
    typer.echo(f"  chain:  confirmed nonce {report.confirmed}, pending nonce {report.pending}")
    typer.echo(f"  ledger: signer_nonces.next_nonce {_show(report.ledger_next)}")
    typer.echo(f"open attempts ({len(report.attempts)})")
    if report.attempts:
        typer.echo(
            f"  {'delivery':>8} {'attempt':>7} {'nonce':>6} {'fee/gas':>14} {'ledger':>9} "
            f"{'on chain':>9}  message / tx"
        )
    for a in report.attempts:
        typer.echo(
            f"  {a.delivery_id:>8} {a.attempt:>7} {_show(a.nonce):>6} {_show(a.fee_per_gas):>14} "
            f"{a.outcome:>9} {a.on_chain:>9}  {a.message} {_show(a.tx_hash)}"
        )
    typer.echo(f"diagnosis: {report.diagnosis}")


@nonce_app.command("show")
def nonce_show_command(
    chain: str = typer.Option(..., "--chain", help="The chain's name in the chains file."),
    signer_key_file: Path | None = typer.Option(None, "--signer-key-file", help=_NONCE_KEY_HELP),  # noqa: B008
    as_json: bool = typer.Option(False, "--json", help="One JSON document instead of text."),
) -> None:
    """The signer's confirmed and pending nonces, the ledger's, the open attempts, a diagnosis."""
    settings = _settings()
    config = _evm_chain(settings, chain)

    async def work(doctor: NonceDoctor) -> NonceReport:
        return await doctor.report()

    report = _run(lambda: _with_doctor(settings, config, signer_key_file, work))
    if as_json:
        typer.echo(json.dumps(asdict(report), default=_show, sort_keys=True))
    else:
        _print_report(report)


@nonce_app.command("unstick")
def nonce_unstick_command(
    chain: str = typer.Option(..., "--chain", help="The chain's name in the chains file."),
    signer_key_file: Path | None = typer.Option(None, "--signer-key-file", help=_NONCE_KEY_HELP),  # noqa: B008
    fee_bump: int = typer.Option(
        25,
        "--fee-bump",
        min=10,
        max=1000,
        help="Per cent above the stuck transaction's fee (nodes refuse a replacement below 10).",
    ),
    wait_s: float = typer.Option(
        60.0, "--wait", min=0, help="Seconds to wait for the freed nonce to confirm."
    ),
    yes: bool = typer.Option(False, "--yes", help="Send; without it, only say what would be done."),
) -> None:
    """Free the lowest stuck nonce of the chain's signer, then resync signer_nonces.

    Drain the chain's deliverer first (docs/operations.md, section 6): both sign with one key.
    """
    settings = _settings()
    config = _evm_chain(settings, chain)

    async def work(doctor: NonceDoctor) -> int:
        report = await doctor.report()
        typer.echo(f"diagnosis: {report.diagnosis}")
        plan = await doctor.plan(report)
        typer.echo(f"plan: {plan.text}")
        if not yes:
            typer.echo("dry run: nothing sent, nothing changed (add --yes to do it)")
            return 0
        result = await doctor.unstick(plan, fee_bump, wait_s)
        if result.tx_hash is not None:
            typer.echo(
                f"sent {plan.action.value} at nonce {plan.nonce}: {result.tx_hash} "
                f"({result.fee_per_gas} wei/gas)"
            )
        if not result.confirmed:
            typer.echo(
                f"nonce {plan.nonce} not confirmed within {wait_s:g} s: check again with "
                f"fedrelay relayer nonce show --chain {doctor.name}",
                err=True,
            )
        elif plan.nonce is not None:
            typer.echo(f"nonce {plan.nonce} confirmed")
        typer.echo(f"signer_nonces.next_nonce = {result.ledger_next} (the chain's next nonce)")
        return 0 if result.confirmed else 1

    code = _run(lambda: _with_doctor(settings, config, signer_key_file, work))
    if code:
        raise typer.Exit(code)
