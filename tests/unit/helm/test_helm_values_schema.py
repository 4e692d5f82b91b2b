"""Values that break the chart's rules are refused by helm, with a message naming the fault."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_support import CHART, HelmRun

# Kubernetes objects passed through unchanged (the API server checks them).
PASS_THROUGH = {
    "/properties/affinity",
    "/properties/tolerations/items",
    "/$defs/envList/items",
}


def _objects(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append((path, node))
        for key, child in node.items():
            found += _objects(child, f"{path}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _objects(child, f"{path}/{index}")
    return found


def test_schema_closes_every_object() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    objects = _objects(schema)
    assert len(objects) > 30
    for path, node in objects:
        if path in PASS_THROUGH or path == "/$defs/stringMap":
            continue
        assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"


def _template(helm: HelmRun, tmp_path: Path, values: dict[str, Any]) -> tuple[int, str]:
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump(values))
    result = helm("template", "fr", str(CHART), "-f", str(override))
    return result.returncode, result.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"relayer": {"watch": {"replicaCont": 2}}},
            "at '/relayer/watch': additional properties 'replicaCont' not allowed",
            id="typo-in-stage",
        ),
        pytest.param(
            {"coordinatr": {"enabled": True}},
            "additional properties 'coordinatr' not allowed",
            id="typo-at-top",
        ),
        pytest.param(
            {
                "relayer": {
                    "deliver": {"chains": [{"name": "coordinator", "existingSecretKey": "k"}]}
                }
            },
            "at '/relayer/deliver/chains/0': missing property 'existingSecret'",
            id="deliver-key-without-secret",
        ),
        pytest.param(
            {
                "relayer": {
                    "attest": {
                        "guardians": [{"name": "g", "existingSecret": "", "existingSecretKey": "k"}]
                    }
                }
            },
            "at '/relayer/attest/guardians/0/existingSecret'",
            id="guardian-secret-empty",
        ),
        pytest.param(
            {"database": {"existingSecret": None}},
            "at '/database': missing property 'existingSecret'",
            id="database-secret-unset",
        ),
        pytest.param(
            {
                "relayer": {
                    "deliver": {
                        "chains": [
                            {
                                "name": "c",
                                "privateKey": "0x01",
                                "existingSecret": "s",
                                "existingSecretKey": "k",
                            }
                        ]
                    }
                }
            },
            "additional properties 'privateKey' not allowed",
            id="key-in-values",
        ),
        pytest.param(
            {"containerSecurityContext": {"readOnlyRootFilesystem": False}},
            "at '/containerSecurityContext/readOnlyRootFilesystem'",
            id="writable-root",
        ),
        pytest.param(
            {
                "chains": [
                    {
                        "name": "x",
                        "wormholeChainId": 2,
                        "kind": "cosmos",
                        "rpcUrl": "http://a",
                        "address": "0x" + "1" * 40,
                        "finality": "latest",
                    }
                ]
            },
            "at '/chains/0/kind'",
            id="unknown-chain-kind",
        ),
    ],
)
def test_schema_violations_are_rejected_with_their_location(
    helm: HelmRun, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    code, stderr = _template(helm, tmp_path, values)
    assert code != 0
    assert "values don't meet the specifications of the schema" in stderr
    assert message in stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"relayer": {"watch": {"chains": ["coordinator", "nosuch"]}}},
            'relayer.watch.chains names chain "nosuch", which is not in .Values.chains',
            id="watch-unknown-chain",
        ),
        pytest.param(
            {
                "relayer": {
                    "deliver": {
                        "chains": [
                            {
                                "name": "coordinator",
                                "existingSecret": "a",
                                "existingSecretKey": "k",
                            },
                            {
                                "name": "coordinator",
                                "existingSecret": "b",
                                "existingSecretKey": "k",
                            },
                        ]
                    }
                }
            },
            'relayer.deliver.chains: the chain "coordinator" is listed twice',
            id="deliver-chain-twice",
        ),
        pytest.param(
            {"coordinator": {"chain": "elsewhere"}},
            'coordinator.chain names chain "elsewhere"',
            id="coordinator-unknown-chain",
        ),
        pytest.param(
            {
                "relayer": {
                    "assemble": {
                        "autoscaling": {
                            "enabled": True,
                            "minReplicas": 5,
                            "maxReplicas": 2,
                            "targetCPUUtilizationPercentage": 70,
                        }
                    }
                }
            },
            "relayer.assemble.autoscaling: minReplicas (5) is greater than maxReplicas (2)",
            id="autoscaling-bounds",
        ),
        pytest.param(
            {"relayer": {"assemble": {"replicaCount": 5}}},
            "relayer.assemble: 5 replicas cannot share 3 partitions (kafka.topicPartitions)",
            id="more-consumers-than-partitions",
        ),
        pytest.param(
            {"coordinator": {"replicaCount": 2}},
            "coordinator: more than one replica needs a shared blob store",
            id="coordinator-replicas-without-shared-blobs",
        ),
        pytest.param(
            {"coordinator": {"blobStore": {"type": "s3"}}},
            "coordinator.blobStore.s3.bucket: the s3 blob store needs an existing bucket",
            id="s3-without-bucket",
        ),
        pytest.param(
            {
                "coordinator": {
                    "persistence": {"enabled": True},
                    "blobStore": {"type": "s3", "s3": {"bucket": "blobs"}},
                }
            },
            "coordinator.persistence: with blobStore.type s3 the blobs are in the bucket",
            id="s3-with-an-unused-volume",
        ),
    ],
)
def test_inconsistent_values_fail_rendering_with_a_clear_message(
    helm: HelmRun, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    code, stderr = _template(helm, tmp_path, values)
    assert code != 0
    assert message in stderr


def test_lint_reports_schema_violations_too(helm: HelmRun, tmp_path: Path) -> None:
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"kafka": {"bootstrp": "k:9092"}}))
    result = helm("lint", "--strict", str(CHART), "-f", str(override))
    assert result.returncode != 0
    assert "additional properties 'bootstrp' not allowed" in result.stdout + result.stderr
