"""Tensor blobs: canonical safetensors bytes, named by their keccak256.

The canonical form: header keys sorted by name, no ``__metadata__``, compact JSON padded with
spaces to a multiple of 8 bytes, tensor data little-endian and C-ordered in the same sorted order.
The same tensors therefore always give the same bytes, whichever library version writes them.
Any safetensors reader loads these files.

The header already is an index: it names every tensor's dtype, shape and byte range. So a blob
too large to hold in memory is read one tensor at a time (:func:`read_index`, then
:meth:`BlobIndex.tensor` over the bytes of one entry's range) and written one tensor at a time
(:func:`encode_header` first, then each tensor's bytes in name order): the format needs no
second version for streaming, and every blob written before stays readable.
:func:`read_index` accepts only the canonical header, so a streamed reader and
:func:`decode_blob` agree on which blobs are valid.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load

from fedrelay.protocol.training_config import TrainingError

Tensors = Mapping[str, npt.NDArray[np.generic]]


class BlobError(TrainingError):
    """Bytes are not a canonical tensor blob."""


_DTYPES: dict[str, str] = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}


def _code_of(name: str, dtype: np.dtype[np.generic]) -> str:
    if not name or name == "__metadata__":
        raise BlobError(f"invalid tensor name {name!r}")
    code = _DTYPES.get(dtype.name)
    if code is None:
        raise BlobError(f"tensor {name!r} has unsupported dtype {dtype}")
    return code


def encode_header(layout: Sequence[tuple[str, np.dtype[np.generic], tuple[int, ...]]]) -> bytes:
    """The canonical header (length prefix included) of a blob with the tensors of ``layout``.

    The tensors' bytes follow it in name order, each little-endian and C-ordered: a writer that
    cannot hold the tensors at once writes this header, then each tensor in turn.

    Args:
        layout: ``(name, dtype, shape)`` of every tensor, in any order.

    Raises:
        BlobError: A dtype is unsupported, a name is empty or reserved, or appears twice.
    """
    header: dict[str, dict[str, object]] = {}
    offset = 0
    for name, dtype, shape in sorted(layout, key=lambda entry: entry[0]):
        if name in header:
            raise BlobError(f"tensor {name!r} appears twice")
        code = _code_of(name, np.dtype(dtype))
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[name] = {
            "dtype": code,
            "shape": [int(d) for d in shape],
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded


def tensor_bytes(array: npt.NDArray[np.generic]) -> bytes:
    """A tensor's data as a blob holds it: little-endian, C-ordered."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def encode_blob(tensors: Tensors) -> bytes:
    """The canonical safetensors bytes of ``tensors``.

    Raises:
        BlobError: A tensor has an unsupported dtype or a name is empty.
    """
    arrays = {name: np.asarray(tensors[name]) for name in tensors}
    header = encode_header([(n, a.dtype, tuple(a.shape)) for n, a in arrays.items()])
    return header + b"".join(tensor_bytes(arrays[name]) for name in sorted(arrays))


def decode_blob(blob: bytes) -> dict[str, npt.NDArray[np.generic]]:
    """Tensors from canonical blob bytes.

    Raises:
        BlobError: The bytes are not safetensors, or not in the canonical form.
    """
    try:
        tensors = load(blob)
    except Exception as exc:  # safetensors raises its own SafetensorError and others
        raise BlobError(f"not a safetensors blob: {exc}") from exc
    if encode_blob(tensors) != blob:
        raise BlobError("blob is valid safetensors but not in canonical form")
    return dict(tensors)


#: The largest header :func:`read_index` reads (safetensors' own readers stop at 100 MB).
MAX_HEADER_BYTES = 100_000_000

_NUMPY_OF = {code: np.dtype(name).newbyteorder("<") for name, code in _DTYPES.items()}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in a blob.

    Attributes:
        name: The tensor's name.
        dtype: Its numpy dtype (little-endian).
        shape: Its shape.
        start: The offset of its first byte in the blob.
        stop: The offset just past its last byte.
    """

    name: str
    dtype: np.dtype[np.generic]
    shape: tuple[int, ...]
    start: int
    stop: int

    @property
    def size(self) -> int:
        """Its bytes."""
        return self.stop - self.start


@dataclass(frozen=True)
class BlobIndex:
    """The tensors of a canonical blob and their byte ranges, read from its header alone.

    Attributes:
        entries: One per tensor, in name (and storage) order.
        size: The blob's size in bytes.
    """

    entries: tuple[TensorEntry, ...]
    size: int

    def names(self) -> list[str]:
        """The tensors' names, sorted."""
        return [entry.name for entry in self.entries]

    def entry(self, name: str) -> TensorEntry:
        """The entry of tensor ``name``.

        Raises:
            BlobError: The blob has no such tensor.
        """
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise BlobError(f"the blob has no tensor {name!r}")

    def layout(self) -> list[tuple[str, np.dtype[np.generic], tuple[int, ...]]]:
        """``(name, dtype, shape)`` of every tensor, for :func:`encode_header`."""
        return [(e.name, e.dtype, e.shape) for e in self.entries]

    @staticmethod
    def tensor(entry: TensorEntry, data: bytes | bytearray | memoryview) -> npt.NDArray[np.generic]:
        """The tensor of ``entry`` from the bytes of its range (a read-only view of ``data``).

        Raises:
            BlobError: ``data`` is not the entry's size.
        """
        if len(data) != entry.size:
            raise BlobError(f"tensor {entry.name!r} needs {entry.size} bytes, got {len(data)}")
        return np.frombuffer(data, dtype=entry.dtype).reshape(entry.shape)


def read_index(read_at: Callable[[int, int], bytes], size: int) -> BlobIndex:
    """The index of a canonical blob of ``size`` bytes, reading only its header.

    Args:
        read_at: ``read_at(offset, length)`` returns that many bytes of the blob from ``offset``.
        size: The blob's size in bytes.

    Raises:
        BlobError: The header is not a canonical tensor blob's, or does not fit ``size``.
    """
    if size < 8:
        raise BlobError(f"a tensor blob has at least 8 bytes, got {size}")
    (length,) = struct.unpack("<Q", read_at(0, 8))
    if length > min(size - 8, MAX_HEADER_BYTES):
        raise BlobError(f"header length {length} does not fit a blob of {size} bytes")
    raw = read_at(8, length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BlobError(f"the blob's header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise BlobError("the blob's header is not a JSON object")
    try:
        layout = [
            (str(name), _NUMPY_OF[spec["dtype"]], tuple(int(d) for d in spec["shape"]))
            for name, spec in header.items()
        ]
    except (KeyError, TypeError, ValueError):
        raise BlobError("the blob's header has an entry without a known dtype and shape") from None
    canonical = encode_header(layout)
    if canonical[8:] != raw or list(header) != sorted(header):
        raise BlobError("blob is valid safetensors but not in canonical form")
    base = 8 + length
    entries = []
    for name, dtype, shape in layout:
        start, stop = header[name]["data_offsets"]
        entries.append(TensorEntry(name, dtype, shape, base + start, base + stop))
    end = entries[-1].stop if entries else base
    if end != size:
        raise BlobError(f"the header describes {end} bytes, the blob has {size}")
    return BlobIndex(tuple(entries), size)
