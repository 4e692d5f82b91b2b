"""Errors of the EVM adapter: missing artifacts, failed transactions, decoded reverts."""

from __future__ import annotations

from typing import Any


class EvmError(Exception):
    """Base class of everything the EVM adapter raises."""


class ArtifactNotFound(EvmError):
    """A contract's forge artifact is missing (the contracts were not built)."""


class TransactionFailed(EvmError):
    """A transaction was mined but reverted, or never got a receipt."""


class ContractRevert(EvmError):
    """A contract call reverted; `name` and `args` are the decoded custom error.

    Attributes:
        name: The error's name (`AlreadyConsumed`, `Error` for `require` strings, `Panic`, or
            `Unknown` when the selector is not in any known ABI).
        arguments: The error's decoded arguments, in declaration order.
        data: The raw revert data.
    """

    def __init__(self, name: str, arguments: tuple[Any, ...], data: bytes) -> None:
        self.name = name
        self.arguments = arguments
        self.data = data
        shown = ", ".join(_show(a) for a in arguments)
        super().__init__(f"contract reverted with {name}({shown})")


class AlreadyConsumed(ContractRevert):
    """The VAA was delivered before: its digest is consumed. For a relayer this means done."""

    @property
    def digest(self) -> bytes:
        """The consumed VAA digest."""
        value = self.arguments[0]
        return bytes(value)


class InvalidVaa(ContractRevert):
    """The core rejected the VAA's signatures or guardian set; `reason` says why."""

    @property
    def reason(self) -> str:
        """The core's reason string, for example "no quorum"."""
        return str(self.arguments[0])


_SPECIFIC: dict[str, type[ContractRevert]] = {
    "AlreadyConsumed": AlreadyConsumed,
    "InvalidVaa": InvalidVaa,
}


def revert_for(name: str, args: tuple[Any, ...], data: bytes) -> ContractRevert:
    """Return the most specific `ContractRevert` subclass instance for a decoded error."""
    return _SPECIFIC.get(name, ContractRevert)(name, args, data)


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return repr(value)
