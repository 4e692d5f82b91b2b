"""Reading a worker's key file. Error messages name the file, never its contents."""

from __future__ import annotations

import json
import re
from pathlib import Path

from solders.keypair import Keypair

from fedrelay.worker.sdk.errors import KeyFileError

_HEX_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")


def _read(path: Path) -> str:
    if not path.exists():
        raise KeyFileError(f"key file {path} does not exist")
    if not path.is_file():
        raise KeyFileError(f"key file {path} is not a regular file")
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise KeyFileError(f"key file {path} cannot be read: {reason}") from None


def load_evm_key(path: Path) -> str:
    """The secp256k1 private key in ``path``: 64 hex characters, with or without ``0x``.

    Raises:
        KeyFileError: The file is missing, unreadable or holds no such key.
    """
    text = _read(path)
    if not _HEX_KEY.fullmatch(text):
        raise KeyFileError(
            f"key file {path} does not hold an EVM private key (64 hex characters on one line)"
        )
    return text.removeprefix("0x")


def load_solana_keypair(path: Path) -> Keypair:
    """The keypair in ``path``, in solana-keygen's form (a JSON array of 64 byte values).

    Raises:
        KeyFileError: The file is missing, unreadable or holds no such keypair.
    """
    text = _read(path)
    try:
        values = json.loads(text)
        if not isinstance(values, list) or len(values) != 64:
            raise ValueError
        return Keypair.from_bytes(bytes(values))
    except (ValueError, TypeError):
        raise KeyFileError(
            f"key file {path} does not hold a Solana keypair (a JSON array of 64 bytes)"
        ) from None
