"""The coordinator's blob store in the chart: a volume by default, an S3 bucket on request.

With ``coordinator.blobStore.type: s3`` every replica gets the bucket's URL, region and endpoint
as ``FEDRELAY_BLOB_STORE`` / ``FEDRELAY_S3_*``, and the key pair as two files of an existing
Secret mounted read-only; no volume for blobs is mounted and no claim is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from helm_support import CHART, RELEASE, HelmRun, Rendered, render

S3_DIR = "/var/run/secrets/fedrelay/s3"


def _coordinator(release: Rendered) -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = release.named("Deployment", f"{RELEASE}-fedrelay-coordinator")
    pod = deployment["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container["env"]}


def _render_with(tmp_path: Path, values: dict[str, Any]) -> Rendered:
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump(values))
    return render([override])


def test_the_default_is_the_directory_store_on_its_volume(default_release: Rendered) -> None:
    pod, container = _coordinator(default_release)
    env = _env(container)
    assert env["FEDRELAY_BLOB_DIR"] == "/var/lib/fedrelay/blobs"
    assert not any(name.startswith(("FEDRELAY_S3_", "FEDRELAY_BLOB_STORE")) for name in env)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["blobs"] == "/var/lib/fedrelay/blobs"
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == "blobs")


def test_production_shares_an_s3_bucket_with_the_key_pair_from_a_secret(
    production_release: Rendered,
) -> None:
    s3 = production_release.values["coordinator"]["blobStore"]["s3"]
    pod, container = _coordinator(production_release)
    env = _env(container)
    assert env["FEDRELAY_BLOB_STORE"] == "s3://fedrelay-blobs/production"
    assert env["FEDRELAY_S3_REGION"] == "us-east-1"
    assert "FEDRELAY_S3_ENDPOINT_URL" not in env  # AWS S3
    assert env["FEDRELAY_S3_ACCESS_KEY_ID_FILE"] == f"{S3_DIR}/access-key-id"
    assert env["FEDRELAY_S3_SECRET_ACCESS_KEY_FILE"] == f"{S3_DIR}/secret-access-key"
    assert "FEDRELAY_BLOB_DIR" not in env
    assert "FEDRELAY_S3_SECRET_ACCESS_KEY" not in env  # never a value in the environment
    volume = next(v for v in pod["volumes"] if v["name"] == "s3-credentials")
    assert volume["secret"] == {
        "secretName": s3["existingSecret"],
        "defaultMode": 0o440,
        "items": [
            {"key": s3["accessKeyIdKey"], "path": "access-key-id"},
            {"key": s3["secretAccessKeyKey"], "path": "secret-access-key"},
        ],
    }
    mount = next(m for m in container["volumeMounts"] if m["name"] == "s3-credentials")
    assert mount == {"name": "s3-credentials", "mountPath": S3_DIR, "readOnly": True}
    assert not any(v["name"] == "blobs" for v in pod["volumes"])
    assert not production_release.of_kind("PersistentVolumeClaim")


def test_an_endpoint_and_no_secret_for_a_pod_identity(tmp_path: Path) -> None:
    release = _render_with(
        tmp_path,
        {
            "coordinator": {
                "replicaCount": 3,
                "blobStore": {
                    "type": "s3",
                    "s3": {"bucket": "blobs", "endpointUrl": "https://s3.example.net"},
                },
            }
        },
    )
    pod, container = _coordinator(release)
    env = _env(container)
    assert env["FEDRELAY_BLOB_STORE"] == "s3://blobs/"
    assert env["FEDRELAY_S3_ENDPOINT_URL"] == "https://s3.example.net"
    assert not any(name.endswith("_FILE") and "S3" in name for name in env)
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "chains"}
    assert release.named("Deployment", f"{RELEASE}-fedrelay-coordinator")["spec"]["replicas"] == 3


def test_lint_passes_with_the_s3_store(helm: HelmRun, tmp_path: Path) -> None:
    override = tmp_path / "override.yaml"
    override.write_text(
        yaml.safe_dump(
            {
                "coordinator": {
                    "blobStore": {
                        "type": "s3",
                        "s3": {"bucket": "blobs", "existingSecret": "fedrelay-blob-store"},
                    }
                }
            }
        )
    )
    result = helm("lint", "--strict", str(CHART), "-f", str(override))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_bucket_name_s3_would_refuse_is_refused(helm: HelmRun, tmp_path: Path) -> None:
    override = tmp_path / "override.yaml"
    override.write_text(
        yaml.safe_dump({"coordinator": {"blobStore": {"type": "s3", "s3": {"bucket": "No_Way"}}}})
    )
    result = helm("template", RELEASE, str(CHART), "-f", str(override))
    assert result.returncode != 0
    assert "/coordinator/blobStore/s3/bucket" in result.stderr
