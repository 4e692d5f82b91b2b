"""The poster's evaluation set: kept by the coordinator, used for the round's metric and scores,
never served to a worker or published by any job; and the intake of jobs on private data.

Same world as the trust-domain tests: the real service and API on one store, a simulated chain,
signed worker clients.
"""

from __future__ import annotations

import logging
import math
import re

import numpy as np
import pytest
from test_coordinator_trust_domains import (  # the service-and-API world of the trust tests
    ADMIN,
    SERVICE_LOG,
    WINDOW,
    World,
    refused_download,
    tiny_config,
    world,  # noqa: F401 (the fixture)
)

from fedrelay.coordinator.verification import JobWorkbench, UpdateRejection
from fedrelay.ports.blobs import EVALUATION
from fedrelay.protocol.data_spec import EvaluationSpec, TabularSchema, WorkerData
from fedrelay.protocol.rounds import Phase
from fedrelay.protocol.wormhole import keccak256
from fedrelay.training import decode_blob, encode_blob
from fedrelay.training.data import Dataset, digits
from fedrelay.training.datasets import dataset_blob

EVAL = Dataset(digits().features[:60], digits().labels[:60])


async def _upload_evaluation(world: World, blob: bytes) -> str:  # noqa: F811
    response = await world.admin.post(
        "/v1/admin/blobs", content=blob, params={"purpose": "evaluation"}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    return str(response.json()["name"])


async def test_the_posters_evaluation_set_scores_the_round_and_is_never_served(
    world: World,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    blob = dataset_blob(EVAL)
    name = await _upload_evaluation(world, blob)
    assert await world.blobs.domains(name) == {EVALUATION}
    config = tiny_config(evaluation=EvaluationSpec(data_hash=name, metric="accuracy"))
    worker = world.worker(0, config)
    model = await world.upload(encode_blob(JobWorkbench(config).initial_model()))
    job = world.post(model, await world.upload(config.to_bytes()))
    await world.step_until(job, Phase.COLLECTING)

    # A worker assigned to the job can fetch the model and configuration, not the evaluation set.
    assert await world.clients[0].download_blob(model.hex())
    assert await refused_download(world.clients[0], name) == 404
    assert not await world.store.is_published(name)

    await worker.train(job, 0)
    world.clock.advance(1)
    await world.service.step()
    await worker.answer_challenges()
    await world.step_until(job, Phase.PROPOSED)
    state = await world.store.get_round(job)
    assert state is not None
    assert state.proposed_model is not None
    report = await world.store.report(job, 0)
    assert report is not None
    proposed = decode_blob(await world.blobs.get(state.proposed_model.hex()))
    tensors = {k: np.asarray(v, dtype=np.float32) for k, v in proposed.items()}
    expected = JobWorkbench(config, blob).evaluate(tensors)
    assert report.accuracy == pytest.approx(expected[1])
    digits_only = JobWorkbench(tiny_config()).evaluate(tensors)
    assert expected != digits_only  # the poster's 60 examples, not the digits' held-out split

    # No job can publish it by naming it as its model (anyone can post such a job).
    stolen = world.post(bytes.fromhex(name), await world.upload(config.to_bytes()))
    with caplog.at_level(logging.ERROR, logger=SERVICE_LOG):
        await world.service.step()
    assert await world.store.get_round(stolen) is None
    assert any(
        f"its model blob {name} is an evaluation set, which is never published" in r.getMessage()
        for r in caplog.records
    )
    assert await refused_download(world.clients[0], name) == 404
    world.clock.advance(WINDOW)
    await world.step_until(job, Phase.COMPLETED)


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("job-path", "is not the poster's evaluation upload"),
        ("missing", "is not in the blob store"),
        ("wrong-shape", r"examples of shape \(8,\), the job's schema says \(64,\)"),
    ],
)
async def test_a_job_whose_evaluation_set_is_unusable_is_not_taken_on(
    world: World,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    setup: str,
    reason: str,
) -> None:
    if setup == "job-path":  # uploaded as a model or configuration: it would be publishable
        name = (await world.upload(dataset_blob(EVAL))).hex()
    elif setup == "missing":
        name = "cd" * 32
    else:
        name = await _upload_evaluation(
            world, dataset_blob(Dataset(EVAL.features[:, :8], EVAL.labels))
        )
    config = tiny_config(evaluation=EvaluationSpec(data_hash=name))
    model = await world.upload(encode_blob(JobWorkbench(config).initial_model()))
    job = world.post(model, await world.upload(config.to_bytes()))
    with caplog.at_level(logging.ERROR, logger=SERVICE_LOG):
        await world.service.step()
    assert await world.store.get_round(job) is None
    assert not await world.store.is_published(model.hex())
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert f"job {job} is not taken on" in messages
    assert re.search(reason, messages), messages


PRIVATE_SCHEMA = TabularSchema(features=(64,), dtype="float32", classes=10)


async def test_a_private_data_job_is_taken_on_with_spot_reveals_or_without_replays(
    world: World,  # noqa: F811
) -> None:
    evaluation = EvaluationSpec(data_hash=await _upload_evaluation(world, dataset_blob(EVAL)))
    revealed = tiny_config(data=WorkerData(schema=PRIVATE_SCHEMA), evaluation=evaluation)
    model = await world.upload(encode_blob(JobWorkbench(revealed).initial_model()))
    spot = world.post(model, await world.upload(revealed.to_bytes()))
    unreplayed = tiny_config(
        data=WorkerData(schema=PRIVATE_SCHEMA, replay="none"), evaluation=evaluation
    )
    taken = world.post(model, await world.upload(unreplayed.to_bytes()))
    await world.service.step()
    assert await world.store.get_round(spot) is not None
    assert await world.store.get_round(taken) is not None


def test_the_workbench_reports_the_jobs_metric_and_does_not_replay_private_data() -> None:
    blob = dataset_blob(EVAL)
    digest = keccak256(blob).hex()
    metrics: dict[str, tuple[float, float]] = {}
    for metric in ("accuracy", "loss", "perplexity"):
        config = tiny_config(evaluation=EvaluationSpec(data_hash=digest, metric=metric))
        bench = JobWorkbench(config, blob)
        metrics[metric] = bench.evaluate(bench.initial_model())
    loss, accuracy = metrics["accuracy"]
    assert 0.0 <= accuracy <= 1.0
    assert metrics["loss"] == (loss, loss)
    assert metrics["perplexity"] == (loss, pytest.approx(math.exp(loss)))

    private = tiny_config(
        data=WorkerData(schema=PRIVATE_SCHEMA, replay="none"),
        evaluation=EvaluationSpec(data_hash=digest),
    )
    bench = JobWorkbench(private, blob)
    assert private.update_weight(37) == 1  # replay "none": no count is checked
    assert len(bench.held_out) == len(EVAL)
    with pytest.raises(UpdateRejection, match="no shard to rebuild"):
        bench.shard(0)
    # Without the evaluation blob the workbench cannot evaluate, and says which set it lacks.
    with pytest.raises(UpdateRejection, match=f"the job's evaluation set {digest} is not at hand"):
        JobWorkbench(private).evaluate(bench.initial_model())
