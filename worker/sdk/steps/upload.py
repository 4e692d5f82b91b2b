"""Uploading: the kept update goes to the coordinator's blob store before it is committed.

The update is read back from the node's blob directory, so an upload interrupted by a restart
is simply repeated (the coordinator stores blobs by their hash).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from fedrelay.worker.sdk.state import TaskRecord, TaskStage

if TYPE_CHECKING:
    from fedrelay.worker.sdk.node import WorkerNode


async def upload(node: WorkerNode, record: TaskRecord) -> TaskRecord:
    """Upload the TRAINED task's update; the record, now UPLOADED, saved."""
    key = record.key
    node.progress.phase(key, "uploading")
    blob = node.store.get_blob(record.update_hash)
    with node.span("worker.upload", key):
        await node.api.upload_update(key.job_id, key.round, blob)
    return node.keep(replace(record, stage=TaskStage.UPLOADED))
