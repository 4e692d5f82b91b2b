"""Mask openings: a challenged client's key and self-mask seed show its masked input honest."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from fedrelay.protocol.secagg import (
    MaskedInput,
    MaskOpening,
    Participant,
    SecAggConfig,
    SecureAggregationError,
    check_opening,
    contribution,
)

CONFIG = SecAggConfig(round_id=b"round", threshold=2)
DELTA = np.linspace(-1.0, 1.0, 37, dtype=np.float32)


def _round() -> tuple[list[Participant], dict[str, MaskedInput]]:
    parties = [Participant(c, CONFIG) for c in ("a", "b", "c")]
    adverts = [p.advertise() for p in parties]
    sealed = [s for p in parties for s in p.share_keys(adverts)]
    for p in parties:
        p.receive_shares([s for s in sealed if s.recipient == p.client_id])
    masked = {p.client_id: p.mask(DELTA * (i + 1), 3 + i) for i, p in enumerate(parties)}
    return parties, masked


def _opening(party: Participant) -> MaskOpening:
    return MaskOpening(*party.secrets())


def test_an_honest_opening_is_accepted_and_gives_the_weighted_update() -> None:
    parties, masked = _round()
    roster = {p.client_id: p.advertise() for p in parties}
    a = parties[0]
    check_opening(CONFIG, roster, a.masked_with, masked["a"], _opening(a), DELTA)
    added = contribution(CONFIG, roster, a.masked_with, masked["a"], _opening(a))
    assert np.array_equal(added, CONFIG.fixed_point.encode(DELTA, 3))
    assert MaskOpening.decode(_opening(a).encode()) == _opening(a)
    assert "secret" in repr(_opening(a))
    assert a.secrets()[0].hex() not in repr(_opening(a))


def test_a_wrong_key_a_wrong_seed_or_a_tampered_input_is_refused() -> None:
    parties, masked = _round()
    roster = {p.client_id: p.advertise() for p in parties}
    a = parties[0]
    key, seed = a.secrets()
    other_key = X25519PrivateKey.generate().private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption()
    )
    with pytest.raises(SecureAggregationError, match="not the one the worker advertised"):
        check_opening(
            CONFIG, roster, a.masked_with, masked["a"], MaskOpening(other_key, seed), DELTA
        )
    with pytest.raises(SecureAggregationError, match="37 of 37 coordinates differ"):
        check_opening(
            CONFIG, roster, a.masked_with, masked["a"], MaskOpening(key, bytes(32)), DELTA
        )
    vector = masked["a"].vector.copy()
    vector[5] += np.uint64(1)
    tampered = MaskedInput("a", 3, vector)
    with pytest.raises(SecureAggregationError, match="1 of 37 coordinates differ"):
        check_opening(CONFIG, roster, a.masked_with, tampered, _opening(a), DELTA)
    with pytest.raises(SecureAggregationError, match="coordinates differ"):
        check_opening(CONFIG, roster, a.masked_with, masked["a"], _opening(a), DELTA * 2)
    with pytest.raises(SecureAggregationError, match="64 bytes"):
        MaskOpening.decode(bytes(63))
