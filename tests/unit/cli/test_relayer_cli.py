"""`fedrelay relayer ...` and `fedrelay guardian run`: options, clear errors, status and the DLQ.

What needs running services (the stages themselves, Kafka requeues) is covered by
tests/integration/relayer/test_relayer_evm_routes.py; here the ledger is an SQLite file.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from support.relayer import sample_observation, signed_vaa_bytes
from support.wormhole import guardian_signers, sample_round_settled
from typer.testing import CliRunner

from fedrelay.adapters.devnet.process import free_port
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import DeadLetter, DeliveryStatus, SourceCursor
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedgerWork
from fedrelay.cli import app
from fedrelay.protocol.wormhole import decode_payload
from fedrelay.relayer.records import DeliveryRequest, encode_message, message_label
from fedrelay.relayer.stages.deliver import open_delivery

runner = CliRunner()
KEY = "0x" + "7a" * 32
CHAINS = """\
chains:
  - name: coordinator
    wormhole_chain_id: 2
    kind: evm
    rpc_url: "http://127.0.0.1:{port}"
    address: "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    finality: latest
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Settings of a relayer whose ledger is an SQLite file and whose chain is unreachable."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    chains = tmp_path / "chains.yaml"
    chains.write_text(CHAINS.format(port=free_port()))
    return {
        "FEDRELAY_DATABASE_URL": url, "FEDRELAY_CHAINS_FILE": str(chains),
        "FEDRELAY_KAFKA_BOOTSTRAP": "", "FEDRELAY_SIGNER_KEY": "", "FEDRELAY_GUARDIAN_KEY": "",
    }  # fmt: skip


def _request(sequence: int) -> DeliveryRequest:
    observation = sample_observation(sequence, payload=sample_round_settled().to_bytes())
    payload = decode_payload(observation.payload)
    return DeliveryRequest(
        vaa=signed_vaa_bytes(observation, guardian_signers(3)),
        destination_chain=payload.target_chain, target_address=payload.target_address,
        emitted_at_ms=0,
    )  # fmt: skip


