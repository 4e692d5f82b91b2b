"""The layer contracts (pyproject.toml, [tool.importlinter]) hold, and they do catch a violation.

Each test copies the ``fedrelay`` package (the service folders it links in included) into a
temporary directory, optionally adds one import that breaks a rule, and runs ``lint-imports``
with the project's own configuration against the copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package as it is in the repository."""
    src = tmp_path_factory.mktemp("pristine")
    shutil.copytree(
        ROOT / "fedrelay", src / "fedrelay", ignore=shutil.ignore_patterns("__pycache__")
    )
    return src


def _lint(src: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _with_import(pristine: Path, tmp_path: Path, module: str, line: str) -> Path:
    src = tmp_path / "src"
    shutil.copytree(pristine, src)
    path = src.joinpath(*module.split(".")).with_suffix(".py")
    if not path.exists():
        path = src.joinpath(*module.split("."), "__init__.py")
    path.write_text(path.read_text() + f"\n{line}\n")
    return src


def test_the_package_keeps_every_contract(pristine: Path) -> None:
    result = _lint(pristine)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken", "shown"),
    [
        (
            "fedrelay.protocol.hashing",
            "import fedrelay.relayer.stage  # noqa",
            "Layers: entry points > services > adapters > ports > training > protocol",
            "fedrelay.protocol.hashing -> fedrelay.relayer.stage",
        ),
        (
            "fedrelay.coordinator.scoring",
            "import fedrelay.worker.sdk  # noqa",
            "Layers: entry points > services > adapters > ports > training > protocol",
            "fedrelay.coordinator.scoring -> fedrelay.worker.sdk",
        ),
        (
            "fedrelay.adapters.blobstore.store",
            "import fedrelay.coordinator.scoring  # noqa",
            "Layers: entry points > services > adapters > ports > training > protocol",
            "fedrelay.adapters.blobstore.store -> fedrelay.coordinator.scoring",
        ),
        (
            "fedrelay.coordinator.scoring",
            "import fedrelay.adapters.blobstore  # noqa",
            "Services meet adapters only in their composition roots",
            "fedrelay.coordinator.scoring -> fedrelay.adapters.blobstore",
        ),
        (
            "fedrelay.adapters.evm.deploy",
            "import fedrelay.adapters.evm.testing  # noqa",
            "Test doubles live in testing modules, and no production module imports one",
            "fedrelay.adapters.evm.deploy -> fedrelay.adapters.evm.testing",
        ),
    ],
    ids=[
        "protocol-imports-a-service",
        "service-imports-a-service",
        "adapter-imports-a-service",
        "service-imports-an-adapter",
        "production-imports-a-test-double",
    ],
)
def test_a_deliberate_violation_fails_the_lint(
    pristine: Path, tmp_path: Path, module: str, line: str, broken: str, shown: str
) -> None:
    result = _lint(_with_import(pristine, tmp_path, module, line))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{broken} BROKEN" in " ".join(result.stdout.split())
    assert shown in result.stdout
