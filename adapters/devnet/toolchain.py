"""Where the project's installed tools live.

`make setup` installs every external tool into this repository (see the Makefile): Foundry and
solcjs under `tools/npm/node_modules`, the Kafka broker's jars under `tools/kafka/libs`, helm and
SeaweedFS's `weed` (the S3-compatible server) under `tools/bin`. PostgreSQL and clang come from
Debian. Each lookup raises `ToolNotFoundError` naming the command that installs the missing tool,
instead of failing later with a bare ENOENT.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = Path(os.environ.get("FEDRELAY_TOOLS_DIR", REPO_ROOT / "tools"))


class ToolNotFoundError(RuntimeError):
    """A required external tool is not installed where the project expects it."""


def _platform_suffix() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    if arch is None:
        raise ToolNotFoundError(f"no Foundry build for machine type {machine!r}")
    return f"linux-{arch}"


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise ToolNotFoundError(f"{what} not found at {path}; run `make setup` first")
    return path


def foundry_binary(name: str) -> Path:
    """Path of `anvil` or `forge` as installed from npm's `@foundry-rs/*` packages."""
    override = os.environ.get(f"FEDRELAY_{name.upper()}")
    if override:
        return _require(Path(override), name)
    pkg = f"@foundry-rs/{name}-{_platform_suffix()}"
    return _require(TOOLS_DIR / "npm" / "node_modules" / pkg / "bin" / name, name)


def solc_wrapper() -> Path:
    """The solcjs wrapper forge runs as its compiler (`forge ... --use <this>`)."""
    return _require(TOOLS_DIR / "solc" / "solc-forge.cjs", "solc wrapper")


def node_modules() -> Path:
    """The project's pinned npm packages (Wormhole SDK, solcjs, Foundry)."""
    return _require(TOOLS_DIR / "npm" / "node_modules", "npm packages")


def kafka_classpath() -> str:
    """Java classpath of the Kafka broker assembled from Maven Central."""
    libs = TOOLS_DIR / "kafka" / "libs"
    jars = sorted(libs.glob("*.jar")) if libs.is_dir() else []
    if not any(j.name.startswith("kafka_2.13-") for j in jars):
        raise ToolNotFoundError(f"Kafka broker jars not found in {libs}; run `make setup` first")
    return os.pathsep.join(str(j) for j in jars)


def java_binary() -> Path:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return Path(home) / "bin" / "java"
    found = shutil.which("java")
    if found is None:
        raise ToolNotFoundError("java not found on PATH; Kafka needs OpenJDK 17 or newer")
    return Path(found)


def postgres_bindir() -> Path:
    """Directory holding `initdb`, `pg_ctl` and `postgres` (Debian keeps them off PATH)."""
    override = os.environ.get("FEDRELAY_PG_BINDIR")
    if override:
        return _require(Path(override), "PostgreSQL binaries")
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for candidate in reversed(versions):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise ToolNotFoundError("PostgreSQL server binaries not found; run `make setup` first")


def _tools_bin(name: str) -> Path:
    """``tools/bin/<name>``, or the file ``FEDRELAY_<NAME>`` names (a build under test)."""
    override = os.environ.get(f"FEDRELAY_{name.upper()}")
    return _require(Path(override) if override else TOOLS_DIR / "bin" / name, name)


def helm_binary() -> Path:
    return _tools_bin("helm")


def weed_binary() -> Path:
    """SeaweedFS's `weed`, which the tests run as their S3-compatible server."""
    return _tools_bin("weed")
