"""What the relayer benchmark's routes share: the jobs, the emissions, a phase and its figures.

A route's benchmark posts one-worker jobs on the coordinator chain's JobMarket beforehand, then
runs phases: each emits one TASK_ASSIGNED per job from the aggregator (back to back, or paced at
a rate) and waits until the destination chain holds them all and the deliver stage has recorded
each one confirmed in the ledger. The emitter mines the coordinator chain's blocks itself while
it emits (full blocks for a burst, one every :data:`BLOCK_INTERVAL_S` under steady load; see
:func:`emit`). A message's latency runs from the mining of the block that holds its emitting
transaction, wall clock, to the deliver stage recording the destination's confirmation (the
ledger's ``deliveries.updated_at`` as the delivery turns ``confirmed``).
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hexbytes import HexBytes
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fedrelay.adapters.devnet import guardians as wormhole_testing
from fedrelay.adapters.devnet.services import Kafka, Postgres
from fedrelay.adapters.evm import EvmChain, Signer, address_to_bytes32
from fedrelay.adapters.evm.artifacts import load_artifact
from fedrelay.adapters.evm.market import JobMarketContract
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.adapters.ledger.models import Delivery, DeliveryStatus, StoredVaa
from fedrelay.protocol.wormhole import TaskAssigned, decode_payload, parse_any_vaa
from fedrelay.relayer.process import RelayerProcess
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.stage import StageMetrics

GUARDIANS = 3
AGGREGATOR_KEY = 1  # the coordinator chain's aggregator (anvil account 1)
POSTER_KEY = 4  # posts the jobs on the coordinator chain
POLL_S = 0.1  # how often the chain is asked whether the condition holds
#: How long the ledger may lag behind the chain: the deliverer records receipts after they land.
LEDGER_LAG_S = 30.0
RECEIPT_POLL_S = 0.005

_T = TypeVar("_T")


class BenchmarkFailed(RuntimeError):
    """The pipeline did not deliver every message in time, or delivered something else."""


@dataclass
class Emissions:
    """Wall-clock receipt time of each job's TASK_ASSIGNED emission (written by the emitter)."""

    at: dict[int, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def record(self, job_id: int, when: float) -> None:
        with self.lock:
            self.at[job_id] = when

    def count(self) -> int:
        with self.lock:
            return len(self.at)


#: How many of a burst's transactions go out in one JSON-RPC batch request.
EMIT_BATCH = 50


class FastSender:
    """Sends one signer's transactions with locally counted nonces and fixed gas and fees."""

    def __init__(self, chain: EvmChain, signer: Signer) -> None:
        self.chain, self.signer = chain, signer
        self.nonce = int(chain.w3.eth.get_transaction_count(signer.address, "pending"))
        self.fees: dict[str, Any] | None = None

    def send(self, function: Any, value: int = 0) -> bytes:
        """Broadcast `function`; gas and fees are estimated for the first call only (+30% gas)."""
        return self.broadcast(self.sign(function, value))

    def sign(self, function: Any, value: int = 0) -> bytes:
        """`function` as a signed raw transaction with the next nonce (not sent)."""
        params: dict[str, Any] = {"from": self.signer.address, "value": value}
        if self.fees is None:
            built = dict(function.build_transaction(params))
            self.fees = {
                "gas": int(built["gas"] * 13 // 10),
                "maxFeePerGas": built["maxFeePerGas"],
                "maxPriorityFeePerGas": built["maxPriorityFeePerGas"],
                "chainId": self.chain.chain_id,
            }
        params |= self.fees | {"nonce": self.nonce}
        transaction = dict(function.build_transaction(params))
        self.nonce += 1
        return bytes(self.signer.sign(transaction))

    def broadcast(self, raw: bytes) -> bytes:
        """Send one signed transaction; its hash."""
        return bytes(self.chain.w3.eth.send_raw_transaction(raw))

    def broadcast_many(self, raws: Sequence[bytes]) -> list[bytes]:
        """Send signed transactions in one JSON-RPC batch request (web3 refuses to batch
        ``eth_sendRawTransaction``, so the request is made here); their hashes, in order."""
        answers = self._batch("eth_sendRawTransaction", ["0x" + raw.hex() for raw in raws])
        hashes = []
        for index, one in enumerate(answers):
            if "result" not in one:
                raise BenchmarkFailed(f"emission {index} of a batch refused: {one.get('error')}")
            hashes.append(bytes(HexBytes(one["result"])))
        return hashes

    def call(self, method: str, params: list[Any]) -> Any:
        """One JSON-RPC call to the node; its result (raises BenchmarkFailed on an error)."""
        endpoint = str(self.chain.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
        body = json.dumps({"jsonrpc": "2.0", "id": 0, "method": method, "params": params})
        headers = {"Content-Type": "application/json"}
        request = urllib.request.Request(endpoint, body.encode(), headers)  # noqa: S310
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - the bench's anvil
            reply = json.loads(answer.read())
        if reply.get("error") is not None:
            raise BenchmarkFailed(f"{method}: {reply['error']}")
        return reply.get("result")

    def _batch(self, method: str, arguments: Sequence[str]) -> list[dict[str, Any]]:
        """One JSON-RPC batch request calling `method` once per argument; the answers in order
        (``{"error": "no answer"}`` where the node gave none)."""
        endpoint = str(self.chain.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
        calls = [
            {"jsonrpc": "2.0", "id": index, "method": method, "params": [argument]}
            for index, argument in enumerate(arguments)
        ]
        body, headers = json.dumps(calls).encode(), {"Content-Type": "application/json"}
        request = urllib.request.Request(endpoint, body, headers)  # noqa: S310 - the bench's anvil
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
            by_id = {int(one["id"]): one for one in json.loads(answer.read())}
        return [by_id.get(index, {"error": "no answer"}) for index in range(len(arguments))]

    def wait_all(self, tx_hashes: Sequence[bytes], timeout_s: float = 60.0) -> None:
        """Wait until every one of `tx_hashes` has a receipt, asking for
        :data:`EMIT_BATCH` receipts per request (a burst's emitter stays off the relayer's
        CPU); raise when one reverted or did not land in `timeout_s`."""
        waiting = list(tx_hashes)
        deadline = time.monotonic() + timeout_s
        while waiting:
            missing: list[bytes] = []
            for first in range(0, len(waiting), EMIT_BATCH):
                some = waiting[first : first + EMIT_BATCH]
                answers = self._batch("eth_getTransactionReceipt", ["0x" + h.hex() for h in some])
                for tx_hash, one in zip(some, answers, strict=True):
                    receipt = one.get("result")
                    if receipt is None:
                        missing.append(tx_hash)
                    elif int(receipt["status"], 16) != 1:
                        raise BenchmarkFailed(f"transaction 0x{tx_hash.hex()} reverted")
            waiting = missing
            if waiting and time.monotonic() >= deadline:
                raise BenchmarkFailed(f"{len(waiting)} transactions without a receipt")
            if waiting:
                time.sleep(POLL_S)  # a node has no receipt event to wait on


def post_jobs(
    market: JobMarketContract, poster: Signer, worker_chain: int, count: int
) -> list[int]:
    """Post `count` one-round, one-worker jobs for `worker_chain`; their ids in order."""
    first = int(market.chain.call(market.contract.functions.nextJobId()))
    sender = FastSender(market.chain, poster)
    spec = (
        "0x0000000000000000000000000000000000000000", b"\x11" * 32, b"\x22" * 32, 1, 1, 1, 1,
        [worker_chain], 0, 0, 0, [address_to_bytes32(poster.address)], 3600, 7 * 86_400,
    )  # fmt: skip
    hashes = [sender.send(market.contract.functions.postJob(spec), value=1) for _ in range(count)]
    sender.wait_all(hashes)
    return list(range(first, first + count))


#: How often the emitter mines a coordinator-chain block while it offers a steady load.
BLOCK_INTERVAL_S = 0.1


def emit(
    market: JobMarketContract,
    aggregator: Signer,
    worker_chain: int,
    assignments: Sequence[tuple[int, bytes]],
    emissions: Emissions,
    rate: float | None = None,
) -> None:
    """One TASK_ASSIGNED per (job id, worker key): back to back (a burst), or `rate` per second
    (steady load), in blocks the emitter mines itself.

    Every transaction is signed before the first is sent, so the emitter's own work stays out
    of the relayer's measurement. While it emits, the coordinator anvil's automining is off:
    a burst goes into its mempool in JSON-RPC batches of :data:`EMIT_BATCH` and is then mined
    in full blocks; steady load is sent as it falls due and mined every
    :data:`BLOCK_INTERVAL_S`. Mining one block per transaction, the anvil took about 19
    assignments a second once a thousand jobs were stored (a 1,000-message burst took 53 s
    to emit), so the source, not the relayer, set the pace. Each emission's time is the wall
    clock when the block holding it was mined (the moment a watcher can see it); every
    receipt is checked at the end.
    """
    sender = FastSender(market.chain, aggregator)
    core = market.chain.w3.eth.contract(
        address=market.chain.call(market.contract.functions.core()),
        abi=list(load_artifact("MessageCore").abi),
    )
    fee = int(market.chain.call(core.functions.messageFee()))
    deadline = int(market.chain.w3.eth.get_block("latest")["timestamp"]) + 86_400
    signed = [
        sender.sign(
            market.contract.functions.assignTasks(job_id, worker_chain, deadline, [(key, 0)]),
            value=fee,
        )
        for job_id, key in assignments
    ]  # signed ahead: the emitter's own signing is not in the relayer's measurement
    jobs = [job_id for job_id, _ in assignments]
    waiting: dict[str, int] = {}  # sent and not yet mined: transaction hash -> job id
    hashes: list[bytes] = []

    def send(first: int, last: int) -> None:
        for start in range(first, last, EMIT_BATCH):
            chunk = sender.broadcast_many(signed[start : min(last, start + EMIT_BATCH)])
            hashes.extend(chunk)
            for tx_hash, job_id in zip(chunk, jobs[start:last], strict=False):
                waiting["0x" + tx_hash.hex()] = job_id

    def mine() -> None:
        sender.call("evm_mine", [])
        mined = time.time()
        block = sender.call("eth_getBlockByNumber", ["latest", False])
        held = [tx for tx in block["transactions"] if tx in waiting]
        if waiting and not held:
            raise BenchmarkFailed(f"a mined block held none of {len(waiting)} emissions sent")
        for tx in held:
            emissions.record(waiting.pop(tx), mined)

    sender.call("evm_setAutomine", [False])
    try:
        started, sent = time.monotonic(), 0
        while sent < len(signed) or waiting:
            if emissions.stop.is_set():
                return
            due = len(signed) if rate is None else min(len(signed), int(
                (time.monotonic() - started) * rate) + 1)  # fmt: skip
            send(sent, due)
            sent = due
            if waiting:
                mine()
            if rate is not None and sent < len(signed):
                time.sleep(BLOCK_INTERVAL_S)  # the block time of a paced load, not a wait on work
    finally:
        sender.call("evm_setAutomine", [True])
    sender.wait_all(hashes)


def relayer_settings(
    kafka: Kafka, database_url: str, window: int, batch_max: int = 1
) -> RelayerSettings:
    """The benchmark's relayer settings: a fresh tag on every topic and group, quick polls."""
    tag = uuid.uuid4().hex[:8]
    return RelayerSettings(
        deliver_window=window, deliver_batch_max=batch_max,
        database_url=database_url, kafka_bootstrap=kafka.bootstrap, topic_partitions=2,
        observations_topic=f"observations-{tag}", signatures_topic=f"signatures-{tag}",
        vaas_topic=f"vaas-{tag}", deliveries_prefix=f"deliveries-{tag}", dlq_topic=f"dlq-{tag}",
        group_prefix=f"bench-{tag}", poll_wait_s=0.1, retry_base_s=0.05, retry_cap_s=0.5,
        watch_interval_s=0.1,
    )  # fmt: skip


async def new_database(postgres: Postgres, prefix: str) -> str:
    """A fresh database on `postgres`, migrated; its async URL."""
    database = f"{prefix}_{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(postgres.psql, f'CREATE DATABASE "{database}"', "postgres")
    database_url = postgres.async_url.rsplit("/", 1)[0] + "/" + database
    await asyncio.to_thread(upgrade, database_url)
    return database_url


#: How the benchmark's guardians may sign: one by one (version 1), or together (version 2).
ATTESTATIONS = ("guardian", "threshold")


def attested(settings: RelayerSettings, attestation: str, journals: Path) -> RelayerSettings:
    """`settings` under `attestation`: unchanged for ``guardian``; for ``threshold``, the devnet
    threshold key of the :data:`GUARDIANS` guardians, a signing topic tagged like the others,
    and the guardians' signing journals under `journals`.

    Raises:
        ValueError: `attestation` is not one of :data:`ATTESTATIONS`.
    """
    if attestation not in ATTESTATIONS:
        raise ValueError(
            f"attestation must be one of {', '.join(ATTESTATIONS)}, got {attestation!r}"
        )
    if attestation == "guardian":
        return settings
    dealt = wormhole_testing.threshold_key(GUARDIANS)
    tag = settings.group_prefix.removeprefix("bench-")
    return settings.model_copy(
        update={
            "attestation": "threshold",
            "threshold_group_key": dealt.group_key.hex(),
            "threshold_verification_shares": tuple(
                dealt.verification_shares[share.identifier].hex() for share in dealt.shares
            ),
            "signing_topic": f"signing-{tag}",
            "signing_journal_dir": journals,
        }
    )


def threshold_share_files(directory: Path) -> list[Path]:
    """The devnet guardians' threshold shares, written into `directory` in index order."""
    files = []
    for share in wormhole_testing.threshold_key(GUARDIANS).shares:
        path = directory / f"guardian-{share.guardian_index}.share"
        path.write_text("0x" + share.secret_bytes().hex() + "\n")
        files.append(path)
    return files


def guardian_key_files(directory: Path) -> list[Path]:
    """The devnet guardians' key files, written into `directory` in index order."""
    files = []
    for index in range(GUARDIANS):
        path = directory / f"guardian-{index}.key"
        path.write_text("0x" + wormhole_testing.guardian_key(index).hex() + "\n")
        files.append(path)
    return files


def guardian_addresses() -> list[str]:
    """The devnet guardians' addresses (0x-hex), as the contracts and the program trust them."""
    return ["0x" + g.address.hex() for g in wormhole_testing.guardian_signers(GUARDIANS)]


@asynccontextmanager
async def running(process: RelayerProcess) -> AsyncIterator[None]:
    """Create the process's topics and run its stages for the block; then stop and close."""
    await process.bus.create_topics(process.topics, partitions=process.settings.topic_partitions)
    tasks = [asyncio.create_task(stage.run(), name=stage.name) for stage in process.stages]
    try:
        yield
    finally:
        for stage in process.stages:
            stage.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        await process.close()


def in_thread(call: Callable[[], _T]) -> Callable[[], Awaitable[_T]]:
    """`call` run in a thread (it may block on a chain's RPC): a check for :func:`until`, a
    count for :meth:`Route.phase`."""
    return lambda: asyncio.to_thread(call)


async def until(
    check: Callable[[], Awaitable[bool]],
    what: str,
    limit_s: float,
    tick: Callable[[], None] = lambda: None,
) -> None:
    """Return once `check()` holds; fail after `limit_s`."""
    try:
        async with asyncio.timeout(limit_s):
            while not await check():  # chains have no event to wait on
                tick()
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        raise BenchmarkFailed(f"timed out after {limit_s:.0f} s waiting for {what}") from None
    tick()


async def confirmation_times(database_url: str, destination_chain: int) -> dict[int, float]:
    """Job id -> wall-clock time the deliver stage confirmed its TASK_ASSIGNED on the chain."""
    engine = create_engine(database_url)
    try:
        async with async_sessionmaker(engine)() as session:
            rows = await session.execute(
                select(Delivery.updated_at, StoredVaa.vaa)
                .join(StoredVaa, StoredVaa.digest == Delivery.digest)
                .where(Delivery.destination_chain == destination_chain)
                .where(Delivery.status == DeliveryStatus.CONFIRMED)
            )
            times: dict[int, float] = {}
            for updated_at, vaa in rows:
                payload = decode_payload(parse_any_vaa(bytes(vaa)).body.payload)
                if isinstance(payload, TaskAssigned):
                    times[payload.job_id] = updated_at.timestamp()
            return times
    finally:
        await engine.dispose()


def _confirmed_count(
    sessions: async_sessionmaker[AsyncSession], destination_chain: int
) -> Callable[[], Awaitable[int]]:
    """How many deliveries to `destination_chain` the ledger holds confirmed (one count)."""

    async def count() -> int:
        async with sessions() as session:
            found = await session.scalar(
                select(func.count()).select_from(Delivery).where(
                    Delivery.destination_chain == destination_chain,
                    Delivery.status == DeliveryStatus.CONFIRMED,
                )
            )  # fmt: skip
        return int(found or 0)

    return count


def steady_size(messages: int, steady_messages: int | None) -> int:
    """How many messages the steady phase offers: `steady_messages`, else a quarter of the
    burst's `messages`, at least 10.

    Raises:
        ValueError: `messages` is below 1.
    """
    if messages < 1:
        raise ValueError(f"messages must be at least 1, got {messages}")
    return steady_messages if steady_messages is not None else max(10, messages // 4)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of `values` (non-empty)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def stage_figures(metrics: StageMetrics) -> dict[str, dict[str, float]]:
    """Per stage, over the whole run (warm-up, burst and steady phases): records handed on, bus
    transactions, and the wall-clock seconds spent processing records and handing them off
    (where the time goes)."""
    figures: dict[str, dict[str, float]] = {}

    def add(stage: str, key: str, value: float) -> None:
        figures.setdefault(stage, {})[key] = round(value, 3)

    for family in (metrics.processed, metrics.batches, metrics.step_seconds):
        for collected in family.collect():
            for sample in collected.samples:
                if not sample.name.endswith("_total"):
                    continue
                stage = sample.labels["stage"]
                if family is metrics.processed:
                    add(stage, "records", sample.value)
                elif family is metrics.batches:
                    add(stage, "batches", sample.value)
                else:
                    add(stage, f"{sample.labels['step']}_s", sample.value)
    return dict(sorted(figures.items()))


@dataclass
class Route:
    """TASK_ASSIGNED messages from the coordinator chain's JobMarket to `worker_chain`, run in
    phases; what the deliver stage confirmed, by job id, is gathered in :attr:`confirmed`.

    Attributes:
        market: The JobMarket that emits.
        aggregator: Its aggregator, who assigns the tasks.
        worker_chain: The destination's Wormhole chain id.
        database_url: The relayer's ledger.
        timeout_s: The most seconds a phase may take to be delivered.
        console: Where progress goes.
    """

    market: JobMarketContract
    aggregator: Signer
    worker_chain: int
    database_url: str
    timeout_s: float
    console: Console
    emissions: Emissions = field(default_factory=Emissions)
    confirmed: dict[int, float] = field(default_factory=dict)

    async def phase(
        self,
        name: str,
        assignments: Sequence[tuple[int, bytes]],
        delivered: Callable[[], Awaitable[int]],
        rate: float | None = None,
    ) -> list[float]:
        """Emit one TASK_ASSIGNED per (job id, worker key) and wait until the ledger has each
        confirmed and `delivered()` (how many of them the destination chain holds) counts them
        all; their latencies, in seconds, in the order given.

        While the messages travel, only the ledger is asked (one count per poll): the
        benchmark's own chain reads would take CPU from the relayer it measures. The chain is
        asked once the ledger has them all (the deliverer records a confirmation only after
        the receipt)."""
        jobs = [job for job, _ in assignments]
        before = self.emissions.count()
        engine = create_engine(self.database_url)
        count = _confirmed_count(async_sessionmaker(engine), self.worker_chain)
        confirmed_before = await count()
        seen = 0

        async def all_confirmed() -> bool:
            nonlocal seen
            if emitter.done() and (failed := emitter.exception()) is not None:
                raise failed  # the emitter stopped: no point waiting for the rest
            seen = await count() - confirmed_before
            return seen >= len(jobs)

        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=self.console,
        ) as progress:  # fmt: skip
            emitted_bar = progress.add_task(f"{name} emitted  ", total=len(jobs))
            delivered_bar = progress.add_task(f"{name} delivered", total=len(jobs))

            def tick() -> None:
                progress.update(emitted_bar, completed=self.emissions.count() - before)
                progress.update(delivered_bar, completed=seen)

            emitter = asyncio.create_task(
                asyncio.to_thread(
                    emit, self.market, self.aggregator, self.worker_chain, assignments,
                    self.emissions, rate,
                )
            )  # fmt: skip
            try:
                await until(all_confirmed, f"{len(jobs)} deliveries", self.timeout_s, tick)
                await emitter
            except BaseException:
                self.emissions.stop.set()  # the emitter returns at its next message
                raise
            finally:
                await engine.dispose()

        async def on_chain() -> bool:
            return await delivered() >= len(jobs)

        await until(on_chain, f"the destination chain to hold {len(jobs)} deliveries", LEDGER_LAG_S)
        confirmed = await self._ledger_confirmations(jobs)
        self.confirmed.update(confirmed)
        return [confirmed[job] - self.emissions.at[job] for job in jobs]

    async def _ledger_confirmations(self, jobs: Sequence[int]) -> dict[int, float]:
        """When the deliver stage confirmed each of `jobs` (on chain already: the deliverer
        records the last receipts a moment later)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LEDGER_LAG_S
        while True:
            confirmed = await confirmation_times(self.database_url, self.worker_chain)
            missing = [job for job in jobs if job not in confirmed]
            if not missing:
                return {job: confirmed[job] for job in jobs}
            if loop.time() >= deadline:
                raise BenchmarkFailed(
                    f"{len(jobs) - len(missing)} confirmed deliveries in the ledger for "
                    f"{len(jobs)} messages (missing jobs: {missing[:5]})"
                )
            await asyncio.sleep(POLL_S)

    def elapsed(self, jobs: Sequence[int]) -> float:
        """Seconds from the first emission of `jobs` to the last confirmation."""
        return max(self.confirmed[j] for j in jobs) - min(self.emissions.at[j] for j in jobs)
