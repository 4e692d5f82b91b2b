"""The relayer's composition root: stages built from settings and the chains file, health, shutdown.

This is the one relayer module that imports adapters: it picks the bus, opens the ledger, looks
up each chain's binding in the registry (:mod:`fedrelay.adapters.chains`) and hands the stages
nothing but ports.

``fedrelay relayer run --stage X`` and ``fedrelay guardian run`` are thin shells over
:func:`build_process` and :meth:`RelayerProcess.run`:

- the bus is Kafka when ``FEDRELAY_KAFKA_BOOTSTRAP`` is set, else the in-process bus (embedded);
- the ledger is ``FEDRELAY_DATABASE_URL`` (SQLite by default);
- each chain named by a stage is connected through the binding of its ``kind`` in the chain
  registry (``fedrelay.adapters.chains``: ``fedrelay.adapters.evm``, ``fedrelay.adapters.solana``);
- ``/readyz`` probes the bus, the database and every chain the process talks to, for real;
- SIGTERM or SIGINT drains every stage (:func:`~fedrelay.relayer.stage.run_until_signalled`).

Stages and what ``--stage`` runs:

============  ==================================================================================
watch         the watcher of ``--chain``
attest        one devnet guardian (key file or ``FEDRELAY_GUARDIAN_KEY``), reading every chain
assemble      signatures to quorum, and the route stage (``vaas`` -> ``deliveries.<chain>``)
fetch         signed VAAs from the guardian API, and the route stage
route         the route stage alone
deliver       the deliverer of ``--chain`` (signer key file or ``FEDRELAY_SIGNER_KEY``)
all           every stage in one process (the embedded mode): a watcher and, where a signer key
              is given, a deliverer per chain; attest + assemble when guardian keys are given,
              else fetch; route
============  ==================================================================================

Keys are read from files (or one environment variable) and held by the adapters only; neither
the settings nor any log line carries them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedrelay.adapters.chains import (
    ChainBindingError,
    ChainConnection,
    ChainSpec,
    ChainUnreachable,
    binding,
)
from fedrelay.adapters.kafka import Bus, KafkaBus, MemoryBus
from fedrelay.adapters.kafka.logs import install_outage_logging
from fedrelay.adapters.ledger.relayer_ledger import SqlRelayerLedger
from fedrelay.adapters.telemetry.health import HealthServer, ReadinessCheck
from fedrelay.ports.relay import DestinationChain, SignerAccount, SourceChain
from fedrelay.ports.relayer_ledger import RelayerLedger
from fedrelay.protocol import keys
from fedrelay.protocol.redact import redact_text, remember
from fedrelay.protocol.wormhole import GuardianSet, GuardianSets, GuardianSigner
from fedrelay.protocol.wormhole.guardians import quorum
from fedrelay.relayer.chains_file import ChainConfig, ChainsConfig, ChainsFileError, load_chains
from fedrelay.relayer.errors import RelayerError
from fedrelay.relayer.settings import RelayerSettings
from fedrelay.relayer.signing_journal import SigningJournal
from fedrelay.relayer.stage import (
    EndOffsets,
    RunningStage,
    StageMetrics,
    StageRunner,
    run_until_signalled,
    stage_metrics,
)
from fedrelay.relayer.stages.assemble import Assembler
from fedrelay.relayer.stages.attest import (
    Attester,
    GuardianKeyError,
    load_guardian_signer,
    load_threshold_share,
)
from fedrelay.relayer.stages.deliver import Deliverer
from fedrelay.relayer.stages.fetch import GuardianApi, VaaFetcher
from fedrelay.relayer.stages.pipeline import PipelinedDeliverer, SignerLane
from fedrelay.relayer.stages.route import Router
from fedrelay.relayer.stages.threshold import (
    ThresholdConfig,
    ThresholdConfigError,
    ThresholdTicker,
)
from fedrelay.relayer.stages.watch import watch_stage

log = logging.getLogger(__name__)

STAGES = ("watch", "attest", "assemble", "fetch", "route", "deliver", "all")

#: The environment variable holding a deliverer's key when no key file is given.
SIGNER_KEY_VARIABLE = "FEDRELAY_SIGNER_KEY"


class ServiceConfigError(RelayerError):
    """The process cannot be built as asked (missing option, key or chain)."""


class ChainUnavailable(RelayerError):
    """A chain the process needs at start cannot be reached (or has no such contract)."""


class DrainTimeout(RelayerError):
    """After SIGTERM, the stages did not finish their in-flight work within the drain time."""


class SignerKeyError(ServiceConfigError):
    """A deliverer's key is missing or malformed (the message never shows the key)."""


