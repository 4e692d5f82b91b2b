"""The demo report: the accuracy plot, and the cost tallies from receipts and transactions."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from fedrelay.adapters.solana._base58 import b58encode
from fedrelay.adapters.solana.layout import Instruction
from fedrelay.demo import DemoResult, DemoSettings, WorkerOutcome, write_summary
from fedrelay.demo.costs import (
    CostError,
    DemoCosts,
    Spend,
    instruction_units,
    markdown_lines,
    per_worker_round,
    tally_evm,
    tally_solana,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PROGRAM = "Work111111111111111111111111111111111111111"
BUDGET = "ComputeBudget111111111111111111111111111111"
WORKER = "Wrkr111111111111111111111111111111111111111"


def _worker(number: int, dishonest: str = "") -> WorkerOutcome:
    return WorkerOutcome(
        name=f"worker-{number}", chain="worker-evm", address=f"a{number}",
        payout_address=f"p{number}", dishonest=dishonest, tasks=2, accepted=2,
        slashed_rounds=(1,) if dishonest else (), reason="tampered" if dishonest else "",
        reward=0 if dishonest else 5, claimable=0 if dishonest else 5, stake_before=10,
        stake_after=9 if dishonest else 10,
    )  # fmt: skip


def _receipt(sender: str, gas: int, price: int) -> dict[str, str]:
    return {"from": sender, "gasUsed": hex(gas), "effectiveGasPrice": hex(price)}


def _transaction(
    payer: str, tags: list[int | None], units: int, fee: int, logs: list[str]
) -> dict[str, object]:
    keys = [payer, PROGRAM, BUDGET]
    instructions = [
        {"programIdIndex": 2, "accounts": [], "data": b58encode(b"\x02" + struct.pack("<I", 9))}
        if tag is None
        else {"programIdIndex": 1, "accounts": [0], "data": b58encode(bytes([tag, 1, 2]))}
        for tag in tags
    ]
    return {
        "transaction": {"message": {"accountKeys": keys, "instructions": instructions}},
        "meta": {"fee": fee, "computeUnitsConsumed": units, "logMessages": logs},
    }


def _costs() -> DemoCosts:
    gas = tally_evm(
        "coordinator", 3, 9,
        [_receipt("0xAA", 50_000, 2), _receipt("0xbb", 21_000, 3)],
        {"0xaa": "aggregator"},
    )  # fmt: skip
    commit = _transaction(
        WORKER, [None, Instruction.COMMIT_UPDATE], 6_338, 5_000,
        [f"Program {BUDGET} invoke [1]", f"Program {BUDGET} success",
         f"Program {PROGRAM} invoke [1]",
         f"Program {PROGRAM} consumed 6188 of 1399850 compute units",
         f"Program {PROGRAM} success"],
    )  # fmt: skip
    compute = tally_solana("worker-solana", 0, [commit], PROGRAM, {WORKER: "workers"})
    return DemoCosts(gas={"coordinator": gas}, compute_units={"worker-solana": compute})


def test_the_report_has_the_accuracy_plot_and_the_costs(tmp_path: Path) -> None:
    result = DemoResult(
        job_id=3, rounds=4, accuracy_per_round=(0.4, 0.7, 0.88, 0.93),
        workers=(_worker(0, "update"), _worker(1)),
        messages_per_route={"coordinator -> worker-evm": {"confirmed": 8}},
        wall_time_s=12.0, settings=DemoSettings(rounds=4), costs=_costs(),
    )  # fmt: skip
    summary = json.loads(write_summary(result, tmp_path).read_text())

    png = (tmp_path / "accuracy.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert width > 0
    assert height > 0
    markdown = (tmp_path / "summary.md").read_text()
    assert "![test accuracy per round](accuracy.png)" in markdown
    assert "| coordinator | aggregator | 1 | 50000 gas | 100000 wei |" in markdown
    assert "| commit_update | 1 | 6188 |" in markdown

    assert summary["gas"]["coordinator"]["gas_used"] == 71_000
    assert summary["gas"]["coordinator"]["fees_wei"] == 100_000 + 63_000
    assert summary["gas"]["coordinator"]["by_role"]["other"]["gas_used"] == 21_000
    units = summary["compute_units"]["worker-solana"]
    assert units["compute_units"] == 6_338
    assert units["fees_lamports"] == 5_000
    assert units["by_role"]["workers"]["transactions"] == 1
    assert units["by_instruction"]["commit_update"] == {"instructions": 1, "compute_units": 6188}
    assert units["by_instruction"]["compute_budget"] == {"instructions": 1, "compute_units": 150}
    # Two EVM workers of two tasks each: the coordinator chain's gas over 4 worker-rounds; no
    # Solana worker, so no Solana figure.
    assert summary["gas_per_worker_round"] == {
        "coordinator": {"gas": 71_000 // 4, "worker_rounds": 4}
    }
    assert "| coordinator | 17750 gas | 4 |" in markdown


def test_gas_per_worker_round_divides_each_chain_by_its_own_tasks() -> None:
    costs = _costs()
    evm = tally_evm("worker-evm", 0, 1, [_receipt("0xcc", 30_000, 1)], {})
    both = DemoCosts(gas={**costs.gas, "worker-evm": evm}, compute_units=costs.compute_units)
    figures = per_worker_round(both, {"worker-evm": 3, "worker-solana": 2})
    assert figures == {
        "coordinator": {"gas": round(71_000 / 5), "worker_rounds": 5},
        "worker-evm": {"gas": 10_000, "worker_rounds": 3},
        "worker-solana": {"compute_units": 6_338 // 2, "worker_rounds": 2},
    }
    assert per_worker_round(both, {}) == {}


def test_a_report_without_costs_or_rounds_still_has_a_plot(tmp_path: Path) -> None:
    result = DemoResult(
        job_id=1, rounds=2, accuracy_per_round=(), workers=(_worker(0, "update"),),
        messages_per_route={}, wall_time_s=1.0, settings=DemoSettings(rounds=2),
    )  # fmt: skip
    summary = json.loads(write_summary(result, tmp_path).read_text())
    assert (tmp_path / "accuracy.png").read_bytes().startswith(PNG_SIGNATURE)
    assert summary["gas"] == {}
    assert summary["compute_units"] == {}
    assert summary["gas_per_worker_round"] == {}
    assert markdown_lines(DemoCosts()) == []


def test_gas_is_summed_per_sender_role_with_addresses_in_any_case() -> None:
    gas = _costs().gas["coordinator"]
    assert gas.total == Spend(2, 71_000, 163_000)
    assert gas.by_role == {
        "aggregator": Spend(1, 50_000, 100_000),
        "other": Spend(1, 21_000, 63_000),
    }


def test_nested_invocations_do_not_count_twice() -> None:
    logs = [
        f"Program {PROGRAM} invoke [1]",
        "Program 11111111111111111111111111111111 invoke [2]",
        "Program 11111111111111111111111111111111 success",
        f"Program {PROGRAM} consumed 9000 of 200000 compute units",
        f"Program {PROGRAM} success",
        f"Program {BUDGET} invoke [1]",
        f"Program {BUDGET} success",
        f"Program {PROGRAM} invoke [1]",
        f"Program {PROGRAM} consumed 700 of 191000 compute units",
        f"Program {PROGRAM} failed: custom program error: 0x5",
    ]
    assert instruction_units(logs) == {0: 9000, 2: 700}


def test_malformed_answers_are_refused_with_what_was_wrong() -> None:
    with pytest.raises(CostError, match="coordinator receipt is malformed"):
        tally_evm("coordinator", 0, 1, [{"from": "0x1"}], {})
    with pytest.raises(CostError, match="worker-solana transaction is malformed"):
        tally_solana("worker-solana", 0, [{"meta": {"fee": 1}}], PROGRAM, {})


def test_the_command_shows_the_costs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fedrelay.commands.demo import _render

    result = DemoResult(
        job_id=3, rounds=1, accuracy_per_round=(0.93,), workers=(_worker(0, "update"),),
        messages_per_route={}, wall_time_s=1.0, settings=DemoSettings(rounds=1), costs=_costs(),
    )  # fmt: skip
    _render(result, tmp_path / "summary.json")
    shown = capsys.readouterr().out
    assert "gas and compute units spent" in shown
    assert "71,000 gas" in shown
    assert "6,338 CU" in shown
