"""Tool lookups fail with a message that says how to fix them."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrelay.adapters.devnet import toolchain
from fedrelay.adapters.devnet.process import ServiceStartError, wait_until


def test_missing_tool_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(toolchain, "TOOLS_DIR", tmp_path)
    monkeypatch.delenv("FEDRELAY_ANVIL", raising=False)
    with pytest.raises(toolchain.ToolNotFoundError, match=r"anvil not found .*make setup"):
        toolchain.foundry_binary("anvil")
    with pytest.raises(toolchain.ToolNotFoundError, match="Kafka broker jars not found"):
        toolchain.kafka_classpath()


def test_installed_tools_are_found() -> None:
    assert toolchain.foundry_binary("anvil").name == "anvil"
    assert toolchain.foundry_binary("forge").name == "forge"
    assert "kafka_2.13-" in toolchain.kafka_classpath()
    assert (toolchain.postgres_bindir() / "initdb").exists()


def test_start_error_quotes_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    error = ServiceStartError("svc", "port busy", log)
    assert "svc failed to start: port busy" in str(error)
    assert "line 99" in str(error)
    assert "line 10\n" not in str(error)  # only the tail


def test_wait_until_times_out_naming_the_condition() -> None:
    with pytest.raises(TimeoutError, match="the impossible"):
        wait_until(lambda: False, timeout=0.2, what="the impossible")


def test_wait_until_reports_a_dead_process_at_once() -> None:
    with pytest.raises(ChildProcessError, match="exited while waiting for readiness"):
        wait_until(lambda: False, timeout=30, what="readiness", alive=lambda: False)
