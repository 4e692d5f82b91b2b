"""The JSON-RPC devnet answers solana-py's AsyncClient in the real response shapes."""

from __future__ import annotations

import json
import urllib.request

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.models import MemcmpOpts, TxOpts
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from fedrelay.adapters.devnet.solana_rpc import SolanaDevnet
from fedrelay.adapters.solana._base58 import b58encode
from fedrelay.adapters.solana.client import WorkerProgramClient
from fedrelay.adapters.solana.errors import TransactionExpired
from fedrelay.adapters.solana.layout import GUARDIAN_SET_ACCOUNT_LEN, MESSAGE_KIND_BYTES
from fedrelay.adapters.solana.testing import LAMPORTS_PER_SOL, Deployment
from fedrelay.adapters.solana.worker_chain import lost_race

pytestmark = pytest.mark.integration


async def _transfer_tx(
    rpc: AsyncClient, payer: Keypair, to: Pubkey, lamports: int
) -> VersionedTransaction:
    blockhash = (await rpc.get_latest_blockhash()).value.blockhash
    instruction = transfer(
        TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=lamports)
    )
    message = MessageV0.try_compile(payer.pubkey(), [instruction], [], blockhash)
    return VersionedTransaction(message, [payer])


async def _funded(rpc: AsyncClient) -> Keypair:
    payer = Keypair()
    sent = await rpc.request_airdrop(payer.pubkey(), 10 * LAMPORTS_PER_SOL)
    status = (await rpc.get_signature_statuses([sent.value])).value[0]
    assert status is not None
    assert status.err is None
    return payer


async def test_health_version_and_rent(solana_rpc: AsyncClient) -> None:
    assert (await solana_rpc.is_connected()) is True
    assert (await solana_rpc.get_version()).value.solana_core
    rent = (await solana_rpc.get_minimum_balance_for_rent_exemption(100)).value
    assert rent == (128 + 100) * 3480 * 2


@pytest.mark.smoke
async def test_transfer_moves_lamports_and_advances_the_slot(solana_rpc: AsyncClient) -> None:
    payer = await _funded(solana_rpc)
    receiver = Pubkey.new_unique()
    slot_before = (await solana_rpc.get_slot()).value
    blockhash_before = (await solana_rpc.get_latest_blockhash()).value.blockhash
    tx = await _transfer_tx(solana_rpc, payer, receiver, 10_000_000)
    signature = (await solana_rpc.send_transaction(tx)).value

    statuses = (await solana_rpc.get_signature_statuses([signature])).value
    assert statuses[0] is not None
    assert statuses[0].err is None
    assert (await solana_rpc.get_balance(receiver)).value == 10_000_000
    assert (await solana_rpc.get_slot()).value > slot_before
    assert (await solana_rpc.get_block_height()).value > slot_before
    assert (await solana_rpc.get_latest_blockhash()).value.blockhash != blockhash_before

    found = (await solana_rpc.get_transaction(signature, max_supported_transaction_version=0)).value
    assert found is not None
    assert found.transaction.meta is not None
    meta = found.transaction.meta
    assert meta.err is None
    assert meta.fee == 5000
    assert meta.post_balances[1] - meta.pre_balances[1] == 10_000_000
    history = (await solana_rpc.get_signatures_for_address(receiver)).value
    assert [h.signature for h in history] == [signature]


async def test_preflight_failure_is_an_rpc_error(solana_rpc: AsyncClient) -> None:
    payer = await _funded(solana_rpc)
    tx = await _transfer_tx(solana_rpc, payer, Pubkey.new_unique(), 1000 * LAMPORTS_PER_SOL)
    simulated = (await solana_rpc.simulate_transaction(tx)).value
    assert simulated.err is not None
    assert simulated.logs
    with pytest.raises(RPCException):
        await solana_rpc.send_transaction(tx)


async def test_accounts_and_program_account_filters(
    deployment: Deployment, solana_rpc: AsyncClient
) -> None:
    worker = await deployment.funded_keypair()
    await deployment.client.register(
        worker, stake_lamports=LAMPORTS_PER_SOL, payout=bytes(32), capabilities=0
    )
    program = deployment.program_id
    everything = (await solana_rpc.get_program_accounts(program, encoding="base64")).value
    assert len(everything) >= 5  # config, vault, guardian set, worker, message
    messages = (
        await solana_rpc.get_program_accounts(
            program,
            encoding="base64",
            filters=[MemcmpOpts(offset=0, bytes=b58encode(MESSAGE_KIND_BYTES))],
        )
    ).value
    assert len(messages) == 1
    sized = (
        await solana_rpc.get_program_accounts(
            program, encoding="base64", filters=[GUARDIAN_SET_ACCOUNT_LEN]
        )
    ).value
    assert [row.account.owner for row in sized] == [program]  # the guardian set
    several = (
        await solana_rpc.get_multiple_accounts([messages[0].pubkey, Pubkey.new_unique()], Confirmed)
    ).value
    assert several[0] is not None
    assert several[1] is None
    info = (await solana_rpc.get_account_info(messages[0].pubkey, Confirmed)).value
    assert info is not None
    assert bytes(info.data) == bytes(messages[0].account.data)


def _call(devnet: SolanaDevnet, method: str, params: list[object]) -> dict[str, object]:
    """One raw JSON-RPC request (for methods and errors solana-py does not expose)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(devnet.url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        reply: dict[str, object] = json.loads(response.read())
        return reply


async def test_a_transaction_whose_blockhash_expired_never_lands_and_confirm_says_so(
    solana_devnet: SolanaDevnet, solana_rpc: AsyncClient
) -> None:
    payer = await _funded(solana_rpc)
    latest = (await solana_rpc.get_latest_blockhash()).value
    # Without timed slots LiteSVM takes the latest blockhash only: valid at this height alone.
    assert latest.last_valid_block_height == (await solana_rpc.get_block_height()).value
    stale = await _transfer_tx(solana_rpc, payer, Pubkey.new_unique(), 1000)
    await _funded(solana_rpc)  # another transaction moves the chain on
    assert _call(solana_devnet, "isBlockhashValid", [str(latest.blockhash)])["result"] == {
        "context": {"apiVersion": "2.2.0", "slot": (await solana_rpc.get_slot()).value},
        "value": False,
    }
    fresh = (await solana_rpc.get_latest_blockhash()).value.blockhash
    assert _call(solana_devnet, "isBlockhashValid", [str(fresh)])["result"]["value"] is True  # type: ignore[index]

    # Sent past preflight, it is dropped as it runs: its signature never gets a status.
    signature = (await solana_rpc.send_transaction(stale, opts=TxOpts(skip_preflight=True))).value
    assert (await solana_rpc.get_signature_statuses([signature])).value[0] is None
    client = WorkerProgramClient(solana_rpc, Pubkey.new_unique(), confirm_timeout=600)
    with pytest.raises(TransactionExpired, match="BlockhashNotFound") as expired:
        await client.confirm(signature, last_valid_block_height=latest.last_valid_block_height)
    assert lost_race(expired.value)  # a worker sends it again, signed with a fresh blockhash


def test_unknown_method_and_bad_params_are_json_rpc_errors(solana_devnet: SolanaDevnet) -> None:
    def call(method: str, params: list[object]) -> dict[str, object]:
        return _call(solana_devnet, method, params)

    assert call("getNothing", [])["error"] == {
        "code": -32601,
        "message": "Method not found: getNothing",
    }
    error = call("getBalance", ["not a key"])["error"]
    assert isinstance(error, dict)
    assert error["code"] == -32602
    assert call("getHealth", [])["result"] == "ok"
