"""Streamed aggregation equals the in-memory strategies, whatever order the updates arrive in."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fedrelay.coordinator.aggregation import (
    AggregationError,
    ClientUpdate,
    NormClip,
    ParameterLayout,
    ServerState,
    Strategy,
    StreamedAggregation,
    StreamedBlob,
    StreamedUpdate,
    delta_between,
    fedadam,
    fedavg,
    fedavgm,
    median,
    multi_krum,
    trimmed_mean,
)
from fedrelay.protocol.blobs import decode_blob, encode_blob

SHAPES = {"layer.bias": (5,), "layer.weight": (5, 7), "out.weight": (3, 5), "scale": ()}


def tensors(seed: int, spread: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: (rng.standard_normal(shape) * spread).astype(np.float32)
        for name, shape in SHAPES.items()
    }


async def streamed(data: bytes) -> StreamedBlob:
    async def read(offset: int, length: int) -> bytes:
        assert offset + length <= len(data)
        return data[offset : offset + length]

    return await StreamedBlob.open(read, len(data))


async def run_streamed(
    strategy: Strategy,
    model: bytes,
    updates: list[tuple[str, bytes, int]],
    state: ServerState,
    piece: int,
) -> tuple[dict[str, np.ndarray], ServerState, bytes]:
    opened = [StreamedUpdate(c, n, await streamed(b)) for c, b, n in updates]
    work = StreamedAggregation(strategy, await streamed(model), opened, state, piece=piece)
    blob = b"".join([chunk async for chunk in work.chunks()])
    return decode_blob(blob), work.state, blob


def in_memory(
    strategy: Strategy,
    model: dict[str, np.ndarray],
    updates: list[tuple[str, dict[str, np.ndarray], int]],
    state: ServerState,
) -> tuple[dict[str, np.ndarray], ServerState]:
    layout = ParameterLayout.of(model)
    params = layout.flatten(model)
    clients = [ClientUpdate(c, delta_between(layout.flatten(t), params), n) for c, t, n in updates]
    result = strategy.aggregate_fit(params, clients, state)
    return layout.unflatten(result.params), result.state


def round_inputs(
    count: int = 5,
) -> tuple[dict[str, np.ndarray], list[tuple[str, dict[str, np.ndarray], int]]]:
    model = tensors(100)
    trained = [
        (f"worker-{i}", {k: v + tensors(i, 0.1)[k] for k, v in model.items()}, 10 + 7 * i)
        for i in range(count)
    ]
    return model, trained


STRATEGIES = {
    "fedavg": fedavg(),
    "fedavgm": fedavgm(),
    "fedadam": fedadam(),
    "median": median(),
    "trimmed_mean": trimmed_mean(0.2),
    "multi_krum": multi_krum(1, 2),
}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("piece", [1, 6, 1000])
async def test_streamed_equals_in_memory_bit_for_bit(name: str, piece: int) -> None:
    strategy = STRATEGIES[name]
    model, trained = round_inputs()
    size = ParameterLayout.of(model).size
    state = ServerState(3, {"velocity": np.linspace(-1, 1, size), "m": np.zeros(size)})
    if name == "fedadam":
        state = ServerState(3, {"m": np.full(size, 0.01), "v": np.full(size, 0.02)})
    expected, expected_state = in_memory(strategy, model, trained, state)
    blobs = [(c, encode_blob(t), n) for c, t, n in trained]
    _, got_state, blob = await run_streamed(strategy, encode_blob(model), blobs, state, piece)
    assert blob == encode_blob(expected)
    assert got_state.rounds == expected_state.rounds == 4
    assert sorted(got_state.slots) == sorted(expected_state.slots)
    for slot, value in expected_state.slots.items():
        assert np.array_equal(got_state.slots[slot], value)


async def test_result_does_not_depend_on_arrival_order() -> None:
    model, trained = round_inputs(4)
    blobs = [(c, encode_blob(t), n) for c, t, n in trained]
    results = set()
    for order in itertools.permutations(blobs):
        _, _, blob = await run_streamed(fedavg(), encode_blob(model), list(order), ServerState(), 4)
        results.add(blob)
    assert len(results) == 1


async def test_clipping_streams_with_the_norms_added_up_piece_by_piece() -> None:
    model, trained = round_inputs()
    strategy = fedavg(NormClip(0.5))
    expected, _ = in_memory(strategy, model, trained, ServerState())
    blobs = [(c, encode_blob(t), n) for c, t, n in trained]
    got, _, _ = await run_streamed(strategy, encode_blob(model), blobs, ServerState(), 7)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-7)


async def test_an_update_with_other_tensors_is_refused_before_anything_is_read() -> None:
    model, trained = round_inputs(2)
    odd = dict(trained[1][1])
    odd["extra"] = np.zeros(2, dtype=np.float32)
    blobs = [(trained[0][0], encode_blob(trained[0][1]), 1), ("odd", encode_blob(odd), 1)]
    with pytest.raises(AggregationError, match="'odd' does not have the model's tensors"):
        await run_streamed(fedavg(), encode_blob(model), blobs, ServerState(), 4)


async def test_a_non_finite_update_names_its_client() -> None:
    model, trained = round_inputs(2)
    bad = {k: v.copy() for k, v in trained[1][1].items()}
    bad["layer.weight"][2, 3] = np.nan
    blobs = [(trained[0][0], encode_blob(trained[0][1]), 1), ("bad", encode_blob(bad), 1)]
    with pytest.raises(AggregationError, match="'bad' contains NaN"):
        await run_streamed(fedavg(), encode_blob(model), blobs, ServerState(), 4)


async def test_duplicate_clients_and_non_float32_models_are_refused() -> None:
    model, trained = round_inputs(2)
    blob = encode_blob(trained[0][1])
    with pytest.raises(AggregationError, match="more than one update"):
        await run_streamed(
            fedavg(), encode_blob(model), [("a", blob, 1), ("a", blob, 1)], ServerState(), 4
        )
    wide = {k: v.astype(np.float64) for k, v in model.items()}
    with pytest.raises(AggregationError, match="aggregation needs float32 tensors"):
        await streamed(encode_blob(wide))


@pytest.mark.parametrize("size", [1, 15, 16, 2 * 16_384 + 1])
def test_weighted_mean_is_the_same_for_rows_of_one_matrix_and_separate_arrays(size: int) -> None:
    from fedrelay.coordinator.aggregation.rules import weighted_mean

    rng = np.random.default_rng(size)
    matrix = rng.standard_normal((6, size), dtype=np.float32)
    counts = [3, 1, 4, 1, 5, 9]
    rows = [ClientUpdate(f"c{i}", matrix[i], n) for i, n in enumerate(counts)]
    copies = [ClientUpdate(f"c{i}", matrix[i].copy(), n) for i, n in enumerate(counts)]
    expected = np.zeros(size, dtype=np.float32)
    for row, n in zip(matrix, counts, strict=True):
        expected += row * np.float32(n / sum(counts))
    assert np.array_equal(weighted_mean(rows), expected)
    assert np.array_equal(weighted_mean(copies), expected)
