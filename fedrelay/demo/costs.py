"""What the demo spent on its chains: EVM gas and fees, Solana compute units and fees.

Costs are read back from the chains' own RPC endpoints, as any observer could:

- on each EVM chain, the receipts of every block from a start block on
  (``eth_getBlockReceipts``): gas used and fees paid (``gasUsed * effectiveGasPrice``, in wei),
  by the sender's role;
- on Solana, every transaction that named the worker program (``getSignaturesForAddress``,
  then ``getTransaction``): compute units consumed and fees paid (lamports), by the fee payer's
  role, and compute units by instruction kind, from the program log's per-instruction
  ``consumed N of M compute units`` lines.

A role is what the devnet calls an account (``owner``, ``aggregator``, ``relayer-coordinator``,
...); worker accounts count as ``workers``, payout accounts as ``payouts``, anything else as
``other``. The tallies (:func:`tally_evm`, :func:`tally_solana`) are pure; the ``fetch_*``
functions and :func:`devnet_costs` do the I/O.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from fedrelay.adapters.devnet.state import DevnetInfo, WorkerKey
from fedrelay.adapters.solana._base58 import b58decode
from fedrelay.adapters.solana.layout import Instruction
from fedrelay.protocol.redact import redact_text, redact_url

#: Blocks whose receipts one JSON-RPC batch asks for.
BLOCK_BATCH = 50
#: Transactions one JSON-RPC batch asks for.
TRANSACTION_BATCH = 50
_SIGNATURE_PAGE = 1000
_OTHER = "other"
_INVOKE = re.compile(r"^Program (\S+) invoke \[(\d+)\]$")
_CONSUMED = re.compile(r"^Program (\S+) consumed (\d+) of \d+ compute units$")
_RETURN = re.compile(r"^Program (\S+) (success|failed.*)$")
_BUILTINS = {
    "ComputeBudget111111111111111111111111111111": "compute_budget",
    "11111111111111111111111111111111": "system",
}


class CostError(Exception):
    """A chain's RPC endpoint could not tell what was spent; the message says which and why."""


@dataclass(frozen=True)
class Spend:
    """What a set of transactions cost.

    Attributes:
        transactions: How many transactions.
        units: Gas used (EVM) or compute units consumed (Solana).
        fees: Fees paid, in wei (EVM) or lamports (Solana).
    """

    transactions: int = 0
    units: int = 0
    fees: int = 0

    def plus(self, units: int, fees: int) -> Spend:
        """This spend and one more transaction."""
        return Spend(self.transactions + 1, self.units + units, self.fees + fees)


@dataclass(frozen=True)
class EvmGas:
    """Gas spent on one EVM chain over a range of blocks.

    Attributes:
        chain: The chain's devnet name.
        first_block: The first block counted.
        last_block: The last block counted.
        total: Every transaction in those blocks.
        by_role: The same, by the sender's role.
    """

    chain: str
    first_block: int
    last_block: int
    total: Spend
    by_role: dict[str, Spend]

    def to_json(self) -> dict[str, Any]:
        """The chain's entry under ``gas`` in ``summary.json``."""
        return {
            "from_block": self.first_block,
            "to_block": self.last_block,
            "transactions": self.total.transactions,
            "gas_used": self.total.units,
            "fees_wei": self.total.fees,
            "by_role": {
                role: {"transactions": s.transactions, "gas_used": s.units, "fees_wei": s.fees}
                for role, s in sorted(self.by_role.items())
            },
        }


@dataclass(frozen=True)
class InstructionUnits:
    """Compute units of one instruction kind: how many instructions and what they consumed."""

    instructions: int = 0
    compute_units: int = 0


@dataclass(frozen=True)
class SolanaCompute:
    """Compute units and fees of the transactions that named the worker program.

    Attributes:
        chain: The chain's devnet name.
        first_slot: The first slot counted.
        total: Every such transaction (units are compute units, fees lamports).
        by_role: The same, by the fee payer's role.
        by_instruction: Compute units per top-level instruction kind.
    """

    chain: str
    first_slot: int
    total: Spend
    by_role: dict[str, Spend]
    by_instruction: dict[str, InstructionUnits]

    def to_json(self) -> dict[str, Any]:
        """The chain's entry under ``compute_units`` in ``summary.json``."""
        return {
            "from_slot": self.first_slot,
            "transactions": self.total.transactions,
            "compute_units": self.total.units,
            "fees_lamports": self.total.fees,
            "by_role": {
                role: {
                    "transactions": s.transactions,
                    "compute_units": s.units,
                    "fees_lamports": s.fees,
                }
                for role, s in sorted(self.by_role.items())
            },
            "by_instruction": {k: asdict(v) for k, v in sorted(self.by_instruction.items())},
        }


