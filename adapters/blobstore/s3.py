"""The blob store on an S3-compatible object store, so that coordinator replicas share one.

The directory store (:class:`~fedrelay.adapters.blobstore.store.FileBlobStore`) suits one
process; replicas on several machines need a store they all reach. This one keeps the same
content-addressed layout under a bucket (and an optional key prefix): the blob ``name`` is the
object ``<prefix><first two hex digits>/<name>``, and each trust domain that put it is an empty
marker object ``<prefix><xx>/<name>.domains/<domain, percent-encoded>``. An S3 PUT is atomic (a
reader sees the whole object or none), a marker is written only after its blob, and writing a
marker twice is harmless, so replicas can put the same blob and domains at once.

The store makes the same checks as the directory store: sizes on the way in, the hash on the way
in and on the way out, so bytes changed in the bucket are :class:`BlobCorrupt`, never served.

Failures of the backend itself are :class:`BlobStoreUnavailable` subclasses, each with a message
that names the endpoint, bucket and access key id and says what to fix: :class:`BucketNotFound`,
:class:`CredentialsRefused`, :class:`EndpointUnreachable`. The secret key never appears in them:
they are written from the server's error code and message, and any occurrence of the secret is
masked as well, in case a server echoes it.

Large blobs stream both ways, one part in memory at a time. A streamed put is a multipart
upload, hashed part by part; with the expected name known it goes straight to the blob's key and
is completed only once the hash is checked (S3 shows the object only on completion, so a failed
or half-finished upload is never visible, and an aborted one leaves no parts behind). Without an
expected name it goes to a staging key under ``<prefix>.incoming/`` and is copied into place once
the name is known. Streamed reads are ranged GETs.

boto3 is synchronous; each call runs in a worker thread (:func:`asyncio.to_thread`), on one
client, which boto3 documents as safe to share between threads.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from fedrelay.adapters.blobstore.store import (
    StreamDigest,
    checked_upload,
    file_chunks,
    verified,
    verified_stream,
)
from fedrelay.ports.blobs import (
    DEFAULT_MAX_BLOB_BYTES,
    DEFAULT_MAX_STREAM_BYTES,
    STREAM_CHUNK_BYTES,
    BlobCorrupt,
    BlobNotFound,
    BlobStoreUnavailable,
    BlobTooLarge,
    check_domain,
    check_name,
    check_range,
)
from fedrelay.protocol.redact import MASK, redact_url

T = TypeVar("T")

#: The size of each part of a streamed put (S3 wants at least 5 MiB but for the last part).
PART_BYTES = 8 * 1024 * 1024

#: The region used when none is configured (S3-compatible servers mostly ignore it).
DEFAULT_REGION = "us-east-1"

# Error codes an S3 server answers when it does not accept the request's credentials.
_REFUSED = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "AuthorizationHeaderMalformed",
        "InvalidSecurity",
        "403",
    }
)
_MISSING_KEY = frozenset({"NoSuchKey", "404", "NotFound"})


class BucketNotFound(BlobStoreUnavailable):
    """The configured bucket does not exist on the endpoint."""


class CredentialsRefused(BlobStoreUnavailable):
    """The endpoint refused the store's credentials (or none were found)."""


class EndpointUnreachable(BlobStoreUnavailable):
    """The endpoint did not answer (down, wrong address, or a network failure)."""


