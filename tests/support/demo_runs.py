"""Demo runs with two cheats, for the integration tests that share one run per module."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedrelay.adapters.devnet.state import WORKER_EVM, WORKER_SOLANA
from fedrelay.demo import Cheat, DemoProgress, DemoResult, DemoSettings, run_demo, write_summary


def two_cheats(first: Cheat, second: Cheat, per_chain: int, **fields: Any) -> DemoSettings:
    """Demo settings with ``per_chain`` workers on each worker chain, whose cheats are ``first``
    and ``second`` (each on a worker of its own), with two minutes to commit and the other
    ``fields`` as given."""
    return DemoSettings(
        evm_workers=per_chain,
        solana_workers=per_chain,
        dishonest=first.mode,
        dishonest_chain=first.chain,
        more_cheats=(second,),
        collect_seconds=120,
        **fields,
    )


def run_and_report(
    settings: DemoSettings, root: Path, progress: DemoProgress | None = None
) -> tuple[DemoResult, dict[str, Any]]:
    """Run the demo with its state in ``root/state`` and its report in ``root/report``; the
    result and the parsed ``summary.json``."""
    result = run_demo(settings, root / "state", progress)
    summary = json.loads(write_summary(result, root / "report").read_text())
    return result, summary


def check_honest_paid(result: DemoResult, honest_count: int) -> None:
    """Every acceptance condition held; the ``honest_count`` honest workers, on both worker
    chains, had every task accepted, were paid (claimable on JobMarket) and never slashed; the
    coordinator slashed no one but the cheats."""
    assert result.problems() == [], result.problems()
    honest = [w for w in result.workers if not w.dishonest]
    assert len(honest) == honest_count
    assert {w.chain for w in honest} == {WORKER_EVM, WORKER_SOLANA}
    for worker in honest:
        assert worker.slashed_rounds == (), worker
        assert worker.slashed_on_chain == 0, worker
        assert worker.accepted == worker.tasks == result.rounds, worker
        assert worker.reward > 0, worker
        assert worker.claimable == worker.reward, worker
    assert {d.worker for d in result.detections} == {c.name for c in result.cheats}
