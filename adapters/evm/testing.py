"""Test support: fedrelay's contracts on two anvil chains, linked as peers.

The deployment itself is :mod:`fedrelay.adapters.devnet.evm_pair` (the relayer benchmark uses it
too); it is re-exported here so the relayer's integration tests keep one import.
"""

from __future__ import annotations

from fedrelay.adapters.devnet.evm_pair import (
    COORDINATOR_CHAIN,
    WORKER_CHAIN,
    EvmDeployment,
    deploy_pair,
)

__all__ = ["COORDINATOR_CHAIN", "WORKER_CHAIN", "EvmDeployment", "deploy_pair"]
