"""The worker's small local state: which tasks it saw, trained, uploaded and committed.

A JSON file written atomically (a temporary file renamed over the old one), so a worker killed
at any moment restarts from the last completed step and never commits a task twice. Checkpoint
and update blobs live beside it, named by their hash, so challenges can be answered after a
restart.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from fedrelay.ports.worker_chain import AssignedTask, Outcome, TaskKey
from fedrelay.training import blob_name
from fedrelay.worker.sdk.errors import StateFileError

STATE_VERSION = 1


class TaskStage(StrEnum):
    """How far the worker got with a task; each stage is persisted before the next begins."""

    ASSIGNED = "assigned"
    TRAINED = "trained"
    UPLOADED = "uploaded"
    SIGNED = "signed"
    """The commitment is signed and offered; whoever records the round's offers first records
    it (this node at the latest, see :mod:`fedrelay.worker.sdk.steps.record`)."""
    COMMITTED = "committed"
    SETTLED = "settled"
    ABANDONED = "abandoned"
    RELEASED = "released"


@dataclass(frozen=True)
class TaskRecord:
    """One task as the worker remembers it (hashes as lowercase hex)."""

    job_id: int
    round: int
    task_id: str
    shard: int
    deadline: int
    stage: TaskStage = TaskStage.ASSIGNED
    update_hash: str = ""
    transcript_root: str = ""
    data_root: str = ""
    checkpoints: tuple[str, ...] = ()
    num_samples: int = 0
    train_loss: int = 0
    transaction: str = ""
    outcome: int | None = None
    reason: str = ""
    release_at: int = 0
    committed_at: int = 0
    """Unix seconds when this node committed it, or signed it to be recorded (0: before
    publication was tracked)."""
    signature: str = ""
    """The signature of its commitment offer (hex; empty when it committed with its own
    transaction)."""
    published: bool = False
    """Whether the commitment has gone out in an UPDATE_COMMITTED (this node's or anyone's)."""
    mask_opening: str = field(default="", repr=False)
    """A secure round's masking key and self-mask seed (hex), kept so that a challenge can be
    answered after a restart; never printed."""

    @property
    def key(self) -> TaskKey:
        """Job and round."""
        return TaskKey(self.job_id, self.round)

    @classmethod
    def of(cls, task: AssignedTask) -> TaskRecord:
        """A fresh record of an assigned task."""
        return cls(
            task.key.job_id,
            task.key.round,
            task.task_id.hex(),
            task.shard,
            task.deadline,
            release_at=task.release_at,
        )


@dataclass(frozen=True)
class WorkerState:
    """Everything the worker persists: the chain cursor and its task records."""

    cursor: int = 0
    tasks: dict[str, TaskRecord] = field(default_factory=dict)

    def task(self, key: TaskKey) -> TaskRecord | None:
        """The record of ``key``, if any."""
        return self.tasks.get(str(key))

    def by_task_id(self, task_id: bytes) -> TaskRecord | None:
        """The record with the chain's ``task_id``, if any."""
        wanted = task_id.hex()
        return next((t for t in self.tasks.values() if t.task_id == wanted), None)

    def with_task(self, record: TaskRecord) -> WorkerState:
        """A copy with ``record`` stored under its key."""
        return replace(self, tasks={**self.tasks, str(record.key): record})

    def settle(self, task_id: bytes, outcome: Outcome) -> WorkerState:
        """A copy with the task marked settled (unknown task ids change nothing)."""
        record = self.by_task_id(task_id)
        if record is None or record.stage is TaskStage.SETTLED:
            return self
        return self.with_task(replace(record, stage=TaskStage.SETTLED, outcome=int(outcome)))


def _record(raw: dict[str, Any]) -> TaskRecord:
    values = dict(raw)
    values["stage"] = TaskStage(values["stage"])
    values["checkpoints"] = tuple(values.get("checkpoints", ()))
    return TaskRecord(**values)


class StateStore:
    """Reads and writes the state file and the blobs kept beside it."""

    def __init__(self, path: Path) -> None:
        """Use ``path`` for the state; blobs go to ``<path>.blobs/``."""
        self.path = path
        self.blob_dir = path.with_name(path.name + ".blobs")

    def load(self) -> WorkerState:
        """The saved state, or an empty one when there is no file yet.

        Raises:
            StateFileError: The file exists but is not a worker state file of this version.
        """
        if not self.path.exists():
            return WorkerState()
        try:
            raw = json.loads(self.path.read_text())
            if raw.get("version") != STATE_VERSION:
                raise StateFileError(
                    f"{self.path} has state version {raw.get('version')!r}, expected "
                    f"{STATE_VERSION}; move it away to start afresh"
                )
            tasks = {key: _record(value) for key, value in raw["tasks"].items()}
            return WorkerState(int(raw["cursor"]), tasks)
        except StateFileError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateFileError(f"cannot read worker state {self.path}: {exc}") from exc

    def save(self, state: WorkerState) -> None:
        """Replace the state file atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "version": STATE_VERSION,
            "cursor": state.cursor,
            "tasks": {key: asdict(record) for key, record in sorted(state.tasks.items())},
        }
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name)
        try:
            with os.fdopen(handle, "w") as out:
                json.dump(document, out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def put_blob(self, data: bytes) -> str:
        """Keep ``data`` under its name (keccak256 hex); returns the name."""
        name = blob_name(data)
        target = self.blob_dir / name
        if not target.exists():
            self.blob_dir.mkdir(parents=True, exist_ok=True)
            temporary = target.with_suffix(".partial")
            temporary.write_bytes(data)
            os.replace(temporary, target)
        return name

    def get_blob(self, name: str) -> bytes:
        """A kept blob.

        Raises:
            StateFileError: The blob is missing or its bytes do not match its name.
        """
        try:
            data = (self.blob_dir / name).read_bytes()
        except OSError as exc:
            raise StateFileError(f"kept blob {name} is missing: {exc}") from exc
        if blob_name(data) != name:
            raise StateFileError(f"kept blob {name} is corrupt")
        return data
