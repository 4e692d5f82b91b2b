"""The coordinator's settings: the process's (``FEDRELAY_*``) and its HTTP API's
(``FEDRELAY_COORDINATOR_*``), read from the environment in one place.

They are plain values, importable without the service, FastAPI routes or any adapter, so the CLI
can check them (and fail with a clear message) before anything starts;
:mod:`fedrelay.coordinator.process` builds the running coordinator from them.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedrelay.ports.blobs import DEFAULT_MAX_BLOB_BYTES
from fedrelay.ports.leader_lease import DEFAULT_LEASE_NAME
from fedrelay.protocol.job_config import JobConfig

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

    @model_validator(mode="after")
    def _renewed_within_the_lease(self) -> CoordinatorSettings:
        if self.lease_renew_seconds >= self.lease_seconds:
            raise ValueError(
                f"FEDRELAY_LEASE_RENEW_SECONDS ({self.lease_renew_seconds:g}) must be below "
                f"FEDRELAY_LEASE_SECONDS ({self.lease_seconds:g}): the lease is renewed within it"
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

    def problems(self, config: JobConfig) -> list[str]:
        """Every limit ``config`` is beyond, one sentence each with its numbers (empty: none).

        Args:
            config: A parsed job configuration.
        """
        measured = (
            ("model parameters", config.model.parameter_count(), self.max_model_parameters),
            ("steps", config.steps, self.max_steps),
            ("batch_size", config.batch_size, self.max_batch_size),
            ("checkpoints per transcript", config.training.segments + 1, self.max_checkpoints),
            (
                "replay steps per segment",
                min(config.checkpoint_every, config.steps),
                self.max_replay_steps,
            ),
        )
        return [
            f"{what} {value} is above this coordinator's limit {limit} "
            f"(FEDRELAY_COORDINATOR_{variable.upper()})"
            for (what, value, limit), variable in zip(measured, _LIMIT_FIELDS, strict=True)
            if value > limit
        ]


_LIMIT_FIELDS = (
    "max_model_parameters",
    "max_steps",
    "max_batch_size",
    "max_checkpoints",
    "max_replay_steps",
)


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
