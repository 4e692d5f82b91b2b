"""A plain round read from the blob store a range at a time: no update is ever read whole while
it is checked, measured for copies and aggregated, the result is the in-memory strategy's, and a
bad upload is refused with its reason even when the fault is in its last range."""

from __future__ import annotations

import numpy as np
import pytest

from fedrelay.adapters.blobstore import MemoryBlobStore
from fedrelay.coordinator.aggregation import (
    ClientUpdate,
    ParameterLayout,
    ServerState,
    StreamedUpdate,
    fedavg,
)
from fedrelay.coordinator.copies import Gaps, distance
from fedrelay.coordinator.phases.streamed import (
    aggregate_streamed,
    measure_gaps,
    open_update,
    read_whole,
)
from fedrelay.coordinator.verification import UpdateRejection, delta_of
from fedrelay.ports.blobs import COORDINATOR
from fedrelay.protocol.blobs import encode_blob

PIECE = 16  # coordinates per range: far fewer than any update holds
SHAPES = {"a.bias": (9,), "a.weight": (9, 11), "b.weight": (4, 9)}


class SpyStore(MemoryBlobStore):
    """The in-memory store, counting whole reads and the longest ranged read of each blob."""

    def __init__(self) -> None:
        super().__init__()
        self.whole: list[str] = []
        self.longest: dict[str, int] = {}

    async def get(self, name: str) -> bytes:
        self.whole.append(name)
        return await super().get(name)

    async def read_range(self, name: str, start: int, length: int) -> bytes:
        self.longest[name] = max(self.longest.get(name, 0), length)
        return await super().read_range(name, start, length)


def tensors(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


@pytest.fixture
def model() -> tuple[ParameterLayout, np.ndarray]:
    weights = tensors(0)
    layout = ParameterLayout.of(weights)
    return layout, layout.flatten(weights)


async def test_a_round_is_checked_measured_and_aggregated_without_reading_an_update_whole(
    model: tuple[ParameterLayout, np.ndarray],
) -> None:
    layout, params = model
    store = SpyStore()
    trained = {bytes([i]) * 32: tensors(i + 1) for i in range(4)}
    names = {w: await store.put(encode_blob(t), domain=COORDINATOR) for w, t in trained.items()}
    header = max(len(encode_blob(t)) - 4 * layout.size for t in trained.values())

    opened = {
        w: await open_update(store, n, bytes.fromhex(n), layout, params, PIECE)
        for w, n in names.items()
    }
    gaps = await measure_gaps(params, opened, PIECE)
    sizes = {w: 10 + i for i, w in enumerate(trained)}
    updates = [StreamedUpdate(w.hex(), sizes[w], opened[w]) for w in trained]
    new, state = await aggregate_streamed(fedavg(), layout, params, updates, ServerState(), PIECE)

    assert store.whole == []  # nothing read whole ...
    assert all(length <= max(4 * PIECE, header) for length in store.longest.values())
    deltas = {w: delta_of(layout.flatten(t), params) for w, t in trained.items()}
    expected = fedavg().aggregate_fit(
        params, [ClientUpdate(w.hex(), d, sizes[w]) for w, d in deltas.items()], ServerState()
    )
    np.testing.assert_allclose(new, expected.params, rtol=0, atol=1e-6)
    assert state.rounds == expected.state.rounds
    whole = Gaps.of(deltas)
    for a in trained:
        for b in trained:
            assert gaps.between(a, b) == pytest.approx(whole.between(a, b), rel=1e-12)
            assert gaps.between(a, b) == pytest.approx(distance(deltas[a], deltas[b]), rel=1e-9)
    # ... until one update is scored on its own.
    one = next(iter(trained))
    np.testing.assert_array_equal(
        await read_whole(opened[one], PIECE), layout.flatten(trained[one])
    )


def _nan_in_last_range(t: dict[str, np.ndarray]) -> None:
    t["a.weight"].flat[-1] = np.nan


def _overflowing(t: dict[str, np.ndarray]) -> None:
    t["b.weight"].flat[-1] = np.float32(3e38)


def _float64(t: dict[str, np.ndarray]) -> None:
    t["a.bias"] = t["a.bias"].astype(np.float64)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_nan_in_last_range, "update tensor 'a.weight' holds NaN or infinite values"),
        (_overflowing, "the update's difference from the round's model overflows float32"),
        (_float64, "update tensor 'a.bias' is float64, the model's float32"),
    ],
)
async def test_a_bad_upload_is_refused_with_its_reason(
    model: tuple[ParameterLayout, np.ndarray], tamper: object, reason: str
) -> None:
    layout, params = model
    params = params.copy()
    params[-1] = -3e38  # so that +3e38 overflows as a difference
    store = SpyStore()
    update = tensors(5)
    assert callable(tamper)
    tamper(update)
    name = await store.put(encode_blob(update), domain=COORDINATOR)
    with pytest.raises(UpdateRejection) as caught:
        await open_update(store, name, bytes.fromhex(name), layout, params, PIECE)
    assert str(caught.value) == reason


async def test_a_missing_truncated_or_other_upload_is_refused(
    model: tuple[ParameterLayout, np.ndarray],
) -> None:
    layout, params = model
    store = SpyStore()
    blob = encode_blob(tensors(3))
    committed = await store.put(blob, domain=COORDINATOR)
    other = await store.put(encode_blob(tensors(4)), domain=COORDINATOR)
    short = await store.put(blob[:-8], domain=COORDINATOR)
    expected = bytes.fromhex(committed)

    with pytest.raises(UpdateRejection, match=r"^the committed update was never uploaded$"):
        await open_update(store, None, expected, layout, params)
    with pytest.raises(UpdateRejection, match=rf"^uploaded update hashes to {other}, the chain"):
        await open_update(store, other, expected, layout, params)
    with pytest.raises(UpdateRejection, match=r"^the update is not a tensor blob: the header"):
        await open_update(store, short, bytes.fromhex(short), layout, params)
