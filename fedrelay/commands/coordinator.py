"""`fedrelay coordinator run` and `fedrelay job post|status|model|cancel`.

`coordinator run` follows the process contract of docs/operations.md section 1: the service and
its HTTP API for workers (``FEDRELAY_API_PORT``, 8000), health and metrics on
``FEDRELAY_HEALTH_PORT`` (8080) with readiness probing the ledger and the chain RPC, the
aggregator key from ``--signer-key-file`` (or ``FEDRELAY_SIGNER_KEY``), and SIGTERM draining
the step in progress within ``FEDRELAY_DRAIN_SECONDS``.

The coordinator chain is ``--rpc-url`` and ``--job-market`` (or ``FEDRELAY_COORDINATOR_RPC_URL``
and ``FEDRELAY_COORDINATOR_JOB_MARKET``), else the chain named ``FEDRELAY_COORDINATOR_CHAIN``
(default ``coordinator``) in ``FEDRELAY_CHAINS_FILE``.

This module is the command line only: the settings are :mod:`fedrelay.coordinator.settings`, the
running process is built by :mod:`fedrelay.coordinator.process`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from fedrelay.adapters.ledger.database import LedgerError
from fedrelay.coordinator.settings import ChainTarget, CoordinatorSettings
from fedrelay.protocol import keys
from fedrelay.protocol.redact import redact_text, redact_url, remember

if TYPE_CHECKING:
    from fedrelay.adapters.evm import ContractRevert, JobMarketContract
    from fedrelay.protocol.job_config import JobConfig

__all__ = ["ChainTarget", "CoordinatorSettings", "app", "chain_target", "job_app", "read_evm_key"]

# The service, web3, FastAPI and torch load inside the commands, so that `fedrelay --help` and
# the other commands start quickly.

app = typer.Typer(help="Run the coordinator service.", no_args_is_help=True)
job_app = typer.Typer(help="Post training jobs and follow them.", no_args_is_help=True)
_NATIVE = "0x" + "00" * 20
_ERC20_APPROVE = [
    {
        "type": "function",
        "name": "approve",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "spender", "type": "address"}, {"name": "amount", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    }
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {redact_text(message)}", err=True)
    return typer.Exit(2)


def _invalid_settings(exc: ValidationError) -> str:
    """What is wrong with the settings, naming variables, never quoting their values."""
    problems = "; ".join(
        f"FEDRELAY_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
        if e["loc"]
        else str(e["msg"])  # a rule over several settings names them itself
        for e in exc.errors()
    )
    return f"invalid settings: {problems}"


def chain_target(
    settings: CoordinatorSettings, rpc_url: str | None, job_market: str | None
) -> ChainTarget:
    """The coordinator chain from the options, the environment, or the chains file.

    Raises:
        typer.Exit: Neither names the chain, or the chains file is wrong about it.
    """
    rpc = rpc_url or settings.coordinator_rpc_url
    market = job_market or settings.coordinator_job_market
    if rpc and market:
        return ChainTarget(rpc, market, settings.coordinator_wormhole_chain, "latest")
    if settings.chains_file is None:
        raise _fail(
            "say where the coordinator chain is: --rpc-url and --job-market, or "
            "FEDRELAY_CHAINS_FILE with a chain named FEDRELAY_COORDINATOR_CHAIN"
        )
    from fedrelay.relayer.chains_file import ChainsFileError, load_chains

    try:
        chain = load_chains(settings.chains_file).named(settings.coordinator_chain)
    except ChainsFileError as exc:
        raise _fail(str(exc)) from None
    if chain.kind != "evm":
        raise _fail(f"the coordinator chain {chain.name!r} must be an evm chain")
    return ChainTarget(chain.rpc_url, chain.address, chain.wormhole_chain_id, chain.finality)


def read_evm_key(key_file: Path | None, variable: str = "FEDRELAY_SIGNER_KEY") -> str:
    """An EVM key from ``key_file`` (``0x`` + 64 hex digits), else from ``variable``.

    Raises:
        typer.Exit: Neither is set, the file is unreadable, or the key is malformed (the error
            never shows the key).
    """
    try:
        text, where = keys.read_key_text(
            key_file, what="key", variable=variable, option="--signer-key-file"
        )
        return keys.parse_evm_key(text, where)
    except keys.KeyFileError as exc:
        raise _fail(str(exc)) from None


# --- coordinator run -------------------------------------------------------------------------


@app.command("run")
def run_command(
    signer_key_file: Annotated[
        Path | None,
        typer.Option("--signer-key-file", help="The aggregator's EVM key (0x + 64 hex)."),
    ] = None,
    rpc_url: Annotated[str | None, typer.Option("--rpc-url", help="Coordinator chain RPC.")] = None,
    job_market: Annotated[
        str | None, typer.Option("--job-market", help="JobMarket address.")
    ] = None,
    trust_model: Annotated[
        list[str] | None,
        typer.Option(
            "--trust-model",
            help="Take on jobs of the model bundle with this hash (repeat; adds to "
            "FEDRELAY_TRUST_MODELS). Replaying a bundle runs the job poster's code here.",
        ),
    ] = None,
    trust_signer: Annotated[
        list[str] | None,
        typer.Option(
            "--trust-signer",
            help="Take on jobs of every model bundle this key (address or public key) signed "
            "(repeat; adds to FEDRELAY_TRUST_SIGNERS).",
        ),
    ] = None,
    trust_file: Annotated[
        Path | None,
        typer.Option(
            "--trust-file",
            help="Trust file: a bundle hash or 'signer KEY' per line (adds to "
            "FEDRELAY_TRUST_FILE).",
        ),
    ] = None,
) -> None:
    """Run the coordinator: follow JobMarket, drive rounds, serve the worker API."""
    from fedrelay.adapters.telemetry.tracing import configure_tracing
    from fedrelay.commands.logs import configure_command_logging
    from fedrelay.coordinator.process import CoordinatorFailed, serve
    from fedrelay.coordinator.settings import ApiSettings
    from fedrelay.training.trust import TrustFileError

    configure_command_logging(logging.INFO)
    try:
        settings = CoordinatorSettings()
    except ValidationError as exc:
        raise _fail(_invalid_settings(exc)) from None
    target = chain_target(settings, rpc_url, job_market)
    remember(settings.database_url, target.rpc_url)
    key = read_evm_key(signer_key_file)
    try:
        trust = settings.trust_policy(trust_model or (), trust_signer or (), trust_file)
    except TrustFileError as exc:
        raise _fail(str(exc)) from None
    try:
        ApiSettings().resolved_admin_token()
    except (ValueError, OSError) as exc:
        raise _fail(f"no usable admin token: {exc}") from None
    tracing = configure_tracing("fedrelay-coordinator")  # only once the process will run
    try:
        asyncio.run(serve(settings, target, key, trust))
    except (LedgerError, CoordinatorFailed) as exc:
        raise _fail(redact_text(str(exc), [settings.database_url, target.rpc_url])) from None
    finally:
        tracing.shutdown()  # exports the spans still buffered


# --- job post ----------------------------------------------------------------------------------


def _load_config(path: Path | None, evaluation: bool = False) -> JobConfig:
    """The job configuration in ``path`` (defaults without one).

    Args:
        path: The configuration file.
        evaluation: ``--eval-data`` is given: the file may leave ``evaluation.data_hash`` out
            (a placeholder stands in until the evaluation set is read and hashed).
    """
    from fedrelay.protocol.job_config import InvalidJobConfig, JobConfig

    if path is None:
        return JobConfig()
    try:
        data = path.read_bytes()
        if evaluation:
            loaded = json.loads(data)
            if isinstance(loaded, dict):
                given = loaded.get("evaluation")
                given = dict(given) if isinstance(given, dict) else {}
                given.setdefault("data_hash", "0" * 64)
                data = json.dumps({**loaded, "evaluation": given}).encode()
        return JobConfig.from_bytes(data)
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror}") from None
    except (InvalidJobConfig, ValueError) as exc:
        raise _fail(f"{path}: {exc}") from None


def _private_data(config: JobConfig, unverified: bool) -> JobConfig:
    """``config`` with ``data.replay`` "none" when the poster gives up replays of private data.

    A job on the workers' own data is replayed by spot reveals (``replay: "segments"``, the
    default): a challenged worker opens the examples a replayed segment consumed, to the
    verifier only. ``--unverified-private-data`` turns that off: no example is ever opened, the
    updates are checked at checkpoint 0 and the final checkpoint only and weigh 1 each.

    Raises:
        typer.Exit: The flag on a job on published data.
    """
    private = config.worker_data
    if private is None:
        if unverified:
            raise _fail(
                "--unverified-private-data is for jobs on the workers' own data; this job's "
                "data is published (the coordinator replays its segments)"
            )
        return config
    if not unverified or private.replay == "none":
        return config
    return config.model_copy(update={"data": private.model_copy(update={"replay": "none"})})


def _evaluation_blob(path: Path, config: JobConfig, vocabulary: bytes | None) -> bytes:
    """The poster's evaluation set at ``path`` as a tensor blob, checked against the schema."""
    from fedrelay.training.datasets import (
        SchemaMismatch,
        dataset_blob,
        evaluation_schema,
        load_examples,
    )

    try:
        return dataset_blob(load_examples(path, evaluation_schema(config), vocabulary))
    except SchemaMismatch as exc:
        raise _fail(f"--eval-data: {exc}") from None
    except OSError as exc:
        raise _fail(f"--eval-data: cannot read {path}: {exc.strerror}") from None


