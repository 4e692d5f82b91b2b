"""The worker program binary: built from `programs/` by `programs/build.py`, never committed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fedrelay.adapters.solana.errors import ProgramBuildError

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "programs" / "build.py"


def build_program(force: bool = False) -> Path:
    """Compile and link the worker program (a no-op when the build is up to date).

    Returns:
        The path of `fedrelay_worker.so`.

    Raises:
        ProgramBuildError: clang or the linker failed; the message carries their output.
    """
    cmd = [sys.executable, str(BUILD_SCRIPT), *(["--force"] if force else [])]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ProgramBuildError(f"building the worker program failed:\n{result.stderr.strip()}")
    return Path(result.stdout.strip().splitlines()[-1])


def program_bytes(force: bool = False) -> bytes:
    """The worker program's ELF bytes, building it first when needed."""
    return build_program(force).read_bytes()
