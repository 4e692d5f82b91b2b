"""The assemble stage: guardian signatures to a quorum VAA, emitted exactly once per digest.

Each signature is checked (it must recover to the guardian at its index in a known guardian set),
then stored under the ledger's unique key (digest, guardian set, guardian index), so a duplicate
changes nothing. When the stored signatures of a digest reach the set's quorum, the VAA is built
from them and stored with the bus position of the record that completed it
(``vaas.assembled_from``). That record, and only that record, emits the VAA: a replay of it after
a crash emits again (the first emission was never committed), while a duplicate or a late
signature for an assembled digest emits nothing.

A polled batch is stored in one ledger transaction (:meth:`Assembler.process_batch`): with one
transaction per signature, the commits were most of the stage's time. Inside it the batch costs a
fixed number of statements whatever its size (:func:`collect_signatures`: bulk inserts and reads),
and the records are applied as in bus order, so the outcome is the one record-by-record processing
gives; a replay of the batch after a crash finds the same rows and emits the same VAAs. If the
batch's transaction fails (a conflicting body, the ledger away), nothing of it is stored and each
record is processed again on its own, so one bad record is judged alone and the rest flow on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fedrelay.ports.bus import Record
from fedrelay.ports.relayer_ledger import (
    NewVaa,
    ObservationStatus,
    RelayerLedger,
    RelayerLedgerWork,
    StoredVaaRecord,
    ThresholdAttempt,
)
from fedrelay.protocol.tracing import traceparent
from fedrelay.protocol.wormhole import (
    GuardianIndexOutOfRange,
    GuardianSet,
    GuardianSets,
    Signature,
    SignerMismatch,
    ThresholdVaa,
    Vaa,
    parse_any_vaa,
    parse_vaa,
    recover_address,
)
from fedrelay.protocol.wormhole.observation import MalformedMessage, Observation
from fedrelay.relayer.errors import RelayerError
from fedrelay.relayer.records import (
    GuardianSignatureMessage,
    Message,
    SignedVaa,
    ThresholdCommitmentMessage,
    ThresholdPartialMessage,
    ThresholdTick,
    decode_message,
    encode_message,
    message_key,
    message_label,
)
from fedrelay.relayer.stage import (
    Output,
    StageResult,
    position_of,
    record_context,
    store_batch,
)
from fedrelay.relayer.stages.threshold import (
    ThresholdConfig,
    ThresholdStepRefused,
    give_up_stale,
    retry_after,
    take_commitments,
    take_partials,
)

log = logging.getLogger(__name__)

_THRESHOLD_RECORDS = (ThresholdCommitmentMessage, ThresholdPartialMessage, ThresholdTick)
_ThresholdRecord = ThresholdCommitmentMessage | ThresholdPartialMessage | ThresholdTick


class ConflictingVaa(RelayerError):
    """Two different bodies were signed for one message id (emitter chain, address, sequence)."""


# --- pure -----------------------------------------------------------------------------------------


def check_signature(message: GuardianSignatureMessage, guardian_sets: GuardianSets) -> GuardianSet:
    """Check that a signature is its guardian's over the observation's digest.

    Returns:
        The guardian set the signature belongs to.

    Raises:
        UnknownGuardianSet: The message names a set the relayer does not know.
        GuardianIndexOutOfRange: The guardian index is beyond the end of the set.
        InvalidSignature: A subclass: the signature is malformed, high-s, or made by another key.
    """
    guardian_set = guardian_sets.get(message.guardian_set_index)
    index = message.signature.guardian_index
    if index >= len(guardian_set.addresses):
        raise GuardianIndexOutOfRange(
            f"guardian index {index} is outside guardian set {guardian_set.index} "
            f"({len(guardian_set.addresses)} guardians)"
        )
    signer = recover_address(message.signature, message.digest)
    if signer != guardian_set.addresses[index]:
        raise SignerMismatch(
            f"signature claimed by guardian {index} of set {guardian_set.index} was made by "
            f"0x{signer.hex()}"
        )
    return guardian_set


def build_vaa(
    observation: Observation, guardian_set_index: int, signatures: Sequence[Signature]
) -> Vaa:
    """The VAA of an observation with the given signatures, sorted by guardian index."""
    ordered = tuple(sorted(signatures, key=lambda sig: sig.guardian_index))
    return Vaa(guardian_set_index=guardian_set_index, signatures=ordered, body=observation.body)


# --- ledger ---------------------------------------------------------------------------------------


async def store_observation(
    work: RelayerLedgerWork, observation: Observation, status: ObservationStatus
) -> None:
    """Record an observation unless the ledger has it; move it on from ``observed``."""
    await work.record_observation(observation, status, traceparent())
    movable = [ObservationStatus.OBSERVED, ObservationStatus.ATTESTED]
    if status == ObservationStatus.ATTESTED:
        movable = [ObservationStatus.OBSERVED]
    await work.advance_observations(observation.digest, status, movable)


async def store_vaa_once(work: RelayerLedgerWork, vaa: Vaa, position: str) -> bool:
    """Store a VAA under its digest unless one is stored; whether `position` should emit it.

    True when this call stored it, or when it was stored by the record at the same `position`
    (a replay after a crash); False for any other record (a duplicate).

    Raises:
        ConflictingVaa: The ledger holds a VAA with another digest for the same message id.
    """
    inserted = await work.insert_vaa(
        vaa.to_bytes(),
        digest=vaa.digest,
        message_id=vaa.message_id,
        guardian_set_index=vaa.guardian_set_index,
        num_signatures=len(vaa.signatures),
        trace_context=traceparent(),
        assembled_from=position,
    )
    if inserted:
        return True
    stored = await work.stored_vaa(vaa.digest)
    if stored is None:  # the conflict was on the message id: a different body was signed
        raise ConflictingVaa(
            f"a VAA with another body is stored for {message_label(vaa.message_id)}; "
            f"0x{vaa.digest.hex()} is refused"
        )
    return stored.assembled_from == position


@dataclass(frozen=True)
class Collected:
    """A checked signature on its way to the ledger."""

    message: GuardianSignatureMessage
    quorum: int  # signatures its guardian set needs
    position: str  # the bus position of the record carrying it
    trace_context: str | None  # the record's trace, kept on the rows it writes


@dataclass
class _Assembly:
    """A VAA one signature of the batch completed, and who emits it once it is stored."""

    vaa: Vaa
    position: str
    emitter: str = ""  # the position of the record whose VAA the ledger keeps
    stored: Vaa | None = None  # that VAA


async def collect_signatures(
    work: RelayerLedgerWork, items: Sequence[Collected], *, hold: int | None = None
) -> list[Vaa | None]:
    """Store checked signatures, in order; per item, the VAA when its record is the one that
    emits it.

    The outcome is the one storing them one by one gives: a signature counts towards its
    digest's quorum with those stored before it and those of the items before it, the item that
    completes the quorum stores the VAA (unless one is stored under the digest), and only the
    record that stored it emits it, again when it is replayed. The ledger work is a fixed number
    of statements whatever the number of items: the signatures and VAAs held are read before
    the batch's own are written, and which item completes which quorum is worked out from them.

    With `hold`, the index of the threshold key the assembler signs under (threshold
    attestation), a quorum assembles only for a digest whose threshold attempt failed
    (:mod:`fedrelay.relayer.stages.threshold`); the others' signatures are stored and wait, and
    each digest's attempt is opened (unless it is) so that a tick past the timeout gives it to
    version 1 even when no guardian commits.

    Raises:
        ConflictingVaa: The ledger holds, or the batch completes, a VAA with another body for
            the message id of one the batch completes.
    """
    if not items:
        return []
    first: dict[bytes, Collected] = {}
    for item in items:
        first.setdefault(item.message.digest, item)
    digests = list(first)
    await work.record_observations(
        [(item.message.observation, ObservationStatus.ATTESTED, item.trace_context)
         for item in first.values()]
    )  # fmt: skip
    await work.advance_observations_of(
        digests, ObservationStatus.ATTESTED, [ObservationStatus.OBSERVED]
    )
    stored = await work.stored_vaas(digests)
    released = None
    if hold is not None:
        released = await work.failed_threshold_digests(digests)
        await work.open_threshold_packages(
            [(ThresholdAttempt(digest, hold, 0), encode_message(item.message.observation))
             for digest, item in first.items() if digest not in stored]
        )  # fmt: skip
    held = {
        key: {signature.guardian_index: signature for signature in signatures}
        for key, signatures in (
            await work.signatures_over([digest for digest in digests if digest not in stored])
        ).items()
    }
    await work.add_signatures(
        [(item.message.digest, item.message.guardian_set_index, item.message.signature)
         for item in items]
    )  # fmt: skip

    assemblies: dict[bytes, _Assembly] = {}  # digests whose quorum an item completes
    for item in items:
        message = item.message
        if message.digest in stored or message.digest in assemblies:
            continue
        if released is not None and message.digest not in released:
            continue
        known = held.setdefault((message.digest, message.guardian_set_index), {})
        known.setdefault(message.signature.guardian_index, message.signature)
        if len(known) >= item.quorum:
            vaa = build_vaa(message.observation, message.guardian_set_index, list(known.values()))
            assemblies[message.digest] = _Assembly(vaa, item.position)
    await _store_assemblies(work, assemblies, items)

    outcomes: list[Vaa | None] = []
    for item in items:
        digest = item.message.digest
        if digest in stored:  # assembled before the batch: only its assembling record emits
            earlier = stored[digest]
            emits = earlier.assembled_from == item.position
            outcomes.append(_as_v1(earlier.vaa) if emits else None)
        elif digest in assemblies and assemblies[digest].emitter == item.position:
            outcomes.append(assemblies[digest].stored)
        else:
            outcomes.append(None)
    return outcomes


async def _store_assemblies(
    work: RelayerLedgerWork, assemblies: dict[bytes, _Assembly], items: Sequence[Collected]
) -> None:
    """Store the VAAs the batch completed; set who emits each (see :func:`collect_signatures`)."""
    if not assemblies:
        return
    traces = {item.position: item.trace_context for item in items}
    inserted = await work.insert_vaas(
        [NewVaa(one.vaa, traces[one.position], one.position) for one in assemblies.values()]
    )
    refused = [digest for digest in assemblies if digest not in inserted]
    others = await work.stored_vaas(refused)
    for digest, one in assemblies.items():
        if digest in inserted:
            one.emitter, one.stored = one.position, one.vaa
            continue
        other = others.get(digest)
        if other is None:  # the conflict was on the message id: a different body was signed
            raise ConflictingVaa(
                f"a VAA with another body is stored for {message_label(one.vaa.message_id)}; "
                f"0x{digest.hex()} is refused"
            )
        one.emitter = other.assembled_from or ""
        one.stored = one.vaa if one.emitter == one.position else parse_vaa(other.vaa)
    emitted = [digest for digest, one in assemblies.items() if one.emitter == one.position]
    await work.advance_observations_of(
        emitted,
        ObservationStatus.ASSEMBLED,
        [ObservationStatus.OBSERVED, ObservationStatus.ATTESTED],
    )


def _as_v1(raw: bytes) -> Vaa | None:
    """A stored VAA as version 1; None for a version-2 one (a signature record never emits it)."""
    vaa = parse_any_vaa(raw)
    return vaa if isinstance(vaa, Vaa) else None


async def assemble_fallback(
    work: RelayerLedgerWork, observation: Observation, guardian_sets: GuardianSets, position: str
) -> Vaa | None:
    """After a failed threshold attempt: the version-1 VAA of the signatures already stored, when
    they reach the quorum of the current guardian set and `position` is the record that stores
    it (see :func:`store_vaa_once`)."""
    current = guardian_sets.current
    signatures = await work.signatures(observation.digest, current.index)
    if len(signatures) < current.quorum:
        return None
    vaa = build_vaa(observation, current.index, signatures)
    return vaa if await store_vaa_once(work, vaa, position) else None


# --- the stage ------------------------------------------------------------------------------------

_UNSTORED = StageResult()  # a checked record's place in a batch until the ledger has stored it


@dataclass(frozen=True)
class Assembler:
    """The assemble stage's processor: signatures in, one VAA per digest out.

    With `threshold` set (threshold attestation), commitments and partial signatures come in
    too, signing packages go out on the signing topic, and a digest's VAA is version 2 unless
    its threshold attempt failed (:mod:`fedrelay.relayer.stages.threshold`).
    """

    ledger: RelayerLedger
    guardian_sets: GuardianSets
    vaas_topic: str = "vaas"
    threshold: ThresholdConfig | None = None
    clock: Callable[[], float] = time.time

    async def process(self, record: Record) -> StageResult:
        """Check and store the signature; emit the VAA if this record completes its quorum (or a
        threshold step: see :meth:`threshold_step`)."""
        message = decode_message(record.value)
        if isinstance(message, _THRESHOLD_RECORDS):
            return await self.threshold_step(record, message)
        message, quorum = self._checked(message)
        item = Collected(message, quorum, position_of(record), traceparent())
        async with self.ledger.transaction() as work:
            [vaa] = await collect_signatures(work, [item], hold=self._hold)
        return self._result(message.observation, vaa)

    async def process_batch(self, records: Sequence[Record]) -> Sequence[StageResult | Exception]:
        """Check every signature, then store them all in one ledger transaction, in order;
        then each threshold step of the batch in a transaction of its own, in order.

        A record whose signature does not check gets its exception (the runner dead-letters it)
        and takes no part in the transaction. If the transaction fails, each checked record is
        stored again on its own (see the module docstring).
        """
        outcomes: list[StageResult | Exception] = []
        checked: list[tuple[int, Collected]] = []
        steps: list[tuple[int, Record, _ThresholdRecord]] = []
        for index, record in enumerate(records):
            try:
                message = decode_message(record.value)
                if isinstance(message, _THRESHOLD_RECORDS):
                    steps.append((index, record, message))
                    outcomes.append(_UNSTORED)
                    continue
                signature, quorum = self._checked(message)
            except Exception as exc:
                outcomes.append(exc)
                continue
            outcomes.append(_UNSTORED)  # replaced below, once the ledger has stored it
            with record_context(record):
                trace = traceparent()
            checked.append((index, Collected(signature, quorum, position_of(record), trace)))

        async def store(
            work: RelayerLedgerWork, items: Sequence[tuple[int, Collected]]
        ) -> list[StageResult]:
            vaas = await collect_signatures(work, [item for _, item in items], hold=self._hold)
            return [
                self._result(item.message.observation, vaa)
                for (_, item), vaa in zip(items, vaas, strict=True)
            ]

        stored = await store_batch(self.ledger, checked, store)
        for (index, _), outcome in zip(checked, stored, strict=True):
            outcomes[index] = outcome

        async def take(
            work: RelayerLedgerWork, items: Sequence[tuple[int, Record, _ThresholdRecord]]
        ) -> list[StageResult]:
            return await self._threshold_in(work, [(record, step) for _, record, step in items])

        if steps:
            for (index, _, _), outcome in zip(
                steps, await store_batch(self.ledger, steps, take), strict=True
            ):
                outcomes[index] = outcome
        return outcomes

    async def threshold_step(self, record: Record, step: _ThresholdRecord) -> StageResult:
        """Store a commitment (publishing the package it completes) or a partial (emitting the
        version-2 VAA it completes; after a failed attempt, the version-1 VAA if a quorum of
        signatures is stored), or take a tick (giving up on the packages past the timeout), in
        one ledger transaction.

        Raises:
            ThresholdStepRefused: Threshold attestation is off here, or the step is refused.
        """
        async with self.ledger.transaction() as work:
            [result] = await self._threshold_in(work, [(record, step)])
        return result

    async def _threshold_in(
        self, work: RelayerLedgerWork, items: Sequence[tuple[Record, _ThresholdRecord]]
    ) -> list[StageResult]:
        """Threshold steps, in the ledger transaction `work`: the commitments together, then
        the partials together (:func:`~fedrelay.relayer.stages.threshold.take_commitments`,
        :func:`~fedrelay.relayer.stages.threshold.take_partials`), then each tick."""
        config = self.threshold
        if config is None:
            raise ThresholdStepRefused(
                f"a {items[0][1].TYPE} record reached an assembler without threshold attestation"
            )
        results: list[StageResult] = [StageResult() for _ in items]
        commitments = [
            (index, position_of(record), step)
            for index, (record, step) in enumerate(items)
            if isinstance(step, ThresholdCommitmentMessage)
        ]
        if commitments:
            first = {step.digest: step for _, _, step in reversed(commitments)}
            await work.record_observations(
                [(step.observation, ObservationStatus.ATTESTED, traceparent())
                 for step in first.values()]
            )  # fmt: skip
            await work.advance_observations_of(
                list(first), ObservationStatus.ATTESTED, [ObservationStatus.OBSERVED]
            )
            packages = await take_commitments(
                work, config, [(position, step) for _, position, step in commitments]
            )
            for (index, _, commitment), package in zip(commitments, packages, strict=True):
                outputs: tuple[Output, ...] = ()
                if package is not None:
                    key = message_key(commitment.observation.message_id)
                    outputs = (Output(config.signing_topic, encode_message(package), key=key),)
                source = f"chain-{commitment.observation.emitter_chain}"
                results[index] = StageResult(
                    outputs, emitted_at_ms=commitment.emitted_at_ms, source=source
                )
        partials = [
            (index, position_of(record), step)
            for index, (record, step) in enumerate(items)
            if isinstance(step, ThresholdPartialMessage)
        ]
        if partials:
            taken = await take_partials(
                work, config, self.guardian_sets,
                [(position, step) for _, position, step in partials], int(self.clock()),
            )  # fmt: skip
            assembled = []
            for (index, position, step), outcome in zip(partials, taken, strict=True):
                emitted: Vaa | ThresholdVaa | None = outcome.vaa
                if outcome.failure is not None and outcome.left_out:
                    # A replay of the record that failed the attempt publishes its retry again.
                    retry = await retry_after(work, config, step, replayed=outcome.replayed)
                    if retry is not None:
                        if not outcome.replayed:
                            log.warning("threshold signing failed, attempt %d follows: %s",
                                        retry.attempt, outcome.failure)  # fmt: skip
                        key = message_key(step.observation.message_id)
                        output = Output(config.signing_topic, encode_message(retry), key=key)
                        results[index] = StageResult(
                            (output,), emitted_at_ms=step.emitted_at_ms,
                            source=f"chain-{step.observation.emitter_chain}",
                        )  # fmt: skip
                        continue
                if outcome.failure is not None and not outcome.replayed:
                    # (Replayed, its version-1 VAA, if it stored one, is `outcome.vaa`.)
                    log.warning("threshold signing failed, version 1 takes over: %s",
                                outcome.failure)  # fmt: skip
                    emitted = await assemble_fallback(
                        work, step.observation, self.guardian_sets, position
                    )
                if emitted is not None:
                    assembled.append(step.digest)
                results[index] = self._result(step.observation, emitted)
            await work.advance_observations_of(
                assembled,
                ObservationStatus.ASSEMBLED,
                [ObservationStatus.OBSERVED, ObservationStatus.ATTESTED],
            )
        for index, (record, item) in enumerate(items):
            if isinstance(item, ThresholdTick):
                results[index] = await self._tick(work, config, position_of(record))
        return results

    async def _tick(
        self, work: RelayerLedgerWork, config: ThresholdConfig, position: str
    ) -> StageResult:
        """Give up on the packages past the timeout: publish the retry of each that another
        attempt follows (its silent signers left out), and emit the version-1 VAA of each other
        that has a quorum of signatures stored, from this record (again when it is replayed:
        the same retries first, then the VAAs, found by the packages it failed and the VAAs it
        stored)."""
        given_up = await give_up_stale(work, config, self.clock(), position)
        stored: dict[bytes, StoredVaaRecord] = {}
        if any(given.replayed and given.retry is None for given in given_up):
            stored = {vaa.digest: vaa for vaa in await work.vaas_assembled_from(position)}
        retries: list[Output] = []
        vaas: list[Output] = []
        emitted: set[bytes] = set()
        for given in given_up:
            observation = given.observation
            label = message_label(observation.message_id)
            if given.retry is not None:
                if not given.replayed:
                    log.warning("threshold signing of %s timed out, attempt %d follows: %s",
                                label, given.retry.attempt, given.failure)  # fmt: skip
                key = message_key(observation.message_id)
                retries.append(Output(config.signing_topic, encode_message(given.retry), key=key))
                continue
            vaa: Vaa | ThresholdVaa | None
            if given.replayed:  # the VAA it stored, if any
                earlier = stored.get(observation.digest)
                vaa = None if earlier is None else parse_any_vaa(earlier.vaa)
            else:
                log.warning("threshold signing of %s timed out; version 1 takes over: %s",
                            label, given.failure)  # fmt: skip
                vaa = await assemble_fallback(work, observation, self.guardian_sets, position)
                if vaa is not None:
                    await work.advance_observations_of(
                        [vaa.digest],
                        ObservationStatus.ASSEMBLED,
                        [ObservationStatus.OBSERVED, ObservationStatus.ATTESTED],
                    )
            if vaa is not None and vaa.digest not in emitted:  # once per digest
                emitted.add(vaa.digest)
                vaas.extend(self._result(observation, vaa).outputs)
        return StageResult((*retries, *vaas))

    @property
    def _hold(self) -> int | None:
        """The threshold key's index under threshold attestation (version 1 is held), else None."""
        return None if self.threshold is None else self.threshold.tss_index

    def _checked(self, message: Message) -> tuple[GuardianSignatureMessage, int]:
        """The record's signature message, checked, and the quorum of its guardian set."""
        if not isinstance(message, GuardianSignatureMessage):
            raise MalformedMessage(
                f"expected a record of type {GuardianSignatureMessage.TYPE!r}, got {message.TYPE!r}"
            )
        return message, check_signature(message, self.guardian_sets).quorum

    def _result(self, observation: Observation, vaa: Vaa | ThresholdVaa | None) -> StageResult:
        source = f"chain-{observation.emitter_chain}"
        if vaa is None:
            return StageResult(emitted_at_ms=observation.emitted_at_ms, source=source)
        signed = SignedVaa(vaa=vaa.to_bytes(), emitted_at_ms=observation.emitted_at_ms)
        output = Output(self.vaas_topic, encode_message(signed), key=message_key(vaa.message_id))
        return StageResult((output,), emitted_at_ms=observation.emitted_at_ms, source=source)
