"""The proposal watch against a real JobMarket on anvil: it reads each proposal with its window,
voids the one a dishonest aggregator sends unchecked, leaves a valid one alone, and the CLI's
``--once`` pass reports (and with a key voids) what is open now."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.market import funded_evm_key
from support.proposals import WORKERS, Market, build_market
from support.relayer import wait_until
from support.worker_run import fake_worker_node
from typer.testing import CliRunner

from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.evm.market import RoundPhase
from fedrelay.adapters.evm.proposals import EvmProposalBoard
from fedrelay.cli import app
from fedrelay.ports.proposals import ProposalMade
from fedrelay.worker.proposal_watch import Finding, ProposalWatch, Verdict

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def coordinator_chain() -> Iterator[Anvil]:
    """A coordinator chain of this module's own."""
    with Anvil(chain_id=31344) as chain:
        yield chain


@pytest.fixture(scope="module")
def market(coordinator_chain: Anvil) -> Market:
    return build_market(coordinator_chain)


def _key_file(market: Market, tmp_path: Path) -> Path:
    path = tmp_path / "watch.key"
    path.write_text(funded_evm_key(market.anvil) + "\n")
    return path


async def test_the_board_reads_each_proposal_with_its_window(market: Market) -> None:
    board = EvmProposalBoard(market.anvil.rpc_url, market.market.address)
    job_id, _ = market.proposed_round()
    stored = market.market.round(job_id, 0)
    now = await board.now()
    assert now.block == stored.proposed_block
    assert await board.challenge_window() == 3600
    assert await board.first_block_since(now.timestamp + 1) == now.block + 1
    since = await board.first_block_since(now.timestamp)
    assert since <= now.block
    made = [m for m in await board.proposals(since, now.block) if m.job_id == job_id]
    assert made == [ProposalMade(job_id, 0, 1, now.block, stored.challenge_deadline)]
    check = await board.check(made[0])
    assert (check.pending, check.broken) == (True, None)


async def test_the_watch_voids_a_broken_proposal_and_leaves_a_valid_one(market: Market) -> None:
    key = funded_evm_key(market.anvil)
    board = EvmProposalBoard(market.anvil.rpc_url, market.market.address, key)
    found: list[Finding] = []
    both = asyncio.Event()
    watched: set[int] = set()  # the two jobs, once proposed

    def seen(finding: Finding) -> None:
        found.append(finding)
        if watched and watched <= {f.made.job_id for f in found}:
            both.set()

    watch = ProposalWatch(board, disprove=True, poll_interval=0.05, report=seen)
    start = await watch.start()
    assert start <= market.chain.w3.eth.block_number + 1

    honest_job, _ = market.proposed_round()
    cheated_job = market.collecting_round(committed=WORKERS - 1)  # the last worker committed not
    market.propose_unchecked(cheated_job, market.honest_results())  # ...but is paid
    assert market.market.round(cheated_job, 0).phase is RoundPhase.PROPOSED
    watched |= {honest_job, cheated_job}
    running = asyncio.create_task(watch.run())
    try:
        async with asyncio.timeout(60):
            await both.wait()
    finally:
        watch.request_stop()
        await running

    verdicts = {f.made.job_id: f for f in found if f.made.job_id in (honest_job, cheated_job)}
    assert verdicts[honest_job].verdict is Verdict.VALID
    assert verdicts[cheated_job].verdict is Verdict.VOIDED
    assert str(verdicts[cheated_job].rule).startswith("AcceptedWithoutCommitment(")
    assert market.market.round(honest_job, 0).phase is RoundPhase.PROPOSED
    block = market.chain.w3.eth.block_number
    voided = [
        e
        for e in market.market.events(block - 5, block)
        if e.name == "ProposalDisproved" and int(e.args["jobId"]) == cheated_job
    ]
    assert [e.args["disprover"] for e in voided] == [board.disprover]
    assert [f.made for f in found].count(verdicts[cheated_job].made) == 1  # reported once


