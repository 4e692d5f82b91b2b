"""Key files and key variables: the one reader for every key fedrelay loads.

Three formats, each the one its ecosystem's tools write:

- EVM (secp256k1) account keys: ``0x`` and 64 hex digits on one line (the ``0x`` is optional);
- Solana keypairs: the JSON array of 64 byte values that ``solana-keygen`` writes;
- guardian keys: a secp256k1 private key as 64 hex digits, with or without ``0x``.

A key comes from a file when one is given, else from an environment variable. Error messages say
where the key was looked for and what was wrong with it, never the key itself.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

_HEX_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")


class KeyFileError(ValueError):
    """A key could not be read: missing, unreadable, or not in the expected format.

    The message names the file or variable and the expected format; it never holds key material.
    """


def read_key_text(
    key_file: Path | None,
    *,
    what: str,
    variable: str | None = None,
    environ: Mapping[str, str] | None = None,
    option: str | None = None,
    owner: str = "",
) -> tuple[str, str]:
    """The stripped text of a key from ``key_file``, else from the variable ``variable``.

    Args:
        key_file: The file to read, or None to use the environment.
        what: What the key is, for messages ("signer key").
        variable: The environment variable to fall back to (None: a file is required).
        environ: The environment to read (default: ``os.environ``).
        option: The command-line option that names the file, for the "no key" message.
        owner: Whose key it is, for the "no key" message (" for chain 'coordinator'").

    Returns:
        ``(text, where)``: the key's text and where it came from ("key file PATH" or "$VAR").

    Raises:
        KeyFileError: The file does not exist, is not a file or cannot be read; or no file was
            given and the variable is unset or empty.
    """
    if key_file is not None:
        if not key_file.exists():
            raise KeyFileError(f"cannot read {what} file {key_file}: it does not exist")
        if not key_file.is_file():
            raise KeyFileError(f"cannot read {what} file {key_file}: it is not a regular file")
        try:
            return key_file.read_text().strip(), f"key file {key_file}"
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not text"
            raise KeyFileError(f"cannot read {what} file {key_file}: {reason}") from None
    text = (os.environ if environ is None else environ).get(variable, "") if variable else ""
    if not text.strip():
        ways = [f"give {option}" if option else "give a key file"]
        if variable:
            ways.append(f"set {variable}")
        raise KeyFileError(f"no {what}{owner}: {' or '.join(ways)}")
    return text.strip(), f"${variable}"


def parse_evm_key(text: str, where: str) -> str:
    """An EVM private key as ``0x`` + 64 lowercase-preserving hex digits.

    Raises:
        KeyFileError: ``text`` is not 64 hex digits (with or without ``0x``).
    """
    if not _HEX_KEY.fullmatch(text):
        raise KeyFileError(
            f"{where} does not hold an EVM private key (64 hex digits on one line, "
            "with or without 0x)"
        )
    return "0x" + text.removeprefix("0x")


def parse_solana_keypair(text: str, where: str) -> bytes:
    """The 64 bytes of a Solana keypair written as a JSON array of numbers.

    Raises:
        KeyFileError: ``text`` is not a JSON array of 64 numbers in 0..255.
    """
    try:
        values = json.loads(text)
        if not isinstance(values, list) or len(values) != 64:
            raise ValueError
        return bytes(values)
    except (ValueError, TypeError):
        raise KeyFileError(
            f"{where} does not hold a Solana keypair (a JSON array of 64 byte values, "
            "as solana-keygen writes)"
        ) from None


def parse_guardian_key(text: str, where: str) -> bytes:
    """A guardian's 32-byte secp256k1 private key from hex (with or without ``0x``).

    Only the format is checked here; whether the scalar is a valid key is the signer's check.

    Raises:
        KeyFileError: ``text`` is not hex, or not 32 bytes of it.
    """
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise KeyFileError(f"the guardian key in {where} is not hex") from None
    if len(raw) != 32:
        raise KeyFileError(f"the guardian key in {where} is {len(raw)} bytes, not 32")
    return raw


def load_evm_key(path: Path) -> str:
    """The EVM private key in ``path`` (``0x`` + 64 hex digits).

    Raises:
        KeyFileError: The file is missing, unreadable or holds no such key.
    """
    return parse_evm_key(*read_key_text(path, what="key"))


def load_solana_keypair_bytes(path: Path) -> bytes:
    """The 64 bytes of the Solana keypair in ``path``.

    Raises:
        KeyFileError: The file is missing, unreadable or holds no such keypair.
    """
    return parse_solana_keypair(*read_key_text(path, what="key"))
