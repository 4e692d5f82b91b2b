"""Reading a job configuration blob on the worker (the protocol's :class:`JobConfig`).

The schema is the protocol's one definition; the worker only turns its refusal into a
:class:`~fedrelay.worker.sdk.errors.JobConfigError` (the task is refused, with the reason).
"""

from __future__ import annotations

from fedrelay.protocol.job_config import InvalidJobConfig, JobConfig
from fedrelay.worker.sdk.errors import JobConfigError

__all__ = ["JobConfig", "parse_job_config"]


def parse_job_config(blob: bytes) -> JobConfig:
    """The job configuration in ``blob``.

    Raises:
        JobConfigError: The blob is not a valid job configuration (unknown keys included: a
            worker does not train under fields it does not understand).
    """
    try:
        return JobConfig.from_bytes(blob)
    except InvalidJobConfig as exc:
        raise JobConfigError(str(exc)) from None
