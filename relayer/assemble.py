"""The assemble stage: guardian signatures to a quorum VAA, emitted exactly once per digest.

Each signature is checked (it must recover to the guardian at its index in a known guardian set),
then stored under the ledger's unique key (digest, guardian set, guardian index), so a duplicate
changes nothing. When the stored signatures of a digest reach the set's quorum, the VAA is built
from them and stored with the bus position of the record that completed it
(``vaas.assembled_from``). That record, and only that record, emits the VAA: a replay of it after
a crash emits again (the first emission was never committed), while a duplicate or a late
signature for an assembled digest emits nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fedrelay.adapters.ledger.models import GuardianSignature, ObservationStatus, StoredVaa
from fedrelay.adapters.ledger.models import Observation as ObservationRow
from fedrelay.ports.bus import Record
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
from fedrelay.relayer.stage import Output, StageResult, insert_once, position_of


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
    session: AsyncSession, observation: Observation, status: ObservationStatus
) -> None:
    """Record an observation unless the ledger has it; move it on from ``observed``."""
    await insert_once(
        session,
        ObservationRow.__table__,  # type: ignore[arg-type]
        {
            "emitter_chain": observation.emitter_chain,
            "emitter_address": observation.emitter_address,
            "sequence": observation.sequence,
            "digest": observation.digest,
            "nonce": observation.nonce,
            "timestamp": observation.timestamp,
            "consistency_level": observation.consistency_level,
            "payload": observation.payload,
            "tx_hash": observation.tx_hash,
            "block_number": observation.block_number,
            "block_hash": observation.block_hash,
            "status": status,
            "trace_context": traceparent(),
        },
    )
    movable = [ObservationStatus.OBSERVED, ObservationStatus.ATTESTED]
    if status == ObservationStatus.ATTESTED:
        movable = [ObservationStatus.OBSERVED]
    await session.execute(
        update(ObservationRow)
        .where(ObservationRow.digest == observation.digest, ObservationRow.status.in_(movable))
        .values(status=status)
    )


async def store_vaa_once(session: AsyncSession, vaa: Vaa, position: str) -> bool:
    """Store a VAA under its digest unless one is stored; whether `position` should emit it.

    True when this call stored it, or when it was stored by the record at the same `position`
    (a replay after a crash); False for any other record (a duplicate).

    Raises:
        ConflictingVaa: The ledger holds a VAA with another digest for the same message id.
    """
    inserted = await insert_once(
        session,
        StoredVaa.__table__,  # type: ignore[arg-type]
        {
            "digest": vaa.digest,
            "emitter_chain": vaa.body.emitter_chain,
            "emitter_address": vaa.body.emitter_address,
            "sequence": vaa.body.sequence,
            "guardian_set_index": vaa.guardian_set_index,
            "num_signatures": len(vaa.signatures),
            "vaa": vaa.to_bytes(),
            "trace_context": traceparent(),
            "assembled_from": position,
        },
    )
    if inserted:
        return True
    stored = await stored_vaa(session, vaa.digest)
    if stored is None:  # the conflict was on the message id: a different body was signed
        raise ConflictingVaa(
            f"a VAA with another body is stored for {message_label(vaa.message_id)}; "
            f"0x{vaa.digest.hex()} is refused"
        )
    return stored[1] == position


async def stored_vaa(session: AsyncSession, digest: bytes) -> tuple[bytes, str | None] | None:
    """The stored VAA bytes of a digest and the position that assembled it, if any."""
    row = (
        await session.execute(
            select(StoredVaa.vaa, StoredVaa.assembled_from).where(StoredVaa.digest == digest)
        )
    ).first()
    return None if row is None else (bytes(row[0]), row[1])


async def collect_signature(
    session: AsyncSession, message: GuardianSignatureMessage, quorum: int, position: str
) -> Vaa | None:
    """Store one checked signature; the VAA when this record is the one that emits it.

    Args:
        session: An open transaction on the ledger.
        message: A signature that passed :func:`check_signature`.
        quorum: Signatures the guardian set needs.
        position: The bus position of the record carrying the signature.
    """
    await store_observation(session, message.observation, ObservationStatus.ATTESTED)
    signature = message.signature
    await insert_once(
        session,
        GuardianSignature.__table__,  # type: ignore[arg-type]
        {
            "digest": message.digest,
            "guardian_set_index": message.guardian_set_index,
            "guardian_index": signature.guardian_index,
            "signature": signature.r + signature.s + bytes((signature.v,)),
        },
        ("digest", "guardian_set_index", "guardian_index"),
    )
    existing = await stored_vaa(session, message.digest)
    if existing is not None:  # assembled before: only a replay of the assembling record emits
        raw, assembled_from = existing
        return parse_vaa(raw) if assembled_from == position else None
    rows = (
        await session.scalars(
            select(GuardianSignature)
            .where(
                GuardianSignature.digest == message.digest,
                GuardianSignature.guardian_set_index == message.guardian_set_index,
            )
            .order_by(GuardianSignature.guardian_index)
        )
    ).all()
    if len(rows) < quorum:
        return None
    signatures = [
        Signature(row.guardian_index, row.signature[:32], row.signature[32:64], row.signature[64])
        for row in rows
    ]
    vaa = build_vaa(message.observation, message.guardian_set_index, signatures)
    if not await store_vaa_once(session, vaa, position):
        return None
    await store_observation(session, message.observation, ObservationStatus.ASSEMBLED)
    return vaa


# --- the stage ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assembler:
    """The assemble stage's processor: signatures in, one VAA per digest out."""

    sessions: async_sessionmaker[AsyncSession]
    guardian_sets: GuardianSets
    vaas_topic: str = "vaas"

    async def process(self, record: Record) -> StageResult:
        """Check and store the signature; emit the VAA if this record completes its quorum."""
        message = decode_as(record.value, GuardianSignatureMessage)
        guardian_set = check_signature(message, self.guardian_sets)
        async with self.sessions() as session, session.begin():
            vaa = await collect_signature(
                session, message, guardian_set.quorum, position_of(record)
            )
        source = f"chain-{message.observation.emitter_chain}"
        if vaa is None:
            return StageResult(emitted_at_ms=message.emitted_at_ms, source=source)
        signed = SignedVaa(vaa=vaa.to_bytes(), emitted_at_ms=message.emitted_at_ms)
        output = Output(self.vaas_topic, encode_message(signed), key=message_key(vaa.message_id))
        return StageResult((output,), emitted_at_ms=message.emitted_at_ms, source=source)
