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

**Another attempt, then version 1.** A partial that does not check fails the attempt; so does
a package whose named signers did not all answer within the timeout (below). The failure is
stored on the package, whole, by the record that made it (``threshold_packages``): the reason,
naming the guardians (also logged); that record's bus position (``failed_from``); and the
signers it leaves out of later attempts (``left_out``: the one blamed for the bad partial, also
kept in ``blamed``, or the silent ones). The assembler opens the next attempt and publishes a
:class:`~fedrelay.relayer.records.ThresholdRetryMessage` excluding every signer left out so far
(read from the ``left_out`` of every earlier attempt, so every later attempt leaves them out too,
and the assembler does not choose their commitments); the other guardians commit again (only to a
digest they committed to, so checked) and the attempt runs as the first did (:func:`retry_after`,
:func:`give_up_stale`: at most :data:`MAX_ATTEMPTS`, while at least the threshold of guardians
is left). When no attempt follows, the digest's version-1 signatures assemble as without
threshold attestation, at once if a quorum is already stored. While an attempt of a digest
stands, its version-1 signatures are stored but not assembled, so every VAA a healthy guardian
set produces is version 2.

**Replays.** A record replayed after a crash (the ledger committed, the bus did not) publishes
what it published the first time, and changes nothing: the record that failed an attempt finds
it by its position (``failed_from``) and publishes the retry of the attempt it opened, if it
opened one (rebuilt from the ``left_out`` rows, which do not change once written), or the
version-1 VAA it stored (``vaas.assembled_from``). Whether an attempt follows is decided once,
by the record that failed the one before it; its replay reads the decision from the ledger.

**Timeouts.** A digest's first attempt opens with its first version-1 signature or
commitment, a later one with its retry. Fewer guardians than the threshold committing (some hold no
share), or a signer that never answers (it crashed and lost its journal, or it misbehaves), would
leave it open for ever. The assembler's ticker publishes a
:class:`~fedrelay.relayer.records.ThresholdTick` on the signatures topic every half timeout; the
assembler that takes it fails every attempt opened more than the timeout
(``threshold_timeout_s``) ago without a VAA. An attempt whose package was issued is retried
without its silent signers, as above; one never issued (fewer than ``t`` commitments: nobody to
leave out), or one no attempt may follow, gives way to version 1, assembled from the signatures
stored. The tick record emits the retries and the VAAs, and its replay emits the same again
(the packages it failed by ``failed_from``, as above); nothing is opened twice. The tick, not a
wall-clock timer in the assembler, is what decides, so the decision and its emission commit
together like any record's.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    excluded = {key: _left_out(packages, key) for key in keys}
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


def _left_out(
    packages: Mapping[ThresholdAttempt, ThresholdPackageRecord], key: ThresholdAttempt
) -> set[int]:
    """The signers left out of `key`'s attempt: those the failure of every attempt before it
    left out (``left_out``: the signer blamed for a partial that did not check, or the signers
    a package that timed out named and that never answered)."""
    left_out: set[int] = set()
    for before in range(key.attempt):
        package = packages.get(ThresholdAttempt(key.digest, key.tss_index, before))
        if package is not None:
            left_out.update(package.left_out)
    return left_out


#: The most attempts at threshold-signing one digest before version 1 takes over.
MAX_ATTEMPTS = 3


async def retry_after(
    work: RelayerLedgerWork,
    config: ThresholdConfig,
    step: ThresholdPartialMessage,
    *,
    replayed: bool = False,
) -> ThresholdRetryMessage | None:
    """After `step`'s record failed its attempt (a bad partial, its signer left out): the retry
    of the attempt that follows (see :func:`_following`); None when none does."""
    return await _following(work, config, step.observation, _attempt_of(step), replayed=replayed)


