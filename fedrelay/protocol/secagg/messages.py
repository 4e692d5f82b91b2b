"""The secure-aggregation messages a worker sends through the coordinator's API, by stage.

The bytes of each stage's message are defined by :mod:`fedrelay.protocol.secagg.wire`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fedrelay.protocol.rounds import WorkerRef


class SecAggStage(StrEnum):
    """The secure-aggregation messages a worker sends, in protocol order.

    ``keys`` are published to every worker of the round; ``shares`` go to one recipient each;
    ``masked`` inputs and unmasking ``reveals`` are read only by the coordinator. An ``opening``
    (a challenged worker's masking key and self-mask seed, sent with its challenge answer) is
    read only by the coordinator, and deleted once the round's verdicts are recorded.
    """

    KEYS = "keys"
    SHARES = "shares"
    MASKED = "masked"
    REVEALS = "reveals"
    OPENING = "opening"


@dataclass(frozen=True)
class SecAggMessage:
    """One opaque secure-aggregation message of a round."""

    job_id: int
    round: int
    stage: SecAggStage
    sender: WorkerRef
    data: bytes
    recipient: WorkerRef | None = None