class S3BlobStore:
    """A :class:`~fedrelay.ports.blobs.BlobStore` in a bucket of an S3-compatible service."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = DEFAULT_REGION,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        max_size: int = DEFAULT_MAX_BLOB_BYTES,
        max_stream_size: int = DEFAULT_MAX_STREAM_BYTES,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
    ) -> None:
        """Connect to a bucket (no request is made until the first call).

        Args:
            bucket: The bucket; it must exist (the store never creates one).
            prefix: A key prefix under which the blobs live (``""``: the bucket's root; a
                non-empty one gets a trailing ``/`` if it lacks one).
            endpoint_url: The service's URL (``None``: AWS S3 of ``region``). Other
                S3-compatible services are addressed path-style.
            region: The signing region.
            access_key_id: The access key id; with ``secret_access_key``. Both ``None``: boto3's
                default credential chain (``AWS_*`` variables, an instance or pod role).
            secret_access_key: The secret key; it never appears in an error.
            max_size: The largest blob accepted whole, in bytes.
            max_stream_size: The largest blob accepted as a stream, in bytes.
            connect_timeout: Seconds to wait for a connection.
            read_timeout: Seconds to wait for an answer.
            max_attempts: Tries of one request (transient failures are retried).

        Raises:
            ValueError: The bucket is empty, or only one of the key pair is given.
        """
        if not bucket:
            raise ValueError("an S3 blob store needs a bucket name")
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("give both the S3 access key id and its secret key, or neither")
        self._bucket = bucket
        self._prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self._endpoint = endpoint_url
        self._access_key_id = access_key_id
        self._secret = secret_access_key
        self._max_size = max_size
        self._max_stream_size = max(max_stream_size, max_size)
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        self._client: Any = session.client("s3", endpoint_url=endpoint_url, config=config)

    def __repr__(self) -> str:
        """The store's location, without its credentials."""
        return f"S3BlobStore({self.location})"

    @property
    def bucket(self) -> str:
        """The bucket holding the blobs."""
        return self._bucket

    @property
    def location(self) -> str:
        """``s3://bucket/prefix`` at the endpoint, for messages (the endpoint redacted)."""
        where = f"s3://{self._bucket}/{self._prefix}"
        return f"{where} at {redact_url(self._endpoint)}" if self._endpoint else where

    @property
    def max_size(self) -> int:
        """The largest blob, in bytes, the store accepts."""
        return self._max_size

    def key_of(self, name: str) -> str:
        """The object key that holds (or would hold) the blob ``name``.

        Raises:
            InvalidBlobName: ``name`` is not well formed.
        """
        check_name(name)
        return f"{self._prefix}{name[:2]}/{name}"

    def _marker_prefix(self, name: str) -> str:
        return f"{self.key_of(name)}.domains/"

    # --- the port ---------------------------------------------------------------------------

    async def put(self, data: bytes, expected: str | None = None, *, domain: str) -> str:
        """Store ``data`` for ``domain`` and return its name; see :meth:`BlobStore.put`.

        Raises:
            BlobStoreUnavailable: The backend failed (its subclass says how).
        """
        check_domain(domain)
        name = checked_upload(data, expected, self._max_size)
        await self._call(self._write, name, bytes(data))
        marker = self._marker_prefix(name) + quote(domain, safe="")
        await self._call(self._put_object, marker, b"")
        return name

    async def domains(self, name: str) -> frozenset[str]:
        """The trust domains that put ``name``; see :meth:`BlobStore.domains`."""
        return await self._call(self._read_domains, name)

    async def get(self, name: str) -> bytes:
        """Return the bytes named ``name``; see :meth:`BlobStore.get`.

        Raises:
            BlobStoreUnavailable: The backend failed (its subclass says how).
        """
        data = await self._call(self._read, name)
        if data is None:
            raise BlobNotFound(f"no blob named {name} in {self.location}")
        return verified(name, data)

    async def exists(self, name: str) -> bool:
        """Whether a blob named ``name`` is stored (its content is not checked)."""
        return await self._call(self._exists, name)

    @property
    def max_stream_size(self) -> int:
        """The largest blob, in bytes, the streamed calls accept."""
        return self._max_stream_size

    async def put_stream(
        self, chunks: AsyncIterable[bytes], expected: str | None = None, *, domain: str
    ) -> str:
        """Store the concatenated chunks by a multipart upload; see :meth:`BlobStore.put_stream`.

        Raises:
            BlobStoreUnavailable: The backend failed (its subclass says how).
        """
        check_domain(domain)
        digest = StreamDigest(self._max_stream_size, expected)
        key = self.key_of(expected) if expected is not None else self._staging_key()
        upload: _Multipart | None = None
        pending = bytearray()
        try:
            async for chunk in chunks:
                digest.update(chunk)
                pending += chunk
                while len(pending) >= PART_BYTES:
                    if upload is None:
                        upload = _Multipart(key, await self._call(self._start_multipart, key))
                    part = bytes(pending[:PART_BYTES])
                    del pending[:PART_BYTES]
                    await self._call(self._upload_part, upload, part)
            name = digest.name()
            if upload is None:  # it fits one part: a plain PUT is just as atomic
                await self._call(self._put_object, self.key_of(name), bytes(pending))
            else:
                if pending:
                    await self._call(self._upload_part, upload, bytes(pending))
                await self._call(self._complete_multipart, upload)
                upload = None
                if expected is None:
                    await self._call(self._move, key, self.key_of(name))
        except BaseException:
            if upload is not None:
                await self._call(self._abort_multipart, upload)
            raise
        marker = self._marker_prefix(name) + quote(domain, safe="")
        await self._call(self._put_object, marker, b"")
        return name

    async def put_file(
        self, path: Path, expected: str | None = None, *, domain: str, consume: bool = False
    ) -> str:
        """Store a file's bytes by a multipart upload; see :meth:`BlobStore.put_file`."""
        name = await self.put_stream(file_chunks(path, PART_BYTES), expected, domain=domain)
        if consume:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        return name

    async def size(self, name: str) -> int:
        """The size of blob ``name``; see :meth:`BlobStore.size`."""
        size = await self._call(self._size, name)
        if size is None:
            raise BlobNotFound(f"no blob named {name} in {self.location}")
        return size

    async def iter_bytes(
        self, name: str, start: int = 0, stop: int | None = None, chunk: int = STREAM_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """A range of blob ``name`` by a ranged GET, in chunks; see :meth:`BlobStore.iter_bytes`."""
        end = check_range(name, await self.size(name), start, stop)
        if start == end:
            return
        reply = await self._call(self._ranged, name, start, end)
        body = reply["Body"]
        try:
            offset = start
            while offset < end:
                data: bytes = await self._call(body.read, min(chunk, end - offset))
                if not data:
                    raise BlobCorrupt(f"stored blob {name} ended early at byte {offset}")
                offset += len(data)
                yield data
        finally:
            body.close()

    async def read_range(self, name: str, start: int, length: int) -> bytes:
        """A range of blob ``name``; see :meth:`BlobStore.read_range`."""
        return b"".join([chunk async for chunk in self.iter_bytes(name, start, start + length)])

    async def verify(self, name: str) -> int:
        """Check blob ``name`` against its hash, streamed; see :meth:`BlobStore.verify`."""
        return await verified_stream(name, self.iter_bytes(name), self._max_stream_size)

    async def check(self) -> None:
        """Check that the bucket exists and the credentials are accepted (for readiness).

        Raises:
            BucketNotFound: The bucket does not exist.
            CredentialsRefused: The credentials are refused.
            EndpointUnreachable: The endpoint does not answer.
        """
        await self._call(self._head_bucket)

    # --- blocking calls, run in a thread ----------------------------------------------------

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(function, *args)
        except ClientError as exc:
            raise self._client_failure(exc) from None
        except (NoCredentialsError, PartialCredentialsError):
            raise CredentialsRefused(
                f"no S3 credentials for {self.location}: set the access key id and secret key"
            ) from None
        except (EndpointConnectionError, HTTPClientError) as exc:
            raise EndpointUnreachable(
                f"the S3 endpoint of {self.location} is unreachable "
                f"({self._masked(type(exc).__name__)}): check the endpoint URL and network"
            ) from None
        except BotoCoreError as exc:
            raise BlobStoreUnavailable(
                f"the S3 store {self.location} failed: {self._masked(str(exc))}"
            ) from None

    def _head_bucket(self) -> None:
        self._client.head_bucket(Bucket=self._bucket)

    def _put_object(self, key: str, body: bytes) -> None:
        self._client.put_object(Bucket=self._bucket, Key=key, Body=body)

    def _staging_key(self) -> str:
        return f"{self._prefix}.incoming/{uuid.uuid4().hex}"

    def _start_multipart(self, key: str) -> str:
        reply = self._client.create_multipart_upload(Bucket=self._bucket, Key=key)
        return str(reply["UploadId"])

    def _upload_part(self, upload: _Multipart, data: bytes) -> None:
        number = len(upload.parts) + 1
        reply = self._client.upload_part(
            Bucket=self._bucket,
            Key=upload.key,
            UploadId=upload.upload_id,
            PartNumber=number,
            Body=data,
        )
        upload.parts.append({"ETag": reply["ETag"], "PartNumber": number})

    def _complete_multipart(self, upload: _Multipart) -> None:
        self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=upload.key,
            UploadId=upload.upload_id,
            MultipartUpload={"Parts": upload.parts},
        )

    def _abort_multipart(self, upload: _Multipart) -> None:
        self._client.abort_multipart_upload(
            Bucket=self._bucket, Key=upload.key, UploadId=upload.upload_id
        )

    def _move(self, source: str, target: str) -> None:
        # boto3's managed copy: a multipart copy for objects above its threshold (S3's single
        # CopyObject stops at 5 GiB).
        self._client.copy({"Bucket": self._bucket, "Key": source}, self._bucket, target)
        self._client.delete_object(Bucket=self._bucket, Key=source)

    def _size(self, name: str) -> int | None:
        try:
            reply = self._client.head_object(Bucket=self._bucket, Key=self.key_of(name))
        except ClientError as exc:
            if _code(exc) not in _MISSING_KEY:
                raise
            self._head_bucket()
            return None
        return int(reply["ContentLength"])

    def _ranged(self, name: str, start: int, end: int) -> Any:
        return self._client.get_object(
            Bucket=self._bucket, Key=self.key_of(name), Range=f"bytes={start}-{end - 1}"
        )

    def _write(self, name: str, data: bytes) -> None:
        try:
            stored = self._read(name)
        except (BlobCorrupt, BlobTooLarge):
            stored = None  # too large to be the blob: rewrite it below
        if stored is not None and _intact(name, stored):
            return
        self._put_object(self.key_of(name), data)

    def _read(self, name: str) -> bytes | None:
        key = self.key_of(name)
        try:
            reply = self._client.get_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING_KEY:
                return None
            raise
        body = reply["Body"]
        try:
            self._refuse_oversized(name, int(reply.get("ContentLength", 0)))
            data: bytes = body.read(self._max_size + 1)
        finally:
            body.close()
        self._refuse_oversized(name, len(data))
        return data

    def _refuse_oversized(self, name: str, size: int) -> None:
        if self._max_size < size <= self._max_stream_size:
            raise BlobTooLarge(
                f"blob {name} is {size} bytes, above the limit of {self._max_size} bytes of a "
                "whole read: read it as a stream"
            )
        if size > self._max_size:
            raise BlobCorrupt(
                f"stored blob {name} is {size} bytes, above the limit of "
                f"{self._max_size} bytes; it cannot be the blob of that name"
            )

    def _exists(self, name: str) -> bool:
        try:
            self._client.head_object(Bucket=self._bucket, Key=self.key_of(name))
        except ClientError as exc:
            if _code(exc) not in _MISSING_KEY:
                raise
            self._head_bucket()  # a missing bucket is an error, not a missing blob
            return False
        return True

    def _read_domains(self, name: str) -> frozenset[str]:
        prefix = self._marker_prefix(name)
        found: set[str] = set()
        pages = self._client.get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self._bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                found.add(unquote(str(item["Key"])[len(prefix) :]))
        return frozenset(found)

    # --- errors ------------------------------------------------------------------------------

    def _masked(self, text: str) -> str:
        return text.replace(self._secret, MASK) if self._secret else text

    def _client_failure(self, exc: ClientError) -> BlobStoreUnavailable:
        code = _code(exc)
        message = self._masked(str(exc.response.get("Error", {}).get("Message") or code))
        if code == "NoSuchBucket" or (code == "404" and exc.operation_name == "HeadBucket"):
            return BucketNotFound(
                f"the S3 bucket {self._bucket!r} does not exist at "
                f"{redact_url(self._endpoint) if self._endpoint else 'AWS S3'}: create it, or "
                "set the blob store's bucket to an existing one"
            )
        if code in _REFUSED:
            who = f"access key id {self._access_key_id!r}" if self._access_key_id else "boto3's"
            return CredentialsRefused(
                f"{self.location} refused the credentials of {who} ({code}: {message}): check "
                "the access key id and secret key and the key's rights on the bucket"
            )
        return BlobStoreUnavailable(f"{self.location} answered {code}: {message}")


class _Multipart:
    """A multipart upload in progress: its key, id and the parts sent so far."""

    def __init__(self, key: str, upload_id: str) -> None:
        self.key = key
        self.upload_id = upload_id
        self.parts: list[dict[str, Any]] = []


def _intact(name: str, data: bytes) -> bool:
    try:
        verified(name, data)
    except BlobCorrupt:
        return False  # a corrupt copy: the caller overwrites it
    return True


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) or str(
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )
