"""The proposal watch in the chart: off by default; when enabled, one pod running
`fedrelay worker watch-proposals` against the named coordinator chain's RPC and JobMarket, with the
disprover's key mounted from its Secret (or none: report only), and refused on a chain that is
not EVM. The rendered objects pass Kubernetes' schemas."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import yaml
from helm_support import CHART, KUBE_VERSION, RELEASE, HelmRun, Rendered, render

NAME = f"{RELEASE}-fedrelay-proposal-watch"


def _enabled(tmp_path: Path, **watch: object) -> Rendered:
    override = tmp_path / "watch.yaml"
    override.write_text(yaml.safe_dump({"proposalWatch": {"enabled": True, **watch}}))
    return render([override])


def _container(release: Rendered) -> dict:  # type: ignore[type-arg]
    deployment = release.named("Deployment", NAME)
    return deployment["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def test_by_default_there_is_no_proposal_watch(default_release: Rendered) -> None:
    components = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]
        for d in default_release.of_kind("Deployment")
    }
    assert "proposal-watch" not in components


def test_the_watch_reads_the_coordinator_chain_and_disproves_with_its_key(tmp_path: Path) -> None:
    release = _enabled(
        tmp_path,
        jobs=[3, 7],
        recheckIntervalSeconds=30,
        disproverKey={"existingSecret": "watch-keys", "existingSecretKey": "auditor.key"},
    )
    coordinator = next(c for c in release.values["chains"] if c["name"] == "coordinator")
    deployment = release.named("Deployment", NAME)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    container = _container(release)
    args = container["args"]
    assert args[:2] == ["worker", "watch-proposals"]
    pairs = dict(zip(args[2::2], args[3::2], strict=False))
    assert pairs["--rpc-url"] == coordinator["rpcUrl"]
    assert pairs["--job-market"] == coordinator["address"]
    assert pairs["--recheck-interval"] == "30"
    assert pairs["--disprove-key-file"] == "/var/run/secrets/fedrelay/disprover/key"
    assert [args[i + 1] for i, a in enumerate(args) if a == "--job"] == ["3", "7"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FEDRELAY_HEALTH_PORT"] == "8080"  # the watch serves /metrics and probes there
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    secrets = [v["secret"] for v in volumes if "secret" in v]
    assert {"secretName": "watch-keys"}.items() <= secrets[0].items()
    assert secrets[0]["items"] == [{"key": "auditor.key", "path": "key"}]
    for obj in release.objects:
        if obj["metadata"]["name"] == NAME:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_without_a_key_the_watch_only_reports(tmp_path: Path) -> None:
    args = _container(_enabled(tmp_path))["args"]
    assert "--disprove-key-file" not in args
    assert "--job" not in args


def test_a_chain_that_is_not_evm_or_not_listed_is_refused(helm: HelmRun, tmp_path: Path) -> None:
    for chain, message in (
        ("worker-solana", "of kind solana"),
        ("nowhere", "not in .Values.chains"),
    ):
        override = tmp_path / "watch.yaml"
        override.write_text(yaml.safe_dump({"proposalWatch": {"enabled": True, "chain": chain}}))
        result = helm("template", RELEASE, str(CHART), "-f", str(override))
        assert result.returncode != 0
        assert message in result.stderr
