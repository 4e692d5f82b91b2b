"""Threshold attestation in the chart: each guardian runs as one pod with its share mounted from
its own Secret and its signing journal on a claim of its own; attest and assemble get the key's
public values; a configuration missing a share, a group key or a verification share is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_support import CHART, KUBE_VERSION, RELEASE, HelmRun, Rendered, render

from fedrelay.adapters.devnet.guardians import threshold_key

DEALT = threshold_key(2)  # the default values' two guardians
THRESHOLD: dict[str, Any] = {
    "attestation": {
        "mode": "threshold",
        "groupKey": DEALT.group_key.hex(),
        "verificationShares": [DEALT.verification_shares[i].hex() for i in (1, 2)],
        "journal": {"size": "128Mi", "storageClassName": "fast"},
    },
    "relayer": {
        "attest": {
            "guardians": [
                {
                    "name": f"guardian-{i}",
                    "existingSecret": f"fedrelay-guardian-{i}",
                    "existingSecretKey": "guardian.key",
                    "shareSecret": f"fedrelay-share-{i}",
                    "shareSecretKey": "share",
                }
                for i in range(2)
            ]
        }
    },
}


def _values(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "threshold.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="module")
def threshold_release(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return render([_values(tmp_path_factory.mktemp("threshold"), THRESHOLD)])


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0]


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in _container(deployment)["env"]}


def test_each_threshold_guardian_is_one_pod_with_its_share_and_its_journal(
    threshold_release: Rendered,
) -> None:
    for i in range(2):
        deployment = threshold_release.named(
            "Deployment", f"{RELEASE}-fedrelay-attest-guardian-{i}"
        )
        spec = deployment["spec"]
        assert spec["replicas"] == 1
        assert spec["strategy"] == {"type": "Recreate"}
        args = _container(deployment)["args"]
        share = "/var/run/secrets/fedrelay/threshold/share"
        assert args[args.index("--threshold-share-file") + 1] == share
        volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
        assert volumes["threshold-share"]["secret"]["secretName"] == f"fedrelay-share-{i}"
        assert volumes["threshold-share"]["secret"]["items"] == [{"key": "share", "path": "share"}]
        claim = f"{RELEASE}-fedrelay-attest-guardian-{i}-journal"
        assert volumes["journal"]["persistentVolumeClaim"]["claimName"] == claim
        mounts = {m["name"]: m for m in _container(deployment)["volumeMounts"]}
        assert mounts["threshold-share"]["readOnly"] is True
        env = _env(deployment)
        assert mounts["journal"]["mountPath"] == env["FEDRELAY_SIGNING_JOURNAL_DIR"]
        assert env["FEDRELAY_ATTESTATION"] == "threshold"
        pvc = threshold_release.named("PersistentVolumeClaim", claim)
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert pvc["spec"]["storageClassName"] == "fast"
        assert pvc["spec"]["resources"]["requests"]["storage"] == "128Mi"


def test_attest_and_assemble_get_the_keys_public_values(threshold_release: Rendered) -> None:
    assemble = _env(threshold_release.named("Deployment", f"{RELEASE}-fedrelay-assemble"))
    attest = _env(threshold_release.named("Deployment", f"{RELEASE}-fedrelay-attest-guardian-0"))
    for env in (assemble, attest):
        assert env["FEDRELAY_ATTESTATION"] == "threshold"
        assert env["FEDRELAY_THRESHOLD_GROUP_KEY"] == DEALT.group_key.hex()
        assert yaml.safe_load(env["FEDRELAY_THRESHOLD_VERIFICATION_SHARES"]) == [
            DEALT.verification_shares[i].hex() for i in (1, 2)
        ]
        assert env["FEDRELAY_SIGNING_TOPIC"] == "signing"
    assert DEALT.shares[0].secret_bytes().hex() not in threshold_release.text


def test_the_threshold_release_passes_kubernetes_schema_validation(
    threshold_release: Rendered,
) -> None:
    for obj in threshold_release.objects:
        if not obj["apiVersion"].startswith("monitoring.coreos.com/"):
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_guardian_attestation_mounts_no_share_and_claims_no_volume(
    default_release: Rendered,
) -> None:
    assert default_release.of_kind("PersistentVolumeClaim") == [] or all(
        "journal" not in c["metadata"]["name"]
        for c in default_release.of_kind("PersistentVolumeClaim")
    )
    for deployment in default_release.of_kind("Deployment"):
        assert "FEDRELAY_ATTESTATION" not in _env(deployment)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"attestation": {"groupKey": ""}}, "needs the threshold key's group key"),
        (
            {"attestation": {"verificationShares": [DEALT.verification_shares[1].hex()]}},
            "1 given for the 2 guardians",
        ),
        (
            {
                "relayer": {
                    "attest": {
                        "guardians": [
                            {"name": "guardian-0", "existingSecret": "g0", "existingSecretKey": "k"}
                        ]
                    }
                }
            },
            '"guardian-0" needs shareSecret and shareSecretKey',
        ),
        (
            {"relayer": {"attest": {"autoscaling": {"enabled": True}}}},
            "each guardian is one pod",
        ),
    ],
)
def test_an_incomplete_threshold_configuration_is_refused(
    helm: HelmRun, tmp_path: Path, change: dict[str, Any], complaint: str
) -> None:
    def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in top.items():
            both = isinstance(value, dict) and isinstance(out.get(key), dict)
            out[key] = merge(out[key], value) if both else value
        return out

    result = helm(
        "template", RELEASE, str(CHART), "-f", str(_values(tmp_path, merge(THRESHOLD, change)))
    )
    assert result.returncode != 0
    assert complaint in result.stderr
