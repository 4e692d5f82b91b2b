"""``fedrelay relayer nonce show`` and ``nonce unstick`` on a real stuck nonce (anvil, SQLite).

The gap is made by the deliverer itself: one delivery's attempt is persisted at nonce N and the
process dies before broadcasting it; the next delivery takes nonce N+1, which anvil keeps queued
behind the gap. ``show`` diagnoses the gap, a dry run sends nothing, ``unstick --yes`` re-signs
the first delivery at N, the queued N+1 follows, and the deliverer then settles both deliveries
with no further transaction.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import support.wormhole as wormhole_testing
from eth_account import Account
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from test_relayer_faults import task_assigned_vaa
from typer.testing import CliRunner

from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.evm import Signer, address_to_bytes32
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR
from fedrelay.adapters.evm.relay import EvmDestination
from fedrelay.adapters.evm.rpc import connect
from fedrelay.adapters.evm.testing import WORKER_CHAIN, EvmDeployment, deploy_pair
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import AttemptOutcome, DeliveryAttempt, DeliveryStatus
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger
from fedrelay.commands.relayer import app
from fedrelay.ports.relay import SignedDelivery
from fedrelay.relayer.records import DeliveryRequest
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stages.deliver import Deliverer, DeliveryRetry

pytestmark = pytest.mark.integration

SOLANA_ENTRY = (
    "  - name: worker-solana\n    wormhole_chain_id: 1\n    kind: solana\n"
    '    rpc_url: "http://127.0.0.1:9"\n    address: "11111111111111111111111111111111"\n'
    "    finality: confirmed\n"
)


class Died(BaseException):
    """Stands for the process dying: nothing after it runs, no handler sees it."""


class DiesBeforeBroadcast(EvmDestination):
    """The destination of a deliverer that dies after persisting its attempt, before sending."""

    async def broadcast(self, delivery: SignedDelivery) -> None:
        raise Died


@pytest.fixture(scope="module")
def evm(coordinator_chain: Anvil, worker_chain: Anvil) -> EvmDeployment:
    Forge(Path(CONTRACTS_DIR)).build()
    guardians = ["0x" + g.address.hex() for g in wormhole_testing.guardian_signers(3)]
    return deploy_pair(coordinator_chain, worker_chain, guardians)


@pytest.fixture
def signer_key(evm: EvmDeployment) -> str:
    """A fresh, funded signer: its nonces are this test's alone."""
    account = Account.create()
    w3 = evm.worker_chain.w3
    tx = w3.eth.send_transaction(
        {
            "from": w3.to_checksum_address(evm.workers.addresses[0]),
            "to": account.address,
            "value": 10**19,
        }
    )
    w3.eth.wait_for_transaction_receipt(tx, timeout=30)
    return "0x" + bytes(account.key).hex()


