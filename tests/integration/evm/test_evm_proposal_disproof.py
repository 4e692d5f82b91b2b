"""Optimistic proposals on anvil, through the Python binding: the market takes a proposal with
constant checks, the ProposalChecker holds the rules, and anyone voids a proposal that breaks one.

The binding checks a proposal before it sends it (so the coordinator never proposes what would be
disproved); these tests also send broken proposals straight to ``finalizeRound``, as a dishonest
aggregator would, and show that a stranger's disproof voids each, that a valid proposal cannot be
voided, and that a voided proposal never settles while an honest one does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import Result
from eth_utils import keccak
from support.proposals import ETH, MODEL, WORKERS, Market, build_market, funded, past_window
from typer.testing import CliRunner

from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.evm import ContractRevert, RoundResult
from fedrelay.adapters.evm.coordinator_chain import EvmCoordinatorChain
from fedrelay.adapters.evm.market import RoundPhase, in_lane_order, results_root
from fedrelay.cli import app
from fedrelay.ports.coordinator_chain import RoundChallenged
from fedrelay.protocol.wormhole import Outcome

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def coordinator_chain() -> Iterator[Anvil]:
    """A coordinator chain of this module's own: its clock is moved past challenge windows."""
    with Anvil(chain_id=31343) as chain:
        yield chain


@pytest.fixture(scope="module")
def market(coordinator_chain: Anvil) -> Market:
    return build_market(coordinator_chain)


def _selector(name: str, *types: str) -> bytes:
    return keccak(text=f"{name}({','.join(types)})")[:4]


def test_the_binding_checks_a_proposal_before_sending_it(market: Market) -> None:
    job_id = market.collecting_round(committed=WORKERS - 1)  # the last worker did not commit
    nonce = market.chain.w3.eth.get_transaction_count(market.aggregator.address)
    with pytest.raises(ContractRevert) as refused:
        market.market.finalize_round(market.aggregator, job_id, 0, MODEL, market.honest_results())
    assert refused.value.name == "AcceptedWithoutCommitment"
    assert market.chain.w3.eth.get_transaction_count(market.aggregator.address) == nonce
    assert market.market.round(job_id, 0).phase is RoundPhase.COLLECTING


@pytest.mark.parametrize(
    ("breach", "rule"),
    [
        ("accepted without commitment", "AcceptedWithoutCommitment"),
        ("total above the rewards", "TotalMismatch"),
        ("root of other results", "ResultsRootMismatch"),
        ("missed although committed", "CommittedTaskMissed"),
    ],
)
def test_a_stranger_voids_a_proposal_that_breaks_a_rule_and_it_never_settles(
    market: Market, breach: str, rule: str
) -> None:
    committed = WORKERS - 1 if breach == "accepted without commitment" else WORKERS
    job_id = market.collecting_round(committed=committed)
    honest = market.honest_results()
    total, root = None, None
    results = honest
    if breach == "total above the rewards":
        total = sum(r.reward for r in honest) + 1
    elif breach == "root of other results":
        root = results_root(job_id, 0, in_lane_order((4,), [replace(honest[0], reward=1)]))
    elif breach == "missed although committed":
        results = [*honest[:2], replace(honest[2], outcome=Outcome.SLASHED, reward=0, fault=2)]
        results[2] = replace(results[2], evidence=b"\xee" * 32)
        results += honest[3:]
    market.propose_unchecked(job_id, results, total, root)
    m = market.market
    assert m.round(job_id, 0).phase is RoundPhase.PROPOSED

    stranger = funded(market.anvil)
    receipt = m.disprove_proposal(stranger, job_id, 0)
    (voided,) = [e for e in m.events_in(receipt) if e.name == "ProposalDisproved"]
    assert voided.args["disprover"] == stranger.address
    assert int(voided.args["proposal"]) == 1
    assert bytes(voided.args["reason"]).startswith(_rule_selector(rule))
    stored = m.round(job_id, 0)
    assert stored.phase is RoundPhase.COLLECTING
    assert (stored.proposed_model_hash, stored.proposed_total) == (bytes(32), 0)

    entries = [r.entry() for r in m.proposal(job_id, 0, check_root=False)]
    past_window(market)
    with pytest.raises(ContractRevert) as refused:
        m.chain.transact(market.aggregator, m.contract.functions.settleRound(job_id, 0, entries))
    assert refused.value.name == "RoundNotProposed"
    # The aggregator proposes again, honestly this time, and that proposal settles.
    if breach == "accepted without commitment":
        honest[-1] = RoundResult(4, market.key(WORKERS - 1), Outcome.DROPPED)
    m.finalize_round(market.aggregator, job_id, 0, MODEL, honest)
    assert m.round(job_id, 0).proposal == 2
    past_window(market)
    m.settle_round(market.aggregator, job_id, 0)
    assert m.round(job_id, 0).phase is RoundPhase.SETTLED
    assert m.settled_model(job_id, 0) == MODEL
    assert m.claimable(market.payouts[0].address) > 0


