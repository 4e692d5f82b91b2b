"""The pure parts of `fedrelay bench cost`: the goals and the budget (fedrelay.bench.cost)."""

from __future__ import annotations

from rich.console import Console

from fedrelay.adapters.evm.core import CoreKind
from fedrelay.bench import cost


def test_a_figure_above_its_ceiling_is_reported() -> None:
    figures = dict.fromkeys(cost.BUDGET_KEYS, 100)
    ceilings = cost.budget(figures, 32, 2)["ceilings"]
    assert ceilings["coordinator_gas_per_worker_round"] == 102
    assert cost.over_budget(figures, ceilings) == {}
    figures["solana_cu_per_worker_round"] = 103
    assert cost.over_budget(figures, ceilings) == {"solana_cu_per_worker_round": (103, 102)}


def test_the_goals_are_judged_against_the_baseline() -> None:
    figures = {
        "coordinator_gas_per_worker_round": 10_000,
        "worker_chain_gas_per_worker_round": 30_001,
        "solana_cu_per_worker_round": 25_000,
    }
    judged = cost.goals(figures, {"solana_cu_per_worker_round": 100_000})
    assert judged["goal"]["solana_cu_per_worker_round"] == 25_000
    assert judged["met"] == {"coordinator": True, "worker_chain": False, "solana": True}
    assert judged["over_goal"] == {"worker_chain": 1.0}  # 30,001 / 30,000, two decimals
    unjudged = cost.goals({**figures, "coordinator_gas_per_worker_round": 29_407}, None)
    assert unjudged["met"]["solana"] is None
    assert unjudged["over_goal"] == {"coordinator": 2.94, "worker_chain": 1.0}


def test_a_design_says_what_it_measures_and_verifies_threshold_beside_wormholes_core() -> None:
    described = cost.Design(cost.Attestation.THRESHOLD, deliver_batch=32).describe()
    assert described["attestation"] == "threshold"
    assert described["core"] == "messagecore"
    assert described["max_batch"] == {"evm": 16, "solana": 8}
    assert "batches of up to 32" in described["deliveries"]
    assert "one VAA per transaction" in cost.Design().describe()["deliveries"]
    assert not cost.Design(cost.Attestation.THRESHOLD).beside_the_core
    assert not cost.Design(core=CoreKind.WORMHOLE).beside_the_core
    beside = cost.Design(cost.Attestation.THRESHOLD, core=CoreKind.WORMHOLE)
    assert beside.beside_the_core
    assert "ThresholdVerifier beside it" in beside.describe()["core"]
    assert "own commitUpdate" in cost.Design().describe()["commit"]
    signed = cost.Design(commit=cost.CommitPath.SIGNED).describe()["commit"]
    assert f"{cost.SIGNED_PER_TRANSACTION} to a commitSignedAndPublish transaction" in signed
    assert "payout address credited at settlement" in cost.Design().describe()["rewards"]
    pooled = cost.Design(rewards=cost.RewardsPath.DISTRIBUTOR).describe()["rewards"]
    assert f"{cost.CLAIMS_PER_TRANSACTION} to a claimBatch transaction" in pooled


def test_the_console_table_names_every_call_with_its_gas() -> None:
    by_call = {
        "coordinator": {"JobMarket.assignTasks": {"gas": 7436, "transactions": 20}},
        "worker_chain": {"WorkerHub.commitSignedAndPublish": {"gas": 22125, "transactions": 10}},
    }
    console = Console(width=80, record=True)
    console.print(cost._by_call_table(32, 10, by_call))
    text = console.export_text()
    assert "32 workers x 10 rounds" in text
    for name, gas in (
        ("JobMarket.assignTasks", "7,436"),
        ("WorkerHub.commitSignedAndPublish", "22,125"),
    ):
        row = next(line for line in text.splitlines() if name in line)
        assert gas in row