async def _following(
    work: RelayerLedgerWork,
    config: ThresholdConfig,
    observation: Observation,
    failed: ThresholdAttempt,
    *,
    replayed: bool,
) -> ThresholdRetryMessage | None:
    """After `failed` failed (its failure stored): the retry of the attempt that follows it,
    excluding every signer the failures of `failed` and of the attempts before it left out.

    The record that failed `failed` decides, and opens the next attempt: one follows when the
    failure left somebody out, under the key this assembler signs, while :data:`MAX_ATTEMPTS`
    are not spent and at least the threshold of signers is not excluded. Its replay
    (`replayed`) decides nothing again: it rebuilds the retry of the attempt it opened, if it
    opened one, from rows that do not change once written, and writes nothing."""
    following = ThresholdAttempt(failed.digest, failed.tss_index, failed.attempt + 1)
    packages = await work.threshold_packages(
        [ThresholdAttempt(failed.digest, failed.tss_index, a) for a in range(following.attempt + 1)]
    )
    excluded = _left_out(packages, following)
    if replayed:
        if following not in packages:
            return None
    else:
        remaining = len(config.verification_shares.keys() - excluded)
        if (
            not packages[failed].left_out
            or failed.tss_index != config.tss_index  # a key this assembler no longer signs
            or following.attempt >= MAX_ATTEMPTS
            or remaining < config.threshold
        ):
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
    failed: another attempt follows without the signers it left out, or version 1 may
    assemble).

    Attributes:
        vaa: The VAA its record emits.
        failure: Why its record failed the attempt, as stored.
        blamed: The signer whose partial caused the failure, if one did.
        left_out: The signers the failure leaves out of later attempts.
        replayed: The failure was stored before, by this record (a replay after a crash): its
            retry is published again, nothing is decided or stored again.
    """

    vaa: ThresholdVaa | Vaa | None = None
    failure: str | None = None
    blamed: int | None = None
    left_out: tuple[int, ...] = ()
    replayed: bool = False


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
    and verification share) fails the attempt (:attr:`PartialOutcome.failure`; the failure is
    stored with the item's bus position and its signer left out), and later partials of that
    attempt do nothing. The item that failed an attempt, replayed, gets its failure again
    (:attr:`PartialOutcome.replayed`). The ledger work is a fixed number of statements plus one
    per failed attempt, whatever the number of items.

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
        if package.failure is not None and package.failed_from == position:
            outcomes.append(
                PartialOutcome(failure=package.failure, blamed=package.blamed,
                               left_out=package.left_out, replayed=True)
            )  # fmt: skip
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
            left_out = () if blamed is None else (blamed,)
            failed = await work.fail_threshold_package(
                step.digest, step.tss_index, step.attempt, failure, position,
                left_out=left_out, blamed=blamed,
            )  # fmt: skip
            outcomes.append(
                PartialOutcome(failure=failure, blamed=blamed, left_out=left_out)
                if failed
                else PartialOutcome()  # failed by another record meanwhile
            )
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
        failure: Why the attempt failed, as stored.
        retry: The next attempt's retry, to publish; None when version 1 takes over.
        replayed: The tick's record failed it before (a replay after a crash): the retry is
            the one it published, and version 1's VAA is the one it stored, if any.
    """

    observation: Observation
    failure: str | None
    retry: ThresholdRetryMessage | None = None
    replayed: bool = False


async def give_up_stale(
    work: RelayerLedgerWork, config: ThresholdConfig, now: float, position: str
) -> list[GivenUp]:
    """Fail every package older than the timeout that has no VAA yet (at most
    :data:`SWEEP_LIMIT` a call, oldest first), for the tick at bus position `position`.

    Each failure is stored with `position` (``failed_from``) and the signers it leaves out
    (``left_out``): a package issued to signers that did not all answer leaves its silent
    signers out, and the next attempt is opened without them and every signer left out before
    (:func:`_following`), unless :data:`MAX_ATTEMPTS` are spent or fewer than the threshold of
    signers remain. A package never issued (fewer commitments than the threshold) has nobody to
    leave out: version 1 takes over, as it does when no retry follows.

    Returns:
        Every package the tick failed, now or before (a replay after a crash: the same
        retries, nothing opened again), in the order they were opened.
    """
    cutoff = datetime.fromtimestamp(now - config.timeout_s, UTC)
    failed_now: set[ThresholdAttempt] = set()
    for package in await work.stale_threshold_packages(cutoff, SWEEP_LIMIT):
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
        if await work.fail_threshold_package(
            package.digest, package.tss_index, package.attempt, failure, position, left_out=silent
        ):
            failed_now.add(key)
    given: list[GivenUp] = []
    for package in await work.threshold_packages_failed_from(position):
        key = ThresholdAttempt(package.digest, package.tss_index, package.attempt)
        observation = decode_as(package.observation, Observation)
        replayed = key not in failed_now
        retry = await _following(work, config, observation, key, replayed=replayed)
        given.append(GivenUp(observation, package.failure, retry, replayed))
    return given


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
