"""Decode revert data into the adapter's `ContractRevert` errors, using the contracts' ABIs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eth_abi.abi import decode as abi_decode

from fedrelay.adapters.evm.errors import ContractRevert, revert_for
from fedrelay.protocol.hashing import keccak256

_BUILTIN: dict[bytes, tuple[str, tuple[str, ...]]] = {
    bytes.fromhex("08c379a0"): ("Error", ("string",)),
    bytes.fromhex("4e487b71"): ("Panic", ("uint256",)),
}


def _canonical_type(item: dict[str, Any]) -> str:
    kind = str(item["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in item["components"])
        return f"({inner}){kind[5:]}"
    return kind


class RevertDecoder:
    """Maps 4-byte error selectors of the given ABIs to names and argument types."""

    def __init__(self, abis: Iterable[Iterable[dict[str, Any]]]) -> None:
        self._errors = dict(_BUILTIN)
        for abi in abis:
            for item in abi:
                if item.get("type") != "error":
                    continue
                types = tuple(_canonical_type(i) for i in item.get("inputs", []))
                selector = keccak256(f"{item['name']}({','.join(types)})".encode())[:4]
                self._errors[selector] = (str(item["name"]), types)

    def decode(self, data: bytes) -> ContractRevert:
        """Return the error `data` encodes (`Unknown` when its selector is not known)."""
        known = self._errors.get(data[:4])
        if known is None:
            return revert_for("Unknown", (data,), data)
        name, types = known
        try:
            args = tuple(abi_decode(list(types), data[4:]))
        except Exception:
            args = (data[4:],)
        return revert_for(name, args, data)


def revert_data(raw: object) -> bytes | None:
    """Extract revert bytes from what web3 puts in an exception's `data` (hex str or dict)."""
    if isinstance(raw, dict):
        raw = raw.get("data")
    if isinstance(raw, str) and raw.startswith("0x"):
        try:
            return bytes.fromhex(raw[2:])
        except ValueError:
            return None
    if isinstance(raw, bytes):
        return raw
    return None
