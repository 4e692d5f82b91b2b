"""The attest stage: a devnet guardian signs what it has seen on the source chain itself.

A guardian does not trust the watcher: for each observation it re-reads the message from the
source chain (at the configured finality) and signs the VAA body digest only when the chain has
that very body. An observation whose id the chain holds with another body (the message was
replaced by a reorg, or the observation is false) is refused and dead-lettered with the reason.
One the chain does not show (not final yet, or removed) is tried again with backoff and
dead-lettered after the last attempt; it is never signed.

Signatures are keyed like observations (by emitter), so every guardian's signature of one digest
lands on the same assemble partition, in emitter order.

The chain reads are the stage's time, so a polled batch is read together
(:meth:`Attester.process_batch`): per source chain, the head at the configured finality once and
every message at the batch's final positions in one range read (``messages_between``: one
``eth_getLogs`` on EVM, ``getMultipleAccounts`` on Solana) when they span at most
:data:`SCAN_SPAN` positions. An observation that the range read confirms, same body digest, is
signed without another read; any other one (not in the range, a different body, beyond the head,
a read that failed) is re-read on its own from its transaction as before, at most
:data:`READS_IN_FLIGHT` at once, and judged by that read alone. Outputs keep the batch's order.

The guardian's key comes from a file or an environment variable (:func:`load_guardian_signer`)
and never reaches a log: :class:`~fedrelay.protocol.wormhole.GuardianSigner` shows only its address.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from fedrelay.ports.bus import Bus, Record
from fedrelay.ports.relay import EmittedMessage, SourceChain
from fedrelay.protocol import keys
from fedrelay.protocol.wormhole import GuardianSet, GuardianSigner, MessageId, WormholeError
from fedrelay.protocol.wormhole.observation import MalformedMessage, Observation
from fedrelay.protocol.wormhole.threshold import KeyShare
from fedrelay.relayer.errors import RelayerError, RetryableError
from fedrelay.relayer.records import (
    GuardianSignatureMessage,
    SigningPackageMessage,
    ThresholdCommitmentMessage,
    ThresholdPartialMessage,
    ThresholdRetryMessage,
    decode_message,
    encode_message,
    message_key,
    message_label,
)
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.signing_journal import PackageRefused, SigningJournal
from fedrelay.relayer.stage import Output, StageResult, StageRunner, each_concurrently

log = logging.getLogger(__name__)

#: The most observations of a batch whose source reads are in flight at once.
READS_IN_FLIGHT = 32

#: The most positions one range read of a batch covers; a batch spread wider is read per message.
SCAN_SPAN = 2048

#: The environment variable holding a guardian key (hex) when no key file is given.
KEY_VARIABLE = "FEDRELAY_GUARDIAN_KEY"

#: The environment variable holding a guardian's threshold share (hex) when no file is given.
SHARE_VARIABLE = "FEDRELAY_THRESHOLD_SHARE"


def _fill(
    results: list[StageResult | Exception],
    indices: Sequence[int],
    take: Callable[[], Sequence[StageResult | Exception]],
) -> None:
    """Put what `take` gives for the records at `indices` in their places; when it fails (the
    journal could not be written: nothing was recorded), the failure, for each to be tried
    again."""
    try:
        taken = take()
    except Exception as exc:
        taken = [exc] * len(indices)
    for index, result in zip(indices, taken, strict=True):
        results[index] = result


@dataclass(frozen=True)
class _Signed:
    """An observation this guardian signed under threshold attestation: its result so far, and
    the signature (whose observation the nonce commitment is for)."""

    result: StageResult
    signature: GuardianSignatureMessage


class GuardianKeyError(RelayerError):
    """The guardian key is missing or malformed (the message never shows the key)."""


class UnknownSource(RelayerError):
    """An observation names an emitter chain this guardian does not watch."""


class ObservationRefused(RelayerError):
    """The source chain does not have the observed body: the guardian will not sign it."""


class ThresholdNotConfigured(RelayerError):
    """A signing package reached a guardian that holds no threshold share."""


class MessageNotFinal(RetryableError):
    """The source chain does not (yet) show the observed message at the configured finality."""


def _read_secret(
    key_file: Path | None, environ: Mapping[str, str] | None, variable: str, what: str
) -> tuple[bytes, str]:
    """32 secret bytes written as hex in `key_file`, else in `variable`; and where they were."""
    try:
        text, where = keys.read_key_text(key_file, what=what, variable=variable, environ=environ)
        return keys.parse_guardian_key(text, where), where
    except keys.KeyFileError as exc:
        raise GuardianKeyError(str(exc)) from None


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
    raw, where = _read_secret(key_file, environ, variable, "guardian key")
    try:
        return GuardianSigner(raw)
    except WormholeError as exc:
        raise GuardianKeyError(f"the guardian key in {where} is invalid: {exc}") from None


def load_threshold_share(
    guardian_index: int,
    group_key: bytes,
    verification_share: bytes,
    key_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    variable: str = SHARE_VARIABLE,
) -> KeyShare:
    """Guardian `guardian_index`'s share of the threshold key `group_key`, from `key_file`, else
    from the environment variable `variable` (32 bytes as hex, like a guardian key).

    Raises:
        GuardianKeyError: Neither source holds a share, it is malformed, or it is not the share
            whose public point is `verification_share` (another guardian's, another key's).
    """
    raw, where = _read_secret(key_file, environ, variable, "threshold share")
    try:
        share = KeyShare(guardian_index + 1, int.from_bytes(raw, "big"), group_key)
    except WormholeError as exc:
        raise GuardianKeyError(f"the threshold share in {where} is invalid: {exc}") from None
    if share.verification_share != verification_share:
        raise GuardianKeyError(
            f"the threshold share in {where} is not guardian {guardian_index}'s share of key "
            f"0x{group_key.hex()} (its public point is not the configured verification share)"
        )
    return share


@dataclass(frozen=True)
class Attester:
    """The attest stage's processor: observations in, this guardian's signatures out.

    Attributes:
        sources: The chains this guardian reads, by Wormhole chain id.
        signer: The guardian's key.
        guardian_index: The guardian's index in its set.
        guardian_set_index: The set's index.
        guardian_set: The set, when known: the key is checked against it at construction.
        signatures_topic: Where signatures go (and, under threshold attestation, commitments
            and partial signatures).
        journal: The guardian's threshold share and signing journal, under threshold
            attestation (version-2 VAAs): each observation it signs also gets a nonce
            commitment, and it answers the signing packages that name it. None: version 1 only.
        tss_index: The index of the threshold key the share belongs to.
    """

    sources: Mapping[int, SourceChain]
    signer: GuardianSigner
    guardian_index: int
    guardian_set_index: int = 0
    guardian_set: GuardianSet | None = None
    signatures_topic: str = "signatures"
    journal: SigningJournal | None = None
    tss_index: int = 0

    def __post_init__(self) -> None:
        known = self.guardian_set
        journal = self.journal
        if journal is not None and journal.share.guardian_index != self.guardian_index:
            raise GuardianKeyError(
                f"the threshold share is signer {journal.share.identifier}'s (guardian "
                f"{journal.share.guardian_index}), not guardian {self.guardian_index}'s"
            )
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

    async def process(
        self, record: Record, read: Mapping[MessageId, EmittedMessage] | None = None
    ) -> StageResult:
        """Re-read, check and sign one observation (`read`: what a range read of its batch
        found, by message id); or, under threshold attestation, answer a signing package."""
        judged = await self._judge(record, read)
        if isinstance(judged, _Signed):
            (judged,) = self._committed([judged])
        if isinstance(judged, SigningPackageMessage):
            return self.answer(judged)
        return judged

    async def _judge(
        self, record: Record, read: Mapping[MessageId, EmittedMessage] | None
    ) -> StageResult | _Signed | SigningPackageMessage:
        """A record's result; for an observation signed under threshold attestation, the
        signed observation, whose nonce commitment :meth:`_committed` adds; a signing package,
        for :meth:`answer_all`."""
        message = decode_message(record.value)
        if isinstance(message, SigningPackageMessage):
            return message
        if isinstance(message, ThresholdRetryMessage):
            return self.commit_again(message)
        if not isinstance(message, Observation):
            raise MalformedMessage(
                f"expected an observation or a signing package, got {message.TYPE!r}"
            )
        observation = message
        signed = await self.attest(observation, read)
        result = StageResult(
            (
                Output(
                    self.signatures_topic,
                    encode_message(signed),
                    key=message_key(observation.message_id),
                ),
            ),
            emitted_at_ms=observation.emitted_at_ms,
            source=f"chain-{observation.emitter_chain}",
        )
        if self.journal is None:
            return result
        return _Signed(result, signed)

    def _committed(self, signed: Sequence[_Signed]) -> list[StageResult]:
        """Each signed observation's result with its nonce commitment added, the commitments
        recorded in the journal together (one synchronous write for the batch)."""
        assert self.journal is not None
        commitments = self.journal.commit_many(
            self.tss_index, [(s.signature.observation.digest, 0) for s in signed]
        )
        results = []
        for s, commitment in zip(signed, commitments, strict=True):
            observation = s.signature.observation
            step = ThresholdCommitmentMessage(observation, self.tss_index, 0, commitment=commitment)
            output = Output(
                self.signatures_topic,
                encode_message(step),
                key=message_key(observation.message_id),
            )
            results.append(replace(s.result, outputs=(*s.result.outputs, output)))
        return results

    def commit_again(self, retry: ThresholdRetryMessage) -> StageResult:
        """A new commitment for the retry's attempt, unless this guardian is excluded from it
        (its partial failed an earlier attempt) or holds no share.

        Raises:
            PackageRefused: The guardian never committed to the digest's first attempt.
            ThresholdNotConfigured: This guardian holds no threshold share.
        """
        source = f"chain-{retry.observation.emitter_chain}"
        journal = self._journal_for(retry)
        if journal.share.identifier in retry.excluded:
            return StageResult(emitted_at_ms=retry.emitted_at_ms, source=source)
        commitment = journal.recommit(retry.tss_index, retry.digest, retry.attempt)
        step = ThresholdCommitmentMessage(
            retry.observation, retry.tss_index, retry.attempt, commitment=commitment
        )
        output = Output(
            self.signatures_topic, encode_message(step), key=message_key(retry.message_id)
        )
        return StageResult((output,), emitted_at_ms=retry.emitted_at_ms, source=source)

    def _journal_for(self, step: SigningPackageMessage | ThresholdRetryMessage) -> SigningJournal:
        """This guardian's journal, for a step of its key.

        Raises:
            ThresholdNotConfigured: This guardian holds no threshold share.
            PackageRefused: The step is for another key.
        """
        journal = self.journal
        label = message_label(step.observation.message_id)
        if journal is None:
            raise ThresholdNotConfigured(
                f"guardian {self.guardian_index} holds no threshold share; a {step.TYPE} for "
                f"{label} reached it"
            )
        if step.tss_index != self.tss_index:
            raise PackageRefused(
                f"{label}: the {step.TYPE} is for threshold key {step.tss_index}; this "
                f"guardian's share is of key {self.tss_index}"
            )
        return journal

    def answer(self, package: SigningPackageMessage) -> StageResult:
        """This guardian's partial signature for a package that names it (nothing for one that
        does not): the signing journal decides whether it may answer (see
        :mod:`fedrelay.relayer.signing_journal`).

        Raises:
            PackageRefused: The journal refuses (never committed, another package for the
                nonce, the package lacks this guardian's commitment as published).
            ThresholdNotConfigured: This guardian holds no threshold share.
        """
        (answered,) = self.answer_all([package])
        if isinstance(answered, Exception):
            raise answered
        return answered

    def answer_all(
        self, packages: Sequence[SigningPackageMessage]
    ) -> list[StageResult | Exception]:
        """:meth:`answer` for each package, the journal recording every answer in one
        transaction: per package, its result or why it is refused."""
        results: list[StageResult | Exception] = []
        named: list[int] = []
        for package in packages:
            source = f"chain-{package.observation.emitter_chain}"
            try:
                journal = self._journal_for(package)
            except RelayerError as exc:
                results.append(exc)
                continue
            results.append(StageResult(emitted_at_ms=package.emitted_at_ms, source=source))
            if journal.share.identifier in {c.identifier for c in package.commitments}:
                named.append(len(results) - 1)
        if not named:
            return results
        assert self.journal is not None  # `_journal_for` found it for every package named
        identifier = self.journal.share.identifier
        partials = self.journal.answer_many(
            [(packages[i].tss_index, packages[i].digest, packages[i].attempt,
              packages[i].commitments) for i in named]
        )  # fmt: skip
        for index, partial in zip(named, partials, strict=True):
            if isinstance(partial, Exception):
                results[index] = partial
                continue
            package = packages[index]
            log.info("guardian %d: answered the signing package of %s, attempt %d",
                     self.guardian_index, message_label(package.observation.message_id),
                     package.attempt)  # fmt: skip
            step = ThresholdPartialMessage(
                package.observation,
                package.tss_index,
                package.attempt,
                identifier=identifier,
                z=partial.z.to_bytes(32, "big"),
            )
            output = Output(
                self.signatures_topic,
                encode_message(step),
                key=message_key(package.observation.message_id),
            )
            results[index] = replace(cast(StageResult, results[index]), outputs=(output,))
        return results

    async def process_batch(self, records: Sequence[Record]) -> Sequence[StageResult | Exception]:
        """Attest a batch's observations: read together, then judged one by one; under threshold
        attestation the nonce commitments of those signed are journaled together. Each one's
        result or failure, in order."""
        read = await self.read_together(records)

        async def one(record: Record) -> StageResult | _Signed | SigningPackageMessage:
            return await self._judge(record, read)

        judged = await each_concurrently(records, one, READS_IN_FLIGHT)
        results: list[StageResult | Exception] = []
        signed: dict[int, _Signed] = {}
        packages: dict[int, SigningPackageMessage] = {}
        for index, item in enumerate(judged):
            if isinstance(item, _Signed):
                signed[index] = item
                results.append(item.result)
            elif isinstance(item, SigningPackageMessage):
                packages[index] = item
                results.append(StageResult())  # its answer replaces it below
            else:
                results.append(item)
        if signed:
            _fill(results, list(signed), lambda: self._committed(list(signed.values())))
        if packages:
            _fill(results, list(packages), lambda: self.answer_all(list(packages.values())))
        return results

    async def read_together(self, records: Sequence[Record]) -> dict[MessageId, EmittedMessage]:
        """The messages at the batch's final positions, by message id, from one range read per
        source chain (see the module docstring). A read that fails leaves its chain's
        observations to be read one by one, where the failure is judged per record."""
        by_chain: dict[int, list[int]] = {}
        for record in records:
            try:
                observation = decode_message(record.value)
            except (RelayerError, WormholeError):
                continue  # judged (dead-lettered) by process()
            if not isinstance(observation, Observation):
                continue  # a signing package: nothing to read
            by_chain.setdefault(observation.emitter_chain, []).append(observation.block_number)
        read: dict[MessageId, EmittedMessage] = {}
        for chain, positions in by_chain.items():
            source = self.sources.get(chain)
            if source is None:
                continue
            try:
                head = await source.head()
                final = [position for position in positions if position <= head.number]
                if not final or max(final) - min(final) >= SCAN_SPAN:
                    continue
                found = await source.messages_between(min(final), max(final))
            except Exception as exc:  # each observation is then read again on its own
                log.debug("guardian %d: range read of chain %d failed (%s); reading one by one",
                          self.guardian_index, chain, exc)  # fmt: skip
                continue
            read.update((message.observation.message_id, message) for message in found)
        return read

    async def attest(
        self, observation: Observation, read: Mapping[MessageId, EmittedMessage] | None = None
    ) -> GuardianSignatureMessage:
        """This guardian's signature over the observation, after checking it on the source.

        `read` holds what a range read of the observation's batch found (see
        :meth:`read_together`); unless it shows this very body, the message is read again on its
        own and judged by that read.

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
        found = (read or {}).get(observation.message_id)
        if found is None or found.observation.digest != observation.digest:
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

    Each guardian has its own consumer group, so every guardian sees every observation (and,
    holding a threshold share, every signing package).
    """
    name = f"attest-{attester.guardian_index}"
    inputs = [settings.observations_topic]
    if attester.journal is not None:
        inputs.append(settings.signing_topic)
    return StageRunner(
        name=name,
        bus=bus,
        inputs=inputs,
        processor=attester,
        **{**settings.runner_options(name), **options},
    )
