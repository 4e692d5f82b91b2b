"""Upload sessions: a blob too large for one request arrives in chunks, and survives interruptions.

A worker starts a session for an update by naming its hash and size; it then sends chunks, each
at the offset where the bytes that arrived so far end, asks how many arrived whenever it lost
track (a dropped connection, a restart of either side), and completes the session once all did.
Completing hashes the bytes as the blob store takes them in: a blob that does not hash to the
session's name is refused, and nothing is stored or recorded. Until then the bytes are only a
session's, never a blob anyone can see.

A session is a directory under the sessions' root holding ``meta.json`` (who, which round,
which blob, how large) and ``data`` (the bytes so far): what arrived is the file's size, so a
restarted API resumes every session exactly where it stood. Its id is derived from the worker,
the round and the blob's name, so starting the same session again finds it instead of starting
over. Appends to one session are serialized in this process; replicas that share the sessions'
root must send a worker's session to one replica (or the worker does not send two chunks at
once, which the SDK never does).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from fedrelay.coordinator.api.errors import BodyTooLarge, UnknownResource
from fedrelay.ports.coordinator_store import Conflict
from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.rounds import WorkerRef

_META = "meta.json"
_DATA = "data"


@dataclass(frozen=True)
class Session:
    """One upload session.

    Attributes:
        upload_id: Its id (32 hex characters).
        worker: The worker that sends the blob.
        job_id: The job.
        round_number: The round.
        name: The hash the whole blob must have.
        size: The blob's size in bytes.
        directory: Where its bytes are kept.
    """

    upload_id: str
    worker: WorkerRef
    job_id: int
    round_number: int
    name: str
    size: int
    directory: Path

    @property
    def data(self) -> Path:
        """The file with the bytes that arrived."""
        return self.directory / _DATA


def session_id(worker: WorkerRef, job_id: int, round_number: int, name: str) -> str:
    """The id of ``worker``'s session for blob ``name`` in a round (the same every time)."""
    seed = (
        b"fedrelay-upload"
        + worker.worker_id
        + job_id.to_bytes(8, "big")
        + round_number.to_bytes(4, "big")
        + bytes.fromhex(name)
    )
    return keccak256(seed)[:16].hex()


class UploadSessions:
    """The upload sessions kept under one directory (see the module docstring)."""

    def __init__(self, root: Path, *, chunk_bytes: int, idle_seconds: int) -> None:
        """Keep sessions under ``root`` (created if needed).

        Args:
            root: The sessions' directory.
            chunk_bytes: The largest chunk one request may carry.
            idle_seconds: A session untouched for this long is dropped when a new one starts.
        """
        self._root = root
        self._root.mkdir(parents=True, exist_ok=True)
        self.chunk_bytes = chunk_bytes
        self._idle = idle_seconds
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def root(self) -> Path:
        """The sessions' directory."""
        return self._root

    async def start(
        self, worker: WorkerRef, job_id: int, round_number: int, name: str, size: int
    ) -> Session:
        """The worker's session for blob ``name`` in the round, started when it has none.

        Raises:
            Conflict: The worker's session for that blob declared another size.
        """
        await asyncio.to_thread(self._drop_idle)
        upload_id = session_id(worker, job_id, round_number, name)
        session = Session(upload_id, worker, job_id, round_number, name, size, self._dir(upload_id))
        existing = await asyncio.to_thread(self._load, upload_id)
        if existing is not None:
            if existing.size != size:
                raise Conflict(
                    f"upload {upload_id} of blob {name} was started with {existing.size} bytes, "
                    f"not {size}"
                )
            return existing
        await asyncio.to_thread(self._create, session)
        return session

    async def find(self, upload_id: str, worker: WorkerRef) -> Session:
        """The session ``upload_id`` of ``worker``.

        Raises:
            UnknownResource: No such session, or it is another worker's (the same answer).
        """
        session = None
        if len(upload_id) == 32 and all(c in "0123456789abcdef" for c in upload_id):
            session = await asyncio.to_thread(self._load, upload_id)
        if session is None or session.worker != worker:
            raise UnknownResource(f"no upload {upload_id} of this worker")
        return session

    async def received(self, session: Session) -> int:
        """How many bytes of the blob arrived."""
        return await asyncio.to_thread(_size_of, session.data)

    async def append(self, session: Session, offset: int, chunk: bytes) -> int:
        """Add ``chunk`` at ``offset``; how many bytes arrived now.

        Raises:
            Conflict: ``offset`` is not where the bytes that arrived end (nothing is written;
                the message says where they end).
            BodyTooLarge: The chunk would take the blob past its declared size.
        """
        lock = self._locks.setdefault(session.upload_id, asyncio.Lock())
        async with lock:
            received = await self.received(session)
            if offset != received:
                raise Conflict(
                    f"chunk sent at offset {offset}, but upload {session.upload_id} holds "
                    f"{received} bytes: send from offset {received}"
                )
            if received + len(chunk) > session.size:
                raise BodyTooLarge(
                    f"the chunk takes upload {session.upload_id} to {received + len(chunk)} "
                    f"bytes, past its declared size of {session.size}"
                )
            await asyncio.to_thread(_append, session.data, chunk)
            return received + len(chunk)

    async def discard(self, session: Session) -> None:
        """Forget the session and its bytes."""
        await asyncio.to_thread(shutil.rmtree, session.directory, True)
        self._locks.pop(session.upload_id, None)

    def _dir(self, upload_id: str) -> Path:
        return self._root / upload_id

    def _create(self, session: Session) -> None:
        staging = self._root / f".{session.upload_id}.{os.getpid()}.new"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        meta = {
            "chain": session.worker.chain,
            "key": session.worker.key.hex(),
            "job": session.job_id,
            "round": session.round_number,
            "name": session.name,
            "size": session.size,
        }
        (staging / _META).write_text(json.dumps(meta))
        (staging / _DATA).touch()
        try:
            staging.rename(session.directory)  # atomic: a session is whole or absent
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not session.directory.is_dir():
                raise

    def _load(self, upload_id: str) -> Session | None:
        directory = self._dir(upload_id)
        try:
            meta = json.loads((directory / _META).read_text())
        except FileNotFoundError:
            return None
        worker = WorkerRef(int(meta["chain"]), bytes.fromhex(meta["key"]))
        return Session(
            upload_id,
            worker,
            int(meta["job"]),
            int(meta["round"]),
            str(meta["name"]),
            int(meta["size"]),
            directory,
        )

    def _drop_idle(self) -> None:
        cutoff = time.time() - self._idle
        for directory in self._root.iterdir():
            data = directory / _DATA
            try:
                if data.stat().st_mtime < cutoff:
                    shutil.rmtree(directory, ignore_errors=True)
            except FileNotFoundError:
                continue


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _append(path: Path, chunk: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(chunk)
