"""The relayer's settings: one object, read from ``FEDRELAY_*`` environment variables.

Examples: ``FEDRELAY_KAFKA_BOOTSTRAP=broker:9092`` (unset: the in-process bus of the embedded mode),
``FEDRELAY_DATABASE_URL=postgresql+asyncpg://...``, ``FEDRELAY_GUARDIAN_API_URL=https://...``,
``FEDRELAY_GUARDIAN_ADDRESSES='["0xbeFA...", ...]'`` (a JSON list).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedrelay.ports.ledger import DEFAULT_URL
from fedrelay.protocol.wormhole import GuardianSet, GuardianSets, WormholeError, parse_address
from fedrelay.relayer.backoff import BackoffPolicy


def _point_hex(text: str) -> bytes | None:
    """The bytes of a 33-byte compressed point written in hex (``0x`` optional), else None."""
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        return None
    return raw if len(raw) == 33 and raw[0] in (2, 3) else None


class RelayerSettings(BaseSettings):
    """Everything a relayer stage needs to know about its surroundings."""

    model_config = SettingsConfigDict(env_prefix="FEDRELAY_", extra="ignore", frozen=True)

    database_url: str = DEFAULT_URL
    kafka_bootstrap: str | None = None
    topic_partitions: int = Field(default=3, ge=1)

    observations_topic: str = "observations"
    signatures_topic: str = "signatures"
    signing_topic: str = "signing"
    vaas_topic: str = "vaas"
    deliveries_prefix: str = "deliveries"
    dlq_topic: str = "dlq"
    group_prefix: str = "fedrelay"
    instance: str = Field(default="0", min_length=1, max_length=64)

    batch_size: int = Field(default=500, ge=1, le=10_000)
    poll_wait_s: float = Field(default=0.5, gt=0, le=30)
    lag_interval_s: float = Field(default=5.0, gt=0)

    retry_base_s: float = Field(default=0.5, gt=0)
    retry_cap_s: float = Field(default=30.0, gt=0)
    retry_max_attempts: int = Field(default=8, ge=1)

    guardian_set_index: int = Field(default=0, ge=0, le=0xFFFF_FFFF)
    guardian_addresses: tuple[str, ...] = ()

    # Threshold attestation (version-2 VAAs, relayer.stages.threshold): "guardian" assembles a
    # quorum of guardian signatures (version 1); "threshold" has the guardians sign together
    # with the threshold key `tss_index`, whose group key and per-guardian verification shares
    # (33-byte compressed points as hex, guardian-index order) are given here. Each guardian's
    # share comes from a file or FEDRELAY_THRESHOLD_SHARE and its signing journal lives in
    # `signing_journal_dir`.
    attestation: Literal["guardian", "threshold"] = "guardian"
    tss_index: int = Field(default=0, ge=0, le=0xFFFF_FFFF)
    threshold_group_key: str = ""
    threshold_verification_shares: tuple[str, ...] = ()
    # Signers a threshold signature needs, as the key was dealt; 0: the quorum floor(2n/3)+1.
    threshold_signers: int = Field(default=0, ge=0, le=256)
    # How long a signing package's guardians have to answer before version 1 takes over.
    threshold_timeout_s: float = Field(default=30.0, gt=0)
    signing_journal_dir: Path = Path("signing-journals")

    guardian_api_url: str = "http://127.0.0.1:7071"
    guardian_api_timeout_s: float = Field(default=10.0, gt=0)

    # /healthz, /readyz and /metrics (adapters.telemetry.health); the Helm chart sets
    # FEDRELAY_HEALTH_HOST=0.0.0.0 so the kubelet and Prometheus can reach them.
    health_host: str = "127.0.0.1"
    health_port: int = Field(default=8080, ge=0, le=65535)

    # The chains (relayer.chains_file); the chart mounts it at /etc/fedrelay/chains.yaml.
    chains_file: Path | None = None
    # After SIGTERM, how long a process may take to finish its in-flight batches.
    drain_seconds: float = Field(default=30.0, gt=0)
    # How long a deliverer waits for a receipt before replacing the transaction.
    confirm_timeout_s: float = Field(default=30.0, gt=0)
    # Pipelined delivery (relayer.stages.pipeline): the most transactions in flight per signer
    # key; 1 turns the pipeline off (one transaction at a time, waiting for each receipt).
    deliver_window: int = Field(default=32, ge=1, le=1024)
    # Records a deliver stage takes per poll (and per Kafka transaction); a batch is one pass
    # through the pipeline, so it should be a few windows (times the keys in the pool).
    deliver_batch_size: int = Field(default=256, ge=1, le=10_000)
    # How many polled batches a pipelined deliver stage processes at once (the next batch is
    # submitted while the receipts of earlier ones are awaited; hand-offs stay in poll order).
    # 1: one batch at a time. Used when batching is off (deliver_batch_max 1) on chains with nonces.
    deliver_batches_in_flight: int = Field(default=4, ge=1, le=64)
    # How many polled batches the stages whose work keeps no state of its own (attest, route)
    # process at once: the next batch is read and signed (or routed) while the one before it
    # is handed on; hand-offs stay in poll order. 1: one batch at a time. Assemble and fetch
    # always take one at a time (a quorum is counted across batches in the ledger).
    batches_in_flight: int = Field(default=4, ge=1, le=64)
    # The most VAAs in one delivery transaction on destinations with a batch entry point
    # (fedrelay.ports.relay.BatchDestination); 1 turns batching off.
    deliver_batch_max: int = Field(default=1, ge=1, le=256)
    # The pause between a watcher's polls that found nothing new.
    watch_interval_s: float = Field(default=1.0, gt=0)

    @field_validator("guardian_addresses")
    @classmethod
    def _addresses_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            try:
                parse_address(text)
            except WormholeError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("threshold_group_key")
    @classmethod
    def _group_key_hex(cls, value: str) -> str:
        if value and _point_hex(value) is None:
            raise ValueError("threshold_group_key must be a 33-byte compressed point in hex")
        return value

    @field_validator("threshold_verification_shares")
    @classmethod
    def _shares_hex(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, text in enumerate(value):
            if _point_hex(text) is None:
                raise ValueError(
                    f"threshold_verification_shares[{index}] must be a 33-byte compressed point "
                    "in hex"
                )
        return value

    @model_validator(mode="after")
    def _threshold_complete(self) -> RelayerSettings:
        if self.attestation == "threshold" and not (
            self.threshold_group_key and self.threshold_verification_shares
        ):
            raise ValueError(
                "attestation 'threshold' needs FEDRELAY_THRESHOLD_GROUP_KEY and "
                "FEDRELAY_THRESHOLD_VERIFICATION_SHARES"
            )
        return self

    def threshold_points(self) -> tuple[bytes, dict[int, bytes]]:
        """The threshold group key and the verification shares by signer identifier (guardian
        index + 1), as bytes."""
        shares = {
            index + 1: bytes.fromhex(text.removeprefix("0x"))
            for index, text in enumerate(self.threshold_verification_shares)
        }
        return bytes.fromhex(self.threshold_group_key.removeprefix("0x")), shares

    @field_validator("chains_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("guardian_api_url")
    @classmethod
    def _url_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(  # the value is not shown: it may be a secret in the wrong place
                "guardian_api_url must start with http:// or https://"
            )
        return value.rstrip("/")

    def delivery_topic(self, chain: int) -> str:
        """The topic of deliveries to Wormhole chain ``chain``."""
        return f"{self.deliveries_prefix}.{chain}"

    def group(self, stage: str) -> str:
        """The consumer group of a stage."""
        return f"{self.group_prefix}-{stage}"

    def transactional_id(self, stage: str) -> str:
        """The transactional id of this instance of a stage (stable across restarts)."""
        return f"{self.group_prefix}-{stage}-{self.instance}"

    def retry_policy(self) -> BackoffPolicy:
        """The backoff between attempts at a record that failed for a passing reason."""
        return BackoffPolicy(
            base_s=self.retry_base_s,
            cap_s=max(self.retry_cap_s, self.retry_base_s),
            max_attempts=self.retry_max_attempts,
        )

    def runner_options(self, stage: str) -> dict[str, Any]:
        """The :class:`~fedrelay.relayer.stage.StageRunner` arguments these settings decide for
        `stage`."""
        return {
            "group_id": self.group(stage),
            "transactional_id": self.transactional_id(stage),
            "dlq_topic": self.dlq_topic,
            "policy": self.retry_policy(),
            "batch_size": self.batch_size,
            "poll_wait_s": self.poll_wait_s,
            "lag_interval_s": self.lag_interval_s,
        }

    def guardian_sets(self) -> GuardianSets | None:
        """The guardian set signatures are checked against, or None when none is configured."""
        if not self.guardian_addresses:
            return None
        addresses = tuple(parse_address(text) for text in self.guardian_addresses)
        return GuardianSets.of(GuardianSet(index=self.guardian_set_index, addresses=addresses))
