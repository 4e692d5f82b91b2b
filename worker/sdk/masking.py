"""Secure aggregation from the worker's side: the round's parameters and the update to mask.

The messages and their bytes are those of :mod:`fedrelay.protocol.secagg.wire`, the one codec the
coordinator reads with. The update a worker masks is the float32 difference between the trained
and the assigned model, tensors in sorted name order, each flattened in C order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from fedrelay.ports.worker_chain import TaskKey
from fedrelay.protocol.secagg import SecAggConfig
from fedrelay.protocol.secagg.wire import round_config
from fedrelay.worker.sdk.errors import SecureAggregationFailed


def secagg_config(key: TaskKey, threshold: int) -> SecAggConfig:
    """The parameters every worker of the round uses (complete graph, default fixed point)."""
    return round_config(key.job_id, key.round, threshold)


def flat_delta(
    trained: Mapping[str, npt.NDArray[np.float32]], start: Mapping[str, npt.NDArray[np.float32]]
) -> npt.NDArray[np.float32]:
    """``trained - start`` as one float32 vector (sorted names, C order)."""
    if sorted(trained) != sorted(start):
        raise SecureAggregationFailed("the trained model's tensors differ from the assigned ones")
    parts = [
        (np.asarray(trained[n], np.float32) - np.asarray(start[n], np.float32)).ravel()
        for n in sorted(trained)
    ]
    return np.concatenate(parts).astype(np.float32)