# --- keys -----------------------------------------------------------------------------------------


def read_signer_key(
    chain: ChainConfig, key_file: Path | None, environ: Mapping[str, str] | None = None
) -> str | bytes:
    """The deliverer's key for `chain`: from `key_file`, else from ``FEDRELAY_SIGNER_KEY``.

    EVM: ``0x`` + 64 hex digits. Solana: the JSON array of 64 numbers ``solana-keygen`` writes.

    Raises:
        SignerKeyError: No key, or not a key of the chain's kind.
    """
    try:
        content, where = keys.read_key_text(
            key_file,
            what="signer key",
            owner=f" for chain {chain.name!r}",
            variable=SIGNER_KEY_VARIABLE,
            environ=environ,
            option="--signer-key-file",
        )
        return binding(chain.kind).parse_key(content, where)
    except keys.KeyFileError as exc:
        raise SignerKeyError(str(exc)) from None


def read_signer_keys(
    chain: ChainConfig, key_file: Path | None, environ: Mapping[str, str] | None = None
) -> list[str | bytes]:
    """The deliverer's key pool for `chain`: one key per non-empty line of an EVM key file (or
    of ``FEDRELAY_SIGNER_KEY``), else the one key :func:`read_signer_key` reads.

    Raises:
        SignerKeyError: No key, or a line that is not a key of the chain's kind (the message
            says which line, never the key).
    """
    try:
        content, where = keys.read_key_text(
            key_file, what="signer key", owner=f" for chain {chain.name!r}",
            variable=SIGNER_KEY_VARIABLE, environ=environ, option="--signer-key-file",
        )  # fmt: skip
    except keys.KeyFileError as exc:
        raise SignerKeyError(str(exc)) from None
    lines = [line.strip() for line in content.splitlines() if line.strip()]
    if len(lines) < 2 or content.lstrip().startswith("["):
        return [read_signer_key(chain, key_file, environ)]
    pool: list[str | bytes] = []
    for number, line in enumerate(lines, 1):
        try:
            pool.append(binding(chain.kind).parse_key(line, f"{where}, line {number}"))
        except keys.KeyFileError as exc:
            raise SignerKeyError(str(exc)) from None
    return pool


# --- chains ---------------------------------------------------------------------------------------


@dataclass
class ChainConnections:
    """The adapters of the chains one process talks to, with their readiness probes."""

    sources: dict[str, SourceChain] = field(default_factory=dict)
    destinations: dict[str, DestinationChain] = field(default_factory=dict)
    probes: dict[str, ReadinessCheck] = field(default_factory=dict)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _connections: dict[str, ChainConnection] = field(default_factory=dict)

    def _connect(self, chain: ChainConfig) -> ChainConnection:
        """One RPC client per chain, probed by ``/readyz`` as ``chain:<name>``."""
        connection = self._connections.get(chain.name)
        if connection is None:
            connection = binding(chain.kind).connect(_spec(chain))
            self.probes[f"chain:{chain.name}"] = connection.probe
            self.closers.append(connection.close)
            self._connections[chain.name] = connection
        return connection

    async def source(self, chain: ChainConfig) -> SourceChain:
        """The source adapter of `chain` (connected once)."""
        if chain.name not in self.sources:
            connection = self._connect(chain)
            try:
                source = await binding(chain.kind).source(connection, _spec(chain))
            except ChainUnreachable as exc:
                raise ChainUnavailable(str(exc)) from None
            except ChainBindingError as exc:
                raise ServiceConfigError(str(exc)) from None
            self.sources[chain.name] = source
        return self.sources[chain.name]

    async def destination(
        self, chain: ChainConfig, key: str | bytes, pool_index: int = 0
    ) -> DestinationChain:
        """The destination adapter of `chain`, signing with `key` (the `pool_index`-th key of
        the chain's key pool; the first one is also :attr:`destinations`' entry)."""
        name = chain.name if pool_index == 0 else f"{chain.name}#{pool_index}"
        if name not in self.destinations:
            connection = self._connect(chain)
            try:
                destination = await binding(chain.kind).destination(connection, _spec(chain), key)
            except ChainUnreachable as exc:
                raise ChainUnavailable(str(exc)) from None
            self.destinations[name] = destination
        return self.destinations[name]

    def signer_account(self, chain: ChainConfig, key: str | bytes) -> SignerAccount | None:
        """The signer's account on `chain` (after :meth:`destination`); None without nonces."""
        return binding(chain.kind).signer_account(self.destinations[chain.name], key)

    async def close(self) -> None:
        """Close every RPC connection."""
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                await close()


