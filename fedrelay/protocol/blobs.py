"""Tensor blobs: canonical safetensors bytes, named by their keccak256.

The canonical form: header keys sorted by name, no ``__metadata__``, compact JSON padded with
spaces to a multiple of 8 bytes, tensor data little-endian and C-ordered in the same sorted order.
The same tensors therefore always give the same bytes, whichever library version writes them.
Any safetensors reader loads these files.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping

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


def encode_blob(tensors: Tensors) -> bytes:
    """The canonical safetensors bytes of ``tensors``.

    Raises:
        BlobError: A tensor has an unsupported dtype or a name is empty.
    """
    header: dict[str, dict[str, object]] = {}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        if not name or name == "__metadata__":
            raise BlobError(f"invalid tensor name {name!r}")
        array = np.asarray(tensors[name])
        code = _DTYPES.get(array.dtype.name)
        if code is None:
            raise BlobError(f"tensor {name!r} has unsupported dtype {array.dtype}")
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": code,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks)


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
