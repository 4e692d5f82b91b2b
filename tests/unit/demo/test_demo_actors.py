"""The demo's sum-corrupting actor: its masked input is the honest one plus a random ring vector."""

from __future__ import annotations

import numpy as np

from fedrelay.demo.actors import CorruptSumWorker
from fedrelay.demo.settings import DemoSettings
from fedrelay.training import decode_blob, encode_blob
from fedrelay.worker.sdk.steps.train import TrainedUpdate


def _trained(blob: bytes) -> TrainedUpdate:
    return TrainedUpdate(blob, (), bytes(32), bytes(32), 4, 0)


def test_corrupt_sum_worker_changes_a_masked_input_and_nothing_else() -> None:
    actor = CorruptSumWorker.__new__(CorruptSumWorker)  # _finalise_update uses no node state
    masked = np.arange(1000, dtype=np.int64)
    honest = encode_blob({"masked": masked, "num_examples": np.array([4], dtype=np.int64)})
    sent = decode_blob(actor._finalise_update(_trained(honest)).update_blob)
    assert np.array_equal(sent["num_examples"], [4])  # the count stays, only the vector changes
    assert np.count_nonzero(np.asarray(sent["masked"]) != masked) > 990
    plain = encode_blob({"w": np.ones(3, dtype=np.float32)})
    assert actor._finalise_update(_trained(plain)).update_blob == plain
    assert DemoSettings(dishonest="sum").dishonest == "sum"