def _spec(chain: ChainConfig) -> ChainSpec:
    return ChainSpec(
        chain.name, chain.wormhole_chain_id, chain.rpc_url, chain.address, chain.finality
    )


# --- the process ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageRequest:
    """What to run, as the command line asked.

    Attributes:
        stage: One of :data:`STAGES`.
        chain: The chain of ``watch`` and ``deliver``.
        signer_keys: Deliverer key files by chain name; the key under ``""`` serves any chain
            without its own.
        guardian_keys: Guardian key files (``attest``: one; ``all``: any number, in index order
            when no guardian set is configured).
        guardian_index: The guardian's index (``attest``); None: found in the guardian set.
        threshold_shares: Under threshold attestation, the guardians' share files, in the
            order of `guardian_keys` (``attest``: none reads ``FEDRELAY_THRESHOLD_SHARE``).
    """

    stage: str
    chain: str | None = None
    signer_keys: Mapping[str, Path] = field(default_factory=dict)
    guardian_keys: Sequence[Path] = ()
    guardian_index: int | None = None
    threshold_shares: Sequence[Path] = ()


@dataclass
class RelayerProcess:
    """Stages, their health server and what they hold open; :meth:`run` until signalled."""

    settings: RelayerSettings
    stages: list[RunningStage]
    bus: Bus
    ledger: SqlRelayerLedger
    chains: ChainConnections
    checks: dict[str, ReadinessCheck]
    topics: list[str]
    metrics: StageMetrics
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _rng: random.Random = field(default_factory=random.Random)

    def health_server(self) -> HealthServer:
        """The ``/healthz``, ``/readyz``, ``/metrics`` server of this process."""
        return HealthServer(
            self.checks, host=self.settings.health_host, port=self.settings.health_port
        )

    async def run(self) -> None:
        """Serve health, run every stage until SIGTERM or SIGINT, then release everything.

        A signal stops every stage after its in-flight batch (even one that arrives while the
        process is still starting); stages that take longer than ``drain_seconds`` to finish
        are cancelled and :class:`DrainTimeout` is raised.

        Raises:
            DrainTimeout: The stages did not drain in time.
        """
        loop = asyncio.get_running_loop()
        server = self.health_server()
        serving = asyncio.create_task(server.serve(), name="health")
        running: asyncio.Task[None] | None = None
        signalled = asyncio.Event()

        def stop_all() -> None:
            log.info(
                "relayer: signal received; draining (at most %gs)", self.settings.drain_seconds
            )
            signalled.set()
            for stage in self.stages:
                stage.stop()
            if running is not None:
                loop.call_later(self.settings.drain_seconds, running.cancel)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_all)
        try:
            await server.wait_started()
            log.info("relayer: health on %s:%d; stages: %s", self.settings.health_host,
                     self.settings.health_port, ", ".join(s.name for s in self.stages))  # fmt: skip
            if not signalled.is_set():
                await self._create_topics(signalled)
            running = asyncio.create_task(run_until_signalled(self.stages, signals=()))
            if signalled.is_set():
                loop.call_later(self.settings.drain_seconds, running.cancel)
            try:
                await running
            except asyncio.CancelledError:
                if not signalled.is_set():
                    raise
                raise DrainTimeout(
                    f"the stages did not drain within {self.settings.drain_seconds:g}s"
                ) from None
            log.info("relayer: every stage drained; exiting")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            server.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving, 5)
            await self.close()

    async def _create_topics(self, signalled: asyncio.Event) -> None:
        """Create the topics, waiting for the broker as the stages do (until it is up or a
        signal came); a broker that is away at start is no reason to exit."""
        policy = self.settings.retry_policy()
        failures = 0
        while not signalled.is_set():
            try:
                await self.bus.create_topics(self.topics, partitions=self.settings.topic_partitions)
                return
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.warning("relayer: cannot create the topics yet (%s); waiting for the "
                                "broker", redact_text(str(exc)))  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signalled.wait(), policy.delay(min(failures, 30), self._rng))
        if failures:
            log.info("relayer: topics created after %d tries", failures + 1)

    async def close(self) -> None:
        """Close connections (RPC, bus probes, database)."""
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                await close()
        await self.chains.close()
        await self.ledger.close()


