"""tools/check_worker_extra.py, on pip installation reports written by hand (no index needed)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

_SCRIPT = Path(__file__).resolve().parents[3] / "tools" / "check_worker_extra.py"


@pytest.fixture(scope="module")
def check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_worker_extra", _SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _report(tmp_path: Path, *names: str) -> Path:
    path = tmp_path / "report.json"
    install = [{"metadata": {"name": n, "version": "1.0"}} for n in names]
    path.write_text(json.dumps({"version": "1", "install": install}))
    return path


def test_a_worker_only_report_passes(
    check: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _report(tmp_path, "torch", "scikit-learn", "httpx", "web3", "solana", "fedrelay")
    assert check.main([str(report)]) == 0
    assert "6 distributions" in capsys.readouterr().out


def test_another_roles_package_fails_under_any_spelling(
    check: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _report(tmp_path, "torch", "SQLAlchemy", "fastapi", "Matplotlib")
    assert check.main([str(report)]) == 1
    assert "would install fastapi, matplotlib, sqlalchemy" in capsys.readouterr().err


def test_a_file_that_is_no_report_is_refused(check: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="installation report"):
        check.main([str(path)])
