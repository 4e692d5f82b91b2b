"""The worker's signed client against the real API app (ASGI transport, no network)."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
from solders.keypair import Keypair

from fedrelay.adapters.blobstore import MemoryBlobStore, blob_name
from fedrelay.coordinator.api import ApiSettings, create_app
from fedrelay.coordinator.memory_store import MemoryCoordinatorStore
from fedrelay.ports.blobs import POSTER
from fedrelay.protocol.api.signing import EvmSigner, SolanaSigner
from fedrelay.protocol.challenges import Challenge
from fedrelay.protocol.rounds import Phase, RoundPolicy, TasksAssigned, apply, open_job
from fedrelay.protocol.secagg.messages import SecAggStage
from fedrelay.worker.sdk.api_client import (
    CoordinatorClient,
    CoordinatorRequestError,
    DownloadMismatch,
)

NOW = 1_800_000_000
TOKEN = "client-test-token-0123"
JOB = 3
EVM = EvmSigner(b"\x61" * 32, chain=4)
SOL = SolanaSigner(Keypair.from_seed(b"\x62" * 32))


@pytest.fixture
async def world() -> tuple[MemoryCoordinatorStore, MemoryBlobStore, httpx.ASGITransport]:
    repository, blobs = MemoryCoordinatorStore(), MemoryBlobStore(max_size=4096)
    for signer in (EVM, SOL):
        await repository.register_worker(signer.worker)
    state = apply(
        open_job(JOB, RoundPolicy(total_rounds=2), b"\x01" * 32, at=NOW - 10),
        TasksAssigned(0, (EVM.worker, SOL.worker), b"\x02" * 32, NOW + 300, NOW - 5),
    )
    await repository.save_round(state)
    settings = ApiSettings(max_blob_bytes=4096, max_message_bytes=1024)
    app = create_app(repository, blobs, admin_token=TOKEN, settings=settings, clock=lambda: NOW)
    return repository, blobs, httpx.ASGITransport(app=app)


def client(
    transport: httpx.AsyncBaseTransport, signer: EvmSigner | SolanaSigner
) -> CoordinatorClient:
    return CoordinatorClient("http://coordinator", signer, clock=lambda: NOW, transport=transport)


async def test_a_worker_round_through_the_client(
    world: tuple[MemoryCoordinatorStore, MemoryBlobStore, httpx.ASGITransport],
) -> None:
    repository, blobs, transport = world
    model = b"global model v0"
    await repository.publish_blob(await blobs.put(model, domain=POSTER))
    async with client(transport, EVM) as evm, client(transport, SOL) as sol:
        status = await evm.job_status(JOB)
        assert (status.round, status.phase) == (0, "assigning")
        assert await evm.download_blob(blob_name(model)) == model

        await evm.send_secagg(JOB, 0, SecAggStage.KEYS, b"evm-keys")
        await sol.send_secagg(JOB, 0, SecAggStage.KEYS, b"sol-keys")
        keys = await sol.secagg_keys(JOB, 0)
        assert keys == {EVM.worker.worker_id: b"evm-keys", SOL.worker.worker_id: b"sol-keys"}
        await evm.send_secagg(
            JOB, 0, SecAggStage.SHARES, b"sealed", recipient_id=SOL.worker.worker_id
        )
        assert await sol.secagg_shares(JOB, 0) == {EVM.worker.worker_id: b"sealed"}
        await evm.send_secagg(JOB, 0, SecAggStage.MASKED, b"masked")

        update = b"masked update bytes"
        assert await evm.upload_update(JOB, 0, update) == blob_name(update)
        assert await repository.updates(JOB, 0) == {EVM.worker: blob_name(update)}

        state = await repository.get_round(JOB)
        assert state is not None
        await repository.save_round(replace(state, phase=Phase.AGGREGATING))
        assert await sol.survivors(JOB, 0) == [EVM.worker.worker_id]

        challenge = Challenge(JOB, 0, SOL.worker, segment=1, issued_at=NOW, answer_by=NOW + 60)
        await repository.save_challenge(challenge)
        [open_challenge] = await sol.open_challenges()
        assert open_challenge.challenge_id == challenge.challenge_id
        answered = await sol.answer_challenge(
            challenge.challenge_id,
            start_checkpoint=b"c1",
            end_checkpoint=b"c2",
            start_proof=b"p1",
            end_proof=b"p2",
        )
        assert answered.answer is not None
        assert answered.answer.end_checkpoint == blob_name(b"c2")
        assert await sol.open_challenges() == []


async def test_refusals_carry_the_coordinators_reason(
    world: tuple[MemoryCoordinatorStore, MemoryBlobStore, httpx.ASGITransport],
) -> None:
    _, _, transport = world
    stranger = EvmSigner(b"\x63" * 32, chain=4)
    async with client(transport, stranger) as api:
        with pytest.raises(CoordinatorRequestError) as refused:
            await api.job_status(JOB)
    assert refused.value.status_code == 403
    assert refused.value.error == "UnregisteredWorker"
    async with client(transport, EVM) as api:
        with pytest.raises(CoordinatorRequestError, match="404 UnknownResource"):
            await api.download_blob(blob_name(b"never published"))
        with pytest.raises(ValueError, match="recipient_id is needed for shares"):
            await api.send_secagg(JOB, 0, SecAggStage.SHARES, b"x")


async def test_a_download_that_does_not_match_its_name_is_refused() -> None:
    def lying_server(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"not the model")

    name = blob_name(b"the model")
    async with client(httpx.MockTransport(lying_server), EVM) as api:
        with pytest.raises(DownloadMismatch, match=f"blob {name} arrived as bytes"):
            await api.download_blob(name)
