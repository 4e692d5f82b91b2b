"""The coordinator's RewardDistributor in the chart: `coordinator.rewardDistributor` reaches the
process as FEDRELAY_REWARD_DISTRIBUTOR; by default it is unset (rewards credited to each worker's
payout); a value that is no address is refused by the values schema. `coordinator.claimForWorkers`
sets FEDRELAY_CLAIM_FOR_WORKERS, only with a distributor."""

from __future__ import annotations

from pathlib import Path

import yaml
from helm_support import CHART, RELEASE, HelmRun, Rendered
from test_helm_coordinator_trust import _env

DISTRIBUTOR = "0x" + "5d" * 20


def test_by_default_the_coordinator_has_no_distributor(default_release: Rendered) -> None:
    deployment = default_release.named("Deployment", f"{RELEASE}-fedrelay-coordinator")
    names = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "FEDRELAY_REWARD_DISTRIBUTOR" not in names


def test_the_distributor_reaches_the_coordinator(helm: HelmRun, tmp_path: Path) -> None:
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"coordinator": {"rewardDistributor": DISTRIBUTOR}}))
    result = helm("template", RELEASE, str(CHART), "-f", str(override))
    assert result.returncode == 0, result.stderr
    assert _env(result.stdout)["FEDRELAY_REWARD_DISTRIBUTOR"] == DISTRIBUTOR


def test_a_distributor_that_is_no_address_is_refused(helm: HelmRun, tmp_path: Path) -> None:
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"coordinator": {"rewardDistributor": "0x1234"}}))
    result = helm("template", RELEASE, str(CHART), "-f", str(override))
    assert result.returncode != 0
    assert "rewardDistributor" in result.stderr


def test_claims_for_the_workers_need_a_distributor(helm: HelmRun, tmp_path: Path) -> None:
    override = tmp_path / "override.yaml"
    both = {"rewardDistributor": DISTRIBUTOR, "claimForWorkers": True}
    override.write_text(yaml.safe_dump({"coordinator": both}))
    result = helm("template", RELEASE, str(CHART), "-f", str(override))
    assert result.returncode == 0, result.stderr
    assert _env(result.stdout)["FEDRELAY_CLAIM_FOR_WORKERS"] == "true"

    override.write_text(yaml.safe_dump({"coordinator": {"claimForWorkers": True}}))
    result = helm("template", RELEASE, str(CHART), "-f", str(override))
    assert result.returncode != 0
    assert "set coordinator.rewardDistributor too" in result.stderr


def test_by_default_the_coordinator_claims_for_nobody(default_release: Rendered) -> None:
    deployment = default_release.named("Deployment", f"{RELEASE}-fedrelay-coordinator")
    names = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "FEDRELAY_CLAIM_FOR_WORKERS" not in names
