"""Threshold attestation: the assembler's side of signing version-2 VAAs among the guardians.

Under threshold attestation (``FEDRELAY_ATTESTATION=threshold``) a VAA carries one Schnorr
signature of the guardian set's threshold key instead of a quorum of guardian signatures
(docs/protocol.md, section 2a): about 6,000 gas to verify on EVM instead of about 147,000 at 13 of
19, and one instruction on Solana. Signing it takes two rounds among the guardians, carried on
the bus:

1. **Commitments.** A guardian that checked an observation on its source chain publishes its
   version-1 signature as before and a nonce commitment ``(D_i, E_i)`` for
   ``(key, digest, attempt 0)`` (:class:`~fedrelay.relayer.records.ThresholdCommitmentMessage`,
   on the signatures topic, keyed like the signature so it lands on the same partition).
2. **The package.** The assembler stores commitments; the record that brings the ``t``-th
   (``t`` the key's threshold) completes the **package**: the first ``t`` commitments stored, in
   identifier order, which the ledger stores once per ``(digest, key, attempt)``
   (``threshold_packages``) and that record, and only that record, publishes
   (:class:`~fedrelay.relayer.records.SigningPackageMessage`, on the signing topic every
   guardian reads). A replay of it after a crash publishes it again; later commitments publish
   nothing.
3. **Partials.** Each guardian the package names answers with its share ``z_i``
   (:class:`~fedrelay.relayer.records.ThresholdPartialMessage`), after its signing journal
   recorded the package against the nonce (:mod:`fedrelay.relayer.signing_journal`): one nonce
   never answers two packages.
4. **The VAA.** The record that brings the package's last partial checks every partial against
   its signer's commitment and verification share, aggregates the signature, checks the
   version-2 VAA as the chains will, and stores and emits it exactly as a version-1 VAA is
   (``vaas.assembled_from``).

**Another attempt, then version 1.** A partial that does not check fails the attempt (the
reason, naming the guardian, is stored on the package with the signer to blame, and logged); so
does a package whose named signers did not all answer within the timeout (below; its silent
signers are stored, one ``threshold_parts`` row of kind :data:`SILENT` each). The assembler opens
the next attempt and publishes a :class:`~fedrelay.relayer.records.ThresholdRetryMessage`
excluding every signer blamed or silent so far (the ledger keeps them, so every later attempt
leaves them out too, and the assembler does not choose their commitments); the other guardians
commit again (only to a digest they committed to, so checked) and the attempt runs as the first
did (:func:`retry_after`, :func:`give_up_stale`: at most :data:`MAX_ATTEMPTS`, while at least the
threshold of guardians is left). When no attempt follows, the digest's version-1 signatures
assemble as without threshold attestation, at once if a quorum is already stored. While an
attempt of a digest stands, its version-1 signatures are stored but not assembled, so every VAA
a healthy guardian set produces is version 2.

**Timeouts.** A digest's first attempt opens with its first version-1 signature or
commitment, a later one with its retry. Fewer guardians than the threshold committing (some hold no
share), or a signer that never answers (it crashed and lost its journal, or it misbehaves), would
leave it open for ever. The assembler's ticker publishes a
:class:`~fedrelay.relayer.records.ThresholdTick` on the signatures topic every half timeout; the
assembler that takes it fails every attempt opened more than the timeout
(``threshold_timeout_s``) ago without a VAA. An attempt whose package was issued is retried
without its silent signers, as above; one never issued (fewer than ``t`` commitments: nobody to
leave out), or one no attempt may follow, gives way to version 1, assembled from the signatures
stored. The tick record emits the retries and the VAAs, and its replay emits the same again:
the VAAs it stored are found by ``vaas.assembled_from``, the attempts it retried by the notes it
stored under its bus position (``threshold_parts`` of kind :data:`RETRIED`, :func:`_tick_key`),
and the retries are rebuilt from the rows that decided them; nothing is opened twice. The tick,
not a wall-clock timer in the assembler, is what decides, so the decision and its emission
commit together like any record's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import coincurve

from fedrelay.ports.bus import Bus
from fedrelay.ports.relayer_ledger import (
    NewVaa,
    RelayerLedgerWork,
    ThresholdAttempt,
    ThresholdPackageRecord,
)
from fedrelay.protocol.tracing import traceparent
from fedrelay.protocol.wormhole import GuardianSets
from fedrelay.protocol.wormhole.errors import BadPartialSignature, WormholeError
from fedrelay.protocol.wormhole.observation import Observation
from fedrelay.protocol.wormhole.threshold import (
    NonceCommitment,
    PartialSignature,
    ThresholdKey,
    ThresholdKeys,
    aggregate,
    check_group_key,
    verify_threshold_vaa,
)
from fedrelay.protocol.wormhole.vaa import ThresholdVaa, Vaa, parse_any_vaa
from fedrelay.relayer.errors import RelayerError
from fedrelay.relayer.records import (
    SigningPackageMessage,
    ThresholdCommitmentMessage,
    ThresholdPartialMessage,
    ThresholdRetryMessage,
    ThresholdTick,
    decode_as,
    encode_message,
    message_label,
)

log = logging.getLogger(__name__)

COMMITMENT = "commitment"
PARTIAL = "partial"
#: ``threshold_parts`` kind: a signer named by a package that timed out, which never answered
#: (left out of the digest's later attempts, like a signer blamed for a bad partial).
SILENT = "silent"
#: ``threshold_parts`` kind: an attempt a tick retried, under the tick's key (:func:`_tick_key`).
RETRIED = "retried"
_SIGNER = 2 + 33 + 33


class ThresholdConfigError(RelayerError):
    """The threshold key's settings are inconsistent (the message says how)."""


