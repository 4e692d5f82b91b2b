"""The same migrations on the harness's real PostgreSQL cluster."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from support.relayer import sample_observation, signature_messages, signed_vaa_bytes
from support.wormhole import guardian_set, guardian_signers

from fedrelay.adapters.devnet.guardians import threshold_key
from fedrelay.adapters.devnet.services import Postgres
from fedrelay.adapters.ledger.database import (
    alembic_config,
    create_engine,
    current_revision,
    upgrade,
)
from fedrelay.adapters.ledger.models import SignerNonce, StoredVaa, ThresholdPackage
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger
from fedrelay.ports.bus import Record
from fedrelay.ports.relay import SignedDelivery
from fedrelay.ports.relayer_ledger import AttemptOutcome, DeliveryStatus
from fedrelay.protocol.wormhole import GuardianSets, Vaa, parse_any_vaa, parse_vaa, verify_vaa
from fedrelay.protocol.wormhole.observation import Observation
from fedrelay.relayer.records import (
    SignedVaa,
    SigningPackageMessage,
    ThresholdCommitmentMessage,
    ThresholdPartialMessage,
    ThresholdRetryMessage,
    ThresholdTick,
    decode_as,
    encode_message,
)
from fedrelay.relayer.signing_journal import SigningJournal
from fedrelay.relayer.stage import StageResult
from fedrelay.relayer.stages.assemble import Assembler
from fedrelay.relayer.stages.threshold import ThresholdConfig

pytestmark = pytest.mark.integration

U64_MAX = 2**64 - 1
HEAD = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://")).get_current_head()


async def test_upgrade_and_u64_round_trip(postgres: Postgres) -> None:
    await asyncio.to_thread(upgrade, postgres.async_url)
    await asyncio.to_thread(upgrade, postgres.async_url)  # idempotent
    assert await current_revision(postgres.async_url) == HEAD

    engine = create_engine(postgres.async_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with sessions() as session, session.begin():
            session.add(
                StoredVaa(
                    digest=b"\x42" * 32, emitter_chain=1, emitter_address=b"\x07" * 32,
                    sequence=U64_MAX, guardian_set_index=0, num_signatures=13, vaa=b"\x01\x02",
                )
            )  # fmt: skip
        async with sessions() as session:
            stored = await session.scalar(select(StoredVaa.sequence))
        assert stored == U64_MAX  # NUMERIC(20) keeps the full unsigned range
        async with sessions() as session:
            # Comparing with a plain int above 2**63 must bind as NUMERIC, not BIGINT.
            found = await session.scalar(
                select(StoredVaa.num_signatures).where(StoredVaa.sequence == U64_MAX)
            )
        assert found == 13

        async with sessions() as session, session.begin():
            session.add(SignerNonce(chain_id=4, signer="0xabc", next_nonce=0))
        with pytest.raises(IntegrityError):
            async with sessions() as session, session.begin():
                session.add(SignerNonce(chain_id=4, signer="0xabc", next_nonce=5))
    finally:
        await engine.dispose()


async def test_attempts_of_a_group_are_written_sent_and_settled_in_bulk(postgres: Postgres) -> None:
    """The deliver pipeline's bulk writes, on PostgreSQL: attempts persisted in one statement
    (ids in order), their broadcasts recorded, and their deliveries settled with the landed
    attempt confirmed and every other in-flight attempt of the delivery replaced."""
    await asyncio.to_thread(upgrade, postgres.async_url)
    ledger = SqlRelayerLedger.open(postgres.async_url)
    signed = [
        SignedDelivery(f"0x{n:064x}", bytes([n]), nonce=100 + n, fee_per_gas=7) for n in range(1, 4)
    ]
    try:
        deliveries = []
        async with ledger.transaction() as work:
            for n in range(1, 4):
                vaa = signed_vaa_bytes(sample_observation(9_000 + n), guardian_signers(1))
                parsed = parse_vaa(vaa)
                await work.insert_vaa(
                    vaa, digest=parsed.digest, message_id=parsed.message_id,
                    guardian_set_index=0, num_signatures=1, trace_context=None,
                )  # fmt: skip
                deliveries.append((await work.open_delivery(parsed.digest, 4, None)).id)
            older = await work.add_attempt(deliveries[0], 1, "0xsigner", signed[2])
            ids = await work.add_attempts(
                "0xsigner", [(d, 2, one) for d, one in zip(deliveries, signed, strict=True)]
            )
        assert len(ids) == 3  # in order: each id carries its own nonce (checked below)
        async with ledger.transaction() as work:
            await work.record_broadcasts(
                [(d, a, one.tx_id) for d, a, one in zip(deliveries, ids, signed, strict=True)]
            )
        async with ledger.reading() as work:
            for delivery_id, attempt_id, one in zip(deliveries, ids, signed, strict=True):
                record = await work.delivery(delivery_id)
                assert (record.status, record.tx_hash) == (DeliveryStatus.SUBMITTED, one.tx_id)
                assert (await work.attempt(attempt_id)).outcome == AttemptOutcome.BROADCAST
                assert (await work.attempt(attempt_id)).nonce == one.nonce
        async with ledger.transaction() as work:
            await work.settle_confirmed(
                [(d, a, one.tx_id) for d, a, one in zip(deliveries, ids, signed, strict=True)]
            )
        async with ledger.reading() as work:
            for delivery_id, attempt_id in zip(deliveries, ids, strict=True):
                assert (await work.delivery(delivery_id)).status == DeliveryStatus.CONFIRMED
                assert (await work.attempt(attempt_id)).outcome == AttemptOutcome.CONFIRMED
            assert (await work.attempt(older)).outcome == AttemptOutcome.REPLACED
    finally:
        await ledger.close()


async def test_threshold_signing_is_stored_and_given_up_on_postgres(
    postgres: Postgres, tmp_path: Path
) -> None:
    """The assembler's threshold steps on PostgreSQL: a batch of commitments issues one package,
    a partial short of the package waits, and a tick past the timeout fails the attempt (naming
    the guardians that did not answer, leaving them out, by its position) and emits the
    version-1 VAA of the stored signatures, again when it is replayed."""
    await asyncio.to_thread(upgrade, postgres.async_url)
    ledger = SqlRelayerLedger.open(postgres.async_url)
    dealt = threshold_key(4)
    signers = guardian_signers(4)
    sets = GuardianSets.of(guardian_set(4))
    config = ThresholdConfig(0, dealt.group_key, dealt.threshold, dealt.verification_shares)
    observation = sample_observation(9_000 + secrets.randbelow(1_000_000))
    journals = [SigningJournal(s, tmp_path / f"{s.identifier}.sqlite") for s in dealt.shares]

    def record(message: object, offset: int) -> Record:
        return Record("signatures", 0, offset, None, encode_message(message))  # type: ignore[arg-type]

    try:
        assembler = Assembler(ledger, sets, threshold=config)
        signatures = signature_messages(observation, signers, [0, 1, 2])
        steps: list[object] = [
            ThresholdCommitmentMessage(
                observation, 0, 0, commitment=j.commit(0, observation.digest, 0)
            )
            for j in journals
        ]
        results = await assembler.process_batch(
            [record(m, n) for n, m in enumerate([*signatures, *steps])]
        )
        outputs = [r.outputs for r in results if isinstance(r, StageResult)]
        assert [len(o) for o in outputs] == [0, 0, 0, 0, 0, 1, 0]  # the third commitment issues
        package = decode_as(outputs[5][0].value, SigningPackageMessage)
        z = journals[0].answer(0, observation.digest, 0, package.commitments).z
        partial = ThresholdPartialMessage(observation, 0, 0, identifier=1, z=z.to_bytes(32, "big"))
        assert (await assembler.process(record(partial, 10))).outputs == ()

        later = Assembler(ledger, sets, threshold=config, clock=lambda: time.time() + 60)
        tick = record(ThresholdTick(at_ms=0), 11)
        [output] = (await later.process(tick)).outputs
        vaa = parse_any_vaa(decode_as(output.value, SignedVaa).vaa)
        assert isinstance(vaa, Vaa)
        assert vaa.digest == observation.digest
        verify_vaa(vaa, sets, observation.timestamp)
        assert (await later.process(tick)).outputs == (output,)  # replayed after a crash
        engine = create_engine(postgres.async_url)
        try:
            async with engine.connect() as connection:
                failure, failed_from, left_out = (
                    await connection.execute(
                        select(
                            ThresholdPackage.failure,
                            ThresholdPackage.failed_from,
                            ThresholdPackage.left_out,
                        ).where(ThresholdPackage.digest == observation.digest)
                    )
                ).one()
        finally:
            await engine.dispose()
        assert failure is not None
        assert "guardian(s) [1, 2] did not answer within 30 s" in failure
        assert (failed_from, left_out) == ("signatures:0:11", b"\x00\x02\x00\x03")
    finally:
        await ledger.close()


def _operations_query(title: str) -> str:
    """The SQL block that follows `title` in docs/operations.md."""
    docs = (Path(__file__).parents[3] / "docs" / "operations.md").read_text()
    start = docs.index("```sql\n", docs.index(title)) + len("```sql\n")
    return docs[start : docs.index("```", start)]


async def test_failures_are_found_by_their_record_and_counted_by_the_operations_query(
    postgres: Postgres, tmp_path: Path
) -> None:
    """On PostgreSQL, in a database of its own: a tick leaves two silent signers out, a partial
    that does not check its signer; each record, replayed, publishes what it published (the
    bad partial's retry included); and docs/operations.md's query of the guardians left out
    counts them from ``left_out``."""
    url = postgres.create_database("threshold_failures")
    await asyncio.to_thread(upgrade, url)
    ledger = SqlRelayerLedger.open(url)
    dealt = threshold_key(4)
    sets = GuardianSets.of(guardian_set(4))
    config = ThresholdConfig(0, dealt.group_key, dealt.threshold, dealt.verification_shares)
    journals = [SigningJournal(s, tmp_path / f"{s.identifier}.sqlite") for s in dealt.shares]
    timed_out, bad = sample_observation(1), sample_observation(2)

    def record(message: object, offset: int) -> Record:
        return Record("signatures", 0, offset, None, encode_message(message))  # type: ignore[arg-type]

    def partial(observation: Observation, package: SigningPackageMessage, signer: int,
                tampered: bool = False) -> ThresholdPartialMessage:  # fmt: skip
        z = journals[signer - 1].answer(0, observation.digest, 0, package.commitments).z
        z = (z + 1) % 2**256 if tampered else z
        return ThresholdPartialMessage(
            observation, 0, 0, identifier=signer, z=z.to_bytes(32, "big")
        )

    async def issue(
        assembler: Assembler, observation: Observation, offset: int
    ) -> SigningPackageMessage:
        """Every guardian's signature and commitment, in one batch; the package issued."""
        signatures = signature_messages(observation, guardian_signers(4), [0, 1, 2, 3])
        digest = observation.digest
        steps = [
            ThresholdCommitmentMessage(observation, 0, 0, commitment=j.commit(0, digest, 0))
            for j in journals
        ]
        results = await assembler.process_batch(
            [record(m, offset + n) for n, m in enumerate([*signatures, *steps])]
        )
        [package] = [
            decode_as(o.value, SigningPackageMessage)
            for r in results if isinstance(r, StageResult) for o in r.outputs
        ]  # fmt: skip
        return package

    try:
        assembler = Assembler(ledger, sets, threshold=config)
        package = await issue(assembler, timed_out, 0)
        assert (await assembler.process(record(partial(timed_out, package, 1), 10))).outputs == ()
        later = Assembler(ledger, sets, threshold=config, clock=lambda: time.time() + 60)
        tick = record(ThresholdTick(at_ms=0), 11)
        [vaa] = (await later.process(tick)).outputs  # guardians 1 and 2 silent: too few left
        assert (await later.process(tick)).outputs == (vaa,)

        package = await issue(assembler, bad, 100)
        for n, signer in enumerate((1, 2)):
            await assembler.process(record(partial(bad, package, signer), 110 + n))
        failing = record(partial(bad, package, 3, tampered=True), 112)
        [retry] = (await assembler.process(failing)).outputs
        assert decode_as(retry.value, ThresholdRetryMessage).excluded == (3,)
        assert (await assembler.process(failing)).outputs == (retry,)  # replayed after a crash
        [again] = await assembler.process_batch([failing])
        assert isinstance(again, StageResult)
        assert again.outputs == (retry,)

        async with ledger.reading() as work:
            by_tick = await work.threshold_packages_failed_from("signatures:0:11")
            by_partial = await work.threshold_packages_failed_from("signatures:0:112")
        assert [(p.digest, p.left_out, p.blamed) for p in by_tick] == [
            (timed_out.digest, (2, 3), None)
        ]
        assert [(p.digest, p.left_out, p.blamed) for p in by_partial] == [(bad.digest, (3,), 3)]

        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                query = _operations_query("Guardians left out, by how often:")
                counted = (await connection.execute(text(query))).all()
        finally:
            await engine.dispose()
        assert sorted(tuple(row) for row in counted) == [
            (1, "silent", 1), (2, "bad partial", 1), (2, "silent", 1)
        ]  # fmt: skip
    finally:
        await ledger.close()