def _rule_selector(rule: str) -> bytes:
    arguments = {
        "AcceptedWithoutCommitment": ("bytes32",),
        "TotalMismatch": ("uint256", "uint256"),
        "ResultsRootMismatch": ("bytes32",),
        "CommittedTaskMissed": ("bytes32",),
    }
    return _selector(rule, *arguments[rule])


def test_a_valid_proposal_cannot_be_voided(market: Market) -> None:
    job_id, _ = market.proposed_round()
    m = market.market
    with pytest.raises(ContractRevert) as refused:
        m.disprove_proposal(funded(market.anvil), job_id, 0)
    assert refused.value.name == "ProposalValid"
    stored = m.round(job_id, 0)
    assert stored.phase is RoundPhase.PROPOSED
    assert stored.proposed_model_hash == MODEL
    assert stored.proposed_total == (WORKERS - 1) * (ETH // 2)


def test_a_disproof_after_the_window_or_with_forged_evidence_voids_nothing(
    market: Market,
) -> None:
    job_id = market.collecting_round(committed=WORKERS - 1)
    market.propose_unchecked(job_id, market.honest_results())
    m = market.market
    checker = m.proposal_checker()
    results = [r.entry() for r in m.proposal(job_id, 0)]
    forged = [(market.key(0), b"\x01" * 32)]  # not the lane's commitments
    with pytest.raises(ContractRevert) as refused:
        m.chain.transact(market.owner, checker.functions.disprove(job_id, 0, results, forged))
    assert refused.value.name == "CommitsMismatch"
    # Nobody but the checker may void a proposal.
    function = m.contract.functions.voidProposal(job_id, 0, bytes(32), market.owner.address, b"")
    with pytest.raises(ContractRevert) as refused:
        m.chain.transact(market.owner, function)
    assert refused.value.name == "NotProposalChecker"
    past_window(market)
    with pytest.raises(ContractRevert) as refused:
        m.disprove_proposal(market.owner, job_id, 0)
    assert refused.value.name == "ChallengeWindowClosed"
    assert m.round(job_id, 0).phase is RoundPhase.PROPOSED


def _cli(market: Market, *args: str) -> Result:
    where = ["--rpc-url", market.anvil.rpc_url, "--job-market", market.market.address]
    return CliRunner().invoke(app, ["worker", "check-proposal", *args, *where, "--json"])


def test_check_proposal_names_the_broken_rule_and_voids_it_with_a_key(
    market: Market, tmp_path: Path
) -> None:
    job_id = market.collecting_round(committed=WORKERS - 1)
    market.propose_unchecked(job_id, market.honest_results())
    found = _cli(market, str(job_id), "0")
    assert found.exit_code == 1, found.output
    shown = json.loads(found.output)
    assert (shown["valid"], shown["voided"], shown["proposal"]) == (False, False, 1)
    assert shown["broken"].startswith("AcceptedWithoutCommitment(")
    assert market.market.round(job_id, 0).phase is RoundPhase.PROPOSED

    key_file = tmp_path / "auditor.key"
    key_file.write_text(market.anvil.private_keys[9] + "\n")
    voided = _cli(market, str(job_id), "0", "--disprove-key-file", str(key_file))
    assert voided.exit_code == 1, voided.output
    assert json.loads(voided.output)["voided"] is True
    assert market.market.round(job_id, 0).phase is RoundPhase.COLLECTING

    again = _cli(market, str(job_id), "0")  # nothing pending any more
    assert again.exit_code == 2
    assert "has no pending proposal (it is COLLECTING)" in again.output


def test_check_proposal_passes_a_valid_proposal(market: Market) -> None:
    job_id, _ = market.proposed_round()
    found = _cli(market, str(job_id), "0")
    assert found.exit_code == 0, found.output
    assert json.loads(found.output) == {
        "job_id": job_id,
        "round": 0,
        "proposal": 1,
        "valid": True,
        "broken": None,
        "voided": False,
    }


async def test_the_coordinator_sees_a_disproof_as_its_proposal_voided(market: Market) -> None:
    """The coordinator service follows ``ProposalDisproved`` as it follows a challenge: the
    round collects again and it proposes anew."""
    job_id = market.collecting_round(committed=WORKERS - 1)
    market.propose_unchecked(job_id, market.honest_results())
    receipt = market.market.disprove_proposal(funded(market.anvil), job_id, 0)
    block = int(receipt["blockNumber"])
    events = await EvmCoordinatorChain(market.market, market.aggregator).events(block, block)
    voided = [e for e in events if isinstance(e, RoundChallenged)]
    assert [(e.job_id, e.round, e.block) for e in voided] == [(job_id, 0, block)]
