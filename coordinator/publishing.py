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
* a job whose model is a bundle (the poster's Python code, :mod:`fedrelay.training.bundles`)
  is taken on only when the operator trusts the bundle (its hash, or the key that signed it:
  :class:`~fedrelay.training.trust.TrustPolicy`), since replaying and evaluating it runs that
  code here; the refusal says what to trust. The bundle blob must be the poster's upload too, and
  a well-formed bundle (checked without running it);
* a job on the workers' own data is replayed by spot reveals (``data.replay == "segments"``: a
  challenged worker opens the examples a replayed segment consumed, to the verifier only), or
  not at all when its poster chose so (``"none"``, ``fedrelay job post
  --unverified-private-data``);
* the poster's evaluation set (``evaluation.data_hash``) must be in the
  :data:`~fedrelay.ports.blobs.EVALUATION` domain and match the job's schema; it is never
  published: workers never see what their models are scored on;
* only a job that passes all of this is opened, and only then are its blobs published (served
  by ``GET /v1/blobs/{name}``): the model, the configuration, a bundle model's bundle and a
  text job's vocabulary. A refused job publishes nothing.

Worker uploads are never published by a job: the only other publication is the coordinator's own
aggregated model (:mod:`fedrelay.coordinator.phases.aggregate`).
"""

from __future__ import annotations

import asyncio

from fedrelay.coordinator.errors import JobUnusable
from fedrelay.coordinator.settings import JobLimits
from fedrelay.ports.blobs import EVALUATION, POSTER, BlobStore, BlobStoreError
from fedrelay.ports.coordinator_chain import ChainJob
from fedrelay.ports.coordinator_store import CoordinatorRepository
from fedrelay.protocol.job_config import InvalidJobConfig, JobConfig
from fedrelay.training.bundles import BundleError, bundle_ref, read_bundle
from fedrelay.training.trust import TrustPolicy, UntrustedBundle

__all__ = ["admit_bundle", "admit_job", "evaluation_set", "publish_job", "published_names"]


async def _check_origin(
    blobs: BlobStore, store: CoordinatorRepository, name: str, what: str
) -> None:
    if not await blobs.exists(name):
        raise JobUnusable(f"its {what} blob {name} is not in the blob store")
    domains = await blobs.domains(name)
    if EVALUATION in domains:
        raise JobUnusable(
            f"its {what} blob {name} is an evaluation set, which is never published; nothing "
            "published"
        )
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
    job: ChainJob,
    blobs: BlobStore,
    store: CoordinatorRepository,
    limits: JobLimits,
    trust: TrustPolicy | None = None,
) -> JobConfig:
    """The configuration of ``job`` if this coordinator may run it and publish its blobs.

    Args:
        job: The job as the chain stores it.
        blobs: The blob store.
        store: The coordinator's store (which blobs are published).
        limits: The operator's limits on jobs.
        trust: The model bundles this coordinator runs (default: none).

    Returns:
        The job's parsed configuration.

    Raises:
        JobUnusable: The model or configuration is missing or not the poster's, the
            configuration is invalid or beyond a limit (with its numbers), its slash times its
            detection probability is below its reward per round (cheating would pay, see
            :meth:`~fedrelay.protocol.job_config.JobConfig.cheating_pays`), or the job asks for
            more workers per round than its data has shards; or its model is a bundle that is
            not trusted here, not the poster's upload, or not a valid bundle.
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
    published = config.published_data
    if published is not None and job.workers_per_round > published.shards:
        raise JobUnusable(
            f"{job.workers_per_round} workers per round but only {published.shards} data "
            "shards in its configuration"
        )
    await _check_origin(blobs, store, job.model_hash.hex(), "model")
    await admit_bundle(config, blobs, store, trust or TrustPolicy())
    for name in _vocabulary(config):
        await _check_origin(blobs, store, name, "vocabulary")
    await evaluation_set(config, blobs)
    pays = config.cheating_pays(
        job.reward_per_round, job.reward_decimals, job.rejected_slash, examples
    )
    if pays is not None:
        raise JobUnusable(pays)
    return config


