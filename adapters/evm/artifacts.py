"""Contract ABIs and creation bytecode, read from the artifacts `forge build` writes.

The Foundry project lives in `contracts/`; `forge build` writes
`contracts/out/<File>.sol/<Name>.json`.
`FEDRELAY_CONTRACTS_OUT` points elsewhere (for example an installed copy of the artifacts).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fedrelay.adapters.evm.errors import ArtifactNotFound

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
CONTRACT_NAMES = ("MessageCore", "JobMarket", "ProposalChecker", "WorkerHub", "RewardDistributor")


def artifacts_dir() -> Path:
    """Where forge artifacts are read from."""
    override = os.environ.get("FEDRELAY_CONTRACTS_OUT")
    return Path(override) if override else CONTRACTS_DIR / "out"


@dataclass(frozen=True)
class ContractArtifact:
    """A compiled contract: its name, ABI and creation bytecode."""

    name: str
    abi: tuple[dict[str, Any], ...]
    bytecode: bytes


@cache
def _load(name: str, directory: Path) -> ContractArtifact:
    path = directory / f"{name}.sol" / f"{name}.json"
    if not path.is_file():
        raise ArtifactNotFound(
            f"no artifact for {name} at {path}; build the contracts first (`make contracts` or "
            "`forge build` in contracts/)"
        )
    data = json.loads(path.read_text())
    code = str(data["bytecode"]["object"]).removeprefix("0x")
    return ContractArtifact(name=name, abi=tuple(data["abi"]), bytecode=bytes.fromhex(code))


def load_artifact(name: str, directory: Path | None = None) -> ContractArtifact:
    """Load the artifact of contract `name` (for example "JobMarket").

    Raises:
        ArtifactNotFound: The contracts were not built.
    """
    return _load(name, (directory or artifacts_dir()).resolve())
