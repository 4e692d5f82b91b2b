"""A job's model bundle on the worker: refused unless trusted, else downloaded and kept.

A bundle is the poster's Python code (:mod:`fedrelay.training.bundles`), and training a job of
one runs it here. :func:`admit_bundle` runs before anything of a task is built: it asks the
node's :class:`~fedrelay.training.trust.TrustPolicy` about the hash first (an untrusted bundle is
refused with what to trust and why; nothing of it is downloaded or imported), then downloads the
blob (once per node: it is kept), checks that it is a well-formed bundle without running it, and
keeps it in the state directory. :func:`bundle_loader` gives the model builder the trusted loader
reading from there.

A refused task is not committed. The chain has no way for a worker to turn a task down, so it
ends as missed at its deadline (the job's missed slash, 0 unless the poster set one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fedrelay.ports.worker_chain import TaskKey
from fedrelay.training.bundles import BundleError, bundle_ref, loader_for_model, read_bundle
from fedrelay.training.trust import UntrustedBundle
from fedrelay.worker.sdk.config import JobConfig
from fedrelay.worker.sdk.errors import StateFileError, TaskRefused

if TYPE_CHECKING:
    from fedrelay.training.torch_trainer import ModelFactory
    from fedrelay.worker.sdk.node import WorkerNode

__all__ = ["BundleRefused", "admit_bundle", "bundle_loader"]


class BundleRefused(TaskRefused):
    """The job's model bundle is not trusted here, or is not a valid bundle."""


async def admit_bundle(node: WorkerNode, key: TaskKey, job: JobConfig) -> str | None:
    """Check and keep the model bundle ``job`` names, if any; returns its hash.

    Raises:
        BundleRefused: The bundle is not on the node's allowlist (nothing of it was downloaded
            or imported), or its blob is not a valid bundle.
    """
    ref = bundle_ref(job.model)
    if ref is None:
        return None
    try:
        node.trust.require(ref.bundle, ref.signature)
    except UntrustedBundle as exc:
        raise BundleRefused(f"{key} refused: {exc}") from None
    try:  # kept from an earlier round of the job (its name is checked on reading)
        blob = node.store.get_blob(ref.bundle)
    except StateFileError:
        with node.span("worker.bundle", key):
            blob = await node.api.download_blob(ref.bundle)  # checked against its name
    try:
        read_bundle(blob)
    except BundleError as exc:
        raise BundleRefused(f"{key} refused: model bundle {ref.bundle}: {exc}") from None
    node.store.put_blob(blob)
    return ref.bundle


def bundle_loader(node: WorkerNode, model: object) -> Callable[[str], ModelFactory]:
    """The trusted ``bundle_loader`` for a job's ``model`` entry (its ``args`` and signature),
    reading the blobs :func:`admit_bundle` kept."""
    return loader_for_model(model, node.trust, node.store.get_blob)
