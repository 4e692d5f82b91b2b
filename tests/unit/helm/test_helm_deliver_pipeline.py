"""The deliver stage's pipeline settings in the chart, and several deliver instances for one
chain: one Deployment each, with its own key, its own selector and its own transactional id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from helm_support import RELEASE, Rendered, render


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_every_deliverer_gets_the_window_batch_and_confirm_settings(
    default_release: Rendered,
) -> None:
    env = _env(default_release.named("Deployment", f"{RELEASE}-fedrelay-deliver-worker-evm"))
    assert env["FEDRELAY_DELIVER_WINDOW"] == "32"
    assert env["FEDRELAY_DELIVER_BATCH_SIZE"] == "256"
    assert env["FEDRELAY_DELIVER_BATCH_MAX"] == "1"
    assert env["FEDRELAY_DELIVER_BATCHES_IN_FLIGHT"] == "4"
    assert env["FEDRELAY_CONFIRM_TIMEOUT_S"] == "30"


def test_instances_of_one_chain_each_get_a_deployment_of_their_own(tmp_path: Path) -> None:
    override = tmp_path / "override.yaml"
    instances = [
        {"name": name, "existingSecret": f"signer-{name}", "existingSecretKey": "signer.key"}
        for name in ("a", "b")
    ]
    chains = [
        {"name": "coordinator", "existingSecret": "s", "existingSecretKey": "k"},
        {"name": "worker-evm", "instances": instances},
    ]
    override.write_text(yaml.safe_dump({"relayer": {"deliver": {"chains": chains}}}))
    release = render([override])
    deployments = [
        release.named("Deployment", f"{RELEASE}-fedrelay-deliver-worker-evm-{name}")
        for name in ("a", "b")
    ]
    selectors = [d["spec"]["selector"]["matchLabels"] for d in deployments]
    assert selectors[0] != selectors[1]
    assert [s["fedrelay.io/shard"] for s in selectors] == ["a", "b"]
    assert [_env(d)["FEDRELAY_INSTANCE"] for d in deployments] == [
        "deliver-worker-evm-a", "deliver-worker-evm-b",
    ]  # fmt: skip
    secrets = [
        volume["secret"]["secretName"]
        for d in deployments
        for volume in d["spec"]["template"]["spec"]["volumes"]
        if "secret" in volume
    ]
    assert secrets == ["signer-a", "signer-b"]
