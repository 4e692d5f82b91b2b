"""`fedrelay doctor`: which external tools are installed, and their versions."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from fedrelay.adapters.devnet import toolchain


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        return f"error: {exc}"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else f"exit {out.returncode}"


def _check(locate: Callable[[], Path | str], version_args: list[str]) -> tuple[bool, str]:
    try:
        where = locate()
    except toolchain.ToolNotFoundError as exc:
        return False, str(exc)
    if isinstance(where, Path) and version_args:
        return True, _version([str(where), *version_args])
    return True, "present"


def _on_path(name: str) -> Callable[[], Path]:
    def locate() -> Path:
        found = shutil.which(name)
        if found is None:
            raise toolchain.ToolNotFoundError(f"{name} not found on PATH; run `make setup`")
        return Path(found)

    return locate


def doctor() -> None:
    """Check that every external tool fedrelay uses is installed; exit 1 if one is missing."""
    checks: dict[str, tuple[Callable[[], Path | str], list[str]]] = {
        "anvil": (lambda: toolchain.foundry_binary("anvil"), ["--version"]),
        "forge": (lambda: toolchain.foundry_binary("forge"), ["--version"]),
        "solc (solcjs for forge)": (toolchain.solc_wrapper, ["--version"]),
        "kafka broker jars": (toolchain.kafka_classpath, []),
        "java": (toolchain.java_binary, ["-version"]),
        "postgresql": (lambda: toolchain.postgres_bindir() / "postgres", ["--version"]),
        "clang-14": (_on_path("clang-14"), ["--version"]),
        "helm": (toolchain.helm_binary, ["version", "--short"]),
        "weed (SeaweedFS, S3 tests)": (toolchain.weed_binary, ["version"]),
        "node": (_on_path("node"), ["--version"]),
    }
    table = Table(title="fedrelay toolchain")
    table.add_column("tool")
    table.add_column("status")
    table.add_column("version or problem")
    missing = 0
    for name, (locate, args) in checks.items():
        ok, detail = _check(locate, args)
        missing += not ok
        table.add_row(name, "[green]ok[/]" if ok else "[red]missing[/]", detail)
    Console().print(table)
    if missing:
        raise typer.Exit(1)