class ThresholdStepRefused(RelayerError):
    """A commitment or partial the assembler will not use (the message says why)."""


@dataclass(frozen=True)
class ThresholdConfig:
    """What the assembler knows of the threshold key it assembles version-2 VAAs under.

    Attributes:
        tss_index: The key's index on the chains (``AppendKey``'s ``tss_index``).
        group_key: The 33-byte compressed group key.
        threshold: Signers a signature needs (the key's ``t``).
        verification_shares: Each signer's public share ``x_i·G`` (33 bytes), by identifier
            (guardian index + 1).
        guardian_set_index: The guardian set the key stands for.
        signing_topic: Where packages go.
        timeout_s: How long a package's signers have to answer before version 1 takes over.
    """

    tss_index: int
    group_key: bytes
    threshold: int
    verification_shares: Mapping[int, bytes] = field(repr=False)
    guardian_set_index: int = 0
    signing_topic: str = "signing"
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        try:
            check_group_key(self.group_key)
            for identifier, share in self.verification_shares.items():
                coincurve.PublicKey(share)
                if not 1 <= identifier <= 256:
                    raise ThresholdConfigError(f"signer identifier {identifier} is not 1..256")
        except (WormholeError, ValueError) as exc:
            raise ThresholdConfigError(f"threshold key {self.tss_index}: {exc}") from None
        if not 1 <= self.threshold <= len(self.verification_shares):
            raise ThresholdConfigError(
                f"threshold key {self.tss_index}: a threshold of {self.threshold} with "
                f"{len(self.verification_shares)} verification shares"
            )

    def keys(self) -> ThresholdKeys:
        """The key as the chains hold it (no expiry: the relayer signs with the current key)."""
        key = ThresholdKey(self.tss_index, self.group_key, self.guardian_set_index, 0)
        return ThresholdKeys((key,))


def encode_signers(commitments: Sequence[NonceCommitment]) -> bytes:
    """A package's signers as stored: ``u16 identifier || hiding || binding`` each, in order."""
    return b"".join(c.identifier.to_bytes(2, "big") + c.hiding + c.binding for c in commitments)


def decode_signers(data: bytes) -> tuple[NonceCommitment, ...]:
    """The inverse of :func:`encode_signers`."""
    return tuple(
        NonceCommitment(
            int.from_bytes(data[at : at + 2], "big"),
            data[at + 2 : at + 35],
            data[at + 35 : at + _SIGNER],
        )
        for at in range(0, len(data), _SIGNER)
    )


def _label(step: ThresholdCommitmentMessage | ThresholdPartialMessage) -> str:
    return f"{message_label(step.observation.message_id)} (attempt {step.attempt})"


def _check_key(config: ThresholdConfig, step: ThresholdCommitmentMessage | ThresholdPartialMessage,
               identifier: int) -> None:  # fmt: skip
    if step.tss_index != config.tss_index:
        raise ThresholdStepRefused(
            f"{_label(step)}: threshold key {step.tss_index}; this assembler signs under key "
            f"{config.tss_index}"
        )
    if identifier not in config.verification_shares:
        raise ThresholdStepRefused(
            f"{_label(step)}: signer {identifier} holds no share of threshold key "
            f"{config.tss_index}"
        )