def _once(market: Market, *args: str) -> tuple[int, dict[str, object]]:
    where = ["--rpc-url", market.anvil.rpc_url, "--job-market", market.market.address]
    done = CliRunner().invoke(app, ["worker", "watch-proposals", "--once", "--json", *where, *args])
    assert done.exit_code in (0, 1), done.output
    return done.exit_code, json.loads(done.output)


def test_the_cli_once_reports_a_broken_proposal_and_voids_it_with_a_key(
    market: Market, tmp_path: Path
) -> None:
    job_id = market.collecting_round(committed=WORKERS - 1)
    market.propose_unchecked(job_id, market.honest_results())

    code, shown = _once(market, "--job", str(job_id))
    assert code == 1
    assert shown["disprover"] is None
    (finding,) = shown["findings"]  # type: ignore[misc]
    assert (finding["job_id"], finding["round"], finding["verdict"]) == (job_id, 0, "broken")
    assert finding["broken"].startswith("AcceptedWithoutCommitment(")
    assert market.market.round(job_id, 0).phase is RoundPhase.PROPOSED

    code, shown = _once(
        market, "--job", str(job_id), "--disprove-key-file", str(_key_file(market, tmp_path))
    )
    assert code == 0
    (finding,) = shown["findings"]  # type: ignore[misc]
    assert finding["verdict"] == "voided"
    assert market.market.round(job_id, 0).phase is RoundPhase.COLLECTING


def test_the_cli_once_passes_a_valid_proposal_and_refuses_bad_options(market: Market) -> None:
    job_id, _ = market.proposed_round()
    code, shown = _once(market, "--job", str(job_id))
    assert code == 0
    assert [(f["job_id"], f["verdict"]) for f in shown["findings"]] == [(job_id, "valid")]  # type: ignore[attr-defined, index]

    runner = CliRunner()
    where = ["--rpc-url", market.anvil.rpc_url]
    refused = runner.invoke(
        app, ["worker", "watch-proposals", *where, "--job-market", "0x12", "--once"]
    )
    assert refused.exit_code == 2
    assert "--job-market" in refused.output
    refused = runner.invoke(
        app, ["worker", "watch-proposals", *where, "--job-market", market.market.address, "--json"]
    )
    assert refused.exit_code == 2
    assert "--json needs --once" in refused.output


def test_worker_run_watches_the_market_beside_its_work(
    market: Market, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fedrelay worker run --watch-proposals`: while the worker works, the watch beside it voids
    a broken proposal, and stopping the worker stops the watch. The worker's chain connection and
    node are fakes (the node works until the proposal is gone); the watch and the market are
    real."""
    job_id = market.collecting_round(committed=WORKERS - 1)
    market.propose_unchecked(job_id, market.honest_results())
    stops: list[str] = []

    async def work() -> None:  # until the proposal is gone
        await wait_until(
            lambda: market.market.round(job_id, 0).phase is not RoundPhase.PROPOSED, 60
        )

    fake_worker_node(monkeypatch, work, stops=stops)
    key_file = tmp_path / "worker.key"
    key_file.write_text("cd" * 32)
    result = CliRunner().invoke(
        app,
        [
            "worker", "run", "--chain", "evm", "--key-file", str(key_file),
            "--coordinator-url", "http://127.0.0.1:9",
            "--rpc-url", "http://127.0.0.1:9", "--hub-address", "0x" + "11" * 20,
            "--state-file", str(tmp_path / "state.json"),
            "--watch-proposals",
            "--coordinator-rpc-url", market.anvil.rpc_url,
            "--job-market", market.market.address,
            "--disprove-key-file", str(_key_file(market, tmp_path)),
        ],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert market.market.round(job_id, 0).phase is RoundPhase.COLLECTING  # voided
    assert f"watching the proposals of JobMarket {market.market.address}" in result.output
    assert "disproofs from 0x" in result.output
    assert stops == ["node"]  # the worker's stop, which stopped the watch with it