def _vocabulary_blob(path: Path | None, config: JobConfig) -> bytes | None:
    """The vocabulary blob a text job names, read from ``path`` and checked against its hash."""
    from fedrelay.protocol.hashing import keccak256

    private = config.worker_data
    wanted = private.schema_.vocabulary_hash if private and private.schema_.kind == "text" else ""
    if not wanted:
        if path is not None:
            raise _fail("--vocabulary is for text jobs whose schema names a vocabulary_hash")
        return None
    if path is None:
        raise _fail(f"the job's text schema names vocabulary {wanted}: pass --vocabulary FILE")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror}") from None
    if keccak256(data).hex() != wanted:
        raise _fail(
            f"--vocabulary {path} hashes to {keccak256(data).hex()}, the job names {wanted}"
        )
    return data


def _with_evaluation(config: JobConfig, blob: bytes) -> JobConfig:
    from fedrelay.protocol.hashing import keccak256
    from fedrelay.protocol.job_config import InvalidJobConfig, JobConfig

    evaluation = config.evaluation.model_copy(update={"data_hash": keccak256(blob).hex()})
    try:  # validated again, as the blob will be parsed
        return JobConfig.from_bytes(config.model_copy(update={"evaluation": evaluation}).to_bytes())
    except InvalidJobConfig as exc:
        raise _fail(str(exc)) from None


def _model_blob(path: Path | None, config: JobConfig) -> bytes:
    from fedrelay.coordinator.verification import JobWorkbench
    from fedrelay.training import BlobError, TrainingError, decode_blob, encode_blob

    if path is None:
        try:
            return encode_blob(JobWorkbench(config).initial_model())
        except TrainingError as exc:  # a LoRA job's base weights, an untrusted bundle
            raise _fail(
                f"cannot build the job's initial model: {exc}; pass it with --model FILE"
            ) from None
    try:
        data = path.read_bytes()
        decode_blob(data)
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror}") from None
    except BlobError as exc:
        raise _fail(f"{path} is not a canonical safetensors model: {exc}") from None
    return data


