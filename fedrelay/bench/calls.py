"""Gas by contract function: which calls a benchmark's transactions spent their gas on.

`fedrelay bench cost` reads every transaction of the rounds it plays back from the chains; this
module names each one by the contract it was sent to and the function its input selects
(``JobMarket.assignTasks``, ``WorkerHub.commitSignedAndPublish``, ...) and adds up the gas each
name used, so a figure per worker-round comes with where it goes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fedrelay.protocol.hashing import keccak256

#: What a transaction with no input, or one too short to select a function, is named after its
#: contract (a plain transfer).
PLAIN_TRANSFER = "(transfer)"


@dataclass(frozen=True)
class Call:
    """One transaction as the tally reads it: its recipient, its input and the gas it used."""

    to: str | None
    input: bytes
    gas_used: int


@dataclass(frozen=True)
class CallGas:
    """What the transactions of one name used: their count and their gas."""

    transactions: int
    gas: int


def _canonical(param: Mapping[str, Any]) -> str:
    """A parameter's type as a function signature spells it: a tuple as its components in
    parentheses, with its array suffix."""
    kind = str(param["type"])
    if not kind.startswith("tuple"):
        return kind
    inner = ",".join(_canonical(c) for c in param.get("components", ()))
    return f"({inner}){kind.removeprefix('tuple')}"


def selector(function: Mapping[str, Any]) -> bytes:
    """The four-byte selector of an ABI function entry."""
    args = ",".join(_canonical(p) for p in function.get("inputs", ()))
    return keccak256(f"{function['name']}({args})".encode())[:4]


def function_names(abi: Iterable[Mapping[str, Any]]) -> dict[bytes, str]:
    """The functions of `abi` by their four-byte selector."""
    return {selector(entry): str(entry["name"]) for entry in abi if entry.get("type") == "function"}


@dataclass(frozen=True)
class Contracts:
    """The contracts a chain's transactions may be sent to: by lowercase address, the contract's
    name and its functions by selector."""

    by_address: Mapping[str, tuple[str, Mapping[bytes, str]]]

    @classmethod
    def of(cls, deployed: Iterable[tuple[str, str, Iterable[Mapping[str, Any]]]]) -> Contracts:
        """From (address, contract name, ABI) of each deployed contract."""
        return cls(
            {address.lower(): (name, function_names(abi)) for address, name, abi in deployed}
        )

    def name(self, call: Call) -> str:
        """``Contract.function``; an unknown recipient is its address, an unknown selector its
        hex, a contract creation ``(create)``."""
        if call.to is None:
            return "(create)"
        contract, functions = self.by_address.get(call.to.lower(), (call.to.lower(), {}))
        if len(call.input) < 4:
            return f"{contract}.{PLAIN_TRANSFER}"
        selector = call.input[:4]
        return f"{contract}.{functions.get(selector, '0x' + selector.hex())}"


def gas_by_call(calls: Iterable[Call], contracts: Contracts) -> dict[str, CallGas]:
    """The transactions and gas of each ``Contract.function``, in name order."""
    found: dict[str, CallGas] = {}
    for call in calls:
        name = contracts.name(call)
        seen = found.get(name, CallGas(0, 0))
        found[name] = CallGas(seen.transactions + 1, seen.gas + call.gas_used)
    return dict(sorted(found.items()))


def per_worker_round(
    tallies: Iterable[Mapping[str, CallGas]], worker_rounds: int
) -> dict[str, Any]:
    """Several tallies added up, each name's gas divided by `worker_rounds` (rounded), with its
    transactions; the largest first.

    Raises:
        ValueError: `worker_rounds` is not positive.
    """
    if worker_rounds <= 0:
        raise ValueError(f"worker_rounds must be positive, not {worker_rounds}")
    total: dict[str, CallGas] = {}
    for tally in tallies:
        for name, spent in tally.items():
            seen = total.get(name, CallGas(0, 0))
            total[name] = CallGas(seen.transactions + spent.transactions, seen.gas + spent.gas)
    ordered = sorted(total.items(), key=lambda item: (-item[1].gas, item[0]))
    return {
        name: {"gas": round(spent.gas / worker_rounds), "transactions": spent.transactions}
        for name, spent in ordered
    }