def _attempt_of(step: ThresholdCommitmentMessage | ThresholdPartialMessage) -> ThresholdAttempt:
    return ThresholdAttempt(step.digest, step.tss_index, step.attempt)


async def take_commitments(
    work: RelayerLedgerWork,
    config: ThresholdConfig,
    items: Sequence[tuple[str, ThresholdCommitmentMessage]],
) -> list[SigningPackageMessage | None]:
    """Store commitments (bus position, record), in order; per item, the package it issues
    (or issued: a replay of that record), else None.

    The outcome is the one taking them one by one gives: an item whose commitment is the
    ``t``-th distinct one of its attempt, counting those stored before it, issues the package
    of the first ``t``. The ledger work is a fixed number of statements plus one per package
    issued, whatever the number of items.

    Raises:
        ThresholdStepRefused: A commitment is for another key or from an unknown signer.
    """
    for _, step in items:
        _check_key(config, step, step.commitment.identifier)
    stored = await work.stored_vaas(list({step.digest for _, step in items}))
    live = [(position, step) for position, step in items if step.digest not in stored]
    keys = list(dict.fromkeys(_attempt_of(step) for _, step in live))
    held = await work.threshold_parts(COMMITMENT, keys)  # before the batch's own
    opened = {_attempt_of(step): encode_message(step.observation) for _, step in reversed(live)}
    await work.open_threshold_packages(list(opened.items()))
    await work.add_threshold_parts(
        COMMITMENT,
        [(_attempt_of(step), step.commitment.identifier,
          step.commitment.hiding + step.commitment.binding) for _, step in live],
    )  # fmt: skip
    earlier = [
        ThresholdAttempt(key.digest, key.tss_index, before)
        for key in keys
        for before in range(key.attempt)
    ]
    packages = await work.threshold_packages([*keys, *earlier])
    silent = await work.threshold_parts(SILENT, earlier)
    excluded = {key: _blamed(packages, silent, key) for key in keys}
    known = {
        key: {i: data for i, data in held.get(key, []) if i not in excluded[key]} for key in keys
    }  # insertion order: first stored first
    issued: dict[ThresholdAttempt, str] = {}  # by the batch: attempt -> issuing position
    outcomes: list[SigningPackageMessage | None] = []
    for position, step in items:
        key = _attempt_of(step)
        package = packages.get(key)
        if step.digest in stored or package is None or package.failure is not None:
            outcomes.append(None)  # signed already, or the attempt failed
            continue
        if package.issued_from is not None:  # issued before the batch
            replay = package.issued_from == position
            outcomes.append(_package(step, decode_signers(package.signers)) if replay else None)
            continue
        commitments = known[key]
        if step.commitment.identifier not in excluded[key]:
            commitments.setdefault(step.commitment.identifier, step.commitment.hiding
                                   + step.commitment.binding)  # fmt: skip
        if key in issued or len(commitments) < config.threshold:
            outcomes.append(None)
            continue
        chosen = sorted(list(commitments.items())[: config.threshold])
        signers = tuple(NonceCommitment(i, data[:33], data[33:]) for i, data in chosen)
        done = await work.issue_threshold_package(
            step.digest, step.tss_index, step.attempt, encode_signers(signers), position
        )
        issued[key] = position
        outcomes.append(_package(step, signers) if done else None)
    return outcomes


def _blamed(
    packages: Mapping[ThresholdAttempt, ThresholdPackageRecord],
    silent: Mapping[ThresholdAttempt, Sequence[tuple[int, bytes]]],
    key: ThresholdAttempt,
) -> set[int]:
    """The signers left out of `key`'s attempt: those blamed for the failures of the attempts
    before it (a partial that did not check), and those silent in them (named by a package that
    timed out, they never answered)."""
    blamed = set()
    for before in range(key.attempt):
        earlier = ThresholdAttempt(key.digest, key.tss_index, before)
        package = packages.get(earlier)
        if package is not None and package.blamed is not None:
            blamed.add(package.blamed)
        blamed.update(identifier for identifier, _ in silent.get(earlier, []))
    return blamed


