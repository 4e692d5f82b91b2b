"""The demo's sum-corrupting actor: its masked input is the honest one plus a random ring vector."""

from __future__ import annotations

import numpy as np

from fedrelay.demo.actors import CorruptSumWorker
from fedrelay.demo.settings import DemoSettings
from fedrelay.protocol.secagg import MaskedInput
from fedrelay.training import encode_blob
from fedrelay.worker.sdk.steps.train import TrainedUpdate


def test_corrupt_sum_worker_changes_the_masked_vector_and_nothing_else() -> None:
    actor = CorruptSumWorker.__new__(CorruptSumWorker)  # the hooks use no node state
    vector = np.arange(1000, dtype=np.uint64)
    sent = actor.finalise_masked(MaskedInput("a", 4, vector))
    assert (sent.client_id, sent.num_examples) == ("a", 4)  # the count stays
    assert np.count_nonzero(sent.vector != vector) > 990
    plain = encode_blob({"w": np.ones(3, dtype=np.float32)})
    trained = TrainedUpdate(plain, (), bytes(32), bytes(32), 4, 0)
    assert actor._finalise_update(trained) == trained  # the update as masked is what is sent
    assert DemoSettings(dishonest="sum", secure_aggregation=True).dishonest == "sum"