@pytest.fixture
def environment(tmp_path: Path, evm: EvmDeployment, signer_key: str) -> dict[str, str]:
    """What the commands read: the ledger, the chains file and the signer key (as deliver does)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    chains = tmp_path / "chains.yaml"
    chains.write_text(evm.chains_yaml() + SOLANA_ENTRY)
    return {
        "FEDRELAY_DATABASE_URL": url,
        "FEDRELAY_CHAINS_FILE": str(chains),
        "FEDRELAY_SIGNER_KEY": signer_key,
    }


@pytest.fixture
async def sessions(environment: dict[str, str]) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(environment["FEDRELAY_DATABASE_URL"])
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


async def relayer(environment: dict[str, str], *argv: str) -> tuple[int, str]:
    """Run ``fedrelay relayer ARGV`` as the command line would; the key never shows."""
    result = await asyncio.to_thread(CliRunner().invoke, app, list(argv), env=environment)
    assert environment["FEDRELAY_SIGNER_KEY"].removeprefix("0x") not in result.output
    return result.exit_code, result.output


async def eventually(check: Callable[[], Awaitable[bool]], what: str, limit_s: float = 30) -> None:
    try:
        async with asyncio.timeout(limit_s):
            while not await check():  # noqa: ASYNC110 - the chain has no events to wait on
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


class LeavesGaps(Deliverer):
    """A deliverer that does not send what a crash left persisted and unsent (as releases before
    the pipelined deliverer did): the gap it then waits behind is what `nonce unstick` repairs
    (another process signing with the same key can leave one too)."""

    async def send_unsent(self, skip_delivery: int | None = None) -> int:
        return 0


def request_for(evm: EvmDeployment, job_id: int) -> DeliveryRequest:
    return DeliveryRequest(
        vaa=task_assigned_vaa(evm, job_id, job_id).to_bytes(), destination_chain=WORKER_CHAIN,
        target_address=address_to_bytes32(evm.hub.address), emitted_at_ms=0,
    )  # fmt: skip


async def test_a_gap_is_diagnosed_and_unstuck_and_each_delivery_lands_once(
    evm: EvmDeployment,
    signer_key: str,
    environment: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    base = 300_000 + uuid.uuid4().int % 10**6
    first, second = request_for(evm, base), request_for(evm, base + 1)
    w3 = connect(evm.workers.rpc_url)
    args = (w3, WORKER_CHAIN, evm.hub.address, signer_key, evm.workers.chain_id)
    destination = EvmDestination(*args)
    policy = RelayerSettings().retry_policy()
    signer = destination.signer
    try:
        # nonce 0 persisted, never sent; nonce 1 sent and queued behind the gap
        with pytest.raises(Died):
            await Deliverer(DiesBeforeBroadcast(*args), SqlRelayerLedger(sessions), policy).deliver(
                first
            )
        queued = LeavesGaps(destination, SqlRelayerLedger(sessions), policy, confirm_timeout_s=0.5)
        with pytest.raises(DeliveryRetry, match="not confirmed"):
            await queued.deliver(second)
        assert await w3.eth.get_transaction_count(signer, "latest") == 0

        code, output = await relayer(environment, "nonce", "show", "--chain", "worker-evm")
        assert code == 0, output
        assert "gap at nonce 0: attempt 1 of delivery" in output
        assert "was persisted but never reached the chain" in output
        code, output = await relayer(
            environment, "nonce", "show", "--chain", "worker-evm", "--json"
        )
        report = json.loads(output)
        assert (report["confirmed"], report["pending"], report["stuck_nonce"]) == (0, 0, 0)
        assert report["signer"] == signer
        attempts = {a["nonce"]: a for a in report["attempts"]}
        assert attempts[0]["outcome"] == "prepared"
        assert attempts[0]["on_chain"] == "unknown"
        assert attempts[1]["outcome"] == "broadcast"
        assert attempts[1]["on_chain"] == "pending"

        # a dry run says what it would do and sends nothing
        code, output = await relayer(environment, "nonce", "unstick", "--chain", "worker-evm")
        assert code == 0, output
        assert "re-sign its delivery at nonce 0" in output
        assert "dry run: nothing sent" in output
        assert await w3.eth.get_transaction_count(signer, "pending") == 0
        async with sessions() as session:
            rows = (await session.scalars(select(DeliveryAttempt))).all()
        assert len(rows) == 2

        code, output = await relayer(
            environment, "nonce", "unstick", "--chain", "worker-evm", "--yes", "--fee-bump", "30"
        )
        assert code == 0, output
        assert "nonce 0 confirmed" in output

        async def both_mined() -> bool:
            return bool(await w3.eth.get_transaction_count(signer, "latest") == 2)

        await eventually(both_mined, "the queued nonce 1 to be mined after nonce 0")
        assert evm.hub.is_consumed(first.message_id)
        assert evm.hub.is_consumed(second.message_id)
        code, output = await relayer(
            environment, "nonce", "show", "--chain", "worker-evm", "--json"
        )
        report = json.loads(output)
        assert report["diagnosis"] == "in step"
        assert (report["confirmed"], report["ledger_next"]) == (2, 2)

        # the deliverer settles both from the ledger; nothing more is sent
        assert await queued.deliver(first) == DeliveryStatus.CONFIRMED
        assert await queued.deliver(second) == DeliveryStatus.CONFIRMED
        assert await w3.eth.get_transaction_count(signer, "pending") == 2
        async with sessions() as session:
            outcomes = sorted(
                (a.attempt, a.nonce, a.outcome)
                for a in await session.scalars(select(DeliveryAttempt))
            )
        assert outcomes == [
            (1, 0, AttemptOutcome.REPLACED),
            (1, 1, AttemptOutcome.CONFIRMED),
            (2, 0, AttemptOutcome.CONFIRMED),
        ]
    finally:
        await w3.provider.disconnect()


async def test_a_nonce_held_by_a_delivery_consumed_elsewhere_is_freed_by_a_self_transfer(
    evm: EvmDeployment,
    signer_key: str,
    environment: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    request = request_for(evm, 400_000 + uuid.uuid4().int % 10**6)
    w3 = connect(evm.workers.rpc_url)
    args = (w3, WORKER_CHAIN, evm.hub.address, signer_key, evm.workers.chain_id)
    policy = RelayerSettings().retry_policy()
    signer = EvmDestination(*args).signer
    try:
        with pytest.raises(Died):
            await Deliverer(DiesBeforeBroadcast(*args), SqlRelayerLedger(sessions), policy).deliver(
                request
            )
        other = Signer(evm.workers.private_keys[7])
        await asyncio.to_thread(evm.hub.receive_message, other, request.vaa)  # delivered by another

        code, output = await relayer(
            environment, "nonce", "unstick", "--chain", "worker-evm", "--yes"
        )
        assert code == 0, output
        assert "consumed on the destination already" in output
        assert "sent self-transfer at nonce 0" in output
        assert await w3.eth.get_transaction_count(signer, "latest") == 1
        async with sessions() as session:
            attempt = (await session.scalars(select(DeliveryAttempt))).one()
        assert attempt.outcome == AttemptOutcome.FAILED
        assert "self-transfer" in (attempt.error or "")

        deliverer = Deliverer(EvmDestination(*args), SqlRelayerLedger(sessions), policy)
        assert await deliverer.deliver(request) == DeliveryStatus.ALREADY_DELIVERED
        assert await w3.eth.get_transaction_count(signer, "pending") == 1
    finally:
        await w3.provider.disconnect()


async def test_in_step_unstick_only_resyncs_the_ledger(
    environment: dict[str, str], signer_key: str
) -> None:
    code, output = await relayer(environment, "nonce", "unstick", "--chain", "worker-evm", "--yes")
    assert code == 0, output
    assert "nothing is stuck" in output
    assert "signer_nonces.next_nonce = 0" in output


async def test_a_solana_or_unknown_chain_is_refused_clearly(environment: dict[str, str]) -> None:
    code, output = await relayer(environment, "nonce", "show", "--chain", "worker-solana")
    assert code == 2
    assert "Solana has no account nonces" in output
    code, output = await relayer(environment, "nonce", "unstick", "--chain", "nowhere", "--yes")
    assert code == 2
    assert "no chain named 'nowhere'" in output
    assert "known: coordinator, worker-evm, worker-solana" in output
