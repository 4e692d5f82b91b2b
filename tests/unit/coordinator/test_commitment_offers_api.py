"""Commitment offers through the coordinator's API (ASGI transport, no network), on the memory
store and the SQLite ledger: a worker of a round offers its signed commitment, the workers of its
chain read the offers back through the SDK's client, and what the API refuses."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace

import httpx
import pytest
from solders.keypair import Keypair

from fedrelay.adapters.blobstore import MemoryBlobStore, blob_name
from fedrelay.coordinator.api import ApiSettings, create_app
from fedrelay.ports.coordinator_store import CoordinatorRepository
from fedrelay.protocol.api.schemas import CommitmentOfferBody, CommitmentOfferView
from fedrelay.protocol.api.signing import EvmSigner, RequestSigner, SolanaSigner, sign_request
from fedrelay.protocol.offers import CommitmentOffer
from fedrelay.protocol.rounds import (
    AssignmentConfirmed,
    Phase,
    RoundPolicy,
    RoundState,
    TasksAssigned,
    apply_all,
    open_job,
)
from fedrelay.protocol.wormhole import Commitment
from fedrelay.worker.sdk.api_client import CoordinatorClient, CoordinatorRequestError

NOW = 1_800_000_000
TOKEN = "offers-test-token-0123"
JOB = 9
FIRST = EvmSigner(b"\x71" * 32, chain=4)
SECOND = EvmSigner(b"\x72" * 32, chain=4)
SOL = SolanaSigner(Keypair.from_seed(b"\x73" * 32))
OUTSIDER = EvmSigner(b"\x74" * 32, chain=4)  # registered, no task in the round
PATH = f"/v1/jobs/{JOB}/rounds/0/commitment"
OFFERS_PATH = f"/v1/jobs/{JOB}/rounds/0/commitments"


def offer_of(
    signer: RequestSigner,
    *,
    update: bytes = b"\x03" * 32,
    signature: bytes = b"\x5a" * 64,
    round_number: int = 0,
) -> CommitmentOffer:
    worker = signer.worker
    commitment = Commitment(worker.key, update, b"\x04" * 32, b"\x05" * 32, 600, 123_456)
    return CommitmentOffer(JOB, round_number, worker.chain, commitment, signature)


def body_of(offer: CommitmentOffer) -> bytes:
    return CommitmentOfferBody.of(offer).model_dump_json().encode()


@dataclass
class World:
    repository: CoordinatorRepository
    transport: httpx.ASGITransport
    state: RoundState

    async def call(
        self, signer: RequestSigner, method: str, path: str, body: bytes = b""
    ) -> httpx.Response:
        headers = sign_request(signer, method, path, body, now=NOW)
        async with httpx.AsyncClient(transport=self.transport, base_url="http://c") as client:
            return await client.request(method, path, content=body, headers=headers)

    def client(self, signer: EvmSigner | SolanaSigner) -> CoordinatorClient:
        return CoordinatorClient("http://c", signer, clock=lambda: NOW, transport=self.transport)

    async def set_phase(self, phase: Phase) -> None:
        await self.repository.save_round(replace(self.state, phase=phase))


@pytest.fixture
async def world(repository: CoordinatorRepository) -> World:
    """Job ``JOB``'s round 0 collecting, assigned to FIRST, SECOND (chain 4) and SOL (chain 1)."""
    for signer in (FIRST, SECOND, SOL, OUTSIDER):
        await repository.register_worker(signer.worker)
    workers = (FIRST.worker, SECOND.worker, SOL.worker)
    state = apply_all(
        open_job(JOB, RoundPolicy(total_rounds=2), b"\x01" * 32, at=NOW - 100),
        [
            TasksAssigned(0, workers, b"\x02" * 32, NOW + 600, NOW - 90),
            AssignmentConfirmed(0, NOW - 80),
        ],
    )
    assert state.phase is Phase.COLLECTING
    await repository.save_round(state)
    settings = ApiSettings(max_blob_bytes=4096, max_message_bytes=1024, max_skew_s=60)
    blobs = MemoryBlobStore(max_size=4096)
    app = create_app(repository, blobs, admin_token=TOKEN, settings=settings, clock=lambda: NOW)
    return World(repository, httpx.ASGITransport(app=app), state)


