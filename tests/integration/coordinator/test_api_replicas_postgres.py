"""Two replicas of the coordinator API on the harness's real PostgreSQL: a signed request is
accepted by one and refused as a replay by the other (the nonce is claimed in the ledger)."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import httpx
import pytest

from fedrelay.adapters.blobstore import FileBlobStore
from fedrelay.adapters.devnet.services import Postgres
from fedrelay.adapters.ledger.coordinator_repository import LedgerCoordinatorRepository
from fedrelay.adapters.ledger.database import create_engine, upgrade
from fedrelay.coordinator.api import ApiSettings, create_app
from fedrelay.protocol.api.signing import EvmSigner, sign_request
from fedrelay.protocol.rounds import RoundPolicy, open_job

pytestmark = pytest.mark.integration

TOKEN = "admin-token-0123456789"


async def test_two_replicas_on_postgres_accept_a_signed_request_once(
    postgres: Postgres, tmp_path: Path
) -> None:
    await asyncio.to_thread(upgrade, postgres.async_url)
    engines = [create_engine(postgres.async_url), create_engine(postgres.async_url)]
    replicas = [LedgerCoordinatorRepository(engine) for engine in engines]
    signer = EvmSigner(secrets.token_bytes(32), chain=4)  # the database is shared: a fresh key
    job = secrets.randbelow(2**62)
    now = int(time.time())
    await replicas[0].register_worker(signer.worker)
    await replicas[1].save_round(open_job(job, RoundPolicy(total_rounds=1), b"\x01" * 32, at=now))
    apps = [
        create_app(repo, FileBlobStore(tmp_path / f"blobs{i}"), admin_token=TOKEN,
                   settings=ApiSettings(), clock=lambda: now)
        for i, repo in enumerate(replicas)
    ]  # fmt: skip
    headers = sign_request(signer, "GET", f"/v1/jobs/{job}", b"", now=now)
    try:
        answers = []
        for app in (apps[0], apps[1], apps[0]):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
                response = await client.get(f"/v1/jobs/{job}", headers=headers)
                answers.append((response.status_code, response.json().get("error")))
        assert answers == [(200, None), (401, "ReplayedNonce"), (401, "ReplayedNonce")]
        # a concurrent race of the same request on both replicas: exactly one wins
        fresh = sign_request(signer, "GET", f"/v1/jobs/{job}", b"", now=now)

        async def send(index: int) -> int:
            transport = httpx.ASGITransport(app=apps[index])
            async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
                return (await client.get(f"/v1/jobs/{job}", headers=fresh)).status_code

        assert sorted(await asyncio.gather(send(0), send(1), send(0), send(1))) == [
            200, 401, 401, 401,
        ]  # fmt: skip
    finally:
        for engine in engines:
            await engine.dispose()