async def _seed(url: str, request: DeliveryRequest) -> None:
    engine = create_engine(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        work = SqlRelayerLedgerWork(session)
        delivery = await open_delivery(work, request)
        await work.update_delivery(delivery.id, status=DeliveryStatus.DEAD)
        session.add(SourceCursor(source="evm:2:0xabc", chain_id=2, position=7, position_hash="0x"))
        session.add(
            DeadLetter(
                stage="deliver-4", message_key="deliveries.4:0:3", reason="terminal: InvalidVaa",
                body=encode_message(request),
            )
        )  # fmt: skip
    await engine.dispose()


def invoke(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_every_relayer_command_answers_help() -> None:
    for command in (
        ["relayer", "run"], ["relayer", "status"], ["relayer", "retry"],
        ["relayer", "dlq", "list"], ["relayer", "dlq", "requeue"], ["guardian", "run"],
    ):  # fmt: skip
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, result.output


def test_run_rejects_an_unknown_stage(env: dict[str, str]) -> None:
    code, output = invoke(env, "relayer", "run", "--stage", "teleport")
    assert code == 2
    assert "unknown stage 'teleport'" in output


def test_run_needs_a_chains_file(env: dict[str, str]) -> None:
    code, output = invoke({**env, "FEDRELAY_CHAINS_FILE": ""}, "relayer", "run", "--stage", "route")
    assert code == 2
    assert "no chains file: set FEDRELAY_CHAINS_FILE" in output


def test_run_names_what_is_wrong_in_the_chains_file(env: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(CHAINS.format(port=1).replace("finality: latest", "finality: soon"))
    code, output = invoke(
        {**env, "FEDRELAY_CHAINS_FILE": str(broken)}, "relayer", "run", "--stage", "route"
    )
    assert code == 2
    assert "finality of an evm chain is one of latest, safe, finalized" in output


def test_run_asks_for_the_chain_of_a_watcher_and_knows_its_chains(env: dict[str, str]) -> None:
    code, output = invoke(env, "relayer", "run", "--stage", "watch")
    assert (code, "--stage watch needs --chain NAME" in output) == (2, True)
    code, output = invoke(env, "relayer", "run", "--stage", "watch", "--chain", "moon")
    assert (code, "no chain named 'moon'" in output) == (2, True)


def test_run_says_when_a_chain_cannot_be_reached(env: dict[str, str]) -> None:
    code, output = invoke(env, "relayer", "run", "--stage", "watch", "--chain", "coordinator")
    assert code == 2
    assert "chain 'coordinator': cannot read the core of the contract" in output


def test_a_deliverer_needs_a_valid_key_and_never_shows_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    args = ("relayer", "run", "--stage", "deliver", "--chain", "coordinator")
    code, output = invoke(env, *args)
    assert code == 2
    assert "no signer key for chain 'coordinator'" in output
    bad = tmp_path / "bad.key"
    bad.write_text(KEY[:-2] + "zz")
    code, output = invoke(env, *args, "--signer-key-file", str(bad))
    assert code == 2
    assert f"key file {bad} does not hold an EVM private key" in output
    assert KEY[4:-2] not in output
    code, output = invoke(env, *args, "--signer-key-file", str(tmp_path / "absent.key"))
    assert (code, "cannot read signer key file" in output) == (2, True)
    good = tmp_path / "good.key"
    good.write_text(KEY)
    code, output = invoke(env, *args, "--signer-key-file", f"coordinator={good}")
    assert code == 2  # the key is fine; the chain is unreachable
    assert "cannot reach http://127.0.0.1" in output
    assert KEY[2:] not in output


def test_a_guardian_needs_its_key_and_index(env: dict[str, str], tmp_path: Path) -> None:
    code, output = invoke(env, "guardian", "run")
    assert (code, "no guardian key" in output) == (2, True)
    key = tmp_path / "guardian.key"
    key.write_text(KEY)
    code, output = invoke(env, "guardian", "run", "--guardian-key-file", str(key))
    assert code == 2
    assert "give --guardian-index, or set FEDRELAY_GUARDIAN_ADDRESSES" in output
    assert KEY[2:] not in output


def test_status_reports_sources_deliveries_and_dead_letters(env: dict[str, str]) -> None:
    request = _request(3)
    asyncio.run(_seed(env["FEDRELAY_DATABASE_URL"], request))
    code, output = invoke(env, "relayer", "status", "--json")
    assert code == 0, output
    report = json.loads(output)
    assert [(s["source"], s["position"]) for s in report["sources"]] == [("evm:2:0xabc", 7)]
    assert report["deliveries"] == [
        {"chain_id": 4, "pending": 0, "confirmed": 0, "already_delivered": 0, "dead": 1}
    ]
    assert report["dead_letters"] == {"deliver-4": 1}
    assert report["watch_lag"] == {"coordinator": None}  # the chain is unreachable
    assert report["queue_depth"] is None  # the in-process bus is the running process's own
    code, table = invoke(env, "relayer", "status")
    assert code == 0
    assert "evm:2:0xabc" in table
    assert "deliver-4" in table


def test_dlq_list_shows_the_message_and_reason(env: dict[str, str]) -> None:
    request = _request(5)
    asyncio.run(_seed(env["FEDRELAY_DATABASE_URL"], request))
    code, output = invoke(env, "relayer", "dlq", "list", "--json")
    assert code == 0, output
    [entry] = [json.loads(line) for line in output.splitlines()]
    assert (entry["stage"], entry["message"]) == ("deliver-4", message_label(request.message_id))
    assert entry["reason"] == "terminal: InvalidVaa"
    code, output = invoke(env, "relayer", "dlq", "list", "--stage", "assemble")
    assert (code, output) == (0, "")


def test_requeuing_needs_kafka_and_a_valid_message_id(env: dict[str, str]) -> None:
    code, output = invoke(env, "relayer", "retry", "not-an-id")
    assert (code, "is not a message id" in output) == (2, True)
    code, output = invoke(env, "relayer", "retry", message_label(_request(1).message_id))
    assert (code, "requeuing publishes to Kafka" in output) == (2, True)
    code, output = invoke(env, "relayer", "dlq", "requeue", "1")
    assert (code, "set FEDRELAY_KAFKA_BOOTSTRAP" in output) == (2, True)


def test_status_still_reports_the_ledger_when_kafka_is_away(env: dict[str, str]) -> None:
    asyncio.run(_seed(env["FEDRELAY_DATABASE_URL"], _request(6)))
    away = {**env, "FEDRELAY_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    code, output = invoke(away, "relayer", "status", "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["queue_depth_error"].startswith("cannot read Kafka")
    assert report["dead_letters"] == {"deliver-4": 1}
