"""Commitments that make a client's secrets and its dealt shares checkable.

A client's advert commits to its self-mask seed (:func:`seed_commitment`); its masking key is
committed by the advertised public key already. Each sealed share bundle carries, in the clear,
a commitment to each of the two shares it holds (:func:`share_commitment`), which the holder
checks on receipt and the server checks every revealed share against. So:

- a holder that reveals a share other than the one it was dealt is named (its share does not
  match the dealer's commitment);
- a dealer whose committed shares recover a secret other than the committed one is named (the
  recovered seed does not match its seed commitment, or the recovered key its public key);
- a mask opening must open the committed seed.

Every commitment is SHA-256 over a domain tag, the round id and the parties' ids, so none can
be replayed in another round or for another pair. Secrets and share values are uniform in a
space of at least 2^256, so the commitments reveal nothing a guess could confirm.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from fedrelay.protocol.secagg import shamir
from fedrelay.protocol.secagg.errors import SecureAggregationError

COMMITMENT_BYTES = 32

_SEED_DOMAIN = b"fedrelay/secagg/seed-commitment\x00"
_SHARE_DOMAIN = b"fedrelay/secagg/share-commitment\x00"


class ShareKind(StrEnum):
    """Which secret a share is of: the masking key or the self-mask seed."""

    KEY = "key"
    SEED = "seed"


def seed_commitment(round_id: bytes, client: str, seed: bytes) -> bytes:
    """``sha256(tag || u32 len(round_id) || round_id || client || 0 || seed)``."""
    length = len(round_id).to_bytes(4, "big")
    body = _SEED_DOMAIN + length + round_id + client.encode() + b"\x00" + seed
    return hashlib.sha256(body).digest()


def share_commitment(round_id: bytes, dealer: str, holder: str, kind: ShareKind, y: int) -> bytes:
    """``sha256(tag || u32 len(round_id) || round_id || dealer || 0 || holder || 0 || kind || 0
    || y as 66 bytes big endian)``."""
    if not 0 <= y < shamir.PRIME:
        raise SecureAggregationError("a share value is outside the sharing field")
    length = len(round_id).to_bytes(4, "big")
    body = (
        _SHARE_DOMAIN
        + length
        + round_id
        + b"\x00".join((dealer.encode(), holder.encode(), kind.value.encode()))
        + b"\x00"
        + y.to_bytes(shamir.SHARE_BYTES, "big")
    )
    return hashlib.sha256(body).digest()


@dataclass(frozen=True)
class ShareCommitments:
    """The public commitments of one sealed bundle: to its key share and to its seed share."""

    key: bytes
    seed: bytes

    def __post_init__(self) -> None:
        if len(self.key) != COMMITMENT_BYTES or len(self.seed) != COMMITMENT_BYTES:
            raise SecureAggregationError(f"a share commitment is {COMMITMENT_BYTES} bytes")

    def of(self, kind: ShareKind) -> bytes:
        """The commitment to the share of ``kind``."""
        return self.key if kind is ShareKind.KEY else self.seed
