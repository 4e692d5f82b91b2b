"""The coordinator's trusted model bundles in the chart: hashes and signers reach the process as
FEDRELAY_TRUST_MODELS and FEDRELAY_TRUST_SIGNERS; by default it trusts none; a value that is no
hash is refused by the values schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from helm_support import CHART, RELEASE, HelmRun, Rendered

BUNDLE = "ab" * 32
SIGNER = "0x" + "12" * 20


def _env(manifests: str) -> dict[str, Any]:
    # Read as Kubernetes does (go-yaml): an address is a string, not a YAML 1.1 hex integer.
    for document in yaml.load_all(manifests, Loader=yaml.BaseLoader):
        if (
            document
            and document["kind"] == "Deployment"
            and document["metadata"]["name"] == (f"{RELEASE}-fedrelay-coordinator")
        ):
            container = document["spec"]["template"]["spec"]["containers"][0]
            return {e["name"]: e.get("value") for e in container["env"]}
    raise AssertionError("no coordinator Deployment rendered")


def test_the_default_coordinator_trusts_no_bundle(default_release: Rendered) -> None:
    deployment = default_release.named("Deployment", f"{RELEASE}-fedrelay-coordinator")
    names = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not names & {"FEDRELAY_TRUST_MODELS", "FEDRELAY_TRUST_SIGNERS", "FEDRELAY_TRUST_FILE"}


def test_trusted_hashes_and_signers_reach_the_coordinator(helm: HelmRun, tmp_path: Path) -> None:
    override = tmp_path / "override.yaml"
    trust = {"models": [BUNDLE, "0x" + "cd" * 32], "signers": [SIGNER]}
    override.write_text(yaml.safe_dump({"coordinator": {"trust": trust}}))
    result = helm("template", RELEASE, str(CHART), "-f", str(override))
    assert result.returncode == 0, result.stderr
    env = _env(result.stdout)
    assert env["FEDRELAY_TRUST_MODELS"] == f"{BUNDLE},0x{'cd' * 32}"
    assert env["FEDRELAY_TRUST_SIGNERS"] == SIGNER


def test_a_trusted_model_that_is_no_hash_is_refused(helm: HelmRun, tmp_path: Path) -> None:
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"coordinator": {"trust": {"models": ["latest"]}}}))
    result = helm("template", RELEASE, str(CHART), "-f", str(override))
    assert result.returncode != 0
    assert "trust" in result.stderr
