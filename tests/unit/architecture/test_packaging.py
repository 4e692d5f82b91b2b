"""The wheel installs one import name, ``fedrelay``, with the service folders mapped into it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    # Built from a copy of the packaging inputs, links kept: setuptools reuses a checkout's
    # build/ folder, which can still hold modules that no longer exist.
    src = tmp_path_factory.mktemp("src")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in ("fedrelay", "relayer", "coordinator", "adapters", "worker"):
        shutil.copytree(ROOT / folder, src / folder, symlinks=True, ignore=skip)
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
    command += ["--no-build-isolation", "--wheel-dir", str(out), str(src)]
    subprocess.run(command, check=True)
    (built,) = out.glob("fedrelay-*.whl")
    return zipfile.ZipFile(built)


def test_the_only_top_level_import_name_is_fedrelay(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert wheel.read(top_level).decode().split() == ["fedrelay"]
    roots = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert roots == {"fedrelay"}


def test_the_service_folders_are_inside_the_namespace(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for module in (
        "fedrelay/relayer/stages/deliver.py",
        "fedrelay/coordinator/service.py",
        "fedrelay/adapters/evm/relay.py",
        "fedrelay/worker/sdk/node.py",
        "fedrelay/protocol/wormhole/payloads.py",
        "fedrelay/ports/relay.py",
    ):
        assert module in names
    assert "fedrelay/worker/py.typed" in names
