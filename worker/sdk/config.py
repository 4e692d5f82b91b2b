"""The job's configuration blob as the worker reads it.

The blob is canonical JSON (sorted keys): the :class:`~fedrelay.training.TrainingConfig`
fields,
plus, for jobs under secure aggregation, ``"secure_aggregation": true`` and
``"secagg_threshold": t`` (shares needed to recover a dropped worker's masks). Keys the worker
does not know are ignored, so a newer coordinator can add fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from fedrelay.training import TrainingConfig, TrainingError
from fedrelay.worker.sdk.errors import JobConfigError

_TRAINING_FIELDS = {f.name for f in fields(TrainingConfig)}


@dataclass(frozen=True)
class JobConfig:
    """A round's training configuration and whether updates are masked."""

    training: TrainingConfig
    secure_aggregation: bool = False
    secagg_threshold: int = 0

    def to_bytes(self) -> bytes:
        """The configuration blob (what the coordinator publishes)."""
        document: dict[str, Any] = json.loads(self.training.to_bytes())
        if self.secure_aggregation:
            document["secure_aggregation"] = True
            document["secagg_threshold"] = self.secagg_threshold
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, blob: bytes) -> JobConfig:
        """Read a configuration blob.

        Raises:
            JobConfigError: The blob is not a JSON object with valid training fields.
        """
        try:
            document = json.loads(blob)
        except ValueError as exc:
            raise JobConfigError(f"the job configuration is not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise JobConfigError("the job configuration must be a JSON object")
        training = {k: v for k, v in document.items() if k in _TRAINING_FIELDS}
        secure = document.get("secure_aggregation", False)
        # The coordinator writes null when secure aggregation is off.
        threshold = document.get("secagg_threshold") or 0
        if not isinstance(secure, bool) or not isinstance(threshold, int):
            raise JobConfigError("secure_aggregation must be a boolean and secagg_threshold an int")
        if secure and threshold < 1:
            raise JobConfigError("a job under secure aggregation needs secagg_threshold >= 1")
        try:
            return cls(TrainingConfig(**training), secure, threshold)
        except (TypeError, TrainingError) as exc:
            raise JobConfigError(f"bad training fields in the job configuration: {exc}") from exc
