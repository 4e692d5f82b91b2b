"""X25519 key agreement and the keys derived from it (mask seeds, share encryption)."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fedrelay.protocol.secagg.errors import SecureAggregationError

KEY_BYTES = 32


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of ``key``."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _agree(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    if len(peer_public) != KEY_BYTES:
        raise SecureAggregationError(f"public key must be {KEY_BYTES} bytes")
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise SecureAggregationError(f"key agreement failed: {exc}") from exc


def _derive(secret: bytes, round_id: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=round_id, info=label).derive(secret)


def pair_mask_seed(
    private: X25519PrivateKey, peer_public: bytes, round_id: bytes, a: str, b: str
) -> bytes:
    """The mask seed two clients share in one round (the same from either side)."""
    low, high = sorted((a, b))
    label = b"fedrelay/secagg/mask\x00" + low.encode() + b"\x00" + high.encode()
    return _derive(_agree(private, peer_public), round_id, label)


def _share_key(
    private: X25519PrivateKey, peer_public: bytes, round_id: bytes, sender: str, recipient: str
) -> bytes:
    label = b"fedrelay/secagg/shares\x00" + sender.encode() + b"\x00" + recipient.encode()
    return _derive(_agree(private, peer_public), round_id, label)


def seal(
    private: X25519PrivateKey,
    peer_public: bytes,
    round_id: bytes,
    sender: str,
    recipient: str,
    plaintext: bytes,
) -> bytes:
    """Encrypt shares from ``sender`` to ``recipient`` (a fresh key per direction and round)."""
    key = _share_key(private, peer_public, round_id, sender, recipient)
    aad = sender.encode() + b"\x00" + recipient.encode()
    return AESGCM(key).encrypt(bytes(12), plaintext, aad)


def open_sealed(
    private: X25519PrivateKey,
    peer_public: bytes,
    round_id: bytes,
    sender: str,
    recipient: str,
    ciphertext: bytes,
) -> bytes:
    """Decrypt what :func:`seal` produced.

    Raises:
        SecureAggregationError: The ciphertext was altered or not meant for this pair and round.
    """
    key = _share_key(private, peer_public, round_id, sender, recipient)
    aad = sender.encode() + b"\x00" + recipient.encode()
    try:
        return AESGCM(key).decrypt(bytes(12), ciphertext, aad)
    except Exception as exc:  # cryptography raises InvalidTag, a bare Exception subclass
        raise SecureAggregationError(
            f"shares from {sender!r} to {recipient!r} failed authentication"
        ) from exc
