"""Wormhole's own Ethereum core contract on a local chain.

`make setup` fetches the bytecode Wormhole compiled and published in its TypeScript SDK's ethers
factories (`tools/npm/wormhole-core.json`: package, version, integrity). The core is deployed
the way Wormhole deploys it: `Setup` and `Implementation`, then the `Wormhole` proxy (an ERC-1967
proxy) constructed with the setup contract and a delegated `setup(...)` call that stores the
initial guardian set, the chain ids, the governance emitter and the implementation.

Only the bytecode is taken from the package; the functions called here are declared below from
Wormhole's published interface. The result is driven through
:class:`fedrelay.adapters.evm.core.WormholeCoreContract` like a production core.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from fedrelay.adapters.evm import EvmChain, EvmError, Signer
from fedrelay.adapters.evm.core import WormholeCoreContract
from fedrelay.adapters.evm.deploy import deploy_bytecode

REPO = Path(__file__).resolve().parents[2]
PIN = REPO / "tools" / "npm" / "wormhole-core.json"
FACTORIES = REPO / "tools" / "npm" / "wormhole-core"
#: Wormhole's governance emitter: chain 1 (Solana), address 0x00…04.
GOVERNANCE_CHAIN = 1
GOVERNANCE_CONTRACT = (4).to_bytes(32, "big")

_BYTECODE = re.compile(r'const _bytecode = "(0x[0-9a-fA-F]+)"')
_SETUP_ABI = [
    {
        "type": "function",
        "name": "setup",
        "inputs": [
            {"name": "implementation", "type": "address"},
            {"name": "initialGuardians", "type": "address[]"},
            {"name": "chainId", "type": "uint16"},
            {"name": "governanceChainId", "type": "uint16"},
            {"name": "governanceContract", "type": "bytes32"},
            {"name": "evmChainId", "type": "uint256"},
        ],
        "outputs": [],
        "stateMutability": "nonpayable",
    }
]
_PROXY_ABI = [
    {
        "type": "constructor",
        "inputs": [
            {"name": "setup", "type": "address"},
            {"name": "initData", "type": "bytes"},
        ],
        "stateMutability": "nonpayable",
    }
]


class WormholeCoreMissing(EvmError):
    """The core's bytecode is not installed (run `make setup`)."""


def pinned() -> dict[str, Any]:
    """What `tools/npm/wormhole-core.json` pins: package, version, integrity, files."""
    loaded: dict[str, Any] = json.loads(PIN.read_text())
    return loaded


@cache
def bytecode(name: str) -> str:
    """The creation bytecode of `name` (`Setup`, `Implementation` or `Wormhole`).

    Raises:
        WormholeCoreMissing: The factory file is not there or holds no bytecode.
    """
    path = FACTORIES / "package/lib/cjs/ethers-contracts/factories" / f"{name}__factory.js"
    if not path.exists():
        raise WormholeCoreMissing(
            f"{path} is missing: `make setup` (tools/setup.sh npm) fetches Wormhole's core"
        )
    found = _BYTECODE.search(path.read_text())
    if found is None:
        raise WormholeCoreMissing(f"{path} holds no creation bytecode")
    return found.group(1)


def _deploy(chain: EvmChain, signer: Signer, name: str, abi: list[Any], *args: Any) -> str:
    return deploy_bytecode(chain, signer, f"Wormhole's {name}", abi, bytecode(name), *args)


def deploy_wormhole_core(
    chain: EvmChain,
    signer: Signer,
    wormhole_chain_id: int,
    guardians: Sequence[str],
    *,
    governance_chain: int = GOVERNANCE_CHAIN,
    governance_contract: bytes = GOVERNANCE_CONTRACT,
) -> WormholeCoreContract:
    """Deploy Wormhole's core with guardian set 0 = `guardians`; its proxy's binding.

    Its guardian set and fee change only by governance VAAs from `governance_chain` /
    `governance_contract` (Wormhole's: chain 1, 0x00…04), signed by the current set.
    """
    setup = _deploy(chain, signer, "Setup", [])
    implementation = _deploy(chain, signer, "Implementation", [])
    keys = [chain.w3.to_checksum_address(g) for g in guardians]
    setup_call = chain.w3.eth.contract(abi=_SETUP_ABI).encode_abi(
        "setup",
        [implementation, keys, wormhole_chain_id, governance_chain, governance_contract,
         chain.chain_id],
    )  # fmt: skip
    proxy = _deploy(chain, signer, "Wormhole", _PROXY_ABI, setup, bytes.fromhex(setup_call[2:]))
    return WormholeCoreContract(chain, proxy)