async def _upload(
    blobs: list[bytes],
    settings: CoordinatorSettings,
    url: str | None,
    evaluation: bytes | None = None,
) -> list[str]:
    """Store ``blobs`` as the poster's (published once the job is admitted) and
    ``evaluation`` as its evaluation set (never published); their names, ``blobs``' first."""
    from fedrelay.adapters.blobstore import EVALUATION, POSTER, BlobStoreError
    from fedrelay.coordinator.process import open_blob_store
    from fedrelay.coordinator.settings import ApiSettings, BlobStoreSettings

    uploads = [(blob, POSTER) for blob in blobs]
    if evaluation is not None:
        uploads.append((evaluation, EVALUATION))
    if url is None:  # the operator's own blob store (directory or bucket): the poster's path
        try:
            store = open_blob_store(settings, BlobStoreSettings())
            return [await store.put(blob, domain=domain) for blob, domain in uploads]
        except (BlobStoreError, ValueError, OSError) as exc:
            raise _fail(f"cannot store the job's blobs: {exc}") from None
    import httpx

    try:
        token = ApiSettings().resolved_admin_token()
    except (ValueError, OSError) as exc:
        raise _fail(f"uploading through the coordinator needs its admin token: {exc}") from None
    names = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for blob, domain in uploads:
            try:
                response = await client.post(
                    "/v1/admin/blobs",
                    content=blob,
                    params={"purpose": "evaluation" if domain == EVALUATION else "job"},
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.HTTPError as exc:
                raise _fail(
                    f"cannot reach the coordinator at {redact_url(url)}: "
                    f"{redact_text(str(exc), [url])}"
                ) from None
            if response.status_code != 201:
                raise _fail(f"the coordinator refused a blob: {response.text[:300]}")
            names.append(str(response.json()["name"]))
    return names


SOLANA_WORMHOLE_CHAIN = 1
DEFAULT_RELEASE_AFTER = 3600
DEFAULT_PROGRESS_TIMEOUT = 7 * 24 * 3600
DEFAULT_MIN_STAKE = 10**8  # one whole token in 8-decimal stake units
MAX_RELEASE_AFTER = 30 * 24 * 3600
MAX_PROGRESS_TIMEOUT = 365 * 24 * 3600


def _recipient_key(chain: int, text: str) -> bytes:
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
            f"--slash-recipient {chain}={text}: not an EVM address, 32 bytes of hex or a Solana key"
        ) from None


def _slash_recipients(
    given: list[str], chains: tuple[int, ...], poster_address: str
) -> tuple[bytes, ...]:
    """One recipient per worker chain: given as CHAIN=ACCOUNT, else the poster's EVM address
    (an EVM worker chain); a Solana worker chain needs its account given."""
    by_chain: dict[int, bytes] = {}
    for item in given:
        chain_text, sep, account = item.partition("=")
        if not sep or not chain_text.strip().isdigit():
            raise _fail(f"--slash-recipient {item!r}: expected CHAIN=ACCOUNT, e.g. 1=<solana key>")
        chain = int(chain_text)
        if chain not in chains:
            raise _fail(f"--slash-recipient names chain {chain}, not one of the job's {chains}")
        by_chain[chain] = _recipient_key(chain, account.strip())
    recipients = []
    for chain in chains:
        if chain in by_chain:
            key = by_chain[chain]
        elif chain == SOLANA_WORMHOLE_CHAIN:
            raise _fail(
                "worker chain 1 (Solana) needs --slash-recipient 1=<account>: the Solana account "
                "slashed lamports are credited to"
            )
        else:
            key = bytes(12) + bytes.fromhex(poster_address.removeprefix("0x"))
        if key == bytes(32):
            raise _fail(f"the slash recipient for chain {chain} must not be zero")
        recipients.append(key)
    return tuple(recipients)


def _check_policy(
    min_stake: int, rejected: int, missed: int, release_after: int, progress_timeout: int
) -> None:
    """The job's slash policy and timeouts as JobMarket accepts them (a clear error otherwise)."""
    for name, value in (("--rejected-slash", rejected), ("--missed-slash", missed)):
        if value > min_stake:
            raise _fail(
                f"{name} {value} exceeds --min-stake {min_stake}: a task can only lock (and lose) "
                "the stake the job requires; raise --min-stake or lower the slash"
            )
    if not 0 < release_after <= MAX_RELEASE_AFTER:
        raise _fail(f"--release-after must be 1..{MAX_RELEASE_AFTER} seconds, got {release_after}")
    if not 0 < progress_timeout <= MAX_PROGRESS_TIMEOUT:
        raise _fail(
            f"--progress-timeout must be 1..{MAX_PROGRESS_TIMEOUT} seconds, got {progress_timeout}"
        )


def _bundle_args(text: str | None) -> dict[str, Any]:
    """``--bundle-args``: a JSON object of names to numbers, strings or booleans."""
    if text is None:
        return {}
    try:
        args = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(f"--bundle-args is not JSON: {exc}") from None
    if not isinstance(args, dict) or not all(
        isinstance(v, int | float | str | bool) for v in args.values()
    ):
        raise _fail(
            "--bundle-args must be a JSON object of numbers, strings and booleans, "
            "e.g. '{\"width\": 64}'"
        )
    return args


def _with_bundle(
    config: JobConfig,
    directory: Path,
    args_text: str | None,
    objective: str | None,
    poster_key: str,
) -> tuple[JobConfig, bytes, str]:
    """``config`` with its model replaced by the bundle in ``directory``, signed by the poster.

    The model entry keeps what the configuration file's bundle entry said (``init_seed``,
    ``frozen``, ``args``, ``objective``) unless the options say otherwise.

    Returns:
        The new configuration, the bundle's blob and the poster's address that signed it.
    """
    from fedrelay.protocol.job_config import InvalidJobConfig, JobConfig
    from fedrelay.training.bundles import BundleError, bundle_hash, pack_bundle
    from fedrelay.training.trust import bundle_signer, sign_bundle

    try:
        blob = pack_bundle(directory)
    except BundleError as exc:
        raise _fail(f"--model-bundle {directory}: {exc}") from None
    name = bundle_hash(blob)
    signature = sign_bundle(name, poster_key)
    document = config.model_dump(mode="json")
    entry = dict(document["model"]) if document["model"].get("kind") == "bundle" else {}
    entry.update(kind="bundle", bundle=name, signature=signature)
    if args_text is not None or "args" not in entry:
        entry["args"] = _bundle_args(args_text)
    if objective is not None or "objective" not in entry:
        entry["objective"] = objective or "classification"
    document["model"] = entry
    try:
        updated = JobConfig.from_bytes(json.dumps(document).encode())
    except InvalidJobConfig as exc:
        raise _fail(
            f"--model-bundle: the job configuration refuses the bundle entry: {exc}"
        ) from None
    return updated, blob, str(bundle_signer(name, signature))


