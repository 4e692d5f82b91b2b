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


#: The reason both cores give for a VAA signed by a replaced set past its grace period.
GUARDIAN_SET_EXPIRED = "guardian set has expired"


class _Refusal(ContractRevert):
    """A revert that carries one reason string."""

    @property
    def reason(self) -> str:
        """The reason string (empty when there is none)."""
        return str(self.arguments[0]) if self.arguments else ""

    @property
    def guardian_set_expired(self) -> bool:
        """Whether the VAA's guardian set was replaced more than its grace period ago: the
        message must be signed again by the current set; no retry of these bytes can land."""
        return self.reason == GUARDIAN_SET_EXPIRED


class InvalidVaa(_Refusal):
    """The core rejected the VAA, as a receiver reports it; `reason` says why.

    The reason is the core's own: a returned one (``"no quorum"``), or the string of a core that
    reverts instead (Wormhole's: ``"signature indices must be ascending"``, ...); empty when
    the core reverted without a string (a panic, say).
    """


class RequireError(_Refusal):
    """A plain ``Error(string)`` revert (Solidity's ``require``), such as Wormhole's core
    refusing a VAA when it is called directly or through a receiver that passes it on."""


_SPECIFIC: dict[str, type[ContractRevert]] = {
    "AlreadyConsumed": AlreadyConsumed,
    "InvalidVaa": InvalidVaa,
    "Error": RequireError,
}


def core_refusal(error: InvalidVaa | RequireError) -> str:
    """What a core's refusal of a VAA means, said plainly."""
    if error.guardian_set_expired:
        return (
            "the VAA's guardian set has expired (replaced longer ago than the core's grace "
            "period): only a VAA signed by the current guardian set can be delivered"
        )
    if not error.reason:
        return f"the core reverted without a reason string ({error.name})"
    return f"the core refused the VAA: {error.reason} ({error.name})"


def revert_for(name: str, args: tuple[Any, ...], data: bytes) -> ContractRevert:
    """Return the most specific `ContractRevert` subclass instance for a decoded error."""
    return _SPECIFIC.get(name, ContractRevert)(name, args, data)


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return repr(value)
