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

from collections.abc import Sequence
from dataclasses import dataclass

from fedrelay.ports.bus import Record
from fedrelay.ports.relayer_ledger import (
    NewVaa,
    ObservationStatus,
    RelayerLedger,
    RelayerLedgerWork,
)
from fedrelay.protocol.tracing import traceparent
from fedrelay.protocol.wormhole import (
    GuardianIndexOutOfRange,
    GuardianSet,
    GuardianSets,
    Signature,
    SignerMismatch,
    Vaa,
    parse_vaa,
    recover_address,
)
from fedrelay.protocol.wormhole.observation import Observation
from fedrelay.relayer.errors import RelayerError
from fedrelay.relayer.records import (
    GuardianSignatureMessage,
    SignedVaa,
    decode_as,
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
    work: RelayerLedgerWork, items: Sequence[Collected]
) -> list[Vaa | None]:
    """Store checked signatures, in order; per item, the VAA when its record is the one that
    emits it.

    The outcome is the one storing them one by one gives: a signature counts towards its
    digest's quorum with those stored before it and those of the items before it, the item that
    completes the quorum stores the VAA (unless one is stored under the digest), and only the
    record that stored it emits it, again when it is replayed. The ledger work is a fixed number
    of statements whatever the number of items: the signatures and VAAs held are read before
    the batch's own are written, and which item completes which quorum is worked out from them.

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
            outcomes.append(parse_vaa(earlier.vaa) if emits else None)
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


# --- the stage ------------------------------------------------------------------------------------

_UNSTORED = StageResult()  # a checked record's place in a batch until the ledger has stored it


@dataclass(frozen=True)
class Assembler:
    """The assemble stage's processor: signatures in, one VAA per digest out."""

    ledger: RelayerLedger
    guardian_sets: GuardianSets
    vaas_topic: str = "vaas"

    async def process(self, record: Record) -> StageResult:
        """Check and store the signature; emit the VAA if this record completes its quorum."""
        message, quorum = self._checked(record)
        item = Collected(message, quorum, position_of(record), traceparent())
        async with self.ledger.transaction() as work:
            [vaa] = await collect_signatures(work, [item])
        return self._result(message, vaa)

    async def process_batch(self, records: Sequence[Record]) -> Sequence[StageResult | Exception]:
        """Check every signature, then store them all in one ledger transaction, in order.

        A record whose signature does not check gets its exception (the runner dead-letters it)
        and takes no part in the transaction. If the transaction fails, each checked record is
        stored again on its own (see the module docstring).
        """
        outcomes: list[StageResult | Exception] = []
        checked: list[tuple[int, Collected]] = []
        for index, record in enumerate(records):
            try:
                message, quorum = self._checked(record)
            except Exception as exc:
                outcomes.append(exc)
                continue
            outcomes.append(_UNSTORED)  # replaced below, once the ledger has stored it
            with record_context(record):
                trace = traceparent()
            checked.append((index, Collected(message, quorum, position_of(record), trace)))

        async def store(
            work: RelayerLedgerWork, items: Sequence[tuple[int, Collected]]
        ) -> list[StageResult]:
            vaas = await collect_signatures(work, [item for _, item in items])
            return [
                self._result(item.message, vaa) for (_, item), vaa in zip(items, vaas, strict=True)
            ]

        stored = await store_batch(self.ledger, checked, store)
        for (index, _), outcome in zip(checked, stored, strict=True):
            outcomes[index] = outcome
        return outcomes

    def _checked(self, record: Record) -> tuple[GuardianSignatureMessage, int]:
        """The record's signature message, checked, and the quorum of its guardian set."""
        message = decode_as(record.value, GuardianSignatureMessage)
        return message, check_signature(message, self.guardian_sets).quorum

    def _result(self, message: GuardianSignatureMessage, vaa: Vaa | None) -> StageResult:
        source = f"chain-{message.observation.emitter_chain}"
        if vaa is None:
            return StageResult(emitted_at_ms=message.emitted_at_ms, source=source)
        signed = SignedVaa(vaa=vaa.to_bytes(), emitted_at_ms=message.emitted_at_ms)
        output = Output(self.vaas_topic, encode_message(signed), key=message_key(vaa.message_id))
        return StageResult((output,), emitted_at_ms=message.emitted_at_ms, source=source)