def largest_task_examples(config: JobConfig) -> int | None:
    """With ``local_epochs``, the example count of the job's largest shard (the task with the
    most steps) on published data; None otherwise (a task's steps are the configuration's, or
    follow from the count of a worker's own data)."""
    published = config.published_data
    if config.local_epochs is None or published is None:
        return None
    from fedrelay.coordinator.verification import JobWorkbench

    workbench = JobWorkbench(config)
    return max(len(workbench.shard(i)) for i in range(published.shards))


async def admit_bundle(
    config: JobConfig, blobs: BlobStore, store: CoordinatorRepository, trust: TrustPolicy
) -> bytes | None:
    """The bundle blob of ``config``'s model, if it has one and this coordinator may run it.

    Trust is asked first: an untrusted bundle is refused before its blob is read.

    Raises:
        JobUnusable: The bundle is not trusted here (the message says what to trust and why),
            is not the poster's upload, or is not a valid bundle.
    """
    ref = bundle_ref(config.model)
    if ref is None:
        return None
    try:
        trust.require(ref.bundle, ref.signature)
    except UntrustedBundle as exc:
        raise JobUnusable(f"{exc} (FEDRELAY_TRUST_MODELS or FEDRELAY_TRUST_FILE)") from None
    await _check_origin(blobs, store, ref.bundle, "model bundle")
    try:
        blob = await blobs.get(ref.bundle)
        read_bundle(blob)
    except (BundleError, BlobStoreError) as exc:
        raise JobUnusable(f"its model bundle {ref.bundle}: {exc}") from None
    return blob


def _vocabulary(config: JobConfig) -> tuple[str, ...]:
    private = config.worker_data
    if private is None or private.schema_.kind != "text" or not private.schema_.vocabulary_hash:
        return ()
    return (private.schema_.vocabulary_hash,)


async def evaluation_set(config: JobConfig, blobs: BlobStore) -> bytes | None:
    """The poster's evaluation blob of ``config``, checked; None when it names none.

    Raises:
        JobUnusable: The blob is missing, not the poster's evaluation upload (the
            :data:`~fedrelay.ports.blobs.EVALUATION` domain), or does not match the job's
            schema.
    """
    from fedrelay.training.datasets import SchemaMismatch, dataset_from_blob, evaluation_schema

    name = config.evaluation.data_hash
    if not name:
        return None
    try:
        if not await blobs.exists(name):
            raise JobUnusable(f"its evaluation set {name} is not in the blob store")
        if EVALUATION not in await blobs.domains(name):
            raise JobUnusable(
                f"its evaluation set {name} is not the poster's evaluation upload (fedrelay job "
                "post --eval-data, or POST /v1/admin/blobs?purpose=evaluation)"
            )
        data = await blobs.get(name)
    except BlobStoreError as exc:
        raise JobUnusable(f"its evaluation set {name} cannot be read: {exc}") from None
    try:
        dataset_from_blob(data, evaluation_schema(config), f"its evaluation set {name}")
    except SchemaMismatch as exc:
        raise JobUnusable(str(exc)) from None
    return data


def published_names(job: ChainJob, config: JobConfig) -> tuple[str, ...]:
    """The blobs workers may download once ``job`` is admitted: its model, its configuration,
    its model bundle and a text job's vocabulary (never its evaluation set)."""
    ref = bundle_ref(config.model)
    bundle = (ref.bundle,) if ref is not None else ()
    return (job.model_hash.hex(), job.config_hash.hex(), *bundle, *_vocabulary(config))


async def publish_job(job: ChainJob, store: CoordinatorRepository, config: JobConfig) -> None:
    """Let workers download what :func:`published_names` lists (after :func:`admit_job`)."""
    for name in published_names(job, config):
        await store.publish_blob(name)