def _with_zoo_model(
    config: JobConfig, config_file: Path | None, name: str, params: list[str]
) -> JobConfig:
    """``config`` with its model the zoo's ``name`` sized by ``--model-param`` texts.

    Raises:
        typer.Exit: The configuration file names a model already, or the name, a parameter
            or a value is refused (:func:`fedrelay.protocol.model_zoo.zoo_model`).
    """
    from fedrelay.protocol.job_config import InvalidJobConfig, JobConfig
    from fedrelay.protocol.model_zoo import ZooError, parse_params, zoo_model

    if config_file is not None:
        with contextlib.suppress(OSError, ValueError):  # _load_config has read it already
            if "model" in json.loads(config_file.read_bytes()):
                raise _fail(
                    f"--model-zoo {name} and the model in {config_file} both name the job's "
                    "model: drop one"
                )
    try:
        model = zoo_model(name, parse_params(params), config.data)
        document = {**config.model_dump(mode="json"), "model": model.model_dump(mode="json")}
        return JobConfig.from_bytes(json.dumps(document).encode())
    except (ZooError, InvalidJobConfig) as exc:
        raise _fail(str(exc)) from None


def _bundle_model_blob(config: JobConfig, bundle: bytes) -> bytes:
    """The initial model of the poster's own bundle (trusted here: the poster runs its own code)."""
    from fedrelay.training import encode_blob
    from fedrelay.training.bundles import BundleError, bundle_hash, bundle_ref, load_bundle
    from fedrelay.training.torch_trainer import initial_model
    from fedrelay.training.trust import TrustPolicy

    name = bundle_hash(bundle)
    ref = bundle_ref(config.model)
    args = getattr(config.model, "args", None)
    try:
        factory = load_bundle(
            name,
            {name: bundle}.__getitem__,
            TrustPolicy(hashes=frozenset({name})),
            args=dict(args or {}),
            signature=ref.signature if ref else "",
        )
        return encode_blob(initial_model(factory, int(getattr(config.model, "init_seed", 0))))
    except BundleError as exc:
        raise _fail(f"--model-bundle: building the initial model failed: {exc}") from None


