"""Readiness of running fedrelay processes follows their dependencies.

The relayer (``relayer run --stage all``) on a Kafka broker of the test's own: ready while the
broker runs, not ready (503, the ``kafka`` check failing alone) while it is stopped, ready again
once it is back. The coordinator (``coordinator run``) on an anvil chain of the test's own: not
ready while its chain RPC is unreachable, ready again when it answers; on a ledger without its
schema, not ready with the reason (run ``fedrelay db upgrade``) said once, and ready once upgraded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ops_support import AGGREGATOR_KEY, coordinator_process, relayer_process

from fedrelay.adapters.devnet.services import Anvil, Kafka
from fedrelay.adapters.evm.testing import EvmDeployment
from fedrelay.adapters.ledger import upgrade

pytestmark = pytest.mark.integration

STAGES = {"attest-0", "attest-1", "attest-2", "assemble", "deliver-2", "deliver-4"}
NO_CONTRACT = "0x" + "11" * 20  # readiness asks the chain for its head, not for a contract


def _ready(checks: dict[str, dict[str, object]]) -> dict[str, object]:
    return {name: check["ready"] for name, check in checks.items()}


def test_relayer_is_ready_only_while_its_kafka_is_reachable(
    evm: EvmDeployment, tmp_path: Path
) -> None:
    with (
        Kafka() as broker,
        relayer_process(evm, tmp_path, kafka_bootstrap=broker.bootstrap) as relayer,
    ):
        checks = relayer.wait_ready(True)
        assert set(checks) >= {"kafka", "database", "chain:coordinator", "chain:worker-evm"}
        assert all(_ready(checks).values())
        relayer.wait_stages_running(STAGES)  # past start-up: topics made, stages connected

        broker.stop()
        checks = relayer.wait_ready(False)
        assert _ready(checks)["kafka"] is False
        assert all(ready for name, ready in _ready(checks).items() if name != "kafka")
        assert relayer.alive()
        healthz = relayer.get("/healthz")
        assert healthz is not None
        assert healthz.status_code == 200  # alive, only not ready: no restart wanted

        broker.start()
        checks = relayer.wait_ready(True)
        assert all(_ready(checks).values())
        assert relayer.stop() == 0, relayer.log.read_text()[-6000:]


def test_coordinator_is_ready_only_while_its_chain_answers(tmp_path: Path) -> None:
    with Anvil() as chain:
        key = chain.private_keys[AGGREGATOR_KEY]
        with coordinator_process(chain.rpc_url, NO_CONTRACT, key, tmp_path) as coordinator:
            checks = coordinator.wait_ready(True)
            assert _ready(checks) == {"database": True, "schema": True, "chain": True}

            chain.stop()
            checks = coordinator.wait_ready(False)
            assert _ready(checks) == {"database": True, "schema": True, "chain": False}
            assert coordinator.alive()

            chain.start()
            checks = coordinator.wait_ready(True)
            assert _ready(checks) == {"database": True, "schema": True, "chain": True}
            assert coordinator.stop() == 0, coordinator.log.read_text()[-6000:]
        assert key.removeprefix("0x") not in coordinator.log.read_text()


def test_coordinator_on_a_ledger_without_its_schema_says_once_to_upgrade(tmp_path: Path) -> None:
    with Anvil() as chain:
        key = chain.private_keys[AGGREGATOR_KEY]
        with coordinator_process(
            chain.rpc_url, NO_CONTRACT, key, tmp_path, migrate=False
        ) as coordinator:
            checks = coordinator.wait_ready(False)
            assert checks["schema"] == {
                "ready": False,
                "detail": "the ledger has no schema: run `fedrelay db upgrade`",
            }
            assert coordinator.alive()
            upgrade(f"sqlite+aiosqlite:///{tmp_path / 'coordinator.db'}")
            checks = coordinator.wait_ready(True)
            assert _ready(checks) == {"database": True, "schema": True, "chain": True}
            log = coordinator.stopped_log()
    told = [line for line in log.splitlines() if "coordinator not ready" in line]
    assert len(told) == 1, log
    assert told[0].endswith("the ledger has no schema: run `fedrelay db upgrade`")
    assert "no such table" not in log
