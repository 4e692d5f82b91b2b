"""The attest stage: a devnet guardian signs what it has seen on the source chain itself.

A guardian does not trust the watcher: for each observation it re-reads the message from the
source chain (at the configured finality) and signs the VAA body digest only when the chain has
that very body. An observation whose id the chain holds with another body (the message was
replaced by a reorg, or the observation is false) is refused and dead-lettered with the reason.
One the chain does not show (not final yet, or removed) is tried again with backoff and
dead-lettered after the last attempt; it is never signed.

Signatures are keyed like observations (by emitter), so every guardian's signature of one digest
lands on the same assemble partition, in emitter order.

The chain reads are the stage's time (a few RPC round trips per observation), so a polled batch
is attested concurrently (:meth:`Attester.process_batch`, at most :data:`READS_IN_FLIGHT` reads at
once) rather than one observation after another; outputs keep the batch's order, and each
observation is judged on its own as before.

The guardian's key comes from a file or an environment variable (:func:`load_guardian_signer`)
and never reaches a log: :class:`~fedrelay.protocol.wormhole.GuardianSigner` shows only its address.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrelay.ports.bus import Bus, Record
from fedrelay.ports.relay import SourceChain
from fedrelay.protocol import keys
from fedrelay.protocol.wormhole import GuardianSet, GuardianSigner, WormholeError
from fedrelay.protocol.wormhole.observation import Observation
from fedrelay.relayer.errors import RelayerError, RetryableError
from fedrelay.relayer.records import (
    GuardianSignatureMessage,
    decode_as,
    encode_message,
    message_key,
    message_label,
)
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stage import Output, StageResult, StageRunner, each_concurrently

log = logging.getLogger(__name__)

#: The most observations of a batch whose source reads are in flight at once.
READS_IN_FLIGHT = 32

#: The environment variable holding a guardian key (hex) when no key file is given.
KEY_VARIABLE = "FEDRELAY_GUARDIAN_KEY"


class GuardianKeyError(RelayerError):
    """The guardian key is missing or malformed (the message never shows the key)."""


class UnknownSource(RelayerError):
    """An observation names an emitter chain this guardian does not watch."""


class ObservationRefused(RelayerError):
    """The source chain does not have the observed body: the guardian will not sign it."""


class MessageNotFinal(RetryableError):
    """The source chain does not (yet) show the observed message at the configured finality."""


def load_guardian_signer(
    key_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    variable: str = KEY_VARIABLE,
) -> GuardianSigner:
    """The guardian key from `key_file`, else from the environment variable `variable`.

    The key is 32 bytes as hex, with or without ``0x``, surrounding whitespace ignored.

    Raises:
        GuardianKeyError: Neither source holds a key, or it is not a valid secp256k1 key.
    """
    try:
        text, where = keys.read_key_text(
            key_file, what="guardian key", variable=variable, environ=environ
        )
        raw = keys.parse_guardian_key(text, where)
    except keys.KeyFileError as exc:
        raise GuardianKeyError(str(exc)) from None
    try:
        return GuardianSigner(raw)
    except WormholeError as exc:
        raise GuardianKeyError(f"the guardian key in {where} is invalid: {exc}") from None


@dataclass(frozen=True)
class Attester:
    """The attest stage's processor: observations in, this guardian's signatures out.

    Attributes:
        sources: The chains this guardian reads, by Wormhole chain id.
        signer: The guardian's key.
        guardian_index: The guardian's index in its set.
        guardian_set_index: The set's index.
        guardian_set: The set, when known: the key is checked against it at construction.
        signatures_topic: Where signatures go.
    """

    sources: Mapping[int, SourceChain]
    signer: GuardianSigner
    guardian_index: int
    guardian_set_index: int = 0
    guardian_set: GuardianSet | None = None
    signatures_topic: str = "signatures"

    def __post_init__(self) -> None:
        known = self.guardian_set
        if known is None:
            return
        if known.index != self.guardian_set_index:
            raise GuardianKeyError(
                f"guardian set {known.index} given for guardian set index {self.guardian_set_index}"
            )
        index = self.guardian_index
        if index >= len(known.addresses) or known.addresses[index] != self.signer.address:
            raise GuardianKeyError(
                f"the key (address 0x{self.signer.address.hex()}) is not guardian {index} of "
                f"guardian set {known.index}"
            )

    async def process(self, record: Record) -> StageResult:
        """Re-read, check and sign one observation."""
        observation = decode_as(record.value, Observation)
        signed = await self.attest(observation)
        output = Output(
            self.signatures_topic, encode_message(signed), key=message_key(observation.message_id)
        )
        return StageResult(
            (output,),
            emitted_at_ms=observation.emitted_at_ms,
            source=f"chain-{observation.emitter_chain}",
        )

    async def process_batch(self, records: Sequence[Record]) -> Sequence[StageResult | Exception]:
        """Attest a batch's observations concurrently; each one's result or failure, in order."""
        return await each_concurrently(records, self.process, READS_IN_FLIGHT)

    async def attest(self, observation: Observation) -> GuardianSignatureMessage:
        """This guardian's signature over the observation, after checking it on the source.

        Raises:
            UnknownSource: The guardian does not read the observation's emitter chain.
            MessageNotFinal: The chain does not show the message (yet).
            ObservationRefused: The chain has another body under the message id.
        """
        label = message_label(observation.message_id)
        source = self.sources.get(observation.emitter_chain)
        if source is None:
            raise UnknownSource(
                f"{label}: this guardian reads chains {sorted(self.sources)}, "
                f"not chain {observation.emitter_chain}"
            )
        found = await source.fetch_message(observation.message_id, observation.tx_hash)
        if found is None:
            raise MessageNotFinal(
                f"{label}: chain {observation.emitter_chain} does not show it at the configured "
                f"finality (tx {observation.tx_hash})"
            )
        if found.observation.digest != observation.digest:
            raise ObservationRefused(
                f"{label}: chain {observation.emitter_chain} has body digest "
                f"0x{found.observation.digest.hex()}, the observation says "
                f"0x{observation.digest.hex()} (removed by a reorg, or a false observation); "
                "not signed"
            )
        signature = self.signer.sign(observation.digest, self.guardian_index)
        log.info("guardian %d: signed %s (0x%s)", self.guardian_index, label,
                 observation.digest.hex())  # fmt: skip
        return GuardianSignatureMessage(
            observation=found.observation,
            guardian_set_index=self.guardian_set_index,
            signature=signature,
        )


def attest_stage(
    settings: RelayerSettings, bus: Bus, attester: Attester, **options: Any
) -> StageRunner:
    """The attest stage of one guardian as `settings` configure it (``fedrelay guardian run``).

    Each guardian has its own consumer group, so every guardian sees every observation.
    """
    name = f"attest-{attester.guardian_index}"
    return StageRunner(
        name=name,
        bus=bus,
        inputs=[settings.observations_topic],
        processor=attester,
        **{**settings.runner_options(name), **options},
    )
