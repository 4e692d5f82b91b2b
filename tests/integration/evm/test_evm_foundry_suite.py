"""The Foundry suite (unit, attack, fuzz and invariant tests) and its committed gas snapshot."""

from __future__ import annotations

import re

import pytest

from fedrelay.adapters.devnet.forge import Forge

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Fuzz and invariant gas varies with the inputs forge picks, so the snapshot covers the
# deterministic tests only. Regenerate with: forge snapshot <these flags> (see docs/contracts.md).
SNAPSHOT_FILTER = ("--no-match-test", "testFuzz", "--no-match-path", "test/Invariants.t.sol")


def test_foundry_suite_passes(forge_project: Forge) -> None:
    result = forge_project.test()
    summary = re.findall(r"(\d+) tests passed, (\d+) failed", result.stdout)
    assert summary, result.stdout[-2000:]
    passed, failed = (int(n) for n in summary[-1])
    assert failed == 0
    assert passed >= 90, result.stdout[-2000:]


def test_gas_snapshot_is_current(forge_project: Forge) -> None:
    """`.gas-snapshot` matches what the contracts cost now."""
    result = forge_project.run("snapshot", "--check", *SNAPSHOT_FILTER, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
