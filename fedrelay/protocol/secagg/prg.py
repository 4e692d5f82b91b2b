"""Mask expansion: a 32-byte seed stretched into ring elements by AES-256 in counter mode."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedrelay.protocol.secagg.errors import SecureAggregationError
from fedrelay.protocol.secagg.fixedpoint import RingVector

SEED_BYTES = 32
_CHUNK_WORDS = 1 << 15
"""Words per keystream chunk: 256 KiB, small enough to stay in the CPU cache."""


def apply_mask(total: RingVector, seed: bytes, negate: bool = False) -> None:
    """Add (or subtract) the mask of ``seed`` to ``total`` in place, modulo 2^64.

    The mask is the AES-256-CTR keystream of ``seed`` read as little-endian uint64 words. Each
    seed is used for one mask only (seeds are derived per round and per pair), so the fixed
    counter start never repeats a keystream across masks. The keystream is made chunk by chunk
    into a small buffer and added straight away, so no mask-sized array is ever allocated.
    """
    if len(seed) != SEED_BYTES:
        raise SecureAggregationError(f"mask seed must be {SEED_BYTES} bytes, got {len(seed)}")
    if total.dtype != np.uint64 or total.ndim != 1:
        raise SecureAggregationError("masks apply to flat uint64 vectors only")
    if total.shape[0] == 0:
        return
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    chunk = min(total.shape[0], _CHUNK_WORDS)
    zeros = bytes(8 * chunk)
    scratch = bytearray(8 * chunk + 15)  # update_into wants block_size - 1 spare bytes
    words = np.frombuffer(scratch, dtype=np.uint64, count=chunk)
    operation = np.subtract if negate else np.add
    for start in range(0, total.shape[0], chunk):
        size = min(chunk, total.shape[0] - start)
        encryptor.update_into(zeros[: 8 * size], scratch)
        part = total[start : start + size]
        operation(part, words[:size], out=part)


def expand(seed: bytes, length: int) -> RingVector:
    """The mask of ``seed``: ``length`` pseudo-random uint64 words."""
    if length < 0:
        raise SecureAggregationError(f"mask length must be >= 0, got {length}")
    mask = np.zeros(length, dtype=np.uint64)
    apply_mask(mask, seed)
    return mask