async def test_an_offer_is_read_back_by_the_workers_of_its_chain_only(world: World) -> None:
    mine, solana = offer_of(FIRST), offer_of(SOL, update=b"\x07" * 32, signature=b"\x01" * 64)
    async with world.client(FIRST) as first, world.client(SECOND) as second:
        assert await second.commitment_offers(JOB, 0) == []
        await first.offer_commitment(mine)
        assert await second.commitment_offers(JOB, 0) == [mine]
        async with world.client(SOL) as sol:
            assert await sol.commitment_offers(JOB, 0) == []  # chain 1 has none yet
            await sol.offer_commitment(solana)
            assert await sol.commitment_offers(JOB, 0) == [solana]
        assert await first.commitment_offers(JOB, 0) == [mine]
    assert await world.repository.offers(JOB, 0, 4) == [mine]
    assert await world.repository.offers(JOB, 0, 1) == [solana]


async def test_offers_are_listed_in_worker_key_order(world: World) -> None:
    offers = [offer_of(FIRST), offer_of(SECOND)]
    for signer, offer in zip((FIRST, SECOND), offers, strict=True):
        assert (await world.call(signer, "PUT", PATH, body_of(offer))).status_code == 204
    response = await world.call(SOL, "GET", OFFERS_PATH)  # not their chain
    assert response.status_code == 200, response.text
    assert response.json() == {"chain": 1, "offers": []}
    response = await world.call(SECOND, "GET", OFFERS_PATH)
    assert response.status_code == 200, response.text
    ordered = sorted(offers, key=lambda o: o.commitment.worker_key)
    assert response.json() == {
        "chain": 4,
        "offers": [CommitmentOfferView.of(o).model_dump() for o in ordered],
    }


async def test_a_worker_without_a_task_in_the_round_is_refused(world: World) -> None:
    response = await world.call(OUTSIDER, "PUT", PATH, body_of(offer_of(OUTSIDER)))
    assert response.status_code == 403
    assert response.json()["error"] == "NotAssigned"
    response = await world.call(OUTSIDER, "GET", OFFERS_PATH)
    assert response.status_code == 403
    assert response.json()["error"] == "NotAssigned"
    assert await world.repository.offers(JOB, 0, 4) == []


async def test_an_offer_must_name_the_update_the_worker_uploaded(world: World) -> None:
    update = b"the first worker's update"
    async with world.client(FIRST) as first:
        assert await first.upload_update(JOB, 0, update) == blob_name(update)
    other = offer_of(FIRST, update=b"\x06" * 32)
    response = await world.call(FIRST, "PUT", PATH, body_of(other))
    assert response.status_code == 409
    assert response.json()["error"] == "Conflict"
    assert "the offered update" in response.json()["detail"]
    assert "is not the one" in response.json()["detail"]
    assert await world.repository.offers(JOB, 0, 4) == []

    uploaded = offer_of(FIRST, update=bytes.fromhex(blob_name(update)))
    assert (await world.call(FIRST, "PUT", PATH, body_of(uploaded))).status_code == 204
    assert await world.repository.offers(JOB, 0, 4) == [uploaded]


async def test_the_same_offer_again_is_accepted_and_a_different_one_conflicts(
    world: World,
) -> None:
    offer = offer_of(FIRST)
    assert (await world.call(FIRST, "PUT", PATH, body_of(offer))).status_code == 204
    assert (await world.call(FIRST, "PUT", PATH, body_of(offer))).status_code == 204
    for changed in (offer_of(FIRST, update=b"\x06" * 32), offer_of(FIRST, signature=b"\x01" * 64)):
        response = await world.call(FIRST, "PUT", PATH, body_of(changed))
        assert response.status_code == 409
        assert response.json()["error"] == "Conflict"
        assert "already offered a different commitment" in response.json()["detail"]
    async with world.client(FIRST) as first:
        with pytest.raises(CoordinatorRequestError) as refused:
            await first.offer_commitment(offer_of(FIRST, update=b"\x08" * 32))
        assert refused.value.status_code == 409
        assert await first.commitment_offers(JOB, 0) == [offer]


