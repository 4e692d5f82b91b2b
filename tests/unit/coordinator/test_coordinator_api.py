"""The coordinator's HTTP API over httpx's ASGI transport: signing, uploads, secagg, challenges."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from solders.keypair import Keypair

from fedrelay.adapters.blobstore import POSTER, FileBlobStore, blob_name, worker_domain
from fedrelay.adapters.ledger import create_engine
from fedrelay.adapters.ledger.coordinator_repository import LedgerCoordinatorRepository
from fedrelay.coordinator.api import ApiSettings, create_app
from fedrelay.coordinator.api.dependencies import BLOB_HEADER_SLACK, MODEL_FACTOR, UploadRate
from fedrelay.ports.blobs import BlobStoreUnavailable
from fedrelay.ports.coordinator_store import CoordinatorRepository
from fedrelay.protocol.api.signing import EvmSigner, RequestSigner, SolanaSigner, sign_request
from fedrelay.protocol.rounds import (
    AssignmentConfirmed,
    Phase,
    RoundPolicy,
    RoundState,
    TasksAssigned,
    WorkerRef,
    apply_all,
    open_job,
)
from fedrelay.protocol.secagg.messages import SecAggStage

NOW = 1_800_000_000
TOKEN = "admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
JOB = 7
MODEL = b"\x01" * 32
CONFIG = b"\x02" * 32


@dataclass
class Api:
    client: httpx.AsyncClient
    repository: CoordinatorRepository
    blobs: FileBlobStore
    clock: list[int]
    evm: EvmSigner
    solana: SolanaSigner
    outsider: EvmSigner
    state: RoundState

    async def call(
        self,
        signer: RequestSigner,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        signed_body: bytes | None = None,
        nonce: str | None = None,
    ) -> httpx.Response:
        signed = body if signed_body is None else signed_body
        headers = sign_request(signer, method, path, signed, now=self.clock[0], nonce=nonce)
        return await self.client.request(method, path, content=body, headers=headers)

    async def set_phase(self, phase: Phase) -> None:
        await self.repository.save_round(replace(self.state, phase=phase))


@pytest.fixture
async def api(tmp_path: Path, repository: CoordinatorRepository) -> AsyncIterator[Api]:
    blobs = FileBlobStore(tmp_path / "blobs", max_size=1024)
    clock = [NOW]
    evm = EvmSigner(b"\x11" * 32, chain=4)
    solana = SolanaSigner(Keypair.from_seed(b"\x22" * 32))
    outsider = EvmSigner(b"\x33" * 32, chain=4)
    for signer in (evm, solana, outsider):
        await repository.register_worker(signer.worker)
    state = apply_all(
        open_job(JOB, RoundPolicy(total_rounds=3, min_updates=1), MODEL, at=NOW - 100),
        [
            TasksAssigned(0, (evm.worker, solana.worker), CONFIG, NOW + 600, NOW - 90),
            AssignmentConfirmed(0, NOW - 80),
        ],
    )
    await repository.save_round(state)
    settings = ApiSettings(max_blob_bytes=1024, max_message_bytes=256, max_skew_s=60)
    app = create_app(
        repository, blobs, admin_token=TOKEN, settings=settings, clock=lambda: clock[0]
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://coordinator") as client:
        yield Api(client, repository, blobs, clock, evm, solana, outsider, state)


def round_path(suffix: str, round_number: int = 0) -> str:
    return f"/v1/jobs/{JOB}/rounds/{round_number}/{suffix}"


async def test_openapi_spec_is_served(api: Api) -> None:
    response = await api.client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/v1/jobs/{job_id}/rounds/{round_number}/updates/{name}" in paths
    assert "/v1/jobs/{job_id}/rounds/{round_number}/secagg/keys" in paths
    assert "/v1/challenges/{challenge_id}/answer" in paths
    assert "/v1/admin/challenges" in paths


async def test_job_status_for_a_signed_worker_and_for_the_admin(api: Api) -> None:
    for response in (
        await api.call(api.solana, "GET", f"/v1/jobs/{JOB}"),
        await api.client.get(f"/v1/jobs/{JOB}", headers=ADMIN),
        await api.client.get(f"/v1/jobs/{JOB}/rounds/0", headers=ADMIN),
    ):
        assert response.status_code == 200, response.text
        view = response.json()
        assert (view["job_id"], view["round"], view["phase"]) == (JOB, 0, "collecting")
        assert view["model_hash"] == MODEL.hex()
        assert view["deadline"] == NOW + 600
        assert [t["worker_key"] for t in view["tasks"]] == [
            api.evm.worker.key.hex(),
            api.solana.worker.key.hex(),
        ]


async def test_unsigned_or_wrongly_authorised_requests_are_refused(api: Api) -> None:
    response = await api.client.get(f"/v1/jobs/{JOB}")
    assert response.status_code == 401
    assert response.json()["error"] == "MissingCredentials"
    response = await api.client.get(f"/v1/jobs/{JOB}", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json()["error"] == "AdminUnauthorized"
    stranger = EvmSigner(b"\x44" * 32, chain=4)
    response = await api.call(stranger, "GET", f"/v1/jobs/{JOB}")
    assert response.status_code == 403
    assert "is not registered" in response.json()["detail"]


async def test_unknown_job_is_not_found(api: Api) -> None:
    response = await api.client.get("/v1/jobs/99", headers=ADMIN)
    assert response.status_code == 404
    assert response.json()["detail"] == "the coordinator knows no job 99"


@pytest.mark.parametrize("job", ["-1", str(2**63), "seven"])
async def test_out_of_range_job_ids_are_invalid_requests(api: Api, job: str) -> None:
    response = await api.client.get(f"/v1/jobs/{job}", headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["error"] == "InvalidRequest"


async def test_published_blobs_download_and_others_do_not(api: Api) -> None:
    model = b"safetensors model bytes"
    uploaded = await api.client.post("/v1/admin/blobs", content=model, headers=ADMIN)
    assert uploaded.status_code == 201
    assert uploaded.json() == {"name": blob_name(model), "size": len(model)}
    assert await api.blobs.domains(blob_name(model)) == {POSTER}
    # The poster's upload is published only when a usable job names it (the service does).
    response = await api.call(api.evm, "GET", f"/v1/blobs/{blob_name(model)}")
    assert response.status_code == 404
    await api.repository.publish_blob(blob_name(model))
    response = await api.call(api.evm, "GET", f"/v1/blobs/{blob_name(model)}")
    assert response.status_code == 200
    assert response.content == model
    private = await api.blobs.put(b"someone's update", domain=worker_domain(1, 0, b"\x01" * 20))
    response = await api.call(api.evm, "GET", f"/v1/blobs/{private}")
    assert response.status_code == 404
    response = await api.call(api.evm, "GET", "/v1/blobs/not-a-hash")
    assert response.status_code == 422


async def test_a_corrupt_published_blob_is_reported_not_served(api: Api) -> None:
    model = b"model"
    await api.client.post("/v1/admin/blobs", content=model, headers=ADMIN)
    await api.repository.publish_blob(blob_name(model))
    api.blobs.path_of(blob_name(model)).write_bytes(b"rot")
    response = await api.call(api.evm, "GET", f"/v1/blobs/{blob_name(model)}")
    assert response.status_code == 500
    assert response.json()["error"] == "BlobCorrupt"


async def test_upload_stores_an_update_under_its_hash(api: Api) -> None:
    update = b"masked or plain update"
    name = blob_name(update)
    response = await api.call(api.solana, "PUT", round_path(f"updates/{name}"), update)
    assert response.status_code == 201, response.text
    assert response.json() == {"name": name, "size": len(update)}
    assert await api.blobs.get(name) == update
    assert await api.repository.updates(JOB, 0) == {api.solana.worker: name}
    again = await api.call(api.solana, "PUT", round_path(f"updates/{name}"), update)
    assert again.status_code == 201
    # The update is the worker's own: in its domain, and no other worker may download it.
    assert await api.blobs.domains(name) == {worker_domain(JOB, 0, api.solana.worker.key)}
    fetched = await api.call(api.evm, "GET", f"/v1/blobs/{name}")
    assert fetched.status_code == 404


async def test_upload_under_the_wrong_hash_is_rejected_and_not_stored(api: Api) -> None:
    update = b"tampered update"
    wrong = blob_name(b"what was committed")
    response = await api.call(api.evm, "PUT", round_path(f"updates/{wrong}"), update)
    assert response.status_code == 422
    assert response.json()["error"] == "BlobHashMismatch"
    assert not await api.blobs.exists(blob_name(update))
    assert await api.repository.updates(JOB, 0) == {}


async def test_oversized_upload_is_rejected_and_not_stored(api: Api) -> None:
    update = b"x" * 1025
    response = await api.call(api.evm, "PUT", round_path(f"updates/{blob_name(update)}"), update)
    assert response.status_code == 413
    assert "limit of 1024" in response.json()["detail"]
    assert not await api.blobs.exists(blob_name(update))


async def test_a_body_changed_after_signing_is_refused(api: Api) -> None:
    update = b"the real update"
    response = await api.call(
        api.evm, "PUT", round_path(f"updates/{blob_name(update)}"), update, signed_body=b"other"
    )
    assert response.status_code == 401
    assert response.json()["error"] == "BadSignature"
    assert not await api.blobs.exists(blob_name(update))


async def test_a_replayed_request_is_refused(api: Api) -> None:
    path = f"/v1/jobs/{JOB}"
    headers = sign_request(api.evm, "GET", path, b"", now=NOW)
    assert (await api.client.get(path, headers=headers)).status_code == 200
    replayed = await api.client.get(path, headers=headers)
    assert replayed.status_code == 401
    assert replayed.json()["error"] == "ReplayedNonce"


async def test_the_query_string_is_part_of_what_is_signed(api: Api) -> None:
    signed = sign_request(api.evm, "GET", f"/v1/jobs/{JOB}?view=full", b"", now=NOW)
    response = await api.client.get(f"/v1/jobs/{JOB}?view=full", headers=signed)
    assert response.status_code == 200
    without_query = sign_request(api.evm, "GET", f"/v1/jobs/{JOB}", b"", now=NOW)
    response = await api.client.get(f"/v1/jobs/{JOB}?view=full", headers=without_query)
    assert response.status_code == 401
    assert response.json()["error"] == "BadSignature"


async def test_a_stale_request_is_refused(api: Api) -> None:
    path = f"/v1/jobs/{JOB}"
    headers = sign_request(api.evm, "GET", path, b"", now=NOW - 61)
    response = await api.client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "StaleRequest"


async def test_uploads_only_from_assigned_workers_while_collecting(api: Api) -> None:
    update = b"update"
    path = round_path(f"updates/{blob_name(update)}")
    response = await api.call(api.outsider, "PUT", path, update)
    assert response.status_code == 403
    assert "has no task in job 7 round 0" in response.json()["detail"]
    api.clock[0] = NOW + 601
    response = await api.call(api.evm, "PUT", path, update)
    assert response.status_code == 409
    api.clock[0] = NOW
    await api.set_phase(Phase.AGGREGATING)
    response = await api.call(api.evm, "PUT", path, update)
    assert response.status_code == 409
    assert "is aggregating" in response.json()["detail"]
    assert await api.repository.updates(JOB, 0) == {}


async def test_a_second_different_update_is_a_conflict(api: Api) -> None:
    first, second = b"first", b"second"
    assert (
        await api.call(api.evm, "PUT", round_path(f"updates/{blob_name(first)}"), first)
    ).status_code == 201
    response = await api.call(api.evm, "PUT", round_path(f"updates/{blob_name(second)}"), second)
    assert response.status_code == 409
    assert not await api.blobs.exists(blob_name(second))
    assert await api.repository.updates(JOB, 0) == {api.evm.worker: blob_name(first)}


def decoded(response: httpx.Response) -> dict[str, bytes]:
    assert response.status_code == 200, response.text
    return {k: base64.b64decode(v) for k, v in response.json()["messages"].items()}


async def test_secure_aggregation_key_exchange(api: Api) -> None:
    evm_id = api.evm.worker.worker_id.hex()
    sol_id = api.solana.worker.worker_id.hex()
    assert (
        await api.call(api.evm, "PUT", round_path("secagg/keys"), b"evm keys")
    ).status_code == 204
    assert (
        await api.call(api.solana, "PUT", round_path("secagg/keys"), b"sol keys")
    ).status_code == 204
    keys = decoded(await api.call(api.evm, "GET", round_path("secagg/keys")))
    assert keys == {evm_id: b"evm keys", sol_id: b"sol keys"}

    response = await api.call(api.evm, "PUT", round_path(f"secagg/shares/{sol_id}"), b"sealed")
    assert response.status_code == 204
    assert decoded(await api.call(api.solana, "GET", round_path("secagg/shares"))) == {
        evm_id: b"sealed"
    }
    assert decoded(await api.call(api.evm, "GET", round_path("secagg/shares"))) == {}

    conflict = await api.call(api.evm, "PUT", round_path("secagg/keys"), b"other keys")
    assert conflict.status_code == 409
    assert decoded(await api.call(api.evm, "GET", round_path("secagg/keys")))[evm_id] == b"evm keys"


async def test_masked_inputs_survivors_and_reveals_follow_the_phases(api: Api) -> None:
    masked = await api.call(api.evm, "PUT", round_path("secagg/masked"), b"y_evm")
    assert masked.status_code == 204
    early = await api.call(api.evm, "GET", round_path("secagg/survivors"))
    assert early.status_code == 409
    assert (await api.call(api.evm, "PUT", round_path("secagg/reveals"), b"r")).status_code == 409

    await api.set_phase(Phase.AGGREGATING)
    survivors = await api.call(api.solana, "GET", round_path("secagg/survivors"))
    assert survivors.json() == {"workers": [api.evm.worker.worker_id.hex()]}
    assert (
        await api.call(api.solana, "PUT", round_path("secagg/reveals"), b"r")
    ).status_code == 204
    late = await api.call(api.solana, "PUT", round_path("secagg/masked"), b"y_sol")
    assert late.status_code == 409
    stored = await api.repository.secagg(JOB, 0, SecAggStage.REVEALS)
    assert stored == {api.solana.worker: b"r"}


async def test_secagg_refuses_outsiders_unknown_recipients_and_empty_messages(api: Api) -> None:
    assert (await api.call(api.outsider, "GET", round_path("secagg/keys"))).status_code == 403
    stranger_id = api.outsider.worker.worker_id.hex()
    response = await api.call(api.evm, "PUT", round_path(f"secagg/shares/{stranger_id}"), b"s")
    assert response.status_code == 404
    assert (await api.call(api.evm, "PUT", round_path("secagg/keys"), b"")).status_code == 422
    too_big = await api.call(api.evm, "PUT", round_path("secagg/keys"), b"k" * 257)
    assert too_big.status_code == 413


async def post_challenge(api: Api, signer: RequestSigner, segment: int = 2) -> httpx.Response:
    body = {
        "job_id": JOB,
        "round": 0,
        "worker": {"chain": signer.worker.chain, "worker_key": signer.worker.key.hex()},
        "segment": segment,
        "answer_by": NOW + 120,
    }
    return await api.client.post("/v1/admin/challenges", json=body, headers=ADMIN)


def answer_body(start: bytes = b"c2", end: bytes = b"c3") -> bytes:
    fields = {
        "start_checkpoint": start,
        "end_checkpoint": end,
        "start_proof": b"p2",
        "end_proof": b"p3",
    }
    return json.dumps({k: base64.b64encode(v).decode() for k, v in fields.items()}).encode()


async def test_a_challenge_is_seen_answered_and_read_back(api: Api) -> None:
    posted = await post_challenge(api, api.solana)
    assert posted.status_code == 201, posted.text
    challenge_id = posted.json()["challenge_id"]
    mine = await api.call(api.solana, "GET", "/v1/challenges")
    assert [c["challenge_id"] for c in mine.json()] == [challenge_id]
    assert mine.json()[0]["segment"] == 2
    assert (await api.call(api.evm, "GET", "/v1/challenges")).json() == []

    answer_path = f"/v1/challenges/{challenge_id}/answer"
    stolen = await api.call(api.evm, "PUT", answer_path, answer_body())
    assert stolen.status_code == 404
    answered = await api.call(api.solana, "PUT", answer_path, answer_body())
    assert answered.status_code == 201, answered.text
    answer = answered.json()["answer"]
    assert (answer["start_checkpoint"], answer["end_checkpoint"]) == (
        blob_name(b"c2"),
        blob_name(b"c3"),
    )
    assert await api.blobs.get(answer["start_checkpoint"]) == b"c2"
    assert await api.blobs.domains(answer["end_checkpoint"]) == {
        worker_domain(JOB, 0, api.solana.worker.key)
    }
    for checkpoint in (answer["start_checkpoint"], answer["end_checkpoint"]):
        assert (await api.call(api.evm, "GET", f"/v1/blobs/{checkpoint}")).status_code == 404

    admin_view = await api.client.get(f"/v1/admin/challenges/{challenge_id}", headers=ADMIN)
    assert base64.b64decode(admin_view.json()["answer"]["end_proof"]) == b"p3"
    again = await api.call(api.solana, "PUT", answer_path, answer_body())
    assert again.status_code == 409
    assert (await api.call(api.solana, "GET", "/v1/challenges")).json() == []


async def test_late_and_malformed_answers_are_refused(api: Api) -> None:
    challenge_id = (await post_challenge(api, api.evm)).json()["challenge_id"]
    answer_path = f"/v1/challenges/{challenge_id}/answer"
    malformed = await api.call(api.evm, "PUT", answer_path, b'{"start_checkpoint": "***"}')
    assert malformed.status_code == 422
    not_base64 = answer_body().replace(base64.b64encode(b"c2"), b"!!!!")
    assert (await api.call(api.evm, "PUT", answer_path, not_base64)).status_code == 422
    oversized = await api.call(api.evm, "PUT", answer_path, answer_body(start=b"z" * 1025))
    assert oversized.status_code == 413
    api.clock[0] = NOW + 121
    late = await api.call(api.evm, "PUT", answer_path, answer_body())
    assert late.status_code == 409
    assert "had to be answered by" in late.json()["detail"]
    stored = await api.repository.challenges(challenge_id=challenge_id)
    assert stored[0].answer is None


async def test_challenges_only_for_assigned_workers(api: Api) -> None:
    response = await post_challenge(api, api.outsider)
    assert response.status_code == 404
    assert (await api.client.post("/v1/admin/challenges", json={})).status_code == 401


async def test_admin_registers_workers(api: Api) -> None:
    newcomer = SolanaSigner(Keypair.from_seed(b"\x55" * 32))
    assert (await api.call(newcomer, "GET", f"/v1/jobs/{JOB}")).status_code == 403
    body = {"chain": 1, "worker_key": newcomer.worker.key.hex()}
    assert (await api.client.post("/v1/admin/workers", json=body)).status_code == 401
    assert (await api.client.post("/v1/admin/workers", json=body, headers=ADMIN)).status_code == 201
    assert (await api.call(newcomer, "GET", f"/v1/jobs/{JOB}")).status_code == 200
    bad = await api.client.post(
        "/v1/admin/workers", json={"chain": 1, "worker_key": "00"}, headers=ADMIN
    )
    assert bad.status_code == 422
    assert bad.json()["error"] == "InvalidRequest"
    assert "worker_key" in bad.json()["detail"]


def test_admin_token_comes_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEDRELAY_COORDINATOR_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("FEDRELAY_COORDINATOR_ADMIN_TOKEN_FILE", raising=False)
    with pytest.raises(ValueError, match="set FEDRELAY_COORDINATOR_ADMIN_TOKEN"):
        ApiSettings().resolved_admin_token()
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file-0123456789\n")
    monkeypatch.setenv("FEDRELAY_COORDINATOR_ADMIN_TOKEN_FILE", str(token_file))
    assert ApiSettings().resolved_admin_token() == "from-a-file-0123456789"
    monkeypatch.setenv("FEDRELAY_COORDINATOR_ADMIN_TOKEN", "from-the-env-0123456789")
    assert ApiSettings().resolved_admin_token() == "from-the-env-0123456789"
    monkeypatch.setenv("FEDRELAY_COORDINATOR_ADMIN_TOKEN", "short")
    with pytest.raises(ValueError, match="at least 16 characters"):
        ApiSettings().resolved_admin_token()


class CountingBody:
    """A request body sent in chunks, counting how many the server pulled; it can pause after
    the first chunk until released, to hold an upload open."""

    def __init__(self, chunk: bytes, count: int, *, hold: bool = False) -> None:
        self.chunk = chunk
        self.count = count
        self.pulled = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        if not hold:
            self.release.set()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            self.pulled += 1
            self.started.set()
            await self.release.wait()
            yield self.chunk

    @property
    def data(self) -> bytes:
        return self.chunk * self.count


async def send_streamed(
    api: Api, signer: RequestSigner | None, path: str, body: CountingBody
) -> httpx.Response:
    headers = {}
    if signer is not None:
        headers = sign_request(signer, "PUT", path, body.data, now=api.clock[0])
    return await api.client.put(path, content=body, headers=headers)


async def test_an_unsigned_body_is_refused_before_a_byte_of_it_is_read(api: Api) -> None:
    body = CountingBody(b"x" * 4096, 1000)
    response = await send_streamed(api, None, round_path(f"updates/{'ab' * 32}"), body)
    assert response.status_code == 401
    assert response.json()["error"] == "MissingCredentials"
    assert body.pulled == 0


async def test_a_worker_without_a_task_is_refused_before_its_body_is_read(api: Api) -> None:
    body = CountingBody(b"y" * 100, 3)
    path = round_path(f"updates/{blob_name(body.data)}")
    response = await send_streamed(api, api.outsider, path, body)
    assert response.status_code == 403
    assert body.pulled == 0


async def test_a_chunked_body_is_cut_off_at_the_limit_sized_from_the_model(
    api: Api, repository: CoordinatorRepository, tmp_path: Path
) -> None:
    blobs = FileBlobStore(tmp_path / "big-blobs", max_size=64 * 1024 * 1024)
    model = b"m" * 1000
    model_name = await blobs.put(model, domain=POSTER)
    await repository.save_round(replace(api.state, model_hash=bytes.fromhex(model_name)))
    settings = ApiSettings(max_blob_bytes=64 * 1024 * 1024, max_message_bytes=256)
    app = create_app(repository, blobs, admin_token=TOKEN, settings=settings, clock=lambda: NOW)
    limit = MODEL_FACTOR * len(model) + BLOB_HEADER_SLACK
    body = CountingBody(b"z" * 65536, 64)  # 4 MiB, far above the model's limit
    path = round_path(f"updates/{blob_name(body.data)}")
    headers = sign_request(api.evm, "PUT", path, body.data, now=NOW)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://coordinator") as client:
        response = await client.put(path, content=body, headers=headers)
    assert response.status_code == 413
    assert f"limit of {limit} bytes" in response.json()["detail"]
    assert body.pulled <= limit // len(body.chunk) + 1
    assert not await blobs.exists(blob_name(body.data))
    fitting = b"u" * 1500
    path = round_path(f"updates/{blob_name(fitting)}")
    headers = sign_request(api.evm, "PUT", path, fitting, now=NOW)
    async with httpx.AsyncClient(transport=transport, base_url="http://coordinator") as client:
        response = await client.put(path, content=fitting, headers=headers)
    assert response.status_code == 201, response.text
    assert await blobs.get(blob_name(fitting)) == fitting


async def test_uploads_past_the_worker_or_api_limit_are_refused_at_once(
    api: Api, repository: CoordinatorRepository
) -> None:
    settings = ApiSettings(
        max_blob_bytes=1024, max_message_bytes=256, max_uploads=1, max_uploads_per_worker=1
    )
    app = create_app(repository, api.blobs, admin_token=TOKEN, settings=settings, clock=lambda: NOW)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://coordinator") as client:
        held = CountingBody(b"h" * 100, 2, hold=True)
        path = round_path(f"updates/{blob_name(held.data)}")
        headers = sign_request(api.evm, "PUT", path, held.data, now=NOW)
        first = asyncio.create_task(client.put(path, content=held, headers=headers))
        await asyncio.wait_for(held.started.wait(), timeout=10)

        again = CountingBody(b"a" * 10, 1)
        same_worker = round_path(f"updates/{blob_name(again.data)}")
        headers = sign_request(api.evm, "PUT", same_worker, again.data, now=NOW)
        response = await client.put(same_worker, content=again, headers=headers)
        assert response.status_code == 429
        assert again.pulled == 0

        other = CountingBody(b"o" * 10, 1)
        other_path = round_path(f"updates/{blob_name(other.data)}")
        headers = sign_request(api.solana, "PUT", other_path, other.data, now=NOW)
        response = await client.put(other_path, content=other, headers=headers)
        assert response.status_code == 503
        assert other.pulled == 0

        held.release.set()
        assert (await asyncio.wait_for(first, timeout=10)).status_code == 201
        headers = sign_request(api.solana, "PUT", other_path, other.data, now=NOW)
        response = await client.put(other_path, content=other.data, headers=headers)
        assert response.status_code == 201


async def test_secagg_answers_nothing_about_a_round_before_authentication(api: Api) -> None:
    assigned = api.solana.worker.worker_id.hex()
    unknown = "cd" * 32
    answers = []
    for path, method in (
        (round_path(f"secagg/shares/{assigned}"), "PUT"),
        (round_path(f"secagg/shares/{unknown}"), "PUT"),
        (round_path("secagg/survivors"), "GET"),
        (round_path("secagg/keys"), "GET"),
        (f"/v1/jobs/{JOB + 1}/rounds/0/secagg/shares/{unknown}", "PUT"),
    ):
        response = await api.client.request(method, path, content=b"share")
        answers.append((response.status_code, response.json()["error"]))
    assert answers == [(401, "MissingCredentials")] * 5
    # a forged signature of an assigned worker learns nothing about the recipient either
    path = round_path(f"secagg/shares/{unknown}")
    headers = sign_request(api.outsider, "PUT", path, b"share", now=NOW)
    headers["X-Fedrelay-Worker"] = api.evm.worker.key.hex()
    response = await api.client.put(path, content=b"share", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "BadSignature"


async def test_two_replicas_on_one_ledger_accept_a_signed_request_once(
    migrated_ledger: Path, tmp_path: Path
) -> None:
    shutil.copyfile(migrated_ledger, tmp_path / "shared.db")
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    engines = [create_engine(url), create_engine(url)]
    replicas = [LedgerCoordinatorRepository(engine) for engine in engines]
    signer = EvmSigner(b"\x11" * 32, chain=4)
    await replicas[0].register_worker(signer.worker)
    await replicas[0].save_round(open_job(JOB, RoundPolicy(total_rounds=1), MODEL, at=NOW))
    settings = ApiSettings(max_blob_bytes=1024, max_message_bytes=256)
    apps = [
        create_app(repo, FileBlobStore(tmp_path / f"blobs{i}"), admin_token=TOKEN,
                   settings=settings, clock=lambda: NOW)
        for i, repo in enumerate(replicas)
    ]  # fmt: skip
    headers = sign_request(signer, "GET", f"/v1/jobs/{JOB}", b"", now=NOW)
    try:
        statuses = []
        for app in (apps[0], apps[1], apps[0]):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
                response = await client.get(f"/v1/jobs/{JOB}", headers=headers)
                statuses.append((response.status_code, response.json().get("error")))
        assert statuses == [(200, None), (401, "ReplayedNonce"), (401, "ReplayedNonce")]
    finally:
        for engine in engines:
            await engine.dispose()


@dataclass
class RatedApi:
    client: httpx.AsyncClient
    clock: list[int]

    async def upload(self, signer: RequestSigner, update: bytes) -> httpx.Response:
        path = round_path(f"updates/{blob_name(update)}")
        headers = sign_request(signer, "PUT", path, update, now=self.clock[0])
        return await self.client.put(path, content=update, headers=headers)

    async def streamed(
        self, signer: RequestSigner, path: str, body: CountingBody
    ) -> httpx.Response:
        headers = sign_request(signer, "PUT", path, body.data, now=self.clock[0])
        return await self.client.put(path, content=body, headers=headers)


@pytest.fixture
async def rated(api: Api) -> AsyncIterator[RatedApi]:
    """The API with a worker rate of 6 uploads a minute (bursts of 2) and a global one of 12
    (bursts of 3), on a clock the test moves."""
    settings = ApiSettings(
        max_blob_bytes=1024,
        max_message_bytes=256,
        upload_rate_per_worker=6,
        upload_burst_per_worker=2,
        upload_rate=12,
        upload_burst=3,
    )
    clock = [NOW]
    app = create_app(
        api.repository, api.blobs, admin_token=TOKEN, settings=settings, clock=lambda: clock[0]
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://coordinator") as client:
        yield RatedApi(client, clock)


async def test_a_worker_past_its_upload_rate_is_refused_before_its_body_is_read(
    api: Api, rated: RatedApi
) -> None:
    for _ in range(2):
        assert (await rated.upload(api.evm, b"evm update")).status_code == 201
    body = CountingBody(b"e" * 100, 3)
    response = await rated.streamed(api.evm, round_path(f"updates/{blob_name(body.data)}"), body)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "10"
    assert response.json() == {
        "error": "UploadRateExceeded",
        "detail": f"worker {api.evm.worker.key.hex()} is past its upload rate of 6 a minute "
        "(bursts of 2); retry after 10 s",
    }
    assert body.pulled == 0
    assert not await api.blobs.exists(blob_name(body.data))
    # every body-carrying endpoint is behind the same limit: secagg messages, challenge answers
    for path in (round_path("secagg/keys"), f"/v1/challenges/{'ab' * 16}/answer"):
        body = CountingBody(b"s" * 10, 1)
        response = await rated.streamed(api.evm, path, body)
        assert (response.status_code, body.pulled) == (429, 0), path
    # another worker is unaffected
    assert (await rated.upload(api.solana, b"solana update")).status_code == 201
    rated.clock[0] += 9
    response = await rated.upload(api.evm, b"evm update")
    assert (response.status_code, response.headers["Retry-After"]) == (429, "1")
    rated.clock[0] += 1
    assert (await rated.upload(api.evm, b"evm update")).status_code == 201
    response = await rated.upload(api.evm, b"evm update")
    assert (response.status_code, response.headers["Retry-After"]) == (429, "10")


async def test_the_global_upload_rate_applies_across_workers(api: Api, rated: RatedApi) -> None:
    assert (await rated.upload(api.evm, b"evm update")).status_code == 201
    assert (await rated.upload(api.solana, b"solana update")).status_code == 201
    assert (await rated.upload(api.solana, b"solana update")).status_code == 201
    # evm has a token of its own left, but the API's three are spent
    response = await rated.upload(api.evm, b"evm update")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "5"
    assert response.json()["detail"] == (
        "all workers together are past the API's upload rate of 12 a minute (bursts of 3); "
        "retry after 5 s"
    )
    rated.clock[0] += 5
    assert (await rated.upload(api.evm, b"evm update")).status_code == 201
    assert (await rated.upload(api.solana, b"solana update")).status_code == 429


async def test_forged_headers_do_not_spend_a_workers_upload_rate(api: Api, rated: RatedApi) -> None:
    update = b"evm update"
    path = round_path(f"updates/{blob_name(update)}")
    for _ in range(4):
        headers = sign_request(api.outsider, "PUT", path, update, now=NOW)
        headers["X-Fedrelay-Worker"] = api.evm.worker.key.hex()
        response = await rated.client.put(path, content=update, headers=headers)
        assert response.json()["error"] == "BadSignature"
    assert (await rated.upload(api.evm, update)).status_code == 201
    assert (await rated.upload(api.evm, update)).status_code == 201


def test_upload_rate_buckets_stay_bounded() -> None:
    rates = UploadRate(6, 2, 10**6, 10**6, max_workers=3)
    workers = [WorkerRef(4, bytes([i]) * 32) for i in range(1, 6)]
    for worker in workers:
        rates.charge(worker, NOW)
    assert rates.tracked == 3  # the two least recently charged were dropped
    rates.charge(workers[4], NOW + 1)
    assert rates.tracked == 3
    # ten seconds refill a bucket charged once: the idle ones are dropped at the next charge
    rates.charge(workers[4], NOW + 10)
    assert rates.tracked == 1


async def test_an_unavailable_blob_store_is_503_for_the_caller_and_its_reason_is_logged(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reason = "s3://internal-bucket/ at http://10.1.2.3:8333 refused the credentials"

    async def unavailable(*args: object, **kwargs: object) -> str:
        raise BlobStoreUnavailable(reason)

    monkeypatch.setattr(api.blobs, "put", unavailable)
    with caplog.at_level("WARNING", logger="fedrelay.coordinator.api"):
        response = await api.client.post("/v1/admin/blobs", content=b"model", headers=ADMIN)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json() == {
        "error": "BlobStoreUnavailable",
        "detail": "the blob store is unavailable",
    }
    assert "internal-bucket" not in response.text
    assert reason in caplog.text
