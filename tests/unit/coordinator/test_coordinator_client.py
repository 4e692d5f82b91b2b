"""The worker's signed client against the real API app (ASGI transport, no network)."""

from __future__ import annotations

from collections.abc import Callable
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


async def assigned_api(
    settings: ApiSettings, clock: Callable[[], float] = lambda: NOW
) -> tuple[MemoryCoordinatorStore, MemoryBlobStore, httpx.ASGITransport]:
    """The API on ``clock`` with job ``JOB``'s round 0 assigned to EVM and SOL."""
    repository, blobs = MemoryCoordinatorStore(), MemoryBlobStore(max_size=4096)
    for signer in (EVM, SOL):
        await repository.register_worker(signer.worker)
    state = apply(
        open_job(JOB, RoundPolicy(total_rounds=2), b"\x01" * 32, at=NOW - 10),
        TasksAssigned(0, (EVM.worker, SOL.worker), b"\x02" * 32, NOW + 300, NOW - 5),
    )
    await repository.save_round(state)
    app = create_app(repository, blobs, admin_token=TOKEN, settings=settings, clock=clock)
    return repository, blobs, httpx.ASGITransport(app=app)


@pytest.fixture
async def world() -> tuple[MemoryCoordinatorStore, MemoryBlobStore, httpx.ASGITransport]:
    return await assigned_api(ApiSettings(max_blob_bytes=4096, max_message_bytes=1024))


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


class MovingClock:
    """The API's and the worker's clock; a pause the client waits moves it instead of sleeping."""

    def __init__(self) -> None:
        self.now = float(NOW)
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


async def rate_limited(burst: int, clock: MovingClock) -> httpx.ASGITransport:
    """The assigned API with a per-worker upload burst of ``burst`` and a rate of 60 a minute,
    on ``clock``."""
    settings = ApiSettings(upload_burst_per_worker=burst, upload_rate_per_worker=60)
    return (await assigned_api(settings, clock))[2]


async def test_a_worker_past_its_upload_rate_waits_as_told_and_is_accepted() -> None:
    """Four messages against a burst of two: the third and fourth are each refused once with
    429 and `Retry-After: 1`, waited out, signed again and accepted."""
    clock = MovingClock()
    transport = await rate_limited(2, clock)
    api = CoordinatorClient(
        "http://coordinator", EVM, clock=clock, transport=transport, sleep=clock.sleep
    )
    async with api:
        await api.send_secagg(JOB, 0, SecAggStage.KEYS, b"keys")
        for recipient in (SOL.worker.worker_id,) * 3:
            await api.send_secagg(JOB, 0, SecAggStage.SHARES, b"share", recipient_id=recipient)
        shares = await CoordinatorClient(
            "http://coordinator", SOL, clock=clock, transport=transport
        ).secagg_shares(JOB, 0)
    assert clock.pauses == [1.0, 1.0]
    assert shares == {EVM.worker.worker_id: b"share"}


async def test_busy_refusals_are_raised_past_the_wait_allowed_and_others_at_once() -> None:
    clock = MovingClock()
    transport = await rate_limited(1, clock)
    async with CoordinatorClient(
        "http://coordinator", EVM, clock=clock, transport=transport, sleep=clock.sleep,
        busy_wait=0,
    ) as api:  # fmt: skip
        await api.send_secagg(JOB, 0, SecAggStage.KEYS, b"keys")
        with pytest.raises(CoordinatorRequestError) as refused:
            await api.send_secagg(JOB, 0, SecAggStage.KEYS, b"keys")
        assert refused.value.status_code == 429
        assert refused.value.error == "UploadRateExceeded"
        clock.now += 60  # the bucket refills
        with pytest.raises(CoordinatorRequestError, match="409 Conflict"):
            await api.send_secagg(JOB, 0, SecAggStage.KEYS, b"other keys")
    assert clock.pauses == []  # a conflict is the worker's mistake: not retried

    with pytest.raises(ValueError, match="busy_wait must be >= 0"):
        CoordinatorClient("http://coordinator", EVM, busy_wait=-1)


async def test_a_busy_refusal_without_retry_after_backs_off_doubling() -> None:
    answers = iter([503, 503, 429, 200])
    seen: list[str] = []

    def busy_server(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["x-fedrelay-nonce"])
        status = next(answers)
        if status == 200:
            return httpx.Response(200, json={"messages": {}})
        return httpx.Response(status, json={"error": "ApiBusy", "detail": "busy"})

    clock = MovingClock()
    async with CoordinatorClient(
        "http://coordinator", EVM, clock=clock, transport=httpx.MockTransport(busy_server),
        sleep=clock.sleep,
    ) as api:  # fmt: skip
        assert await api.secagg_keys(JOB, 0) == {}
    assert clock.pauses == [0.25, 0.5, 1.0]
    assert len(set(seen)) == 4  # each retry is signed afresh
