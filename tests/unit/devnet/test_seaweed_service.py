"""How the S3 test server is started: checked credentials, loopback only, nothing sent out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedrelay.adapters.devnet import toolchain
from fedrelay.adapters.devnet.services import SeaweedS3


@pytest.fixture
def weed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    binary = tmp_path / "weed"
    binary.write_text("")
    monkeypatch.setenv("FEDRELAY_WEED", str(binary))
    return binary


def test_the_server_knows_one_identity_and_no_anonymous_one(weed: Path, tmp_path: Path) -> None:
    server = SeaweedS3(workdir=tmp_path / "s3")
    server._prepare()
    config = json.loads((tmp_path / "s3" / "s3-identities.json").read_text())
    assert config["identities"] == [
        {
            "name": "fedrelay",
            "credentials": [
                {"accessKey": server.access_key_id, "secretKey": server.secret_access_key}
            ],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
    ]
    assert (tmp_path / "s3" / "s3-identities.json").stat().st_mode & 0o077 == 0
    assert len(server.secret_access_key) == 40
    assert SeaweedS3(workdir=tmp_path / "other").secret_access_key != server.secret_access_key


def test_it_listens_on_loopback_sends_no_telemetry_and_creates_no_buckets(
    weed: Path, tmp_path: Path
) -> None:
    server = SeaweedS3(workdir=tmp_path)
    argv = server._argv()
    assert argv[:2] == [str(weed), "server"]
    for flag in (
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-s3.autoCreateBucket=false",
        f"-s3.port={server.port}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ):
        assert flag in argv
    ports = [int(a.split("=")[1]) for a in argv if a.split("=")[0].endswith(("port", "grpc"))]
    assert len(ports) == len(set(ports)) == 8
    assert server.endpoint_url == f"http://127.0.0.1:{server.port}"


def test_a_missing_weed_names_make_setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FEDRELAY_WEED", raising=False)
    monkeypatch.setattr(toolchain, "TOOLS_DIR", tmp_path)
    with pytest.raises(toolchain.ToolNotFoundError, match="run `make setup` first"):
        toolchain.weed_binary()


def test_the_coordinator_env_points_at_the_bucket(weed: Path, tmp_path: Path) -> None:
    server = SeaweedS3(workdir=tmp_path)
    env = server.blob_store_env("blobs", "replicas")
    assert env["FEDRELAY_BLOB_STORE"] == "s3://blobs/replicas"
    assert env["FEDRELAY_S3_ENDPOINT_URL"] == server.endpoint_url
    assert env["FEDRELAY_S3_SECRET_ACCESS_KEY"] == server.secret_access_key