@job_app.command("post")
def post_command(
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Rounds in the job.")],
    workers_per_round: Annotated[int, typer.Option("--workers-per-round", min=1, max=0xFFFF)],
    reward_per_round: Annotated[
        int, typer.Option("--reward-per-round", min=1, help="In the token's smallest unit.")
    ],
    signer_key_file: Annotated[
        Path | None, typer.Option("--signer-key-file", help="The poster's EVM key.")
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="Job configuration JSON (default: defaults).")
    ] = None,
    model_file: Annotated[
        Path | None, typer.Option("--model", help="Initial model (default: seeded from config).")
    ] = None,
    min_stake: Annotated[
        int,
        typer.Option(
            "--min-stake",
            min=0,
            help="Stake (8 decimals) a worker needs to be drawn; the default, 1 token, is also "
            "what a worker must stake to register on the devnet. A rejected update loses "
            "--rejected-slash of it.",
        ),
    ] = DEFAULT_MIN_STAKE,
    rejected_slash: Annotated[
        int | None,
        typer.Option(
            "--rejected-slash",
            min=0,
            help="Slash (8 decimals) of a rejected update or transcript; <= --min-stake "
            "(default: --min-stake).",
        ),
    ] = None,
    missed_slash: Annotated[
        int,
        typer.Option(
            "--missed-slash",
            min=0,
            help="Slash (8 decimals) of a missed deadline; 0: dropped only.",
        ),
    ] = 0,
    slash_mode: Annotated[
        str,
        typer.Option(
            "--slash-mode",
            help="Where slashed stake goes: 'recipient' (the slash recipient of the worker's "
            "chain) or 'honest' (split among the round's accepted workers on that chain).",
        ),
    ] = "recipient",
    slash_recipient: Annotated[
        list[str] | None,
        typer.Option(
            "--slash-recipient",
            help="CHAIN=ACCOUNT receiving slashed stake on a worker chain (repeat; default on an "
            "EVM chain: the poster's address; required for Solana, chain 1).",
        ),
    ] = None,
    release_after: Annotated[
        int,
        typer.Option(
            "--release-after",
            help="Seconds after a round's deadline before a worker may release an unsettled task.",
        ),
    ] = DEFAULT_RELEASE_AFTER,
    progress_timeout: Annotated[
        int,
        typer.Option(
            "--progress-timeout",
            help="Seconds without progress after which the poster may cancel the job.",
        ),
    ] = DEFAULT_PROGRESS_TIMEOUT,
    worker_chain: Annotated[
        list[int] | None, typer.Option("--worker-chain", help="Allowed worker chain (repeat).")
    ] = None,
    token: Annotated[
        str, typer.Option("--token", help="ERC-20 address; native if zero.")
    ] = _NATIVE,
    coordinator_url: Annotated[
        str | None,
        typer.Option("--coordinator-url", help="Upload blobs through the coordinator's API."),
    ] = None,
    rpc_url: Annotated[str | None, typer.Option("--rpc-url")] = None,
    job_market: Annotated[str | None, typer.Option("--job-market")] = None,
    model_zoo: Annotated[
        str | None,
        typer.Option(
            "--model-zoo",
            help="Train a built-in model: mlp, cnn, transformer_lm or lora, sized with "
            "--model-param (sizes the job's data schema fixes default to it).",
        ),
    ] = None,
    model_param: Annotated[
        list[str] | None,
        typer.Option(
            "--model-param",
            help="KEY=VALUE of the --model-zoo model (repeat): hidden=64, filters=16,32 (lists "
            "comma-separated), base.width=128 (a LoRA base).",
        ),
    ] = None,
    model_bundle: Annotated[
        Path | None,
        typer.Option(
            "--model-bundle",
            help="Train your own model: a folder with manifest.json and .py sources, packed, "
            "signed with --signer-key-file and uploaded; workers and the coordinator must "
            "trust it (docs/learning.md, 'Custom models and trust').",
        ),
    ] = None,
    bundle_args: Annotated[
        str | None,
        typer.Option(
            "--bundle-args", help='The factory\'s keyword arguments, JSON: {"width": 64}.'
        ),
    ] = None,
    bundle_objective: Annotated[
        str | None,
        typer.Option(
            "--bundle-objective",
            help="What the bundle's model learns: classification (default) or language_model.",
        ),
    ] = None,
    eval_data: Annotated[
        Path | None,
        typer.Option(
            "--eval-data",
            help="The evaluation set (.npz/.csv/.parquet, image folder, .txt corpus), checked "
            "against the job's schema and kept by the coordinator, never sent to workers; "
            "sets evaluation.data_hash (required unless the job is on published digits).",
        ),
    ] = None,
    vocabulary: Annotated[
        Path | None,
        typer.Option(
            "--vocabulary",
            help="The vocabulary blob a text job's schema names (vocabulary_hash).",
        ),
    ] = None,
    unverified_private_data: Annotated[
        bool,
        typer.Option(
            "--unverified-private-data",
            help="On a job on the workers' own data, open none of their examples: segments "
            "are not replayed (updates are checked at checkpoint 0 and the final checkpoint "
            "only) and each update weighs 1. By default a challenged worker opens the examples "
            "a replayed segment consumed, to the verifier only.",
        ),
    ] = False,
) -> None:
    """Upload the model and configuration blobs, escrow the reward and post the job."""
    from fedrelay.adapters.evm import EvmChain, EvmError, JobMarketContract, JobSpec, Signer
    from fedrelay.adapters.evm.coordinator_chain import token_decimals

    settings = CoordinatorSettings()
    config = _private_data(
        _load_config(config_file, eval_data is not None), unverified_private_data
    )
    if model_zoo is not None:
        if model_bundle is not None:
            raise _fail(f"--model-zoo {model_zoo} and --model-bundle both name the model: drop one")
        config = _with_zoo_model(config, config_file, model_zoo, model_param or [])
    elif model_param:
        raise _fail("--model-param needs --model-zoo NAME")
    bundle: bytes | None = None
    signer = ""
    if model_bundle is not None:
        poster_key = read_evm_key(signer_key_file)
        config, bundle, signer = _with_bundle(
            config, model_bundle, bundle_args, bundle_objective, poster_key
        )
    elif bundle_args is not None or bundle_objective is not None:
        raise _fail("--bundle-args and --bundle-objective need --model-bundle")
    vocabulary_blob = _vocabulary_blob(vocabulary, config)
    evaluation = None
    if eval_data is not None:
        evaluation = _evaluation_blob(eval_data, config, vocabulary_blob)
        config = _with_evaluation(config, evaluation)
    chains = tuple(worker_chain or [4])
    published = config.published_data
    if published is not None and workers_per_round > published.shards:
        raise _fail(
            f"--workers-per-round {workers_per_round} exceeds the configuration's "
            f"{published.shards} data shards"
        )
    rejected = min_stake if rejected_slash is None else rejected_slash
    _check_policy(min_stake, rejected, missed_slash, release_after, progress_timeout)
    modes = {"recipient": 0, "honest": 1}
    if slash_mode not in modes:
        raise _fail(f"--slash-mode must be 'recipient' or 'honest', got {slash_mode!r}")
    target = chain_target(settings, rpc_url, job_market)
    chain = EvmChain(target.rpc_url)
    try:
        decimals = token_decimals(chain, token)
    except (EvmError, ValueError) as exc:
        raise _fail(f"cannot read the decimals of token {token}: {exc}") from None
    from fedrelay.coordinator.publishing import largest_task_examples

    pays = config.cheating_pays(reward_per_round, decimals, rejected, largest_task_examples(config))
    if pays is not None:
        raise _fail(f"refusing to post: {pays}")
    poster = Signer(read_evm_key(signer_key_file))
    recipients = _slash_recipients(slash_recipient or [], chains, poster.address)
    if bundle is not None and model_file is None:
        model = _bundle_model_blob(config, bundle)
    else:
        model = _model_blob(model_file, config)
    bundles = [bundle] if bundle is not None else []
    extra = [*bundles, *([vocabulary_blob] if vocabulary_blob is not None else [])]
    model_name, config_name, *others = asyncio.run(
        _upload([model, config.to_bytes(), *extra], settings, coordinator_url, evaluation)
    )
    bundle_name = others[: len(bundles)]
    spec = JobSpec(
        model_hash=bytes.fromhex(model_name),
        config_hash=bytes.fromhex(config_name),
        num_rounds=rounds,
        workers_per_round=workers_per_round,
        reward_per_round=reward_per_round,
        min_stake=min_stake,
        worker_chains=chains,
        token=token,
        rejected_slash=rejected,
        missed_slash=missed_slash,
        slash_mode=modes[slash_mode],
        slash_recipients=recipients,
        release_after=release_after,
        progress_timeout=progress_timeout,
    )
    market = JobMarketContract(chain, target.job_market)
    try:
        if int(token, 16) != 0:
            erc20 = chain.w3.eth.contract(
                address=chain.w3.to_checksum_address(token), abi=_ERC20_APPROVE
            )
            chain.transact(poster, erc20.functions.approve(market.address, spec.escrow))
        posted = market.post_job(poster, spec)
    except (EvmError, ValueError) as exc:
        raise _fail(f"posting the job failed: {redact_text(str(exc), [target.rpc_url])}") from None
    table = Table(title=f"job {posted.job_id} posted", show_header=False)
    for name, value in (
        ("job id", str(posted.job_id)),
        ("model", model_name),
        ("config", config_name),
        ("evaluation", config.evaluation.data_hash or "the digits' held-out split"),
        ("metric", config.evaluation.metric),
        ("rounds x workers", f"{rounds} x {workers_per_round}"),
        ("escrow", f"{spec.escrow} ({'native' if int(token, 16) == 0 else token})"),
        ("worker chains", ", ".join(str(c) for c in chains)),
        ("slashes", f"rejected {rejected}, missed {missed_slash} (to {slash_mode})"),
        ("release after", f"{release_after} s"),
        ("progress timeout", f"{progress_timeout} s"),
        ("transaction", "0x" + bytes(posted.receipt["transactionHash"]).hex()),
        *([("model bundle", f"{bundle_name[0]} (signed by {signer})")] if bundle_name else []),
    ):
        table.add_row(name, value)
    Console().print(table)
    if bundle_name:
        typer.echo(
            f"Workers and the coordinator run the bundle only if they trust it: --trust-model "
            f"{bundle_name[0]}, or the line 'signer {signer}' in their trust file."
        )


