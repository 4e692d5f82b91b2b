"""A plain round's updates read from the blob store a range at a time, never all at once.

A round of eight workers on a 2 GiB model has 16 GiB of updates; the aggregation phase cannot
hold them. Here every update stays in the blob store and is read in ranges of
:data:`~fedrelay.coordinator.aggregation.streaming.PIECE_COORDINATES` coordinates:

* :func:`open_update` checks one upload against its commitment (the stored bytes hash to the
  committed name, a streamed pass), its header against the model's tensors, and each range of
  its values (finite, and finite as a difference from the round's model);
* :func:`measure_gaps` adds up, range by range, the sums the copy check needs
  (:class:`~fedrelay.coordinator.copies.Gaps`);
* :func:`aggregate_streamed` runs the job's strategy over the ranges
  (:class:`~fedrelay.coordinator.aggregation.StreamedAggregation`);
* :func:`read_whole` reads one update whole, for scoring one update at a time.

So the phase holds the round's model (it needs it whole to evaluate and to replay), the new model,
and one range per update, plus one whole update while it scores that update.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Mapping, Sequence
from functools import partial

import numpy as np

from fedrelay.coordinator.aggregation import (
    ParameterLayout,
    ServerState,
    Strategy,
    StreamedAggregation,
    StreamedBlob,
    StreamedUpdate,
    Vector,
    delta_between,
)
from fedrelay.coordinator.aggregation.streaming import PIECE_COORDINATES
from fedrelay.coordinator.copies import Gaps
from fedrelay.coordinator.verification import (
    UpdateRejection,
    check_update_delta,
    check_update_tensors,
    check_update_values,
)
from fedrelay.ports.blobs import BlobStore, BlobStoreError
from fedrelay.protocol.blobs import BlobError, read_index

_FLOAT32 = np.dtype("<f4")


async def open_update(
    blobs: BlobStore,
    name: str | None,
    expected_hash: bytes,
    layout: ParameterLayout,
    params: Vector,
    piece: int = PIECE_COORDINATES,
) -> StreamedBlob:
    """An uploaded update, checked against its commitment and the round's model, to be read in
    ranges.

    The same checks as :func:`~fedrelay.coordinator.verification.read_update`, with the same
    reasons, without holding the update: the stored bytes must hash to the committed
    ``update_hash`` (streamed through the hash), be a canonical tensor blob of the model's
    trainable tensors (names, float32, shapes), and every value must be finite, alone and as a
    difference from ``params``.

    Args:
        blobs: The coordinator's blob store.
        name: The blob the worker uploaded for the round, or None.
        expected_hash: The ``update_hash`` committed on chain.
        layout: The layout of the model's trainable tensors.
        params: Their flat values in the round's model.
        piece: Coordinates read at a time.

    Raises:
        UpdateRejection: What is wrong with the upload; the message is the recorded reason.
    """
    if name is not None and name != expected_hash.hex():
        raise UpdateRejection(
            f"uploaded update hashes to {name}, the chain commitment is {expected_hash.hex()}"
        )
    try:
        size = await blobs.verify(expected_hash.hex()) if name is not None else None
    except BlobStoreError:
        size = None
    if size is None:
        raise UpdateRejection("the committed update was never uploaded")
    read = partial(blobs.read_range, expected_hash.hex())
    try:
        prefix = await read(0, min(size, 8))
        if len(prefix) == 8:
            (length,) = struct.unpack("<Q", prefix)
            if 0 < length <= size - 8:
                prefix += await read(8, length)
        index = read_index(lambda offset, count: prefix[offset : offset + count], size)
    except BlobError as exc:
        raise UpdateRejection(f"the update is not a tensor blob: {exc}") from None
    check_update_tensors([(e.name, e.dtype, e.shape) for e in index.entries], layout)
    blob = StreamedBlob(index, read)
    offset = 0
    for entry in index.entries:
        count = entry.size // _FLOAT32.itemsize
        for start in range(offset, offset + count, piece):
            stop = min(start + piece, offset + count)
            values = await blob.piece(start, stop)
            check_update_values(entry.name, values)
            check_update_delta(values, params[start:stop])
        offset += count
    return blob


async def measure_gaps(
    params: Vector, updates: Mapping[bytes, StreamedBlob], piece: int = PIECE_COORDINATES
) -> Gaps:
    """The distances between the updates' deltas from ``params``, added up range by range."""
    gaps = Gaps.empty(list(updates))
    for start in range(0, params.shape[0], piece):
        stop = min(start + piece, params.shape[0])
        base = params[start:stop]
        pieces = [
            delta_between(await updates[worker].piece(start, stop), base) for worker in gaps.ids
        ]
        await asyncio.to_thread(gaps.add, pieces)
    return gaps


async def aggregate_streamed(
    strategy: Strategy,
    layout: ParameterLayout,
    params: Vector,
    updates: Sequence[StreamedUpdate],
    state: ServerState,
    piece: int = PIECE_COORDINATES,
) -> tuple[Vector, ServerState]:
    """The strategy's new parameters and server state over the streamed ``updates``.

    Raises:
        AggregationError: The rule refuses the updates (too few for Krum, ...).
    """
    aggregation = StreamedAggregation(
        strategy, StreamedBlob.of_vector(layout, params), updates, state, piece
    )
    new = np.empty(params.shape[0], dtype=_FLOAT32)
    position = -1  # the first chunk is the header
    async for chunk in aggregation.chunks():
        if position < 0:
            position = 0
            continue
        values = np.frombuffer(chunk, dtype=_FLOAT32)
        new[position : position + values.shape[0]] = values
        position += values.shape[0]
    return new, aggregation.state


async def read_whole(blob: StreamedBlob, piece: int = PIECE_COORDINATES) -> Vector:
    """The flat vector of ``blob``, read a range at a time into one array."""
    size = blob.coordinates
    whole = np.empty(size, dtype=_FLOAT32)
    for start in range(0, size, piece):
        stop = min(start + piece, size)
        whole[start:stop] = await blob.piece(start, stop)
    return whole