@dataclass(frozen=True)
class DemoCosts:
    """Gas per EVM chain and compute units per Solana chain (empty when not measured)."""

    gas: dict[str, EvmGas] = field(default_factory=dict)
    compute_units: dict[str, SolanaCompute] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``gas`` and ``compute_units`` keys of ``summary.json``."""
        return {
            "gas": {name: g.to_json() for name, g in self.gas.items()},
            "compute_units": {name: c.to_json() for name, c in self.compute_units.items()},
        }


# --- roles ------------------------------------------------------------------------------------


def devnet_roles(info: DevnetInfo, workers: Iterable[WorkerKey] = ()) -> dict[str, str]:
    """Address to role for every account the devnet knows (EVM addresses lower-cased).

    Args:
        info: The devnet's state (its ``accounts`` name the roles).
        workers: Worker keys to count as ``workers``, their payout accounts as ``payouts``;
            the devnet's own list of workers is always included.
    """
    roles = {_normal(address): role for role, address in info.accounts.items()}
    for worker in (*info.workers, *workers):
        roles[_normal(worker.address)] = "workers"
        roles[_normal(worker.payout_address)] = "payouts"
    return roles


def _normal(address: str) -> str:
    return address.lower() if address.startswith("0x") else address


# --- pure tallies -----------------------------------------------------------------------------


def tally_evm(
    chain: str,
    first_block: int,
    last_block: int,
    receipts: Iterable[Mapping[str, Any]],
    roles: Mapping[str, str],
) -> EvmGas:
    """Gas and fees of ``receipts`` (as ``eth_getBlockReceipts`` returns them), by sender role.

    Raises:
        CostError: A receipt lacks ``from``, ``gasUsed`` or ``effectiveGasPrice``.
    """
    total = Spend()
    by_role: dict[str, Spend] = {}
    for receipt in receipts:
        try:
            sender = _normal(str(receipt["from"]))
            gas = _quantity(receipt["gasUsed"])
            fee = gas * _quantity(receipt["effectiveGasPrice"])
        except (KeyError, ValueError, TypeError) as exc:
            raise CostError(f"a {chain} receipt is malformed ({exc!r}): {receipt}") from None
        role = roles.get(sender, _OTHER)
        total = total.plus(gas, fee)
        by_role[role] = by_role.get(role, Spend()).plus(gas, fee)
    return EvmGas(chain, first_block, last_block, total, by_role)


def _quantity(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def instruction_units(logs: Sequence[str]) -> dict[int, int]:
    """Compute units of each top-level instruction that logged them, by instruction index.

    Runtime logs name each invocation with its depth (``invoke [1]`` is top level) and log a
    program's ``consumed N of M compute units`` before its ``success`` or ``failed``; builtin
    programs log no consumption.
    """
    units: dict[int, int] = {}
    index, depth = -1, 0
    for line in logs:
        if match := _INVOKE.match(line):
            depth = int(match.group(2))
            if depth == 1:
                index += 1
        elif (match := _CONSUMED.match(line)) and depth == 1:
            units[index] = units.get(index, 0) + int(match.group(2))
        elif _RETURN.match(line):
            depth = max(0, depth - 1)
    return units


def _instruction_kind(program: str, data: str, program_id: str) -> str:
    if program != program_id:
        return _BUILTINS.get(program, program)
    raw = b58decode(data) if data else b""
    if raw and raw[0] in Instruction._value2member_map_:
        return Instruction(raw[0]).name.lower()
    return "unknown"


def tally_solana(
    chain: str,
    first_slot: int,
    transactions: Iterable[Mapping[str, Any]],
    program_id: str,
    roles: Mapping[str, str],
) -> SolanaCompute:
    """Compute units and fees of ``transactions`` (``getTransaction`` results, ``json``).

    A transaction's compute units go to its instructions by the log's per-instruction lines;
    what no line accounts for (builtin programs, the runtime) goes to the first instruction
    that logged nothing, or else to the first instruction.

    Raises:
        CostError: A transaction lacks its message or its ``meta``.
    """
    total = Spend()
    by_role: dict[str, Spend] = {}
    by_kind: dict[str, InstructionUnits] = {}
    for found in transactions:
        try:
            meta = found["meta"]
            message = found["transaction"]["message"]
            keys = [str(k) for k in message["accountKeys"]]
            kinds = [
                _instruction_kind(keys[i["programIdIndex"]], i.get("data", ""), program_id)
                for i in message["instructions"]
            ]
            units = int(meta.get("computeUnitsConsumed") or 0)
            fee = int(meta["fee"])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise CostError(f"a {chain} transaction is malformed ({exc!r})") from None
        role = roles.get(keys[0], _OTHER) if keys else _OTHER
        total = total.plus(units, fee)
        by_role[role] = by_role.get(role, Spend()).plus(units, fee)
        logged = instruction_units(meta.get("logMessages") or [])
        shares = {i: logged.get(i, 0) for i in range(len(kinds))}
        rest = units - sum(shares.values())
        if kinds and rest > 0:
            unlogged = [i for i in range(len(kinds)) if i not in logged]
            shares[unlogged[0] if unlogged else 0] += rest
        for index, kind in enumerate(kinds):
            was = by_kind.get(kind, InstructionUnits())
            by_kind[kind] = InstructionUnits(
                was.instructions + 1, was.compute_units + shares[index]
            )
    return SolanaCompute(chain, first_slot, total, by_role, by_kind)


# --- reading the chains -----------------------------------------------------------------------


async def _batch(
    client: httpx.AsyncClient, url: str, calls: Sequence[tuple[str, list[Any]]]
) -> list[Any]:
    """The results of a JSON-RPC batch, in call order."""
    if not calls:
        return []
    body = [
        {"jsonrpc": "2.0", "id": n, "method": method, "params": params}
        for n, (method, params) in enumerate(calls)
    ]
    try:
        response = await client.post(url, json=body)
        response.raise_for_status()
        replies = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise CostError(
            f"the RPC endpoint {redact_url(url)} did not answer: {redact_text(str(exc), [url])}"
        ) from None
    if not isinstance(replies, list):
        replies = [replies]
    by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
    results = []
    for n, (method, _) in enumerate(calls):
        reply = by_id.get(n)
        if reply is None or "error" in reply:
            error = reply.get("error") if reply else "no answer"
            raise CostError(f"{method} at {redact_url(url)} failed: {error}")
        results.append(reply.get("result"))
    return results


async def fetch_evm_receipts(
    client: httpx.AsyncClient, url: str, first_block: int = 0
) -> tuple[int, list[dict[str, Any]]]:
    """The latest block number and every receipt from ``first_block`` through it."""
    [latest] = await _batch(client, url, [("eth_blockNumber", [])])
    last = _quantity(latest)
    receipts: list[dict[str, Any]] = []
    for start in range(first_block, last + 1, BLOCK_BATCH):
        blocks = range(start, min(start + BLOCK_BATCH, last + 1))
        found = await _batch(client, url, [("eth_getBlockReceipts", [hex(b)]) for b in blocks])
        for block_receipts in found:
            receipts.extend(block_receipts or [])
    return last, receipts


async def fetch_solana_transactions(
    client: httpx.AsyncClient, url: str, address: str, first_slot: int = 0
) -> list[dict[str, Any]]:
    """Every transaction that named ``address`` from ``first_slot`` on, oldest first."""
    signatures: list[str] = []
    before: str | None = None
    while True:
        config: dict[str, Any] = {"limit": _SIGNATURE_PAGE}
        if before is not None:
            config["before"] = before
        [page] = await _batch(client, url, [("getSignaturesForAddress", [address, config])])
        if not page:
            break
        fresh = [row for row in page if int(row["slot"]) >= first_slot]
        signatures.extend(row["signature"] for row in fresh)
        if len(fresh) < len(page):
            break
        before = page[-1]["signature"]
    found: list[dict[str, Any]] = []
    options = {"encoding": "json", "maxSupportedTransactionVersion": 0}
    signatures.reverse()
    for start in range(0, len(signatures), TRANSACTION_BATCH):
        chunk = signatures[start : start + TRANSACTION_BATCH]
        results = await _batch(client, url, [("getTransaction", [s, options]) for s in chunk])
        found.extend(r for r in results if r is not None)
    return found


async def evm_gas(url: str, chain: str, roles: Mapping[str, str], first_block: int = 0) -> EvmGas:
    """Gas spent on the EVM chain at ``url`` from ``first_block`` to its latest block.

    Raises:
        CostError: The endpoint did not answer, or answered something malformed.
    """
    async with httpx.AsyncClient(timeout=30.0) as client:
        last, receipts = await fetch_evm_receipts(client, url, first_block)
    return tally_evm(chain, first_block, last, receipts, roles)


async def solana_compute(
    url: str, chain: str, program_id: str, roles: Mapping[str, str], first_slot: int = 0
) -> SolanaCompute:
    """Compute units and fees of the transactions that named ``program_id``.

    Raises:
        CostError: The endpoint did not answer, or answered something malformed.
    """
    async with httpx.AsyncClient(timeout=30.0) as client:
        found = await fetch_solana_transactions(client, url, program_id, first_slot)
    return tally_solana(chain, first_slot, found, program_id, roles)


async def devnet_costs(
    info: DevnetInfo,
    workers: Iterable[WorkerKey] = (),
    *,
    first_blocks: Mapping[str, int] | None = None,
    first_slot: int = 0,
) -> DemoCosts:
    """Gas on every EVM chain and compute units on Solana of a devnet.

    Args:
        info: The devnet's state: its chains and its accounts' roles.
        workers: Worker keys (their accounts count as ``workers``).
        first_blocks: The first block to count per EVM chain name (default 0: since genesis,
            deployment included).
        first_slot: The first Solana slot to count.

    Raises:
        CostError: A chain's endpoint did not answer, or answered something malformed.
    """
    roles = devnet_roles(info, workers)
    starts = dict(first_blocks or {})
    evm = [c for c in info.chains if c.kind == "evm"]
    solana = [c for c in info.chains if c.kind == "solana"]
    gas = await asyncio.gather(
        *(evm_gas(c.rpc_url, c.name, roles, starts.get(c.name, 0)) for c in evm)
    )
    units = await asyncio.gather(
        *(solana_compute(c.rpc_url, c.name, c.address, roles, first_slot) for c in solana)
    )
    return DemoCosts(
        gas={g.chain: g for g in gas},
        compute_units={u.chain: u for u in units},
    )


# --- the report -------------------------------------------------------------------------------


def per_worker_round(costs: DemoCosts, worker_rounds: Mapping[str, int]) -> dict[str, Any]:
    """Gas per worker-round on each EVM chain and compute units per worker-round on Solana.

    Args:
        costs: What the chains spent.
        worker_rounds: Worker-rounds (tasks assigned) per worker chain by devnet name; an EVM
            chain not named (the coordinator chain) serves every worker-round, a Solana chain
            not named none.

    Returns:
        ``summary.json``'s ``gas_per_worker_round``: per chain name, the figure (rounded to a
        unit) and the worker-rounds it is divided by; a chain with no worker-round is left out.
    """
    everyone = sum(worker_rounds.values())
    found: dict[str, Any] = {}
    spent = [(n, "gas", g.total.units, everyone) for n, g in costs.gas.items()] + [
        (n, "compute_units", c.total.units, 0) for n, c in costs.compute_units.items()
    ]
    for name, unit, total, default in spent:
        count = worker_rounds.get(name, default)
        if count > 0:
            found[name] = {unit: round(total / count), "worker_rounds": count}
    return found


def markdown_lines(
    costs: DemoCosts, per_round: Mapping[str, Mapping[str, int]] | None = None
) -> list[str]:
    """The costs as markdown tables (empty when nothing was measured), with the figures per
    worker-round of :func:`per_worker_round` when given."""
    if not costs.gas and not costs.compute_units:
        return []
    lines = [
        "## Gas and compute units spent",
        "",
        "| chain | sender role | transactions | gas / compute units | fees |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, gas in costs.gas.items():
        lines.append(
            f"| {name} (blocks {gas.first_block}-{gas.last_block}) | all | "
            f"{gas.total.transactions} | {gas.total.units} gas | {gas.total.fees} wei |"
        )
        lines += [
            f"| {name} | {role} | {s.transactions} | {s.units} gas | {s.fees} wei |"
            for role, s in sorted(gas.by_role.items())
        ]
    for name, compute in costs.compute_units.items():
        total = compute.total
        lines.append(
            f"| {name} (slots {compute.first_slot}-) | all | {total.transactions} | "
            f"{total.units} CU | {total.fees} lamports |"
        )
        lines += [
            f"| {name} | {role} | {s.transactions} | {s.units} CU | {s.fees} lamports |"
            for role, s in sorted(compute.by_role.items())
        ]
    for name, compute in costs.compute_units.items():
        lines += [
            "",
            f"| {name} instruction | instructions | compute units |",
            "| --- | --- | --- |",
            *(
                f"| {kind} | {u.instructions} | {u.compute_units} |"
                for kind, u in sorted(compute.by_instruction.items())
            ),
        ]
    if per_round:
        lines += ["", "| chain | per worker-round | worker-rounds |", "| --- | --- | --- |"]
        for name, figure in per_round.items():
            unit = "gas" if "gas" in figure else "compute_units"
            label = "gas" if unit == "gas" else "CU"
            lines.append(f"| {name} | {figure[unit]} {label} | {figure['worker_rounds']} |")
    return [*lines, ""]
