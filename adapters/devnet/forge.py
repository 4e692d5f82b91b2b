"""Foundry's forge, compiling with solcjs through the project's wrapper.

A native solc cannot be installed offline; forge accepts any compiler binary that speaks
solc's standard-JSON through `--use`, so every forge call here passes
`--offline --use tools/solc/solc-forge.cjs`.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrelay.adapters.devnet import toolchain


class ForgeError(RuntimeError):
    """forge exited non-zero; the message carries its output."""


@dataclass(frozen=True)
class Artifact:
    """A compiled contract: its ABI and creation bytecode."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes


class Forge:
    """forge commands for one Foundry project directory."""

    def __init__(self, project: Path, timeout: float = 900.0) -> None:
        self.project = Path(project)
        self.timeout = timeout

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command, rest = args[0], args[1:]
        argv = [
            str(toolchain.foundry_binary("forge")),
            command,
            "--offline",
            "--use",
            str(toolchain.solc_wrapper()),
            *rest,
        ]
        result = subprocess.run(
            argv,
            cwd=self.project,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise ForgeError(
                f"forge {' '.join(args)} failed (exit {result.returncode}) in {self.project}:\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def build(self, *args: str) -> None:
        self.run("build", *args)

    def test(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("test", *args)

    def artifact(self, contract: str, source_file: str | None = None) -> Artifact:
        """Load `out/<source_file>/<contract>.json` written by `forge build`."""
        path = self.project / "out" / (source_file or f"{contract}.sol") / f"{contract}.json"
        if not path.exists():
            raise ForgeError(f"no artifact for {contract} at {path}; run forge build first")
        data = json.loads(path.read_text())
        bytecode = data["bytecode"]["object"]
        return Artifact(contract, data["abi"], bytes.fromhex(bytecode.removeprefix("0x")))
