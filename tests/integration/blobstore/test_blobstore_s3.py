"""The S3 blob store against a real S3-compatible server (SeaweedFS, started once per session).

It runs the port's whole contract (tests/support/blobstore_contract.py), then what only a remote
store can get wrong: the layout it shares with the directory store, two stores sharing a bucket
as coordinator replicas do, and the backend's failures (a refused key, a missing bucket, an
unreachable endpoint), each a clear error that never holds the secret key.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from support.blobstore_contract import BIG, DATA, LIMIT, BlobStoreContract, chunks

from fedrelay.adapters.blobstore import FileBlobStore, blob_name
from fedrelay.adapters.blobstore.s3 import (
    BucketNotFound,
    CredentialsRefused,
    EndpointUnreachable,
    S3BlobStore,
)
from fedrelay.adapters.devnet.process import free_port
from fedrelay.adapters.devnet.services import SeaweedS3
from fedrelay.coordinator.process import open_blob_store
from fedrelay.coordinator.settings import BlobStoreSettings, CoordinatorSettings
from fedrelay.ports.blobs import (
    COORDINATOR,
    POSTER,
    BlobCorrupt,
    BlobHashMismatch,
    BlobStore,
    BlobStoreUnavailable,
)

pytestmark = pytest.mark.integration


def s3_store(server: SeaweedS3, bucket: str, **overrides: Any) -> S3BlobStore:
    options: dict[str, Any] = {
        "endpoint_url": server.endpoint_url,
        "region": server.region,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "max_size": LIMIT,
        "max_attempts": 1,
        **overrides,
    }
    return S3BlobStore(bucket, **options)


@pytest.fixture(scope="module")
def shared_bucket(s3_server: SeaweedS3) -> str:
    """One bucket for the contract's tests, each under a prefix of its own."""
    return s3_server.create_bucket("contract")


class TestS3BlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self, s3_server: SeaweedS3, shared_bucket: str) -> S3BlobStore:
        return s3_store(s3_server, shared_bucket, prefix=f"test-{uuid.uuid4().hex[:12]}")

    @pytest.fixture(autouse=True)
    def server(self, s3_server: SeaweedS3) -> None:
        self._server = s3_server

    async def tamper(self, store: BlobStore, name: str, data: bytes) -> None:
        assert isinstance(store, S3BlobStore)
        self._server.client().put_object(Bucket=store.bucket, Key=store.key_of(name), Body=data)


async def test_the_layout_is_the_directory_store_s(s3_server: SeaweedS3, tmp_path: Path) -> None:
    bucket = s3_server.create_bucket()
    s3 = s3_store(s3_server, bucket, prefix="fleet/blobs/")
    files = FileBlobStore(tmp_path)
    name = await s3.put(DATA, domain=POSTER)
    await files.put(DATA, domain=POSTER)
    listed = s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]
    keys = sorted(str(item["Key"]) for item in listed)
    blob = f"{name[:2]}/{name}"
    assert keys == [f"fleet/blobs/{blob}", f"fleet/blobs/{blob}.domains/poster"]
    assert files.path_of(name) == tmp_path / blob
    assert await files.domains(name) == {POSTER}
    assert (tmp_path / f"{blob}.domains" / "poster").exists()


async def test_replicas_on_one_bucket_see_each_other_s_blobs(s3_server: SeaweedS3) -> None:
    bucket = s3_server.create_bucket()
    first, second = s3_store(s3_server, bucket), s3_store(s3_server, bucket)
    name = await first.put(DATA, domain=COORDINATOR)
    assert await second.get(name) == DATA
    await second.put(DATA, domain=POSTER)
    assert await first.domains(name) == {COORDINATOR, POSTER}
    await first.check()


