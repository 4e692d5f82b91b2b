"""The nonce diagnosis and the unstick plan (pure logic of ``fedrelay.relayer.nonces``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fedrelay.relayer.nonces import Action, NonceReport, OpenAttempt, diagnose, plan_unstick

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def attempt(nonce: int, on_chain: str, attempt: int = 1, delivery_id: int = 1) -> OpenAttempt:
    return OpenAttempt(
        attempt_id=delivery_id * 10 + attempt, delivery_id=delivery_id, message="2/ab/7",
        attempt=attempt, nonce=nonce, fee_per_gas=1000, tx_hash="0x01",
        outcome="prepared" if on_chain == "unknown" else "broadcast", on_chain=on_chain,
        created_at=NOW - timedelta(seconds=90),
    )  # fmt: skip


def report(confirmed: int, pending: int, *attempts: OpenAttempt) -> NonceReport:
    found = diagnose(confirmed, pending, attempts, NOW)
    return NonceReport(
        chain="worker-evm", chain_id=4, signer="0xabc", confirmed=confirmed, pending=pending,
        ledger_next=pending, attempts=attempts, stuck_nonce=found.stuck_nonce,
        diagnosis=found.text,
    )  # fmt: skip


def test_mined_attempts_not_yet_settled_are_in_step() -> None:
    found = diagnose(5, 5, (attempt(4, "confirmed"), attempt(3, "failed", delivery_id=2)), NOW)
    assert (found.stuck_nonce, found.text) == (None, "in step")


def test_a_persisted_attempt_that_never_reached_the_chain_is_a_gap() -> None:
    found = diagnose(5, 5, (attempt(5, "unknown"), attempt(6, "pending", delivery_id=2)), NOW)
    assert found.stuck_nonce == 5
    assert found.text.startswith("gap at nonce 5: attempt 1 of delivery 1 (2/ab/7) was persisted")
    assert found.text.endswith("1 later transaction(s) wait behind it")


def test_a_transaction_waiting_in_the_mempool_is_pending_with_its_age() -> None:
    found = diagnose(5, 6, (attempt(5, "pending"), attempt(5, "pending", attempt=2)), NOW)
    assert found.stuck_nonce == 5
    assert (
        found.text == "nonce 5 pending for 90 s: attempt 2 of delivery 1 (2/ab/7) has not confirmed"
    )


def test_a_nonce_nothing_holds_is_a_gap_or_a_foreign_transaction() -> None:
    gap = diagnose(5, 5, (attempt(7, "pending"),), NOW)
    assert gap.text == (
        "gap at nonce 5: no transaction holds it; 1 later transaction(s) wait behind it "
        "(nonces 7..7)"
    )
    foreign = diagnose(5, 6, (), NOW)
    assert foreign.text == "nonce 5 pending: a transaction the ledger does not know holds it"


def test_the_plan_resigns_a_live_delivery_and_frees_a_consumed_or_unknown_one() -> None:
    stuck = report(5, 5, attempt(5, "unknown"), attempt(5, "unknown", attempt=2))
    resign = plan_unstick(stuck, holder_consumed=False)
    assert (resign.action, resign.nonce) == (Action.RESIGN, 5)
    assert resign.replaces is not None
    assert resign.replaces.attempt == 2
    freed = plan_unstick(stuck, holder_consumed=True)
    assert (freed.action, freed.replaces) == (Action.SELF_TRANSFER, resign.replaces)
    orphan = plan_unstick(report(5, 6), holder_consumed=None)
    assert (orphan.action, orphan.nonce, orphan.replaces) == (Action.SELF_TRANSFER, 5, None)
    assert plan_unstick(report(5, 5), None).action == Action.RESYNC