# --- job status --------------------------------------------------------------------------------


async def _job_config(config_hash: bytes) -> JobConfig | None:
    """The configuration ``config_hash``, read from the coordinator's blob store; None when
    that store or the configuration is not at hand."""
    from fedrelay.adapters.blobstore import BlobStoreError
    from fedrelay.coordinator.process import open_blob_store
    from fedrelay.coordinator.settings import BlobStoreSettings
    from fedrelay.protocol.job_config import InvalidJobConfig, JobConfig

    if config_hash == bytes(32):
        return None
    try:
        settings, where = CoordinatorSettings(), BlobStoreSettings()
        if not where.is_s3 and not where.directory(settings.blob_dir).is_dir():
            return None
        config = JobConfig.from_bytes(await open_blob_store(settings, where).get(config_hash.hex()))
    except (BlobStoreError, InvalidJobConfig, ValidationError, ValueError, OSError):
        return None
    return config


def _privacy_cost(config: JobConfig | None, examples: int | None) -> float | None:
    """The expected fraction of a worker's ``examples`` opened per round by spot reveals
    (:func:`~fedrelay.protocol.challenges.privacy_cost`); None when the job opens none (it
    trains on published data, or its poster turned replays off) or is not at hand."""
    from fedrelay.protocol.challenges import privacy_cost

    private = config.worker_data if config else None
    if config is None or private is None or private.replay == "none" or not examples:
        return None
    training = config.training_config(examples)
    return privacy_cost(training, examples, config.challenge_rate, config.challenge_segments)


async def _status(database_url: str, job_id: int) -> dict[str, Any]:
    from fedrelay.adapters.ledger import create_engine
    from fedrelay.adapters.ledger.coordinator_store import LedgerCoordinatorStore
    from fedrelay.ports.coordinator_store import RoundReport

    engine = create_engine(database_url)
    store = LedgerCoordinatorStore(engine)
    try:
        current = await store.get_round(job_id)
        if current is None:
            raise _fail(f"the coordinator's ledger knows no job {job_id}")
        config = await _job_config(current.config_hash)
        reports: dict[int, RoundReport] = {r.round: r for r in await store.reports(job_id)}
        rounds = []
        payouts: dict[str, int] = {}
        for number in range(current.round + 1):
            state = await store.get_round(job_id, number)
            if state is None:
                continue
            report = reports.get(number)
            rewards = report.rewards if report else {}
            for worker, amount in rewards.items():
                payouts[worker] = payouts.get(worker, 0) + amount
            rounds.append(
                {
                    "round": number,
                    "phase": state.phase.value,
                    "accuracy": report.accuracy if report else None,
                    "model_hash": state.proposed_model.hex() if state.proposed_model else None,
                    "rewards": sum(rewards.values()),
                    "note": report.note if report else "",
                    # The draws' seeds and the blocks they came from, to recompute them.
                    "seed": report.seed if report else None,
                    "seed_block": report.seed_block if report else None,
                    "challenge_seed": report.challenge_seed if report else None,
                    "closing_block": report.closing_block if report else None,
                    "tasks": [
                        {
                            "worker_chain": a.worker.chain,
                            "worker_key": a.worker.key.hex(),
                            "worker_id": a.worker.worker_id.hex(),
                            "shard": a.shard,
                            "status": a.status.value,
                            "update_hash": a.commitment.update_hash.hex() if a.commitment else None,
                            "reward": rewards.get(a.worker.worker_id.hex(), 0),
                            "slash": a.slash,
                            "reason": a.reason,
                            "num_samples": a.commitment.num_samples if a.commitment else None,
                            "privacy_cost": _privacy_cost(
                                config, a.commitment.num_samples if a.commitment else None
                            ),
                        }
                        for a in state.assignments
                    ],
                }
            )
        return {
            "job_id": job_id,
            "round": current.round,
            "total_rounds": current.policy.total_rounds,
            "phase": current.phase.value,
            # What each round's "accuracy" holds: the job's evaluation metric (None: its
            # configuration is not in this machine's blob store).
            "metric": config.evaluation.metric if config else None,
            # Where the seeds' 32 bytes come from: the blocks' PREVRANDAO or their hashes.
            "randomness": config.randomness if config else None,
            # Spot reveals (a job on the workers' own data): each task's privacy_cost is the
            # expected fraction of its committed examples opened to the verifier per round.
            "spot_reveals": bool(
                config and config.worker_data and config.worker_data.replay == "segments"
            ),
            "rounds": rounds,
            "payouts": payouts,
        }
    finally:
        await engine.dispose()


