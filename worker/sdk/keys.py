"""Reading a worker's key file, in the formats of :mod:`fedrelay.protocol.keys`.

Error messages name the file, never its contents.
"""

from __future__ import annotations

from pathlib import Path

from solders.keypair import Keypair

from fedrelay.protocol import keys
from fedrelay.worker.sdk.errors import KeyFileError


def load_evm_key(path: Path) -> str:
    """The secp256k1 private key in ``path``: 64 hex characters (returned without ``0x``).

    Raises:
        KeyFileError: The file is missing, unreadable or holds no such key.
    """
    try:
        return keys.load_evm_key(path).removeprefix("0x")
    except keys.KeyFileError as exc:
        raise KeyFileError(str(exc)) from None


def load_solana_keypair(path: Path) -> Keypair:
    """The keypair in ``path``, in solana-keygen's form (a JSON array of 64 byte values).

    Raises:
        KeyFileError: The file is missing, unreadable or holds no such keypair.
    """
    try:
        raw = keys.load_solana_keypair_bytes(path)
        return Keypair.from_bytes(raw)
    except keys.KeyFileError as exc:
        raise KeyFileError(str(exc)) from None
    except ValueError:
        raise KeyFileError(f"key file {path} does not hold a valid Solana keypair") from None