async def _excluded(work: RelayerLedgerWork, key: ThresholdAttempt) -> set[int]:
    """:func:`_blamed` for `key`, read from the ledger."""
    earlier = [ThresholdAttempt(key.digest, key.tss_index, a) for a in range(key.attempt)]
    packages = await work.threshold_packages(earlier)
    return _blamed(packages, await work.threshold_parts(SILENT, earlier), key)


#: The most attempts at threshold-signing one digest before version 1 takes over.
MAX_ATTEMPTS = 3


async def retry_after(
    work: RelayerLedgerWork, config: ThresholdConfig, step: ThresholdPartialMessage, blamed: int
) -> ThresholdRetryMessage | None:
    """After `blamed`'s partial failed `step`'s attempt: the next attempt, opened, without every
    signer blamed so far; None when :data:`MAX_ATTEMPTS` are spent or too few signers remain."""
    return await _open_retry(work, config, step.observation, _attempt_of(step), {blamed})


async def _open_retry(
    work: RelayerLedgerWork,
    config: ThresholdConfig,
    observation: Observation,
    failed: ThresholdAttempt,
    left_out: set[int],
) -> ThresholdRetryMessage | None:
    """After `failed` failed: the next attempt, opened (once: a replay opens nothing new),
    without `left_out` and every signer blamed for or silent in an attempt before; None when
    :data:`MAX_ATTEMPTS` are spent or fewer than the threshold of signers remain."""
    following = ThresholdAttempt(failed.digest, failed.tss_index, failed.attempt + 1)
    excluded = await _excluded(work, following) | left_out
    remaining = len(config.verification_shares.keys() - excluded)
    if following.attempt >= MAX_ATTEMPTS or remaining < config.threshold:
        return None
    await work.open_threshold_packages([(following, encode_message(observation))])
    return ThresholdRetryMessage(
        observation, failed.tss_index, following.attempt, excluded=tuple(sorted(excluded))
    )


def _package(
    step: ThresholdCommitmentMessage, signers: tuple[NonceCommitment, ...]
) -> SigningPackageMessage:
    return SigningPackageMessage(
        step.observation, step.tss_index, step.attempt, commitments=signers
    )


@dataclass(frozen=True)
class PartialOutcome:
    """What a partial signature led to: the version-2 VAA it completed (or, replayed, the VAA
    its record stored: version 1 after a failure), or the failure it caused (the attempt is
    failed and version 1 may assemble)."""

    vaa: ThresholdVaa | Vaa | None = None
    failure: str | None = None
    blamed: int | None = None  # the signer whose partial caused the failure, if one did


