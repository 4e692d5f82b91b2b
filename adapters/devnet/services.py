"""Real services on loopback: an anvil chain, a PostgreSQL cluster, a single-broker Kafka, an
S3-compatible object store (SeaweedFS), and the Solana JSON-RPC devnet as a process of its own.

Each service picks free ports, works in its own temporary directory, and is a context manager:

    with Anvil(chain_id=31337) as chain, Postgres() as pg, Kafka() as kafka:
        ...  # chain.rpc_url, pg.async_url, kafka.bootstrap

A service that does not become ready raises `ServiceStartError` with the tail of its log.
Services support `stop()` / `start()` again on the same ports and data, and `kill()`, so fault
tests can restart or crash them.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from fedrelay.adapters.devnet import toolchain
from fedrelay.adapters.devnet.process import (
    ManagedProcess,
    ServiceStartError,
    free_port,
    free_ports,
    port_open,
    read_tail,
    wait_until,
)

DEFAULT_START_TIMEOUT = 60.0


class Service:
    """Common life cycle: a work directory, one managed process, start/stop/kill."""

    name = "service"

    def __init__(self, workdir: Path | None, start_timeout: float) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"fedrelay-{self.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.start_timeout = start_timeout
        self.log_path = self.workdir / f"{self.name}.log"
        self._process: ManagedProcess | None = None
        self._log_offset = 0

    # subclasses implement these two
    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _prepare(self) -> None:
        """One-time preparation before the first start (initdb, storage format)."""

    def _env(self) -> dict[str, str] | None:
        return None

    def _after_ready(self) -> None:
        """Work done once the process is ready (for example creating a database)."""

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> Self:
        if self.running:
            return self
        if self._process is None:
            self._prepare()
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._process = ManagedProcess(self.name, self._argv(), self.log_path, env=self._env())
        self._process.start()
        process = self._process
        try:
            wait_until(
                self._ready,
                self.start_timeout,
                f"{self.name} to accept connections",
                alive=process.running,
            )
            self._after_ready()
        except (TimeoutError, ChildProcessError, OSError, RuntimeError) as exc:
            process.kill()
            raise ServiceStartError(self.name, str(exc), self.log_path) from exc
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def kill(self) -> None:
        """Crash the service (SIGKILL); `start()` brings it back on the same ports and data."""
        if self._process is not None:
            self._process.kill()

    def close(self) -> None:
        """Stop and remove the work directory if the harness created it."""
        self.stop()
        self._process = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return read_tail(self.log_path, lines)

    def log_since_start(self) -> str:
        """What the process logged since its latest start."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Anvil(Service):
    """A Foundry anvil chain with its ten funded development accounts."""

    name = "anvil"

    def __init__(
        self,
        chain_id: int = 31337,
        *,
        port: int | None = None,
        block_time: float | None = None,
        mixed_mining: bool = False,
        workdir: Path | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        """A chain to start.

        Args:
            chain_id: The EVM chain id.
            port: The RPC port (default: a free one).
            block_time: Mine a block every this many seconds (default: only on transactions).
            mixed_mining: With `block_time`, also mine each transaction at once, so the chain
                answers as fast as an automining one while its clock still moves when idle.
            workdir: Where its files go (default: a temporary folder).
            start_timeout: Seconds it may take to answer.
        """
        super().__init__(workdir, start_timeout)
        if mixed_mining and block_time is None:
            raise ValueError("mixed_mining needs a block_time")
        self.chain_id = chain_id
        self.port = port or free_port()
        self.block_time = block_time
        self.mixed_mining = mixed_mining
        self._config_path = self.workdir / "anvil-config.json"
        self.private_keys: list[str] = []
        self.addresses: list[str] = []

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _argv(self) -> list[str]:
        argv = [
            str(toolchain.foundry_binary("anvil")),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--chain-id",
            str(self.chain_id),
            "--config-out",
            str(self._config_path),
            "--max-persisted-states",
            "0",
        ]
        if self.block_time is not None:
            argv += ["--block-time", str(self.block_time)]
        if self.mixed_mining:
            argv.append("--mixed-mining")
        return argv

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        """One JSON-RPC call; raises RuntimeError with the node's error message."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
        request = urllib.request.Request(  # noqa: S310 - loopback URL built by us
            self.rpc_url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            reply = json.loads(response.read())
        if "error" in reply:
            raise RuntimeError(f"anvil {method}: {reply['error']}")
        return reply["result"]

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        try:
            if int(self.rpc("eth_chainId"), 16) != self.chain_id:
                return False
        except OSError:
            return False
        # anvil may answer RPC before it has finished writing --config-out.
        try:
            config = json.loads(self._config_path.read_text())
        except (OSError, ValueError):
            return False
        self.private_keys = list(config["private_keys"])
        self.addresses = list(config["available_accounts"])
        return bool(self.private_keys)


class Postgres(Service):
    """A PostgreSQL cluster of its own: `initdb` into a temporary directory, one database.

    The server runs as a direct child (not daemonised by `pg_ctl start`) so that it dies with
    the harness; `pg_ctl stop` performs the clean shutdown. When the harness runs as root the
    cluster runs as the `postgres` system user, since PostgreSQL refuses to run as root.
    `durable=False` (the default for tests) turns fsync, synchronous commit and full-page
    writes off: fast, but a crash (SIGKILL) of the server loses the last commits. Tests that
    crash the server pass `durable=True`.
    """

    name = "postgres"

    def __init__(
        self,
        *,
        port: int | None = None,
        database: str = "fedrelay",
        user: str = "fedrelay",
        durable: bool = False,
        workdir: Path | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        super().__init__(workdir, start_timeout)
        self.port = port or free_port()
        self.database = database
        self.user = user
        self.durable = durable
        self.datadir = self.workdir / "data"
        self.socketdir = self.workdir / "sock"
        self.bindir = toolchain.postgres_bindir()

    @property
    def async_url(self) -> str:
        """SQLAlchemy URL for the asyncpg driver."""
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def dsn(self) -> str:
        """libpq connection string."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _as_server_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        account = pwd.getpwnam("postgres")
        return [
            "setpriv",
            f"--reuid={account.pw_uid}",
            f"--regid={account.pw_gid}",
            "--clear-groups",
            "--pdeathsig=SIGKILL",
            "--",
            *argv,
        ]

    def _prepare(self) -> None:
        self.socketdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            for path in (self.workdir, self.socketdir):
                os.chown(path, account.pw_uid, account.pw_gid)
        if (self.datadir / "PG_VERSION").exists():
            return
        with self.log_path.open("ab") as log:
            subprocess.run(
                self._as_server_user(
                    [
                        str(self.bindir / "initdb"),
                        "-D",
                        str(self.datadir),
                        "-U",
                        self.user,
                        "--auth=trust",
                        "--encoding=UTF8",
                        "--locale=C",
                        "--no-sync",
                    ]
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
                cwd=self.workdir,
            )
        if not (self.datadir / "PG_VERSION").exists():
            raise ServiceStartError(self.name, "initdb failed", self.log_path)

    def _argv(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socketdir),
            "max_connections": "200",
            "fsync": "on" if self.durable else "off",
            "synchronous_commit": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
        }
        argv = [str(self.bindir / "postgres"), "-D", str(self.datadir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return self._as_server_user(argv)

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        probe = subprocess.run(
            [
                str(self.bindir / "pg_isready"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                "postgres",
                "-q",
            ],
            check=False,
        )
        return probe.returncode == 0

    def _after_ready(self) -> None:
        exists = self.psql("SELECT 1 FROM pg_database WHERE datname = :'db'", "postgres")
        if exists.strip() != "1":
            self.psql('CREATE DATABASE :"db"', "postgres")

    def create_database(self, prefix: str) -> str:
        """Create an empty database named ``<prefix>_<random>``; return its asyncpg URL."""
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,40}", prefix):
            raise ValueError(
                f"a database prefix must be lower-case letters, digits or _: {prefix!r}"
            )
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.psql(f'CREATE DATABASE "{name}"', "postgres")
        return self.async_url.rsplit("/", 1)[0] + "/" + name

    def psql(self, sql: str, database: str | None = None) -> str:
        """Run SQL through psql (``:'db'`` / ``:"db"`` name the test database); return stdout."""
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database or self.database,
                "-v",
                f"db={self.database}",
                "-tAX",
                "-v",
                "ON_ERROR_STOP=1",
            ],
            input=sql,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def stop(self) -> None:
        if not self.running:
            return
        subprocess.run(
            self._as_server_user(
                [str(self.bindir / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", "fast", "-w"]
            ),
            capture_output=True,
            check=False,
            timeout=60,
        )
        super().stop()


class Kafka(Service):
    """A single Apache Kafka broker in KRaft mode (combined broker and controller)."""

    name = "kafka"

    def __init__(
        self,
        *,
        port: int | None = None,
        partitions: int = 1,
        heap: str = "512m",
        workdir: Path | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        super().__init__(workdir, start_timeout)
        self.port = port or free_port()
        self.controller_port = free_port()
        self.partitions = partitions
        self.heap = heap
        self.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        self._config = self.workdir / "server.properties"
        self._log4j = self.workdir / "log4j2.properties"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            str(toolchain.java_binary()),
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self._log4j}",
            "-cp",
            toolchain.kafka_classpath(),
            main,
            *args,
        ]

    def _prepare(self) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.workdir / "logs"),
            "num.partitions": str(self.partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
        }
        self._config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        self._log4j.write_text(
            "status = warn\n"
            "appender.out.type = Console\n"
            "appender.out.name = OUT\n"
            "appender.out.layout.type = PatternLayout\n"
            "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.out.ref = OUT\n"
            "logger.kafka.name = kafka\nlogger.kafka.level = WARN\n"
            "logger.apache.name = org.apache.kafka\nlogger.apache.level = WARN\n"
            "logger.started.name = kafka.server.KafkaRaftServer\nlogger.started.level = INFO\n"
        )
        with self.log_path.open("ab") as log:
            result = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    f"--cluster-id={self.cluster_id}",
                    "-c",
                    str(self._config),
                    "--ignore-formatted",
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=120,
            )
        if result.returncode != 0:
            raise ServiceStartError(self.name, "formatting KRaft storage failed", self.log_path)

    def _argv(self) -> list[str]:
        return self._java("kafka.Kafka", str(self._config))

    def _ready(self) -> bool:
        return port_open(self.port) and "Kafka Server started" in self.log_since_start()


class SeaweedS3(Service):
    """A SeaweedFS cluster in one process (`weed server -s3`): an S3-compatible server.

    The blob store's S3 backend is tested against it. Its S3 gateway knows one identity, with an
    access key id and a secret key made for this instance (:attr:`access_key_id`,
    :attr:`secret_access_key`), and no anonymous one, so requests are really authenticated: a
    wrong key is refused as it would be by any S3 service. Buckets are not created on upload;
    :meth:`create_bucket` makes one. Telemetry and the side servers (Iceberg, Lance) are off.
    Ready means a signed write and read of an object went through, so the volume servers are
    registered, not only the gateway's port open.
    """

    name = "seaweedfs"
    _READY_BUCKET = "fedrelay-ready"

    def __init__(
        self, *, workdir: Path | None = None, start_timeout: float = DEFAULT_START_TIMEOUT
    ) -> None:
        super().__init__(workdir, start_timeout)
        flags = (
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
        )
        self.port, *ports = free_ports(len(flags) + 1)  # distinct: one server, eight listeners
        self._ports = dict(zip(flags, ports, strict=True))
        self.access_key_id = "fedrelay-test"
        self.secret_access_key = secrets.token_hex(20)
        self.region = "us-east-1"
        self._identities = self.workdir / "s3-identities.json"

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint (path-style addressing)."""
        return f"http://127.0.0.1:{self.port}"

    def client(self, *, secret_access_key: str | None = None, timeout: float = 10.0) -> Any:
        """A boto3 S3 client of this server (with another secret key, to test refusals)."""
        import boto3  # the coordinator's extra: only tests that use the server need it
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
            config=Config(
                connect_timeout=timeout,
                read_timeout=timeout,
                retries={"max_attempts": 1},
                s3={"addressing_style": "path"},
            ),
        )

    def blob_store_env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """The ``FEDRELAY_*`` variables that put a coordinator's blobs in ``bucket`` here."""
        return {
            "FEDRELAY_BLOB_STORE": f"s3://{bucket}/{prefix}",
            "FEDRELAY_S3_ENDPOINT_URL": self.endpoint_url,
            "FEDRELAY_S3_REGION": self.region,
            "FEDRELAY_S3_ACCESS_KEY_ID": self.access_key_id,
            "FEDRELAY_S3_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def create_bucket(self, prefix: str = "fedrelay") -> str:
        """Create an empty bucket named ``<prefix>-<random>``; return its name."""
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,40}", prefix):
            raise ValueError(f"a bucket prefix must be lower-case letters, digits or -: {prefix!r}")
        bucket = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def _prepare(self) -> None:
        identity = {
            "name": "fedrelay",
            "credentials": [{"accessKey": self.access_key_id, "secretKey": self.secret_access_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self._identities.write_text(json.dumps({"identities": [identity]}))
        self._identities.chmod(0o600)
        (self.workdir / "data").mkdir(exist_ok=True)

    def _argv(self) -> list[str]:
        argv = [
            str(toolchain.weed_binary()),
            "server",
            f"-dir={self.workdir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            # Each bucket is a collection that takes several volumes of its own; volumes are
            # sparse files, so many small ones cost little disk.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=1000",
            "-volume.preStopSeconds=0",  # stop at once on SIGTERM (nothing to drain in tests)
            "-filer",
            "-s3",
            f"-s3.port={self.port}",
            f"-s3.config={self._identities}",
            "-s3.autoCreateBucket=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
        ]
        return argv + [f"-{flag}={port}" for flag, port in self._ports.items()]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 3 s: weed's own shutdown waits out grace periods (about
        15 s) that protect data no test keeps."""
        if self._process is not None:
            self._process.stop(timeout=3.0)

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client(timeout=2.0)
        try:
            try:
                client.create_bucket(Bucket=self._READY_BUCKET)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise
            client.put_object(Bucket=self._READY_BUCKET, Key="probe", Body=b"ready")
            body = client.get_object(Bucket=self._READY_BUCKET, Key="probe")["Body"]
            return bool(body.read() == b"ready")
        except (BotoCoreError, ClientError):
            return False


class SolanaRpc(Service):
    """The Solana JSON-RPC devnet (:mod:`fedrelay.adapters.devnet.solana_rpc`) in a child process.

    The in-process devnet (``serve_devnet``) shares this process's interpreter with its callers;
    this one runs beside them as a real cluster's RPC node does, so what a benchmark measures of
    its callers is not slowed by the chain's own work. Programs are deployed at start.
    """

    name = "solana-devnet"
    _LISTENING = "solana devnet listening on"

    def __init__(
        self,
        programs: Mapping[str, Path],
        *,
        slot_ms: int | None = None,
        port: int | None = None,
        workdir: Path | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        """A devnet to start.

        Args:
            programs: Program id (base58) -> the program's ELF file, deployed at start.
            slot_ms: Slots of this many wall-clock milliseconds (default: one per transaction).
            port: The RPC port (default: a free one).
            workdir: Where its log goes (default: a temporary folder).
            start_timeout: Seconds it may take to answer.
        """
        super().__init__(workdir, start_timeout)
        if slot_ms is not None and slot_ms <= 0:
            raise ValueError(f"slot_ms must be positive, got {slot_ms}")
        self.programs = dict(programs)
        self.slot_ms = slot_ms
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _argv(self) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "fedrelay.adapters.devnet.solana_rpc",
            "--port",
            str(self.port),
        ]
        if self.slot_ms is not None:
            argv += ["--slot-ms", str(self.slot_ms)]
        for program_id, path in self.programs.items():
            argv += ["--program", f"{program_id}={path}"]
        return argv

    def _ready(self) -> bool:
        return port_open(self.port) and self._LISTENING in self.log_since_start()
