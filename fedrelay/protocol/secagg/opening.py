"""Mask openings: a challenged client shows that its masked input is its update plus its masks.

Under secure aggregation a challenged worker opens its masking private key and its self-mask
seed for the round (:class:`MaskOpening`). With them anyone holding the round's adverts can
rebuild the client's masks (:func:`masks_of`) and check that its masked input is exactly
``q(delta) * weight + PRG(b) + sum_j +-PRG(s_ij)`` (:func:`check_opening`). The opening exposes
the client's pairwise masks with every neighbour it masked with, which is why a round opens at
most what the privacy cap allows (see
:func:`fedrelay.coordinator.verification.challenges.privacy_capped`).

The update is the float32 difference between the trained and the round's trainable tensors,
sorted by name, each flattened in C order, subtracted in float32: the worker SDK's
``flat_delta``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedrelay.protocol.secagg import keys, prg
from fedrelay.protocol.secagg.commitments import seed_commitment
from fedrelay.protocol.secagg.errors import SecureAggregationError
from fedrelay.protocol.secagg.fixedpoint import RingVector
from fedrelay.protocol.secagg.protocol import (
    KeyAdvert,
    MaskedInput,
    SecAggConfig,
    apply_pair_mask,
)

OPENING_BYTES = keys.KEY_BYTES + prg.SEED_BYTES


@dataclass(frozen=True)
class MaskOpening:
    """A client's secrets of one round: its raw X25519 masking key and its self-mask seed."""

    mask_key: bytes
    self_seed: bytes

    def __post_init__(self) -> None:
        if len(self.mask_key) != keys.KEY_BYTES or len(self.self_seed) != prg.SEED_BYTES:
            raise SecureAggregationError(
                f"a mask opening is a {keys.KEY_BYTES}-byte key and a {prg.SEED_BYTES}-byte seed"
            )

    def __repr__(self) -> str:
        return "MaskOpening(<secret>)"  # never print the secrets

    def encode(self) -> bytes:
        """``mask_key || self_seed`` (64 bytes)."""
        return self.mask_key + self.self_seed

    @classmethod
    def decode(cls, data: bytes) -> MaskOpening:
        """Parse :meth:`encode`.

        Raises:
            SecureAggregationError: Not 64 bytes.
        """
        if len(data) != OPENING_BYTES:
            raise SecureAggregationError(
                f"a mask opening is {OPENING_BYTES} bytes, got {len(data)}"
            )
        return cls(data[: keys.KEY_BYTES], data[keys.KEY_BYTES :])


def masks_of(
    config: SecAggConfig,
    roster: Mapping[str, KeyAdvert],
    client: str,
    peers: Collection[str],
    opening: MaskOpening,
    length: int,
) -> RingVector:
    """The sum of ``client``'s masks: its self mask plus its pairwise masks with ``peers``.

    Raises:
        SecureAggregationError: The key is not the one ``client`` advertised, the seed not the
            one it committed to, or a peer is not on the roster.
    """
    advert = roster.get(client)
    if advert is None:
        raise SecureAggregationError(f"{client!r} advertised no keys")
    key = X25519PrivateKey.from_private_bytes(opening.mask_key)
    if keys.public_bytes(key) != advert.mask_public:
        raise SecureAggregationError(
            "the opened masking key is not the one the worker advertised (its public key differs)"
        )
    if seed_commitment(config.round_id, client, opening.self_seed) != advert.seed_commitment:
        raise SecureAggregationError(
            "the opened self-mask seed is not the one the worker committed to in its advert"
        )
    total = prg.expand(opening.self_seed, length)
    for peer in sorted(peers):
        if peer not in roster:
            raise SecureAggregationError(f"peer {peer!r} advertised no keys")
        seed = keys.pair_mask_seed(key, roster[peer].mask_public, config.round_id, client, peer)
        apply_pair_mask(total, seed, client, peer, remove=False)
    return total


def contribution(
    config: SecAggConfig,
    roster: Mapping[str, KeyAdvert],
    peers: Collection[str],
    masked: MaskedInput,
    opening: MaskOpening,
) -> RingVector:
    """What ``masked`` adds to the unmasked sum: the masked vector less the opened masks.

    Raises:
        SecureAggregationError: See :func:`masks_of`.
    """
    masks = masks_of(config, roster, masked.client_id, peers, opening, masked.vector.shape[0])
    return masked.vector - masks


def check_opening(
    config: SecAggConfig,
    roster: Mapping[str, KeyAdvert],
    peers: Collection[str],
    masked: MaskedInput,
    opening: MaskOpening,
    delta: npt.NDArray[np.float32],
) -> None:
    """Check that ``masked`` is ``delta`` encoded with its weight plus the opened masks.

    Args:
        config: The round's parameters.
        roster: Every client's advert, by client id.
        peers: The neighbours ``masked.client_id`` masked with (those whose shares reached it).
        masked: The client's masked input (already checked against its commitment).
        opening: The client's opened secrets.
        delta: The update the client should have masked (see the module docstring).

    Raises:
        SecureAggregationError: The key is not the advertised one, or the masked input is not
            the update plus the masks; the message says which.
    """
    if delta.shape != masked.vector.shape:
        raise SecureAggregationError(
            f"the update has {delta.shape[0]} values, the masked input {masked.vector.shape[0]}"
        )
    added = contribution(config, roster, peers, masked, opening)
    expected = config.fixed_point.encode(delta, masked.num_examples)
    wrong = int(np.count_nonzero(added != expected))
    if wrong:
        raise SecureAggregationError(
            f"the masked input is not the final checkpoint's update plus the opened masks: "
            f"{wrong} of {expected.shape[0]} coordinates differ"
        )
