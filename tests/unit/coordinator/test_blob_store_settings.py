"""FEDRELAY_BLOB_STORE and FEDRELAY_S3_*: which blob store the coordinator process opens."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fedrelay.adapters.blobstore import FileBlobStore
from fedrelay.adapters.blobstore.s3 import S3BlobStore
from fedrelay.coordinator.process import open_blob_store
from fedrelay.coordinator.settings import BlobStoreSettings, CoordinatorSettings

SECRET = "s3-secret-0123456789abcdef"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "FEDRELAY_BLOB_STORE",
        "FEDRELAY_BLOB_DIR",
        "FEDRELAY_S3_ENDPOINT_URL",
        "FEDRELAY_S3_REGION",
        "FEDRELAY_S3_ACCESS_KEY_ID",
        "FEDRELAY_S3_ACCESS_KEY_ID_FILE",
        "FEDRELAY_S3_SECRET_ACCESS_KEY",
        "FEDRELAY_S3_SECRET_ACCESS_KEY_FILE",
    ):
        monkeypatch.delenv(name, raising=False)


def test_unset_is_the_directory_store_at_the_blob_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FEDRELAY_BLOB_DIR", str(tmp_path / "blobs"))
    store = open_blob_store(CoordinatorSettings(), BlobStoreSettings())
    assert isinstance(store, FileBlobStore)
    assert store.root == tmp_path / "blobs"


def test_a_file_url_is_the_directory_store_there(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FEDRELAY_BLOB_STORE", f"file://{tmp_path}/shared")
    store = open_blob_store(CoordinatorSettings(), BlobStoreSettings())
    assert isinstance(store, FileBlobStore)
    assert store.root == tmp_path / "shared"


def test_an_s3_url_is_the_bucket_and_prefix_with_the_s3_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEDRELAY_BLOB_STORE", "s3://fedrelay-blobs/production/v1")
    monkeypatch.setenv("FEDRELAY_S3_ENDPOINT_URL", "http://127.0.0.1:8333")
    monkeypatch.setenv("FEDRELAY_S3_ACCESS_KEY_ID", "coordinator")
    monkeypatch.setenv("FEDRELAY_S3_SECRET_ACCESS_KEY", SECRET)
    settings = BlobStoreSettings()
    store = open_blob_store(CoordinatorSettings(), settings)
    assert isinstance(store, S3BlobStore)
    assert store.bucket == "fedrelay-blobs"
    assert store.key_of("ab" * 32) == "production/v1/ab/" + "ab" * 32
    assert store.location == "s3://fedrelay-blobs/production/v1/ at http://127.0.0.1:8333"
    assert SECRET not in repr(store)
    assert SECRET not in repr(settings)


def test_the_key_pair_can_come_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "id").write_text("coordinator\n")
    (tmp_path / "secret").write_text(SECRET + "\n")
    monkeypatch.setenv("FEDRELAY_S3_ACCESS_KEY_ID_FILE", str(tmp_path / "id"))
    monkeypatch.setenv("FEDRELAY_S3_SECRET_ACCESS_KEY_FILE", str(tmp_path / "secret"))
    assert BlobStoreSettings().s3_credentials() == ("coordinator", SECRET)


def test_no_key_pair_leaves_boto3_its_default_chain() -> None:
    assert BlobStoreSettings().s3_credentials() == (None, None)


def test_half_a_key_pair_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDRELAY_BLOB_STORE", "s3://bucket")
    monkeypatch.setenv("FEDRELAY_S3_SECRET_ACCESS_KEY", SECRET)
    with pytest.raises(ValueError, match="set both FEDRELAY_S3_ACCESS_KEY_ID") as refused:
        open_blob_store(CoordinatorSettings(), BlobStoreSettings())
    assert SECRET not in str(refused.value)


@pytest.mark.parametrize(
    "url", ["bucket", "s3://", "s3:///prefix", "gs://bucket", "file://host/path", "s3://b?x=1"]
)
def test_an_unknown_store_url_is_refused(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("FEDRELAY_BLOB_STORE", url)
    with pytest.raises(ValidationError, match=r"s3://<bucket>\[/<prefix>\] or file://<path>"):
        BlobStoreSettings()
