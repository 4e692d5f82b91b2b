"""Which blobs a posted job may make public, and the limits of the jobs this coordinator runs.

The chain names a job's model and configuration by hash, and anyone can post a job. The blob
store is content-addressed and shared with untrusted uploads (workers' updates and challenge
answers), so a hash on chain says nothing about whose bytes it names: publishing whatever the
chain names would let a 1-wei job make another worker's private update downloadable by every
registered worker, or run a worker's bytes as a configuration. Hence:

* a job's model and configuration are taken only from the poster's own path: the blob carries
  the :data:`~fedrelay.ports.blobs.POSTER` trust domain (the admin upload, or
  ``fedrelay job post`` writing to the blob directory), or it is already public (a model this
  coordinator published, which the job merely starts from);
* the configuration must parse and stay within the operator's
  :class:`~fedrelay.coordinator.settings.JobLimits`, checked from the numbers alone (nothing is
  built before), and its slash times its detection probability must cover the reward per round
  (else cheating would pay);
* only a job that passes both is opened, and only then are its two blobs published (served by
  ``GET /v1/blobs/{name}``). A refused job publishes nothing.

Worker uploads are never published by a job: the only other publication is the coordinator's own
aggregated model (:mod:`fedrelay.coordinator.phases.aggregate`).
"""

from __future__ import annotations

import asyncio

from fedrelay.coordinator.errors import JobUnusable
from fedrelay.coordinator.settings import JobLimits
from fedrelay.ports.blobs import POSTER, BlobStore, BlobStoreError
from fedrelay.ports.coordinator_chain import ChainJob
from fedrelay.ports.coordinator_store import CoordinatorRepository
from fedrelay.protocol.job_config import InvalidJobConfig, JobConfig

__all__ = ["admit_job", "publish_job"]


async def _check_origin(
    blobs: BlobStore, store: CoordinatorRepository, name: str, what: str
) -> None:
    if not await blobs.exists(name):
        raise JobUnusable(f"its {what} blob {name} is not in the blob store")
    domains = await blobs.domains(name)
    if POSTER in domains or await store.is_published(name):
        return
    held = (
        "a worker's upload"
        if any(d.startswith("worker:") for d in domains)
        else "not the poster's upload"
    )
    raise JobUnusable(
        f"its {what} blob {name} is {held}: a job's model and configuration must come through "
        "the poster's upload (POST /v1/admin/blobs or `fedrelay job post`); nothing published"
    )


async def admit_job(
    job: ChainJob, blobs: BlobStore, store: CoordinatorRepository, limits: JobLimits
) -> JobConfig:
    """The configuration of ``job`` if this coordinator may run it and publish its blobs.

    Args:
        job: The job as the chain stores it.
        blobs: The blob store.
        store: The coordinator's store (which blobs are published).
        limits: The operator's limits on jobs.

    Returns:
        The job's parsed configuration.

    Raises:
        JobUnusable: The model or configuration is missing or not the poster's, the
            configuration is invalid or beyond a limit (with its numbers), its slash times its
            detection probability is below its reward per round (cheating would pay, see
            :meth:`~fedrelay.protocol.job_config.JobConfig.cheating_pays`), or the job asks for
            more workers per round than its data has shards.
    """
    config_name = job.config_hash.hex()
    await _check_origin(blobs, store, config_name, "configuration")
    try:
        config = JobConfig.from_bytes(await blobs.get(config_name))
    except (InvalidJobConfig, BlobStoreError) as exc:
        raise JobUnusable(str(exc)) from None
    examples = await asyncio.to_thread(largest_task_examples, config)
    try:
        problems = limits.problems(config, examples)
    except ValueError as exc:  # local_epochs without a shard size to resolve them
        raise JobUnusable(str(exc)) from None
    if problems:
        raise JobUnusable("; ".join(problems))
    if job.workers_per_round > config.data.shards:
        raise JobUnusable(
            f"{job.workers_per_round} workers per round but only {config.data.shards} data "
            "shards in its configuration"
        )
    await _check_origin(blobs, store, job.model_hash.hex(), "model")
    pays = config.cheating_pays(
        job.reward_per_round, job.reward_decimals, job.rejected_slash, examples
    )
    if pays is not None:
        raise JobUnusable(pays)
    return config


def largest_task_examples(config: JobConfig) -> int | None:
    """With ``local_epochs``, the example count of the job's largest shard (the task with the
    most steps); None otherwise (a task's steps are the configuration's)."""
    if config.local_epochs is None:
        return None
    from fedrelay.coordinator.verification import JobWorkbench

    workbench = JobWorkbench(config)
    return max(len(workbench.shard(i)) for i in range(config.data.shards))


async def publish_job(job: ChainJob, store: CoordinatorRepository) -> None:
    """Let workers download ``job``'s model and configuration (after :func:`admit_job`)."""
    for name in (job.model_hash.hex(), job.config_hash.hex()):
        await store.publish_blob(name)
