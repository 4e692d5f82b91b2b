"""Test support for the relayer: sample observations, signature messages, a bus reader, a
stand-in for the Wormhole guardian REST API on a loopback port, an assembler that dies between a
batch's ledger commit and its hand-off, a ledger that counts its transactions, and a counter of
the SQL statements an engine runs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger, SqlRelayerLedgerWork
from fedrelay.ports.bus import Bus, Record
from fedrelay.protocol.wormhole import GuardianSigner, MessageId, sign_vaa
from fedrelay.protocol.wormhole.observation import Observation
from fedrelay.relayer.records import GuardianSignatureMessage
from fedrelay.relayer.stage import StageResult
from fedrelay.relayer.stages.assemble import Assembler
from fedrelay.relayer.stages.fetch import signed_vaa_path
from support.wormhole import evm_address, sample_task_assigned


def sample_observation(sequence: int = 0, *, payload: bytes | None = None) -> Observation:
    """An observation of a TASK_ASSIGNED (to chain 4) emitted on coordinator chain 2."""
    return Observation(
        emitter_chain=2,
        emitter_address=evm_address("job market"),
        sequence=sequence,
        nonce=sequence % 7,
        timestamp=1_767_225_600 + sequence % 86_400,
        consistency_level=1,
        payload=payload if payload is not None else sample_task_assigned(2).to_bytes(),
        tx_hash="0x" + f"{sequence:064x}",
        block_number=100 + sequence,
        block_hash="0x" + f"{sequence + 1:064x}",
        emitted_at_ms=1_767_225_600_000 + sequence % 86_400_000,
    )


def signature_messages(
    observation: Observation,
    signers: Sequence[GuardianSigner],
    indices: Sequence[int],
    guardian_set_index: int = 0,
) -> list[GuardianSignatureMessage]:
    """One signature message per guardian index in `indices` (signed by ``signers[index]``)."""
    return [
        GuardianSignatureMessage(
            observation=observation,
            guardian_set_index=guardian_set_index,
            signature=signers[i].sign(observation.digest, i),
        )
        for i in indices
    ]


def signed_vaa_bytes(
    observation: Observation, signers: Sequence[GuardianSigner], guardian_set_index: int = 0
) -> bytes:
    """The VAA of an observation signed by every signer (guardian index = position)."""
    return sign_vaa(observation.body, guardian_set_index, list(enumerate(signers))).to_bytes()


async def read_topic(
    bus: Bus, topic: str, want: int, *, group_id: str, limit_s: float = 20.0
) -> list[Record]:
    """Read committed records of `topic` until `want` arrived; then read briefly for extras.

    Raises:
        TimeoutError: Fewer than `want` records within `limit_s` seconds.
    """
    consumer = bus.consumer([topic], group_id=group_id)
    await consumer.start()
    got: list[Record] = []
    try:
        async with asyncio.timeout(limit_s):
            while len(got) < want:
                got += await consumer.poll(max_wait=0.2)
        got += await consumer.poll(max_wait=0.3)  # anything beyond `want` is a duplicate
    finally:
        await consumer.stop()
    return got


async def wait_until(condition: Callable[[], bool], limit_s: float = 5.0) -> None:
    """Return once `condition()` holds, checking every 10 ms.

    Raises:
        TimeoutError: It did not hold within `limit_s` seconds.
    """
    async with asyncio.timeout(limit_s):
        while not condition():  # noqa: ASYNC110 - some conditions (metrics) have no event
            await asyncio.sleep(0.01)


class GuardianApiStub:
    """A loopback HTTP server answering like a guardian's ``/v1/signed_vaa`` endpoint.

    ``publish(message_id, vaa)`` makes the VAA available; unknown ids get 404; ``fail_next(n,
    status)`` answers the next `n` requests with `status`; ``raw_answers`` overrides the body
    of a path. ``requests`` lists every path asked for.
    """

    def __init__(self) -> None:
        self._vaas: dict[str, bytes] = {}
        self.raw_answers: dict[str, tuple[int, bytes]] = {}
        self._failures: list[int] = []
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL (``http://127.0.0.1:PORT``)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def publish(self, message_id: MessageId, vaa: bytes) -> None:
        """Serve `vaa` for `message_id` from now on."""
        with self._lock:
            self._vaas[signed_vaa_path(message_id)] = vaa

    def fail_next(self, count: int, status: int) -> None:
        """Answer the next `count` requests with `status` and an error body."""
        with self._lock:
            self._failures.extend([status] * count)

    def hits(self, message_id: MessageId) -> int:
        """How many times the VAA of `message_id` was asked for."""
        with self._lock:
            return self.requests.count(signed_vaa_path(message_id))

    def _answer(self, path: str) -> tuple[int, bytes]:
        with self._lock:
            self.requests.append(path)
            if self._failures:
                status = self._failures.pop(0)
                return status, json.dumps({"code": 14, "message": "unavailable"}).encode()
            if path in self.raw_answers:
                return self.raw_answers[path]
            vaa = self._vaas.get(path)
        if vaa is None:
            body = {"code": 5, "message": "requested VAA not found in store"}
            return 404, json.dumps(body).encode()
        return 200, json.dumps({"vaaBytes": base64.b64encode(vaa).decode()}).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = stub._answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: tests read `requests` instead."""

        return Handler

    @contextmanager
    def running(self) -> Iterator[GuardianApiStub]:
        """Serve in a background thread for the duration of the block."""
        self._thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)


class DiesAfterBatchLedger:
    """Runs an assembler a batch at a time, then hangs (until cancelled) once a batch produced a
    VAA: a crash after the batch's ledger commit and before its bus transaction.

    Attributes:
        batch_sizes: The size of each batch it was given.
    """

    def __init__(self, inner: Assembler) -> None:
        self.inner = inner
        self.ledger_done = asyncio.Event()
        self.batch_sizes: list[int] = []

    async def process(self, record: Record) -> StageResult:
        """A record on its own (the runner's retry path)."""
        return await self.inner.process(record)

    async def process_batch(self, records: Sequence[Record]) -> Sequence[StageResult | Exception]:
        """The batch through the assembler; hangs if it emitted anything."""
        outcomes = await self.inner.process_batch(records)
        self.batch_sizes.append(len(records))
        if any(isinstance(o, StageResult) and o.outputs for o in outcomes):
            self.ledger_done.set()
            await asyncio.Event().wait()
        return outcomes


class CountingLedger(SqlRelayerLedger):
    """The ledger, counting the transactions opened on it (`opened`)."""

    opened = 0

    def transaction(self) -> AbstractAsyncContextManager[SqlRelayerLedgerWork]:
        """A transaction, counted."""
        self.opened += 1
        return super().transaction()


@contextmanager
def statements_run(sessions: async_sessionmaker[AsyncSession]) -> Iterator[list[str]]:
    """The SQL statements the sessions' engine sends to the database while the block runs (one
    per round trip: a bulk insert is one), in order."""
    engine = sessions.kw["bind"]
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
