"""No secret of a configured URL reaches any output: health, metrics, logs, errors, CLI output.

The real commands run with secret-bearing URLs (an RPC key in the path and the query, a database
password with ``@``, ``%`` and ``:`` in it, percent-encoded): `fedrelay relayer run` failing at
start, `fedrelay relayer run` and `fedrelay coordinator run` running with failing checks (their
``/healthz``, ``/readyz`` and ``/metrics``, and their whole log), `fedrelay coordinator run`
with a malformed database URL, and `fedrelay db upgrade` failing and succeeding against the
session's PostgreSQL, where a role has that password and must authenticate with it. Every
output is collected and searched for each secret; each still names the endpoint, redacted.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from ops_support import FEDRELAY, Running

from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.process import free_port, wait_until
from fedrelay.adapters.devnet.services import Postgres
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR

pytestmark = pytest.mark.integration

SECRET_TOKEN = "pathTok3n0123456789abcdefXYZ"  # an RPC provider's key, in the URL's path
SECRET2 = "qu3ryK3ySecret2"  # a key in the query
SECRET3 = "Pw@3:s%cr3t"  # a database password with @, % and :
SECRETS = (SECRET_TOKEN, SECRET2, SECRET3, quote(SECRET3, safe=""))
ROLE = f"secret_{uuid.uuid4().hex[:8]}"
AGGREGATOR_KEY = "0x" + "11" * 32


@dataclass
class Outputs:
    """Every output the tests of this module saw, by where it came from."""

    seen: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, text: str) -> str:
        """Keep `text` and assert that it holds none of the secrets."""
        self.seen[name] = text
        leaked = [secret for secret in SECRETS if secret in text]
        assert not leaked, f"{name} leaks {leaked}:\n{text[-4000:]}"
        return text


@pytest.fixture(scope="module")
def outputs() -> Outputs:
    """The outputs of the module's runs, each searched for the secrets as it is added."""
    return Outputs()


def rpc_url(port: int) -> str:
    """A hosted provider's RPC URL (key in path and query) on a port nothing listens on."""
    return f"http://127.0.0.1:{port}/v3/{SECRET_TOKEN}?apikey={SECRET2}"


@pytest.fixture(scope="module")
def secret_role(postgres: Postgres) -> str:
    """A role whose password is SECRET3 and which must give it (not trusted like the others).

    Returns:
        The name of its own database.
    """
    hba = postgres.datadir / "pg_hba.conf"
    rule = f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n"
    hba.write_text(rule + hba.read_text())  # the first matching line wins: only this role
    password = SECRET3.replace("'", "''")
    postgres.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{password}'", "postgres")
    postgres.psql(f'CREATE DATABASE "{ROLE}" OWNER {ROLE}', "postgres")
    postgres.psql("SELECT pg_reload_conf()", "postgres")
    return ROLE


def database_url(postgres: Postgres, password: str) -> str:
    """The asyncpg URL of the secret role's database, the password percent-encoded."""
    return (
        f"postgresql+asyncpg://{ROLE}:{quote(password, safe='')}@127.0.0.1:{postgres.port}/{ROLE}"
    )