async def take_partials(
    work: RelayerLedgerWork,
    config: ThresholdConfig,
    guardian_sets: GuardianSets,
    items: Sequence[tuple[str, ThresholdPartialMessage]],
    now: int,
) -> list[PartialOutcome]:
    """Store and check partial signatures (bus position, record), in order; per item, the VAA
    it completes, or the failure it causes.

    The outcome is the one taking them one by one gives: the item that brings a package's
    last partial aggregates them; one that does not check (against its signer's commitment
    and verification share) fails the attempt (:attr:`PartialOutcome.failure`), and later
    partials of that attempt do nothing. The ledger work is a fixed number of statements plus
    one per failed attempt, whatever the number of items.

    Raises:
        ThresholdStepRefused: A partial is for another key, from an unknown signer, for an
            attempt without a package or from a signer its package does not name; or a VAA
            with another body is stored for the message.
    """
    keys = list(dict.fromkeys(_attempt_of(step) for _, step in items))
    packages = await work.threshold_packages(keys)
    for _, step in items:
        _check_key(config, step, step.identifier)
        package = packages.get(_attempt_of(step))
        if package is None or package.issued_from is None:
            raise ThresholdStepRefused(f"{_label(step)}: no signing package was issued for it")
        named = [c.identifier for c in decode_signers(package.signers)]
        if step.identifier not in named:
            raise ThresholdStepRefused(
                f"{_label(step)}: signer {step.identifier} is not one of the package's signers "
                f"{named}"
            )
    stored = await work.stored_vaas(list({step.digest for _, step in items}))
    held = await work.threshold_parts(PARTIAL, keys)  # before the batch's own
    await work.add_threshold_parts(
        PARTIAL,
        [(_attempt_of(step), step.identifier, step.z) for _, step in items
         if step.digest not in stored],
    )  # fmt: skip
    known = {key: dict(held.get(key, [])) for key in keys}
    closed: set[ThresholdAttempt] = set()  # completed or failed by the batch
    outcomes: list[PartialOutcome] = []
    completed: list[tuple[int, ThresholdVaa, str]] = []  # (item index, VAA, position)
    for index, (position, step) in enumerate(items):
        key = _attempt_of(step)
        package = packages[key]
        earlier = stored.get(step.digest)
        if earlier is not None:  # only the record that stored it emits it (again)
            replay = earlier.assembled_from == position
            outcomes.append(
                PartialOutcome(vaa=parse_any_vaa(earlier.vaa)) if replay else PartialOutcome()
            )
            continue
        if package.failure is not None or key in closed:
            outcomes.append(PartialOutcome())
            continue
        partials = known[key]
        partials.setdefault(step.identifier, step.z)
        signers = decode_signers(package.signers)
        if len(partials) < len(signers):
            outcomes.append(PartialOutcome())
            continue
        closed.add(key)
        try:
            vaa = _aggregated(config, guardian_sets, step, signers, partials, now)
        except (BadPartialSignature, WormholeError) as exc:
            failure = f"{_label(step)}: {exc}"
            blamed = exc.signer if isinstance(exc, BadPartialSignature) else None
            await work.fail_threshold_package(
                step.digest, step.tss_index, step.attempt, failure, blamed
            )
            outcomes.append(PartialOutcome(failure=failure, blamed=blamed))
            continue
        completed.append((index, vaa, position))
        outcomes.append(PartialOutcome())  # set below once the VAA is stored
    if completed:
        trace = traceparent()
        inserted = await work.insert_vaas(
            [NewVaa(vaa, trace, position) for _, vaa, position in completed]
        )
        for index, vaa, _ in completed:
            if vaa.digest in inserted:
                outcomes[index] = PartialOutcome(vaa=vaa)
            elif await work.stored_vaa(vaa.digest) is None:  # the conflict was on the message id
                raise ThresholdStepRefused(
                    f"{_label(items[index][1])}: a VAA with another body is stored for the "
                    f"message; 0x{vaa.digest.hex()} is refused"
                )
    return outcomes


def _aggregated(
    config: ThresholdConfig,
    guardian_sets: GuardianSets,
    step: ThresholdPartialMessage,
    signers: Sequence[NonceCommitment],
    partials: Mapping[int, bytes],
    now: int,
) -> ThresholdVaa:
    """The version-2 VAA of a package's partials, checked as the chains check it.

    Raises:
        BadPartialSignature: A partial does not check (the message names its signer).
        WormholeError: The aggregated VAA does not verify.
    """
    signature = aggregate(
        config.group_key,
        step.digest,
        signers,
        [PartialSignature(i, int.from_bytes(z, "big")) for i, z in partials.items()],
        config.verification_shares,
    )
    vaa = ThresholdVaa(
        tss_index=step.tss_index,
        r=signature.r,
        s=signature.s.to_bytes(32, "big"),
        body=step.observation.body,
    )
    verify_threshold_vaa(vaa, config.keys(), guardian_sets, now)
    return vaa


#: The most stale packages one tick gives up on (the next tick takes the rest).
SWEEP_LIMIT = 500


@dataclass(frozen=True)
class GivenUp:
    """An attempt a tick failed: its observation, and the attempt that follows it (a retry to
    publish) or None (version 1 takes over).

    Attributes:
        observation: The observation being signed.
        failure: Why the attempt failed, as stored; None for a retry the tick's record decided
            before (a replay, :attr:`retry` set).
        retry: The next attempt's retry, to publish; None when version 1 takes over.
    """

    observation: Observation
    failure: str | None
    retry: ThresholdRetryMessage | None = None


def _tick_key(config: ThresholdConfig, position: str) -> ThresholdAttempt:
    """Where the tick at bus position `position` notes the attempts it retried, so that its
    replay publishes their retries again: ``threshold_parts`` rows of kind :data:`RETRIED`
    under a key that is no VAA's digest (a hash of the position, apart from Wormhole's)."""
    marker = hashlib.sha256(b"fedrelay threshold tick\0" + position.encode()).digest()
    return ThresholdAttempt(marker, config.tss_index, 0)