async def test_the_coordinator_s_settings_open_the_bucket(
    s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_server.create_bucket()
    for name, value in s3_server.blob_store_env(bucket, "replicas").items():
        monkeypatch.setenv(name, value)
    store = open_blob_store(CoordinatorSettings(), BlobStoreSettings())
    assert isinstance(store, S3BlobStore)
    name = await store.put(DATA, domain=COORDINATOR)
    head = s3_server.client().head_object(Bucket=bucket, Key=f"replicas/{name[:2]}/{name}")
    assert head["ContentLength"] == len(DATA)
    assert await store.get(name) == DATA


async def test_a_stored_object_above_the_limit_is_corrupt(s3_server: SeaweedS3) -> None:
    bucket = s3_server.create_bucket()
    store = s3_store(s3_server, bucket, max_stream_size=LIMIT)
    name = await store.put(b"small", domain=POSTER)
    s3_server.client().put_object(Bucket=bucket, Key=store.key_of(name), Body=b"y" * (LIMIT + 1))
    with pytest.raises(BlobCorrupt, match="above the limit"):
        await store.get(name)


async def test_a_wrong_secret_key_is_refused_clearly_without_the_key(
    s3_server: SeaweedS3,
) -> None:
    bucket = s3_server.create_bucket()
    name = await s3_store(s3_server, bucket).put(DATA, domain=POSTER)
    wrong = "wrong-secret-" + "9" * 27
    store = s3_store(s3_server, bucket, secret_access_key=wrong)
    calls = (
        store.get(name),
        store.put(DATA, domain=POSTER),
        store.exists(name),
        store.domains(name),
        store.check(),
    )
    for call in calls:
        with pytest.raises(CredentialsRefused) as refused:
            await call
        text = f"{refused.value} {refused.value!r}"
        assert "refused the credentials of access key id 'fedrelay-test'" in text
        assert "check the access key id and secret key" in text
        assert wrong not in text
        assert s3_server.secret_access_key not in text
        assert refused.value.__cause__ is None
        assert refused.value.__suppress_context__
    assert wrong not in repr(store)


async def test_an_unknown_access_key_is_refused(s3_server: SeaweedS3) -> None:
    store = s3_store(s3_server, s3_server.create_bucket(), access_key_id="nobody")
    with pytest.raises(CredentialsRefused, match="access key id 'nobody'"):
        await store.put(DATA, domain=POSTER)


async def test_a_missing_bucket_is_named(s3_server: SeaweedS3) -> None:
    store = s3_store(s3_server, "no-such-bucket-here")
    for call in (store.get(blob_name(DATA)), store.put(DATA, domain=POSTER), store.check()):
        with pytest.raises(BucketNotFound, match="bucket 'no-such-bucket-here' does not exist"):
            await call
    with pytest.raises(BucketNotFound):
        await store.exists(blob_name(DATA))


async def test_an_unreachable_endpoint_says_so() -> None:
    store = S3BlobStore(
        "any",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        access_key_id="id",
        secret_access_key="secret-that-must-not-show",
        connect_timeout=1,
        max_attempts=1,
    )
    with pytest.raises(EndpointUnreachable, match="unreachable") as failed:
        await store.get(blob_name(DATA))
    assert isinstance(failed.value, BlobStoreUnavailable)
    assert "secret-that-must-not-show" not in str(failed.value)


async def test_a_refused_multipart_upload_leaves_no_parts_and_no_object(
    s3_server: SeaweedS3,
) -> None:
    bucket = s3_server.create_bucket()
    store = s3_store(s3_server, bucket, prefix="big/")
    wrong = blob_name(b"the bytes the worker committed to")
    with pytest.raises(BlobHashMismatch, match="nothing was stored"):
        await store.put_stream(chunks(BIG), wrong, domain=POSTER)
    client = s3_server.client()
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    name = await store.put_stream(chunks(BIG), domain=COORDINATOR)  # through the staging key
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == sorted([store.key_of(name), f"{store.key_of(name)}.domains/coordinator"])
    assert await store.verify(name) == len(BIG)