def fedrelay(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FEDRELAY), *args],
        env={**os.environ, "OTEL_TRACES_EXPORTER": "none", **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def chains_file(workdir: Path, port: int) -> Path:
    path = workdir / "chains.yaml"
    path.write_text(
        "chains:\n"
        "  - name: coordinator\n"
        "    kind: evm\n"
        "    wormhole_chain_id: 2\n"
        f'    rpc_url: "{rpc_url(port)}"\n'
        '    address: "0x' + "ab" * 20 + '"\n'
        "    finality: latest\n"
    )
    return path


@pytest.fixture
def spawn() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for process in started:
        process.stop()


def start(
    args: list[str], env: dict[str, str], log: Path, port: int, started: list[Running]
) -> Running:
    with log.open("wb") as sink:
        child = subprocess.Popen(
            [str(FEDRELAY), *args],
            env={**os.environ, "OTEL_TRACES_EXPORTER": "none", **env},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    process = Running(child, log, port)
    started.append(process)
    return process


def probe_failing(process: Running, failing: str, outputs: Outputs, name: str) -> None:
    """Wait for ``/readyz`` to report `failing` down; keep all three answers as outputs."""
    answers: list[httpx.Response] = []

    def failed() -> bool:
        answer = process.get("/readyz")
        if answer is None:
            return False
        answers.append(answer)
        checks = answer.json()["checks"]
        return answer.status_code == 503 and checks.get(failing, {}).get("ready") is False

    try:
        wait_until(failed, 120, f"{name} /readyz to report {failing} down", 0.2,
                   process.alive)  # fmt: skip
    except (TimeoutError, ChildProcessError) as exc:
        raise AssertionError(f"{exc}\n{process.log.read_text()[-4000:]}") from None
    readyz = answers[-1]
    detail = readyz.json()["checks"][failing]["detail"]
    assert detail.startswith(("unreachable", "no answer within")), detail
    outputs.add(f"{name} /readyz", readyz.text)
    for path in ("/healthz", "/metrics"):
        answer = process.get(path)
        assert answer is not None
        assert answer.status_code == 200
        outputs.add(f"{name} {path}", answer.text)


def test_relayer_start_failure_names_the_endpoint_without_its_key(
    tmp_path: Path, postgres: Postgres, secret_role: str, outputs: Outputs
) -> None:
    closed = free_port()
    signer = tmp_path / "signer.key"
    signer.write_text(AGGREGATOR_KEY + "\n")
    env = {
        "FEDRELAY_CHAINS_FILE": str(chains_file(tmp_path, closed)),
        "FEDRELAY_DATABASE_URL": database_url(postgres, "wrong-" + SECRET3),
        "FEDRELAY_HEALTH_PORT": str(free_port()),
    }
    result = fedrelay(["relayer", "run", "--stage", "all", "--signer-key-file", str(signer)], env)
    output = outputs.add("relayer run --stage all", result.stdout + result.stderr)
    assert result.returncode == 2, output
    assert f"127.0.0.1:{closed}/v3/***?apikey=***" in output
    assert "cannot bring the ledger to the current schema" in output  # the wrong password
    assert f"{ROLE}:***@127.0.0.1:{postgres.port}/{ROLE}" in output


def test_relayer_health_with_a_failing_database(
    tmp_path: Path, postgres: Postgres, secret_role: str, outputs: Outputs, spawn: list[Running]
) -> None:
    port = free_port()
    env = {
        "FEDRELAY_CHAINS_FILE": str(chains_file(tmp_path, free_port())),
        "FEDRELAY_DATABASE_URL": database_url(postgres, "wrong-" + SECRET3),
        "FEDRELAY_HEALTH_PORT": str(port),
        "FEDRELAY_POLL_WAIT_S": "0.1",
    }
    process = start(["relayer", "run", "--stage", "route"], env, tmp_path / "r.log", port, spawn)
    probe_failing(process, "database", outputs, "relayer")
    log = outputs.add("relayer log", process.stopped_log())
    assert "readiness check database fails" in log  # the reason is logged, redacted


@pytest.fixture(scope="module")
def contracts() -> None:
    """The compiled contracts the coordinator loads at start (forge caches)."""
    Forge(Path(CONTRACTS_DIR)).build()


@pytest.mark.usefixtures("contracts")
def test_coordinator_health_with_failing_chain_and_database(
    tmp_path: Path, postgres: Postgres, secret_role: str, outputs: Outputs, spawn: list[Running]
) -> None:
    key = tmp_path / "aggregator.key"
    key.write_text(AGGREGATOR_KEY + "\n")
    closed, port = free_port(), free_port()
    env = {
        "FEDRELAY_DATABASE_URL": database_url(postgres, "wrong-" + SECRET3),
        "FEDRELAY_COORDINATOR_RPC_URL": rpc_url(closed),
        "FEDRELAY_COORDINATOR_JOB_MARKET": "0x" + "ab" * 20,
        "FEDRELAY_API_HOST": "127.0.0.1",
        "FEDRELAY_API_PORT": str(free_port()),
        "FEDRELAY_HEALTH_PORT": str(port),
        "FEDRELAY_BLOB_DIR": str(tmp_path / "blobs"),
        "FEDRELAY_COORDINATOR_ADMIN_TOKEN": "admin-token-0123456789",
        "FEDRELAY_DRAIN_SECONDS": "5",
    }
    argv = ["coordinator", "run", "--signer-key-file", str(key)]
    process = start(argv, env, tmp_path / "c.log", port, spawn)
    probe_failing(process, "chain", outputs, "coordinator")
    probe_failing(process, "database", outputs, "coordinator")
    log = outputs.add("coordinator log", process.stopped_log())
    assert "readiness check chain fails" in log
    assert f"port={closed}" in log or f"127.0.0.1:{closed}" in log  # the endpoint is named
    assert "/v3/***?apikey=***" in log  # its path and query, masked


@pytest.mark.usefixtures("contracts")
def test_coordinator_with_a_malformed_database_url(
    tmp_path: Path, secret_role: str, outputs: Outputs
) -> None:
    key = tmp_path / "aggregator.key"
    key.write_text(AGGREGATOR_KEY + "\n")
    env = {
        "FEDRELAY_DATABASE_URL": f"postgresql+asyncpg://{ROLE}:{SECRET3}@db.internal:5432x/l",
        "FEDRELAY_COORDINATOR_RPC_URL": rpc_url(free_port()),
        "FEDRELAY_COORDINATOR_JOB_MARKET": "0x" + "ab" * 20,
        "FEDRELAY_HEALTH_PORT": str(free_port()),
        "FEDRELAY_API_PORT": str(free_port()),
        "FEDRELAY_BLOB_DIR": str(tmp_path / "blobs"),
        "FEDRELAY_COORDINATOR_ADMIN_TOKEN": "admin-token-0123456789",
    }
    result = fedrelay(["coordinator", "run", "--signer-key-file", str(key)], env)
    output = outputs.add("coordinator run, malformed URL", result.stdout + result.stderr)
    assert result.returncode == 2, output
    assert "invalid database URL" in output
    assert "db.internal" in output


def test_db_upgrade_fails_without_the_password_and_works_with_it(
    postgres: Postgres, secret_role: str, outputs: Outputs
) -> None:
    wrong = fedrelay(["db", "upgrade", "--url", database_url(postgres, SECRET3 + "-wrong")], {})
    output = outputs.add("db upgrade, wrong password", wrong.stdout + wrong.stderr)
    assert wrong.returncode == 2, output
    assert "Traceback" not in output
    assert f"{ROLE}:***@127.0.0.1:{postgres.port}/{ROLE}" in output

    closed = database_url(postgres, SECRET3).replace(f":{postgres.port}/", f":{free_port()}/")
    away = fedrelay(["db", "upgrade", "--url", closed], {})
    output = outputs.add("db upgrade, closed port", away.stdout + away.stderr)
    assert away.returncode == 2, output
    assert "Traceback" not in output

    url = database_url(postgres, SECRET3)
    upgraded = fedrelay(["db", "upgrade"], {"FEDRELAY_DATABASE_URL": url})
    output = outputs.add("db upgrade", upgraded.stdout + upgraded.stderr)
    assert upgraded.returncode == 0, output
    assert "ledger at revision" in output
    current = fedrelay(["db", "current", "--url", url], {})
    outputs.add("db current", current.stdout + current.stderr)
    assert current.returncode == 0
    assert current.stdout.strip() == upgraded.stdout.strip().rsplit(" ", 1)[-1]
    owner = postgres.psql(
        "SELECT tableowner FROM pg_tables WHERE tablename = 'alembic_version'", ROLE
    )
    assert owner.strip() == ROLE  # the role itself, authenticated by its password, migrated