async def give_up_stale(
    work: RelayerLedgerWork, config: ThresholdConfig, now: float, position: str
) -> list[GivenUp]:
    """Fail every package older than the timeout that has no VAA yet (at most
    :data:`SWEEP_LIMIT` a call, oldest first), for the tick at bus position `position`.

    A package issued to signers that did not all answer is retried: its silent signers are
    stored (``threshold_parts`` of kind :data:`SILENT`, one row each) and the next attempt is
    opened without them and every signer left out before (:func:`_open_retry`), unless
    :data:`MAX_ATTEMPTS` are spent or fewer than the threshold of signers remain. A package
    never issued (fewer commitments than the threshold) has nobody to leave out: version 1
    takes over, as it does when no retry follows.

    Returns:
        First the retries this tick's record decided before (a replay after a crash: the same
        retries, nothing opened again), then each package failed now, in order.
    """
    tick = _tick_key(config, position)
    noted = (await work.threshold_parts(RETRIED, [tick])).get(tick, [])
    given: list[GivenUp] = [await _retried_before(work, config, data) for _, data in noted]
    cutoff = datetime.fromtimestamp(now - config.timeout_s, UTC)
    stale = await work.stale_threshold_packages(cutoff, SWEEP_LIMIT)
    retried: list[tuple[ThresholdAttempt, int, bytes]] = []
    for package in stale:
        observation = decode_as(package.observation, Observation)
        label = f"{message_label(observation.message_id)} (attempt {package.attempt})"
        key = ThresholdAttempt(package.digest, package.tss_index, package.attempt)
        silent: list[int] = []  # signer identifiers
        if package.issued_from is None:
            committed = (await work.threshold_parts(COMMITMENT, [key])).get(key, [])
            failure = (
                f"{label}: {len(committed)} guardian(s) committed within {config.timeout_s:g} s, "
                f"{config.threshold} are needed"
            )
        else:
            signers = [c.identifier for c in decode_signers(package.signers)]
            answered = (await work.threshold_parts(PARTIAL, [key])).get(key, [])
            silent = sorted(set(signers) - {identifier for identifier, _ in answered})
            failure = (
                f"{label}: guardian(s) {[i - 1 for i in silent]} did not answer within "
                f"{config.timeout_s:g} s"
            )
        await work.fail_threshold_package(
            package.digest, package.tss_index, package.attempt, failure
        )
        retry = None
        if silent:
            await work.add_threshold_parts(SILENT, [(key, i, b"") for i in silent])
            if package.tss_index == config.tss_index:  # not a key this assembler no longer signs
                retry = await _open_retry(work, config, observation, key, set(silent))
        if retry is not None:
            note = package.digest + package.attempt.to_bytes(4, "big")
            retried.append((tick, len(noted) + len(retried), note))
        given.append(GivenUp(observation, failure, retry))
    await work.add_threshold_parts(RETRIED, retried)
    return given


async def _retried_before(work: RelayerLedgerWork, config: ThresholdConfig, note: bytes) -> GivenUp:
    """The retry of the attempt a tick noted (``digest || u32 attempt``), as it published it:
    the excluded signers are read from the rows that decided them, which do not change."""
    failed = ThresholdAttempt(note[:32], config.tss_index, int.from_bytes(note[32:36], "big"))
    package = (await work.threshold_packages([failed]))[failed]
    observation = decode_as(package.observation, Observation)
    following = ThresholdAttempt(failed.digest, failed.tss_index, failed.attempt + 1)
    excluded = tuple(sorted(await _excluded(work, following)))
    retry = ThresholdRetryMessage(
        observation, failed.tss_index, following.attempt, excluded=excluded
    )
    return GivenUp(observation, None, retry)


@dataclass
class ThresholdTicker:
    """Publishes a :class:`~fedrelay.relayer.records.ThresholdTick` to the signatures topic every
    `every_s` seconds until stopped (a :class:`~fedrelay.relayer.stage.RunningStage`)."""

    bus: Bus
    topic: str
    every_s: float
    name: str = "threshold-ticker"
    clock: Callable[[], float] = time.time
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Tick until :meth:`stop`; a failed publish is logged and tried at the next tick."""
        producer = self.bus.producer()
        await producer.start()
        try:
            while not self._stopped.is_set():
                tick = ThresholdTick(at_ms=int(self.clock() * 1000))
                try:
                    await producer.send(self.topic, encode_message(tick), key=b"threshold-tick")
                except Exception as exc:  # the bus is away: the next tick tries again
                    log.warning("threshold ticker: publishing a tick failed: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), self.every_s)
        finally:
            await producer.stop()

    def stop(self) -> None:
        """Stop after the current tick."""
        self._stopped.set()