def chains_of(settings: RelayerSettings) -> ChainsConfig:
    """The chains file the settings name.

    Raises:
        ChainsFileError: No file is configured, or it is broken.
    """
    if settings.chains_file is None:
        raise ChainsFileError("no chains file: set FEDRELAY_CHAINS_FILE (docs/operations.md)")
    chains = load_chains(settings.chains_file)
    remember(*(chain.rpc_url for chain in chains.chains))  # their keys are masked in every message
    return chains


async def build_process(
    settings: RelayerSettings,
    chains: ChainsConfig,
    request: StageRequest,
    *,
    bus: Bus | None = None,
    metrics: StageMetrics | None = None,
) -> RelayerProcess:
    """Connect and build the stages `request` asks for (nothing runs yet).

    Args:
        settings: The relayer's settings.
        chains: The chains file.
        request: The stage and its options.
        bus: The bus to use (default: Kafka if configured, else a new in-process bus).
        metrics: Where the stages' metrics go (default: the process registry).

    Raises:
        ServiceConfigError: An option, key or chain is missing or wrong.
        ChainsFileError: `request` names a chain the file does not have.
        GuardianKeyError: A guardian key is missing or wrong.
    """
    if request.stage not in STAGES:
        raise ServiceConfigError(f"unknown stage {request.stage!r}; one of {', '.join(STAGES)}")
    metrics = metrics or stage_metrics()
    closers: list[Callable[[], Awaitable[None]]] = []
    checks: dict[str, ReadinessCheck] = {}
    if bus is None:
        if settings.kafka_bootstrap:
            bus = KafkaBus(settings.kafka_bootstrap)
        else:
            bus = MemoryBus(default_partitions=settings.topic_partitions)
    end_offsets: EndOffsets | None = None
    if isinstance(bus, KafkaBus | MemoryBus):
        probe = bus.readiness_probe()
        if isinstance(bus, KafkaBus):
            checks["kafka"] = probe
            closers.append(probe.close)
        if isinstance(bus, KafkaBus):
            install_outage_logging()
        reader = bus.end_offsets_reader()
        closers.append(reader.stop)  # it connects on first use, and again after a failure
        end_offsets = reader
    ledger = SqlRelayerLedger.open(settings.database_url)
    checks["database"] = ledger.ping
    connections = ChainConnections()
    builder = _Builder(settings, chains, bus, ledger, connections, metrics, end_offsets)
    try:
        stages = await builder.build(request)
    except BaseException:
        await connections.close()
        await ledger.close()
        for close in closers:
            with contextlib.suppress(Exception):
                await close()
        raise
    checks.update(connections.probes)
    return RelayerProcess(
        settings=settings, stages=stages, bus=bus, ledger=ledger, chains=connections,
        checks=checks, topics=builder.topics(), metrics=metrics, closers=closers,
    )  # fmt: skip


