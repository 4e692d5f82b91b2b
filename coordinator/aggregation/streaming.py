"""Streamed aggregation: a round's updates combined a slice of coordinates at a time.

Holding every update of a round at once does not scale: eight workers' updates of a 2 GiB model
are 16 GiB. Here the round's model and its updates stay where they are (in the blob store) and
are read one *piece* at a time: the same range of coordinates of the model and of every update.
Each piece is combined and stepped by the strategy's own rule and optimiser, and the new model's
bytes are handed out piece by piece, behind their header, to be stored as a stream. So the
coordinator holds one piece of the model plus one piece per update (:data:`PIECE_COORDINATES`
coordinates each), whatever the model's size, plus what the strategy itself keeps whole:

* FedAvg (and FedAvgM, FedAdam, FedYogi): the weighted mean is per coordinate; nothing more.
  FedAvgM, FedAdam and FedYogi keep their server state (one or two float64 vectors of the
  model's length), as they do without streaming.
* median and trimmed mean: per coordinate as well (a piece of every update, sorted per
  coordinate in float64: twice the piece per update).
* Krum and Multi-Krum: a first pass adds up the pairwise distances piece by piece (an
  ``n x n`` matrix), the updates kept are averaged in a second pass.
* clipping: a first pass adds up each update's squared norm piece by piece.

Why this equals the in-memory result: a canonical tensor blob whose tensors are all float32 has
its tensors' bytes back to back in name order, which is exactly the flat parameter vector of
:class:`~fedrelay.coordinator.aggregation.updates.ParameterLayout`. A piece is a range of that
vector, and every rule computes each coordinate from that coordinate alone, with the same
arithmetic whole or sliced (:mod:`fedrelay.coordinator.aggregation.rules`). Updates are visited in
client id order, so the bytes do not depend on the order in which updates arrived. Two sums span
the whole vector, Krum's distances and clipping's norms; they are added up piece by piece in
float64, so they may differ from the whole-vector sums in the last bits (which changes a result
only when a clipping factor or a Krum ranking is that close to a tie).

The library reads through a ``read(offset, length)`` callable per blob, so it does not depend on
where blobs live; a blob store's :meth:`~fedrelay.ports.blobs.BlobStore.read_range` fits. It does
not check hashes: callers verify the blobs first (:meth:`~fedrelay.ports.blobs.BlobStore.verify`).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedrelay.coordinator.aggregation.errors import AggregationError
from fedrelay.coordinator.aggregation.optimizers import ServerState
from fedrelay.coordinator.aggregation.rules import (
    CombineRule,
    Float64s,
    MultiKrum,
    WeightedMean,
    add_distances,
    scores_of,
)
from fedrelay.coordinator.aggregation.strategy import Strategy
from fedrelay.coordinator.aggregation.updates import (
    ClientUpdate,
    ParameterLayout,
    Vector,
    delta_between,
)
from fedrelay.protocol.blobs import BlobError, BlobIndex, encode_header, read_index

#: Coordinates per piece: 4 MiB of float32 per blob read at a time.
PIECE_COORDINATES = 1024 * 1024

ReadAt = Callable[[int, int], Awaitable[bytes]]
"""``read(offset, length)``: that many bytes of one blob from ``offset``."""

_FLOAT32 = np.dtype("<f4")


@dataclass(frozen=True)
class StreamedBlob:
    """A float32 tensor blob read in ranges.

    Attributes:
        index: Its tensors and their byte ranges.
        read: Reads a range of its bytes.
    """

    index: BlobIndex
    read: ReadAt

    @classmethod
    async def open(cls, read: ReadAt, size: int) -> StreamedBlob:
        """Read the header of a blob of ``size`` bytes.

        Raises:
            AggregationError: The blob is not a canonical tensor blob of float32 tensors.
        """
        if size < 8:
            raise AggregationError(f"a tensor blob has at least 8 bytes, got {size}")
        prefix = await read(0, 8)
        (length,) = struct.unpack("<Q", prefix)
        if length <= size - 8:
            prefix += await read(8, length)
        try:
            index = read_index(lambda offset, count: prefix[offset : offset + count], size)
        except BlobError as exc:
            raise AggregationError(f"not a tensor blob: {exc}") from None
        for entry in index.entries:
            if entry.dtype != _FLOAT32:
                raise AggregationError(
                    f"tensor {entry.name!r} is {entry.dtype}; aggregation needs float32 tensors"
                )
        return cls(index, read)

    @classmethod
    def of_vector(cls, layout: ParameterLayout, params: Vector) -> StreamedBlob:
        """The blob of the float32 tensors of ``layout`` whose flat vector is ``params``, read
        from memory (a round's model next to the updates it is combined with)."""
        header = encode_header([(name, _FLOAT32, shape) for name, shape in layout.entries])
        data = np.ascontiguousarray(params, dtype=_FLOAT32).view(np.uint8)
        start = len(header)

        def read_at(offset: int, length: int) -> bytes:
            if offset >= start:
                return data[offset - start : offset - start + length].tobytes()
            return (header + data[: max(0, offset + length - start)].tobytes())[
                offset : offset + length
            ]

        async def read(offset: int, length: int) -> bytes:
            return read_at(offset, length)

        try:
            index = read_index(read_at, start + len(data))
        except BlobError as exc:
            raise AggregationError(f"not a tensor layout: {exc}") from None
        return cls(index, read)

    @property
    def data_start(self) -> int:
        """The offset of the first tensor's first byte (the flat vector starts there)."""
        return self.index.entries[0].start if self.index.entries else self.index.size

    @property
    def coordinates(self) -> int:
        """The length of the flat parameter vector."""
        return (self.index.size - self.data_start) // _FLOAT32.itemsize

    async def piece(self, start: int, stop: int) -> Vector:
        """Coordinates ``[start, stop)`` of the flat vector."""
        data = await self.read(self.data_start + 4 * start, 4 * (stop - start))
        return np.frombuffer(data, dtype=_FLOAT32)


@dataclass(frozen=True)
class StreamedUpdate:
    """One client's trained model, read in ranges.

    Attributes:
        client_id: Aggregation visits clients sorted by it.
        num_examples: The FedAvg weight, at least 1.
        blob: The trained model (the same tensors as the round's model).
    """

    client_id: str
    num_examples: int
    blob: StreamedBlob


@dataclass
class StreamedAggregation:
    """One round's aggregation over streamed blobs (see the module docstring).

    Iterate :meth:`chunks` to get the new model's blob bytes; :attr:`state` is the server state
    for the next round once they were all handed out.

    Attributes:
        strategy: The job's strategy.
        model: The round's model.
        updates: The clients' trained models, in any order.
        state: The server state before the round; after the last chunk, the one after it.
        piece: Coordinates per piece.
    """

    strategy: Strategy
    model: StreamedBlob
    updates: Sequence[StreamedUpdate]
    state: ServerState
    piece: int = PIECE_COORDINATES
    _sorted: list[StreamedUpdate] = field(init=False)

    def __post_init__(self) -> None:
        if not self.updates:
            raise AggregationError("no updates to aggregate")
        if self.piece < 1:
            raise AggregationError(f"a piece holds at least one coordinate, got {self.piece}")
        layout = self.model.index.layout()
        seen: set[str] = set()
        for update in self.updates:
            if update.client_id in seen:
                raise AggregationError(f"client {update.client_id!r} sent more than one update")
            seen.add(update.client_id)
            if update.num_examples < 1:
                raise AggregationError(
                    f"update of {update.client_id!r} has num_examples={update.num_examples}; "
                    "need >= 1"
                )
            if update.blob.index.layout() != layout:
                raise AggregationError(
                    f"update of {update.client_id!r} does not have the model's tensors "
                    "(names, shapes and dtypes)"
                )
        self._sorted = sorted(self.updates, key=lambda u: u.client_id)

    def header(self) -> bytes:
        """The new model's header (the same tensors as the round's model)."""
        return encode_header(self.model.index.layout())

    async def chunks(self) -> AsyncIterator[bytes]:
        """The new model's canonical blob bytes: the header, then one piece at a time.

        Raises:
            AggregationError: An update holds NaN or infinity, or the rule refuses the updates.
        """
        size = self.model.coordinates
        norms = await self._norms(size) if self.strategy.clip is not None else None
        kept = await self._kept(size, norms)
        rule: CombineRule = (
            WeightedMean() if isinstance(self.strategy.rule, MultiKrum) else self.strategy.rule
        )
        slots: dict[str, Float64s] = {}
        rounds = self.state.rounds
        yield self.header()
        for start in range(0, size, self.piece):
            stop = min(start + self.piece, size)
            params, deltas = await self._deltas(kept, start, stop, norms)
            sliced = ServerState(rounds, {k: v[start:stop] for k, v in self.state.slots.items()})
            new, after = await asyncio.to_thread(self._step, rule, params, deltas, kept, sliced)
            for name, value in after.slots.items():
                slots.setdefault(name, np.zeros(size, dtype=np.float64))[start:stop] = value
            yield new.astype(_FLOAT32, copy=False).tobytes()
        self.state = ServerState(rounds + 1, slots if size else dict(self.state.slots))

    def _step(
        self,
        rule: CombineRule,
        params: Vector,
        deltas: Vector,
        kept: Sequence[StreamedUpdate],
        state: ServerState,
    ) -> tuple[Vector, ServerState]:
        updates = [
            ClientUpdate(u.client_id, row, u.num_examples)
            for u, row in zip(kept, deltas, strict=True)
        ]
        combined = rule.combine(updates)
        return self.strategy.optimizer.apply(params, combined, state)

    async def _deltas(
        self,
        updates: Sequence[StreamedUpdate],
        start: int,
        stop: int,
        norms: dict[str, float] | None,
    ) -> tuple[Vector, Vector]:
        """The model's piece and each update's delta on it (clipped), as rows of one matrix."""
        params = await self.model.piece(start, stop)
        trained = await asyncio.gather(*(u.blob.piece(start, stop) for u in updates))
        clip = self.strategy.clip

        def compute() -> Vector:
            deltas = np.empty((len(updates), stop - start), dtype=np.float32)
            for row, update, values in zip(deltas, updates, trained, strict=True):
                row[:] = delta_between(values, params)
                if clip is not None and norms is not None:
                    row[:] = clip.scaled(row, norms[update.client_id])
            return deltas

        return params, await asyncio.to_thread(compute)

    async def _norms(self, size: int) -> dict[str, float]:
        """Each update's delta L2 norm, added up piece by piece."""
        squares = dict.fromkeys((u.client_id for u in self._sorted), 0.0)
        for start in range(0, size, self.piece):
            stop = min(start + self.piece, size)
            params = await self.model.piece(start, stop)
            for update in self._sorted:
                delta = delta_between(await update.blob.piece(start, stop), params)
                wide = delta.astype(np.float64)
                squares[update.client_id] += float(np.dot(wide, wide))
        return {client: float(np.sqrt(total)) for client, total in squares.items()}

    async def _kept(self, size: int, norms: dict[str, float] | None) -> list[StreamedUpdate]:
        """The updates the rule combines: all, or the ones Multi-Krum keeps."""
        rule = self.strategy.rule
        if not isinstance(rule, MultiKrum):
            return list(self._sorted)
        count = len(self._sorted)
        rule.kept([0.0] * count)  # refuse what the rule refuses before reading anything
        scores_of(np.zeros((count, count)), rule.byzantine)
        distances = np.zeros((count, count), dtype=np.float64)
        for start in range(0, size, self.piece):
            stop = min(start + self.piece, size)
            _, deltas = await self._deltas(self._sorted, start, stop, norms)
            await asyncio.to_thread(add_distances, distances, list(deltas))
        return [self._sorted[i] for i in rule.kept(scores_of(distances, rule.byzantine))]
