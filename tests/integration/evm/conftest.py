"""Fixtures for the EVM contract tests: the Foundry project is compiled once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR


@pytest.fixture(scope="session")
def forge_project() -> Forge:
    """The contracts' Foundry project, built (sources and tests) before any test uses it."""
    forge = Forge(Path(CONTRACTS_DIR))
    forge.build()
    return forge