def _render(status: dict[str, Any]) -> None:
    console = Console()
    console.print(
        f"[bold]job {status['job_id']}[/bold]: round {status['round']} of "
        f"{status['total_rounds']}, {status['phase']}"
    )
    rounds = Table(title="rounds")
    for column in ("round", "phase", status.get("metric") or "metric", "model", "rewards", "note"):
        rounds.add_column(column)
    for r in status["rounds"]:
        accuracy = "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
        model = (r["model_hash"] or "-")[:16]
        rounds.add_row(str(r["round"]), r["phase"], accuracy, model, str(r["rewards"]), r["note"])
    console.print(rounds)
    if status["rounds"]:
        latest = status["rounds"][-1]
        tasks = Table(title=f"round {latest['round']}: workers and commitments")
        columns = ["chain", "worker", "shard", "status", "update", "reward", "slash", "why"]
        if status.get("spot_reveals"):
            columns[3:3] = ["examples", "revealed/round"]
        for column in columns:
            tasks.add_column(column)
        for t in latest["tasks"]:
            row = [
                str(t["worker_chain"]),
                t["worker_key"][-16:],
                str(t["shard"]),
                t["status"],
                (t["update_hash"] or "-")[:16],
                str(t["reward"]),
                str(t["slash"]),
                t["reason"],
            ]
            if status.get("spot_reveals"):
                cost = t.get("privacy_cost")
                row[3:3] = [str(t["num_samples"] or "-"), "-" if cost is None else f"{cost:.2%}"]
            tasks.add_row(*row)
        console.print(tasks)
        if status.get("spot_reveals"):
            console.print(
                "revealed/round: the expected share of a worker's examples opened to the "
                "verifier per round (spot reveals; never published, erased after the check)"
            )
    payouts = Table(title="payouts so far")
    payouts.add_column("worker id")
    payouts.add_column("paid")
    for worker, amount in sorted(status["payouts"].items()):
        payouts.add_row(worker, str(amount))
    console.print(payouts)


@job_app.command("status")
def status_command(
    job_id: Annotated[int, typer.Argument(min=0, help="The job id on the coordinator chain.")],
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="The coordinator's ledger.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show a job's rounds, workers, commitments, accuracy so far and payouts."""
    try:
        settings = CoordinatorSettings()
    except ValidationError as exc:
        raise _fail(_invalid_settings(exc)) from None
    try:
        status = asyncio.run(_status(database_url or settings.database_url, job_id))
    except LedgerError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(status, sort_keys=True))
    else:
        _render(status)


# --- job model ---------------------------------------------------------------------------------


def _market(rpc_url: str | None, job_market: str | None) -> JobMarketContract:
    from fedrelay.adapters.evm import EvmChain, JobMarketContract

    try:
        settings = CoordinatorSettings()
    except ValidationError as exc:
        raise _fail(_invalid_settings(exc)) from None
    target = chain_target(settings, rpc_url, job_market)
    return JobMarketContract(EvmChain(target.rpc_url), target.job_market)


def _model_hash(
    market: JobMarketContract, job_id: int, round_option: str | None
) -> tuple[str, bytes]:
    """The round whose model to fetch (a number or ``initial``) and its on-chain model hash."""
    from fedrelay.adapters.evm import JobStatus, RoundPhase

    job = market.job(job_id)
    if job.status is JobStatus.NONE:
        raise _fail(f"JobMarket {market.address} has no job {job_id}")
    if round_option == "initial":
        if job.current_round == 0:
            return "initial", job.model_hash
        return "initial", _initial_model_hash(market, job_id)
    if round_option is None:
        if job.current_round == 0:
            raise _fail(
                f"job {job_id} has no settled round yet (pass --round initial for the model "
                "it was posted with)"
            )
        return str(job.current_round - 1), job.model_hash
    if not round_option.isdigit():
        raise _fail(f"--round must be a round number or 'initial', not {round_option!r}")
    number = int(round_option)
    if number >= job.num_rounds:
        raise _fail(f"job {job_id} has {job.num_rounds} round(s); there is no round {number}")
    stored = market.round(job_id, number)
    if stored.phase is not RoundPhase.SETTLED:
        raise _fail(f"job {job_id} round {number} is not settled (it is {stored.phase.name})")
    return str(number), market.settled_model(job_id, number)


def _initial_model_hash(market: JobMarketContract, job_id: int) -> bytes:
    """The model hash a job was posted with, from its `postJob` transaction.

    Settling a round overwrites the job's stored model hash, so the initial one is read back
    from the calldata of the transaction that logged the job's JobPosted event.
    """
    from web3.exceptions import Web3Exception

    logs = market.contract.events.JobPosted().get_logs(
        argument_filters={"jobId": job_id}, from_block=0
    )
    if not logs:
        raise _fail(f"no JobPosted event for job {job_id}: cannot recover its initial model")
    transaction = market.chain.w3.eth.get_transaction(logs[0]["transactionHash"])
    try:
        _, arguments = market.contract.decode_function_input(transaction["input"])
    except (Web3Exception, ValueError):
        raise _fail(
            f"job {job_id} was not posted by a direct postJob call; its initial model hash "
            "cannot be read back from the chain"
        ) from None
    spec = arguments["spec"]
    return bytes(spec["modelHash"] if isinstance(spec, dict) else spec[1])


def _write_atomically(path: Path, data: bytes) -> None:
    import tempfile

    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@job_app.command("model")
