"""A round's cost per worker-round stays within the committed budget (bench/cost-budget.json).

The measurement is `fedrelay bench cost`'s, shortened to the budget's workers and rounds: whole
rounds on an anvil coordinator chain, an anvil EVM worker chain and the LiteSVM devnet with 13
of 19 guardians. Keys, signatures, block times and the Solana clock are fixed, so the figures
repeat exactly. The default design (version-1 VAAs, the devnet's batches, one VAA per delivery)
and each of `cost.BUDGET_DESIGNS` (version-2 VAAs with batches of 32) have their own ceilings;
the 2% margin is room for a deliberate small change, not for noise. After a
change that moves the cost on purpose, measure again with the budget's `command`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fedrelay.adapters.devnet.forge import Forge
from fedrelay.bench import cost

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _over(figures: dict[str, Any], ceilings: dict[str, int]) -> str:
    over = cost.over_budget(figures, ceilings)
    return ", ".join(f"{k} {m} > {c}" for k, (m, c) in over.items())


def test_a_round_costs_no_more_than_the_committed_budget(forge_project: Forge) -> None:
    budget = json.loads(cost.BUDGET.read_text())
    assert set(budget["ceilings"]) == set(cost.BUDGET_KEYS)
    figures = cost.measure(budget["workers"], budget["rounds"])
    over = _over(figures, budget["ceilings"])
    assert not over, "per worker-round cost above the budget (measured, ceiling): " + over
    # The gas by contract function accounts for each EVM chain's figure (each name's share
    # rounded on its own) and names every call the rounds make.
    by_call = figures["gas_per_worker_round_by_call"]
    for side, key in (
        ("coordinator", "coordinator_gas_per_worker_round"),
        ("worker_chain", "worker_chain_gas_per_worker_round"),
    ):
        shares = by_call[side]
        assert abs(sum(s["gas"] for s in shares.values()) - figures[key]) <= len(shares), side
        assert not [n for n in shares if ".0x" in n or n.startswith("0x")], shares
    assert {"JobMarket.assignTasks", "JobMarket.finalizeRound", "JobMarket.settleRound"} <= set(
        by_call["coordinator"]
    )
    assert "WorkerHub.receiveMessage" in by_call["worker_chain"]


@pytest.mark.parametrize("name", sorted(cost.BUDGET_DESIGNS))
def test_each_other_design_costs_no_more_than_its_budget(forge_project: Forge, name: str) -> None:
    budget = json.loads(cost.BUDGET.read_text())
    bounded = budget["designs"][name]
    design = cost.BUDGET_DESIGNS[name]
    assert bounded["design"] == design.describe(), "the budget was measured on another design"
    figures = cost.measure(budget["workers"], budget["rounds"], design=design)
    over = _over(figures, bounded["ceilings"])
    assert not over, f"{name}: per worker-round cost above the budget: " + over
