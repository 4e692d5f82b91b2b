"""A round's cost per worker-round stays within the committed budget (bench/cost-budget.json).

The measurement is `fedrelay bench cost`'s, shortened to the budget's workers and rounds: whole
rounds on an anvil coordinator chain, an anvil EVM worker chain and the LiteSVM devnet with 13
of 19 guardians. Keys, signatures, block times and the Solana clock are fixed, so the figures
repeat exactly; the 2% margin is room for a deliberate small change, not for noise. After a
change that moves the cost on purpose, measure again with the budget's `command`.
"""

from __future__ import annotations

import json

import pytest

from fedrelay.adapters.devnet.forge import Forge
from fedrelay.bench import cost

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_round_costs_no_more_than_the_committed_budget(forge_project: Forge) -> None:
    budget = json.loads(cost.BUDGET.read_text())
    assert set(budget["ceilings"]) == set(cost.BUDGET_KEYS)
    figures = cost.measure(budget["workers"], budget["rounds"])
    over = cost.over_budget(figures, budget["ceilings"])
    assert not over, "per worker-round cost above the budget (measured, ceiling): " + ", ".join(
        f"{k} {m} > {c}" for k, (m, c) in over.items()
    )