def model_command(
    job_id: Annotated[int, typer.Argument(min=0, help="The job id on the coordinator chain.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the safetensors model.")],
    round_option: Annotated[
        str | None,
        typer.Option("--round", help="A settled round's model, or 'initial' (default: latest)."),
    ] = None,
    blob_dir: Annotated[
        Path | None,
        typer.Option(
            "--blob-dir",
            help="The coordinator's blob directory (default: FEDRELAY_BLOB_STORE or _DIR).",
        ),
    ] = None,
    rpc_url: Annotated[str | None, typer.Option("--rpc-url")] = None,
    job_market: Annotated[str | None, typer.Option("--job-market")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Fetch a job's settled model, check it against the chain's hash and write it."""
    from web3.exceptions import Web3Exception

    from fedrelay.adapters.blobstore import BlobStore, BlobStoreError, FileBlobStore, blob_name
    from fedrelay.adapters.evm import EvmError
    from fedrelay.coordinator.process import open_blob_store
    from fedrelay.coordinator.settings import BlobStoreSettings
    from fedrelay.training import BlobError, decode_blob

    if not out.parent.is_dir():
        raise _fail(f"cannot write {out}: {out.parent} is not a directory")
    market = _market(rpc_url, job_market)
    try:
        which, model_hash = _model_hash(market, job_id, round_option)
    except (EvmError, Web3Exception, OSError) as exc:  # OSError: the RPC is unreachable
        raise _fail(f"reading job {job_id} from the chain failed: {exc}") from None
    name = model_hash.hex()
    where = BlobStoreSettings()
    store: BlobStore
    if blob_dir is None and where.is_s3:  # the coordinator's bucket (FEDRELAY_BLOB_STORE)
        try:
            store = open_blob_store(CoordinatorSettings(), where)
        except (ValueError, OSError) as exc:
            raise _fail(f"cannot open the blob store: {exc}") from None
    else:
        root = blob_dir or where.directory(CoordinatorSettings().blob_dir)
        if not root.is_dir():
            raise _fail(f"no blob store at {root} (pass the coordinator's --blob-dir)")
        store = FileBlobStore(root)
    try:
        data = asyncio.run(store.get(name))
    except BlobStoreError as exc:
        raise _fail(f"cannot read model {name}: {exc}") from None
    if blob_name(data) != name:
        raise _fail(f"the blob read as {name} hashes to {blob_name(data)}; nothing was written")
    try:
        tensors = decode_blob(data)
    except BlobError as exc:
        raise _fail(f"model {name} is not a canonical safetensors model: {exc}") from None
    try:
        _write_atomically(out, data)
    except OSError as exc:
        raise _fail(f"cannot write {out}: {exc.strerror}") from None
    summary = {
        "job_id": job_id,
        "round": which,
        "model_hash": name,
        "bytes": len(data),
        "out": str(out),
        "tensors": {k: list(v.shape) for k, v in sorted(tensors.items())},
    }
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
        return
    table = Table(title=f"job {job_id} model, round {which}: {len(data)} bytes to {out}")
    table.add_column("tensor")
    table.add_column("shape")
    table.add_column("dtype")
    for key, value in sorted(tensors.items()):
        table.add_row(key, " x ".join(str(d) for d in value.shape), str(value.dtype))
    console = Console()
    console.print(f"model hash 0x{name}")
    console.print(table)


# --- job cancel --------------------------------------------------------------------------------


def _cancellable_from(market: JobMarketContract, job_id: int) -> tuple[int, int]:
    """When a job with a round in progress may be cancelled: (unix seconds, seconds from now).

    The poster may cancel once the job made no progress (posting, assigning, proposing,
    settling; not challenges or disputes) for its stated progress timeout.
    """
    raw = market.chain.call(market.contract.functions.getJob(job_id))
    last_progress, timeout = int(raw[16]), int(raw[15])
    now = int(market.chain.w3.eth.get_block("latest")["timestamp"])
    at = last_progress + timeout + 1
    return at, max(0, at - now)


def _cancel_refusal(
    exc: ContractRevert, job_id: int, caller: str, market: JobMarketContract
) -> str:
    """A one-line reason for a decoded `cancelJob` revert."""
    reasons = {
        "NotPoster": f"only job {job_id}'s poster can cancel it, not {caller}",
        "JobNotOpen": f"job {job_id} is already cancelled",
        "NothingToRefund": f"job {job_id} has no escrow left to refund (completed and closed)",
    }
    if exc.name == "RoundInProgress":
        at, wait = _cancellable_from(market, job_id)
        when = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"job {job_id} has a round in progress; cancel it between rounds, or once it has "
            f"made no progress for its progress timeout: from {when} (in {wait} s)"
        )
    return reasons.get(exc.name, f"cancelling job {job_id} failed: {exc}")


@job_app.command("cancel")
def cancel_command(
    job_id: Annotated[int, typer.Argument(min=0, help="The job id on the coordinator chain.")],
    key_file: Annotated[Path, typer.Option("--key-file", help="The poster's EVM key.")],
    rpc_url: Annotated[str | None, typer.Option("--rpc-url")] = None,
    job_market: Annotated[str | None, typer.Option("--job-market")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Cancel a job between rounds, or in any phase once it made no progress for its progress
    timeout (or close a completed one), and refund its unspent escrow."""
    from web3.exceptions import Web3Exception

    from fedrelay.adapters.evm import ContractRevert, EvmError, JobStatus, Signer

    market = _market(rpc_url, job_market)
    poster = Signer(read_evm_key(key_file))
    try:
        if market.job(job_id).status is JobStatus.NONE:
            raise _fail(f"JobMarket {market.address} has no job {job_id}")
        receipt = market.cancel_job(poster, job_id)
    except ContractRevert as exc:
        raise _fail(_cancel_refusal(exc, job_id, poster.address, market)) from None
    except (EvmError, Web3Exception, OSError) as exc:  # OSError: the RPC is unreachable
        raise _fail(f"cancelling job {job_id} failed: {exc}") from None
    refund = sum(
        int(e.args["refund"]) for e in market.events_in(receipt) if e.name == "JobCancelled"
    )
    gas = int(receipt["gasUsed"]) * int(receipt.get("effectiveGasPrice", 0))
    result = {
        "job_id": job_id,
        "refund": refund,
        "status": market.job(job_id).status.name.lower(),
        "gas_cost": gas,
        "transaction": "0x" + bytes(receipt["transactionHash"]).hex(),
    }
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
        return
    closed = "cancelled" if result["status"] == "cancelled" else "closed"
    table = Table(title=f"job {job_id} {closed}: {refund} refunded", show_header=False)
    for key, value in result.items():
        table.add_row(key.replace("_", " "), str(value))
    Console().print(table)