def _fields(**changes: object) -> bytes:
    fields: dict[str, object] = json.loads(body_of(offer_of(FIRST)))
    fields.update(changes)
    return json.dumps({k: v for k, v in fields.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (_fields(signature="abc"), "signature"),  # an odd number of hex digits
        (_fields(signature=""), "signature"),
        (_fields(signature="ab" * 129), "signature"),  # above the longest signature
        (_fields(update_hash="03" * 31), "update_hash"),
        (_fields(num_samples=-1), "num_samples"),
        (_fields(train_loss=None), "train_loss"),  # missing
        (_fields(worker_key="aa" * 32), "worker_key"),  # unknown: the worker is the signer
        (b"not json", "Invalid JSON"),
        (b"", "Invalid JSON"),
    ],
)
async def test_a_malformed_offer_is_refused_naming_what_was_wrong(
    world: World, body: bytes, named: str
) -> None:
    response = await world.call(FIRST, "PUT", PATH, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "InvalidBody"
    assert response.json()["detail"].startswith("the commitment offer is malformed: ")
    assert named in response.json()["detail"]
    assert await world.repository.offers(JOB, 0, 4) == []


async def test_an_offer_after_collection_closed_is_refused(world: World) -> None:
    offer = offer_of(FIRST)
    assert (await world.call(FIRST, "PUT", PATH, body_of(offer))).status_code == 204
    await world.set_phase(Phase.AGGREGATING)
    response = await world.call(SECOND, "PUT", PATH, body_of(offer_of(SECOND)))
    assert response.status_code == 409
    assert response.json()["error"] == "WrongPhase"
    assert "a commitment offer is accepted only while it is" in response.json()["detail"]
    # The offers of the round can still be read, in any phase.
    async with world.client(SECOND) as second:
        assert await second.commitment_offers(JOB, 0) == [offer]


async def test_an_offer_for_an_unknown_round_is_not_found(world: World) -> None:
    path = f"/v1/jobs/{JOB}/rounds/1/commitment"
    response = await world.call(FIRST, "PUT", path, body_of(offer_of(FIRST, round_number=1)))
    assert response.status_code == 404
    assert response.json()["error"] == "UnknownResource"


async def test_the_routes_are_in_the_openapi_spec(world: World) -> None:
    async with httpx.AsyncClient(transport=world.transport, base_url="http://c") as client:
        spec = (await client.get("/openapi.json")).json()
    offer = spec["paths"]["/v1/jobs/{job_id}/rounds/{round_number}/commitment"]["put"]
    schema = offer["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == set(CommitmentOfferBody.model_fields)
    assert "get" in spec["paths"]["/v1/jobs/{job_id}/rounds/{round_number}/commitments"]


async def test_the_client_skips_a_malformed_entry_and_keeps_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = offer_of(FIRST)
    view = CommitmentOfferView.of(good).model_dump()
    entries = [
        {**view, "worker_key": "aa" * 31},  # a short key
        {**view, "signature": "zz"},
        {"worker_key": "bb" * 32},  # fields missing
        "not an object",
        view,
    ]

    def coordinator(request: httpx.Request) -> httpx.Response:
        assert request.url.path == OFFERS_PATH
        return httpx.Response(200, json={"chain": 4, "offers": entries})

    client = CoordinatorClient(
        "http://c", FIRST, clock=lambda: NOW, transport=httpx.MockTransport(coordinator)
    )
    with caplog.at_level(logging.WARNING, logger="fedrelay.worker.sdk.api_client"):
        async with client:
            assert await client.commitment_offers(JOB, 0) == [good]
    skipped = [r for r in caplog.records if "skipping commitment offer" in r.getMessage()]
    assert [r.getMessage().split("offer ")[1].split(" ")[0] for r in skipped] == [
        "0",
        "1",
        "2",
        "3",
    ]