@dataclass
class _Builder:
    settings: RelayerSettings
    chains: ChainsConfig
    bus: Bus
    ledger: RelayerLedger
    connections: ChainConnections
    metrics: StageMetrics
    end_offsets: EndOffsets | None

    async def build(self, request: StageRequest) -> list[RunningStage]:
        stage = request.stage
        if stage == "watch":
            return [await self._watch(self._chain(request))]
        if stage == "deliver":
            chain = self._chain(request)
            return [await self._deliver(chain, _key_for(request, chain))]
        if stage == "attest":
            if len(request.guardian_keys) > 1:
                raise ServiceConfigError("--stage attest runs one guardian: give one key file")
            key = request.guardian_keys[0] if request.guardian_keys else None
            share = request.threshold_shares[0] if request.threshold_shares else None
            signer = load_guardian_signer(key)
            return [await self._attest(signer, request.guardian_index, share)]
        if stage == "assemble":
            return [*self._assemble(self._guardian_sets()), self._route()]
        if stage == "fetch":
            return [self._fetch(), self._route()]
        if stage == "route":
            return [self._route()]
        return await self._all(request)

    async def _all(self, request: StageRequest) -> list[RunningStage]:
        stages: list[RunningStage] = [await self._watch(c) for c in self.chains.chains]
        signers = [load_guardian_signer(path) for path in request.guardian_keys]
        if signers:
            sets = self.settings.guardian_sets()
            if sets is None:  # embedded devnet: the given guardians are the set, in order
                addresses = tuple(s.address for s in signers)
                own = GuardianSet(index=self.settings.guardian_set_index, addresses=addresses)
                sets = GuardianSets.of(own)
            shares = list(request.threshold_shares)
            if self.settings.attestation == "threshold" and len(shares) != len(signers):
                raise ServiceConfigError(
                    f"threshold attestation: {len(signers)} guardian key file(s) but "
                    f"{len(shares)} threshold share file(s); give one share per guardian"
                )
            for index, signer in enumerate(signers):
                share = shares[index] if shares else None
                position = self._index_in(signer, sets, index)
                stages.append(await self._attest(signer, position, share))
            stages.extend(self._assemble(sets))
        else:
            stages.append(self._fetch())
        stages.append(self._route())
        for chain in self.chains.chains:
            if chain.name in request.signer_keys or "" in request.signer_keys:
                stages.append(await self._deliver(chain, _key_for(request, chain)))
            else:
                log.warning("relayer: no signer key for chain %s; not delivering to it", chain.name)
        return stages

    # -- one stage each --

    async def _watch(self, chain: ChainConfig) -> RunningStage:
        source = await self.connections.source(chain)
        return watch_stage(
            self.settings, source, self.bus, self.ledger,
            poll_interval_s=self.settings.watch_interval_s, metrics=self.metrics,
            name=f"watch-{chain.wormhole_chain_id}",
        )  # fmt: skip

    async def _attest(
        self, signer: GuardianSigner, index: int | None, share_file: Path | None = None
    ) -> RunningStage:
        sets = self.settings.guardian_sets()
        current = sets.get(self.settings.guardian_set_index) if sets is not None else None
        if index is None:
            if current is None:
                raise ServiceConfigError(
                    "the guardian's index is unknown: give --guardian-index, or set "
                    "FEDRELAY_GUARDIAN_ADDRESSES to the guardian set"
                )
            index = self._index_in(signer, sets, None)
        sources = {
            c.wormhole_chain_id: await self.connections.source(c) for c in self.chains.chains
        }
        attester = Attester(
            sources, signer, index, guardian_set_index=self.settings.guardian_set_index,
            guardian_set=current, signatures_topic=self.settings.signatures_topic,
            journal=self._journal(index, share_file), tss_index=self.settings.tss_index,
        )  # fmt: skip
        topics = [self.settings.observations_topic]
        if attester.journal is not None:
            topics.append(self.settings.signing_topic)
        runner = self._runner(f"attest-{index}", topics, attester)
        runner.batches_in_flight = self.settings.batches_in_flight  # signing keeps no state
        return runner

    def _journal(self, index: int, share_file: Path | None) -> SigningJournal | None:
        """Guardian `index`'s threshold share and signing journal (threshold attestation)."""
        settings = self.settings
        if settings.attestation != "threshold":
            return None
        group_key, verification = settings.threshold_points()
        expected = verification.get(index + 1)
        if expected is None:
            raise ServiceConfigError(
                f"threshold attestation: no verification share is configured for guardian "
                f"{index} (FEDRELAY_THRESHOLD_VERIFICATION_SHARES lists {len(verification)})"
            )
        share = load_threshold_share(index, group_key, expected, share_file)
        path = settings.signing_journal_dir / f"key-{settings.tss_index}-guardian-{index}.sqlite"
        journal = SigningJournal(share, path)
        self.connections.closers.append(_closing(journal.close))
        return journal

    def threshold_config(self) -> ThresholdConfig | None:
        """The threshold key the assembler signs under (threshold attestation), else None."""
        settings = self.settings
        if settings.attestation != "threshold":
            return None
        group_key, verification = settings.threshold_points()
        try:
            return ThresholdConfig(
                tss_index=settings.tss_index, group_key=group_key,
                threshold=settings.threshold_signers or quorum(len(verification)),
                verification_shares=verification,
                guardian_set_index=settings.guardian_set_index,
                signing_topic=settings.signing_topic, timeout_s=settings.threshold_timeout_s,
            )  # fmt: skip
        except ThresholdConfigError as exc:
            raise ServiceConfigError(str(exc)) from None

    def _assemble(self, sets: GuardianSets) -> list[RunningStage]:
        """The assemble stage; under threshold attestation, its ticker beside it."""
        config = self.threshold_config()
        assembler = Assembler(self.ledger, sets, self.settings.vaas_topic, threshold=config)
        stages: list[RunningStage] = [
            self._runner("assemble", [self.settings.signatures_topic], assembler)
        ]
        if config is not None:
            topic = self.settings.signatures_topic
            stages.append(ThresholdTicker(self.bus, topic, config.timeout_s / 2))
        return stages

    def _fetch(self) -> RunningStage:
        api = GuardianApi(
            self.settings.guardian_api_url, timeout_s=self.settings.guardian_api_timeout_s
        )
        self.connections.closers.append(api.aclose)
        fetcher = VaaFetcher(
            api, self.ledger, self.settings.guardian_sets(), self.settings.vaas_topic
        )
        return self._runner("fetch", [self.settings.observations_topic], fetcher)

    def _route(self) -> RunningStage:
        router = Router(
            destinations=frozenset(c.wormhole_chain_id for c in self.chains.chains),
            prefix=self.settings.deliveries_prefix,
        )
        runner = self._runner("route", [self.settings.vaas_topic], router)
        runner.batches_in_flight = self.settings.batches_in_flight  # routing keeps no state
        return runner

    async def _deliver(self, chain: ChainConfig, pool: Sequence[str | bytes]) -> RunningStage:
        lanes = []
        for index, key in enumerate(pool):
            destination = await self.connections.destination(chain, key, index)
            deliverer = Deliverer(
                destination, self.ledger, self.settings.retry_policy(),
                confirm_timeout_s=self.settings.confirm_timeout_s,
            )  # fmt: skip
            lanes.append(
                SignerLane(
                    deliverer,
                    window=self.settings.deliver_window,
                    batch_max=self.settings.deliver_batch_max,
                )
            )
        processor: Any = lanes[0].deliverer
        settings = self.settings
        if settings.deliver_window > 1 or settings.deliver_batch_max > 1 or len(lanes) > 1:
            processor = PipelinedDeliverer(lanes)
        name = f"deliver-{chain.wormhole_chain_id}"
        runner = self._runner(
            name, [self.settings.delivery_topic(chain.wormhole_chain_id)], processor
        )
        runner.batch_size = self.settings.deliver_batch_size
        if isinstance(processor, PipelinedDeliverer) and processor.overlaps_batches:
            runner.batches_in_flight = self.settings.deliver_batches_in_flight
        return runner

    # -- helpers --

    def _runner(self, name: str, topics: Sequence[str], processor: Any) -> StageRunner:
        return StageRunner(
            name=name, bus=self.bus, inputs=list(topics), processor=processor,
            metrics=self.metrics, end_offsets=self.end_offsets, dead_letters=self.ledger,
            **self.settings.runner_options(name),
        )  # fmt: skip

    def _chain(self, request: StageRequest) -> ChainConfig:
        if request.chain is None:
            raise ServiceConfigError(f"--stage {request.stage} needs --chain NAME")
        return self.chains.named(request.chain)

    def _guardian_sets(self) -> GuardianSets:
        sets = self.settings.guardian_sets()
        if sets is None:
            raise ServiceConfigError(
                "assemble checks signatures against the guardian set: set "
                "FEDRELAY_GUARDIAN_ADDRESSES (and FEDRELAY_GUARDIAN_SET_INDEX)"
            )
        return sets

    def _index_in(
        self, signer: GuardianSigner, sets: GuardianSets | None, default: int | None
    ) -> int:
        current = sets.get(self.settings.guardian_set_index) if sets is not None else None
        if current is not None and signer.address in current.addresses:
            return current.addresses.index(signer.address)
        if default is not None and current is None:
            return default
        raise GuardianKeyError(
            f"the guardian key (address 0x{signer.address.hex()}) is not in guardian set "
            f"{self.settings.guardian_set_index}"
        )

    def topics(self) -> list[str]:
        s = self.settings
        fixed = [s.observations_topic, s.signatures_topic, s.vaas_topic, s.dlq_topic]
        if s.attestation == "threshold":
            fixed.append(s.signing_topic)
        return fixed + [s.delivery_topic(c.wormhole_chain_id) for c in self.chains.chains]


def _closing(close: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    """An async closer around a synchronous one."""

    async def closer() -> None:
        close()

    return closer


def _key_for(request: StageRequest, chain: ChainConfig) -> list[str | bytes]:
    path = request.signer_keys.get(chain.name, request.signer_keys.get(""))
    return read_signer_keys(chain, path)
