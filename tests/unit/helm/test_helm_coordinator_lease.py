"""The coordinator's leader lease in the chart: every replica gets the lease's settings and its
pod name as holder id, so the replicas of a release share one lease in the ledger; a renewal
interval that is not below the lease is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from helm_support import CHART, RELEASE, HelmRun, Rendered


def _env(release: Rendered) -> dict[str, Any]:
    deployment = release.named("Deployment", f"{RELEASE}-fedrelay-coordinator")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_each_replica_is_a_holder_of_the_default_lease(default_release: Rendered) -> None:
    env = _env(default_release)
    assert env["FEDRELAY_INSTANCE_ID"] == "$(POD_NAME)"
    assert (env["FEDRELAY_LEASE_SECONDS"], env["FEDRELAY_LEASE_RENEW_SECONDS"]) == ("10", "3")
    assert "FEDRELAY_LEASE_NAME" not in env  # the process's default: coordinator


def test_production_replicas_share_one_named_lease(production_release: Rendered) -> None:
    coordinator = production_release.values["coordinator"]
    assert coordinator["replicaCount"] >= 2
    env = _env(production_release)
    assert env["FEDRELAY_LEASE_NAME"] == coordinator["lease"]["name"] == "coordinator"
    assert env["FEDRELAY_INSTANCE_ID"] == "$(POD_NAME)"
    assert float(env["FEDRELAY_LEASE_RENEW_SECONDS"]) < float(env["FEDRELAY_LEASE_SECONDS"])


def test_a_renewal_not_below_the_lease_is_refused(helm: HelmRun, tmp_path: Path) -> None:
    override = tmp_path / "override.yaml"
    override.write_text(
        yaml.safe_dump({"coordinator": {"lease": {"seconds": 5, "renewSeconds": 5}}})
    )
    result = helm("template", RELEASE, str(CHART), "-f", str(override))
    assert result.returncode != 0
    assert "coordinator.lease.renewSeconds (5) must be below coordinator.lease.seconds (5)" in (
        result.stderr
    )
