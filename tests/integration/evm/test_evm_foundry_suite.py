"""The Foundry suite (unit, attack, fuzz and invariant tests) and its committed gas snapshot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedrelay.adapters.devnet.forge import Forge

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Fuzz and invariant gas varies with the inputs forge picks, so the snapshot covers the
# deterministic tests only. The same sources compile to slightly different test code when forge
# compiles them for `forge snapshot` on a clean tree than for `forge build` (which every test
# here runs first): regenerate with `forge build`, then `forge snapshot <these flags>`
# (docs/contracts.md).
SNAPSHOT_FILTER = ("--no-match-test", "testFuzz", "--no-match-path", "test/Invariants.t.sol")
_LINE = re.compile(r"^(\S+) \(gas: (\d+)\)$")


def read_snapshot(path: Path) -> dict[str, int]:
    """``{"Contract:test()": gas}`` from a snapshot file; a line of another shape is an error."""
    found: dict[str, int] = {}
    for line in path.read_text().splitlines():
        match = _LINE.match(line)
        if match is None:
            raise AssertionError(f"{path}: unexpected snapshot line {line!r}")
        found[match.group(1)] = int(match.group(2))
    return found


def snapshot_differences(committed: dict[str, int], now: dict[str, int]) -> list[str]:
    """Every difference between two snapshots: tests added, gone, or costing another amount."""
    problems = [f"not in the committed snapshot: {t}" for t in sorted(now.keys() - committed)]
    problems += [f"no longer run: {t}" for t in sorted(committed.keys() - now)]
    for test in sorted(committed.keys() & now):
        if now[test] != committed[test]:
            problems.append(f"{test}: {committed[test]} committed, {now[test]} now")
    return problems


def test_foundry_suite_passes(forge_project: Forge) -> None:
    result = forge_project.test()
    summary = re.findall(r"(\d+) tests passed, (\d+) failed", result.stdout)
    assert summary, result.stdout[-2000:]
    passed, failed = (int(n) for n in summary[-1])
    assert failed == 0
    assert passed >= 90, result.stdout[-2000:]


def test_gas_snapshot_is_current(forge_project: Forge, tmp_path: Path) -> None:
    """Every deterministic test costs exactly what `.gas-snapshot` says."""
    fresh = tmp_path / "gas-snapshot"
    result = forge_project.run("snapshot", "--snap", str(fresh), *SNAPSHOT_FILTER, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    committed = read_snapshot(forge_project.project / ".gas-snapshot")
    problems = snapshot_differences(committed, read_snapshot(fresh))
    assert problems == [], "\n".join(problems)


def test_snapshot_differences_name_each_change() -> None:
    committed = {"A:test_a()": 1_000, "A:test_b()": 2_000, "A:test_gone()": 5}
    now = {"A:test_a()": 1_000, "A:test_b()": 1_999, "A:test_new()": 7}
    assert snapshot_differences(committed, now) == [
        "not in the committed snapshot: A:test_new()",
        "no longer run: A:test_gone()",
        "A:test_b(): 2000 committed, 1999 now",
    ]
