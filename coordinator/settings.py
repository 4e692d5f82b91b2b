"""The coordinator's settings: the process's (``FEDRELAY_*``) and its HTTP API's
(``FEDRELAY_COORDINATOR_*``), read from the environment in one place.

They are plain values, importable without the service, FastAPI routes or any adapter, so the CLI
can check them (and fail with a clear message) before anything starts;
:mod:`fedrelay.coordinator.process` builds the running coordinator from them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fedrelay.ports.blobs import DEFAULT_MAX_BLOB_BYTES, DEFAULT_MAX_STREAM_BYTES
from fedrelay.ports.leader_lease import DEFAULT_LEASE_NAME
from fedrelay.protocol.job_config import JobConfig
from fedrelay.training.trust import TrustPolicy, split_entries

# The ledger's default database (fedrelay.adapters.ledger.database.DEFAULT_URL, which this
# layer may not import; a unit test pins that the two agree).
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///.fedrelay/ledger.db"


class CoordinatorSettings(BaseSettings):
    """The coordinator process's settings (environment prefix ``FEDRELAY_``)."""

    model_config = SettingsConfigDict(env_prefix="FEDRELAY_", extra="ignore", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    chains_file: Path | None = None
    coordinator_chain: str = "coordinator"
    coordinator_rpc_url: str | None = None
    coordinator_job_market: str | None = None
    coordinator_wormhole_chain: int = 2
    # The RewardDistributor the JobMarket credits settled rounds to (its rewardsAccount), whose
    # updater is the aggregator: the coordinator then keeps the cumulative earnings and proposes
    # their roots (coordinator/rewards.py). None: rewards are credited to each worker's payout.
    reward_distributor: str | None = Field(default=None, pattern=r"^0x[0-9a-fA-F]{40}$")
    # With a distributor: once a root is live, also send the claims of every account it owes
    # (claimBatch, paid from the aggregator's key; the workers need not claim themselves).
    claim_for_workers: bool = False
    api_host: str = "0.0.0.0"  # noqa: S104 - workers connect from other machines
    api_port: int = 8000
    health_port: int = 8080
    blob_dir: Path = Path(".fedrelay/blobs")
    drain_seconds: float = 30.0
    poll_seconds: float = 1.0
    start_block: int = 0
    # The leader lease (docs/operations.md, "Replicas and failover"): replicas sharing a ledger
    # and a lease name share leadership; a dead leader is replaced within
    # lease_seconds + lease_renew_seconds.
    lease_name: str = Field(default=DEFAULT_LEASE_NAME, min_length=1, max_length=64)
    lease_seconds: float = Field(default=10.0, gt=0)
    lease_renew_seconds: float = Field(default=3.0, gt=0)
    instance_id: str | None = Field(default=None, min_length=1, max_length=128)
    # The model bundles (posters' code) this coordinator takes jobs of, replays and evaluates:
    # FEDRELAY_TRUST_MODELS and FEDRELAY_TRUST_SIGNERS are comma-separated, FEDRELAY_TRUST_FILE
    # names a trust file (fedrelay.training.trust).
    trust_models: Annotated[tuple[str, ...], NoDecode] = ()
    trust_signers: Annotated[tuple[str, ...], NoDecode] = ()
    trust_file: Path | None = None

    @field_validator("trust_models", "trust_signers", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return tuple(split_entries([value])) if isinstance(value, str) else value

    def trust_policy(
        self,
        models: Sequence[str] = (),
        signers: Sequence[str] = (),
        trust_file: Path | None = None,
    ) -> TrustPolicy:
        """The bundles trusted here: these settings' and the command line's (``models``,
        ``signers``, ``trust_file``) together.

        Raises:
            TrustFileError: An entry is not a hash or a key, or a trust file is unreadable or
                malformed.
        """
        files = [f for f in (self.trust_file, trust_file) if f is not None]
        return TrustPolicy.of(
            [*self.trust_models, *split_entries(models)],
            [*self.trust_signers, *split_entries(signers)],
            files,
        )

    @model_validator(mode="after")
    def _renewed_within_the_lease(self) -> CoordinatorSettings:
        if self.lease_renew_seconds >= self.lease_seconds:
            raise ValueError(
                f"FEDRELAY_LEASE_RENEW_SECONDS ({self.lease_renew_seconds:g}) must be below "
                f"FEDRELAY_LEASE_SECONDS ({self.lease_seconds:g}): the lease is renewed within it"
            )
        return self

    @model_validator(mode="after")
    def _claims_of_a_distributor(self) -> CoordinatorSettings:
        if self.claim_for_workers and self.reward_distributor is None:
            raise ValueError(
                "FEDRELAY_CLAIM_FOR_WORKERS pays the claims of a RewardDistributor's roots: set "
                "FEDRELAY_REWARD_DISTRIBUTOR too"
            )
        return self

    def replica_id(self) -> str:
        """This replica's id in the lease: ``FEDRELAY_INSTANCE_ID``, else host name and pid."""
        return self.instance_id or f"{socket.gethostname()}-{os.getpid()}"


class JobLimits(BaseSettings):
    """The largest job this coordinator takes on (``FEDRELAY_COORDINATOR_MAX_*``).

    The coordinator rebuilds every job's model, holds its checkpoints and replays challenged
    segments, so a configuration's numbers are its costs: a job beyond any limit is refused as
    unusable before anything of it is built or published (:meth:`problems` says which numbers).

    Attributes:
        max_model_parameters: Parameters of the job's model
            (:meth:`~fedrelay.protocol.job_config.ModelSpec.parameter_count`).
        max_steps: Local steps per task (``steps``).
        max_batch_size: Examples per step (``batch_size``).
        max_checkpoints: Checkpoints per transcript (segments + 1).
        max_replay_steps: Steps the coordinator replays for one challenged segment
            (``checkpoint_every``, at most ``steps``).
    """

    model_config = SettingsConfigDict(
        env_prefix="FEDRELAY_COORDINATOR_", extra="ignore", frozen=True
    )

    max_model_parameters: int = Field(default=10_000_000, ge=1)
    max_steps: int = Field(default=10_000, ge=1)
    max_batch_size: int = Field(default=4096, ge=1)
    max_checkpoints: int = Field(default=1025, ge=2)
    max_replay_steps: int = Field(default=1000, ge=1)

    def problems(self, config: JobConfig, examples: int | None = None) -> list[str]:
        """Every limit ``config`` is beyond, one sentence each with its numbers (empty: none).

        A bundle model's parameters are unknown until its code runs, so only zoo models are
        measured here.

        Args:
            config: A parsed job configuration.
            examples: With ``local_epochs``, the largest task's example count (its steps
                follow from it).
        """
        training = config.training_config(examples)
        measured = (
            ("model parameters", config.model.parameter_count(), self.max_model_parameters),
            ("steps", training.steps, self.max_steps),
            ("batch_size", config.batch_size, self.max_batch_size),
            ("checkpoints per transcript", training.segments + 1, self.max_checkpoints),
            (
                "replay steps per segment",
                min(config.checkpoint_every, training.steps),
                self.max_replay_steps,
            ),
        )
        return [
            f"{what} {value} is above this coordinator's limit {limit} "
            f"(FEDRELAY_COORDINATOR_{variable.upper()})"
            for (what, value, limit), variable in zip(measured, _LIMIT_FIELDS, strict=True)
            if value is not None and value > limit
        ]


_LIMIT_FIELDS = (
    "max_model_parameters",
    "max_steps",
    "max_batch_size",
    "max_checkpoints",
    "max_replay_steps",
)


class BlobStoreSettings(BaseSettings):
    """Where the coordinator keeps its blobs (environment prefix ``FEDRELAY_``).

    ``FEDRELAY_BLOB_STORE`` selects the store: unset (the embedded default) or
    ``file://<path>``: the directory store at ``FEDRELAY_BLOB_DIR`` (or that path);
    ``s3://<bucket>[/<prefix>]``: a bucket of an S3-compatible service, which replicas share,
    with ``FEDRELAY_S3_*``: the endpoint URL (unset: AWS S3), the region, and the access key id
    and secret key, each from its variable or a ``*_FILE`` (a mounted Secret). Without a key,
    boto3's default chain applies (an instance or pod role).
    """

    model_config = SettingsConfigDict(env_prefix="FEDRELAY_", extra="ignore", frozen=True)

    blob_store: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_access_key_id_file: Path | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_secret_access_key_file: Path | None = None

    @field_validator("blob_store")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme == "s3" and parts.netloc and not parts.query and not parts.fragment:
            return value
        if parts.scheme == "file" and not parts.netloc and parts.path:
            return value
        raise ValueError(
            "must be s3://<bucket>[/<prefix>] or file://<path> "
            "(unset: the directory store at FEDRELAY_BLOB_DIR)"
        )

    @property
    def is_s3(self) -> bool:
        """Whether the blobs are in an S3 bucket."""
        return self.blob_store is not None and self.blob_store.startswith("s3://")

    def directory(self, default: Path) -> Path:
        """The directory store's root: ``file://<path>``'s path, else ``default``."""
        if self.blob_store is None or self.is_s3:
            return default
        return Path(urlsplit(self.blob_store).path)

    def s3_location(self) -> tuple[str, str]:
        """The bucket and key prefix of ``s3://<bucket>[/<prefix>]``."""
        parts = urlsplit(self.blob_store or "")
        return parts.netloc, parts.path.lstrip("/")

    def s3_credentials(self) -> tuple[str | None, str | None]:
        """The access key id and secret key, each from its variable or its file.

        Raises:
            ValueError: Only one of the two is given.
            OSError: A file cannot be read.
        """
        key_id = self.s3_access_key_id
        if key_id is None and self.s3_access_key_id_file is not None:
            key_id = self.s3_access_key_id_file.read_text().strip()
        secret = self.s3_secret_access_key.get_secret_value() if self.s3_secret_access_key else None
        if secret is None and self.s3_secret_access_key_file is not None:
            secret = self.s3_secret_access_key_file.read_text().strip()
        if (key_id is None) != (secret is None):
            raise ValueError(
                "set both FEDRELAY_S3_ACCESS_KEY_ID(_FILE) and "
                "FEDRELAY_S3_SECRET_ACCESS_KEY(_FILE), or neither"
            )
        return key_id or None, secret or None


@dataclass(frozen=True)
class ChainTarget:
    """Where the coordinator chain and its JobMarket are."""

    rpc_url: str
    job_market: str
    wormhole_chain: int
    finality: str | int


class ApiSettings(BaseSettings):
    """The API's settings, from ``FEDRELAY_COORDINATOR_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="FEDRELAY_COORDINATOR_", extra="ignore", frozen=True
    )

    admin_token: SecretStr | None = None
    admin_token_file: Path | None = None
    max_skew_s: int = Field(default=60, ge=1, le=3600)
    max_blob_bytes: int = Field(default=DEFAULT_MAX_BLOB_BYTES, ge=1)
    max_message_bytes: int = Field(default=1024 * 1024, ge=1)
    # The opened examples of one challenge answer on the workers' own data (before base64).
    max_reveal_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    max_uploads: int = Field(default=16, ge=1)
    max_uploads_per_worker: int = Field(default=2, ge=1)
    max_body_s: int = Field(default=300, ge=1, le=3600)
    # Uploads (body-carrying worker requests) per minute, as token buckets: a worker may send
    # `upload_burst_per_worker` at once, then `upload_rate_per_worker` a minute; the API takes
    # `upload_burst` at once, then `upload_rate` a minute from all workers together.
    upload_rate_per_worker: int = Field(default=60, ge=1)
    upload_burst_per_worker: int = Field(default=20, ge=1)
    upload_rate: int = Field(default=600, ge=1)
    upload_burst: int = Field(default=200, ge=1)
    # Upload sessions (blobs sent in chunks, resumable): the largest blob a session may declare
    # (also bounded by the round's model size and the blob store), the largest chunk, where the
    # chunks are kept until the session completes (None: beside the blob store's directory when
    # it has one, else under the system's temporary directory), and how long an idle session is
    # kept.
    max_upload_bytes: int = Field(default=DEFAULT_MAX_STREAM_BYTES, ge=1)
    upload_chunk_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    upload_dir: Path | None = None
    upload_idle_s: int = Field(default=24 * 3600, ge=60)

    def resolved_admin_token(self) -> str:
        """The admin token: ``ADMIN_TOKEN``, else the first line of ``ADMIN_TOKEN_FILE``.

        Raises:
            ValueError: Neither is set, or the token is shorter than 16 characters.
        """
        token = self.admin_token.get_secret_value() if self.admin_token else None
        if token is None and self.admin_token_file is not None:
            token = self.admin_token_file.read_text().strip()
        if not token:
            raise ValueError(
                "set FEDRELAY_COORDINATOR_ADMIN_TOKEN or FEDRELAY_COORDINATOR_ADMIN_TOKEN_FILE"
            )
        if len(token) < 16:
            raise ValueError("the coordinator admin token must be at least 16 characters")
        return token
