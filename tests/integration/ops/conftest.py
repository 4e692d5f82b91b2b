"""Contracts on the session's two anvil chains, shared by the operations tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import support.wormhole as wormhole_testing

from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR
from fedrelay.adapters.evm.testing import EvmDeployment, deploy_pair

GUARDIANS = 3
CHALLENGE_WINDOW = 60


@pytest.fixture(scope="module")
def evm(coordinator_chain: Anvil, worker_chain: Anvil) -> EvmDeployment:
    """Fresh contracts on both chains (compiled first; forge caches), guarded by 3 guardians."""
    Forge(Path(CONTRACTS_DIR)).build()
    guardians = ["0x" + g.address.hex() for g in wormhole_testing.guardian_signers(GUARDIANS)]
    return deploy_pair(coordinator_chain, worker_chain, guardians, CHALLENGE_WINDOW)
