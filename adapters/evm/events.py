"""Contract events decoded from logs: what the coordinator and relayer follow on each chain."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from web3.contract import Contract
from web3.exceptions import MismatchedABI
from web3.logs import DISCARD
from web3.types import LogReceipt, TxReceipt


@dataclass(frozen=True)
class ContractEvent:
    """One decoded event: its name, its arguments by name, and where it was logged."""

    name: str
    args: Mapping[str, Any]
    block_number: int
    transaction_hash: bytes
    log_index: int


def _event(decoded: Any) -> ContractEvent:
    return ContractEvent(
        name=str(decoded["event"]),
        args=dict(decoded["args"]),
        block_number=int(decoded["blockNumber"]),
        transaction_hash=bytes(decoded["transactionHash"]),
        log_index=int(decoded["logIndex"]),
    )


def _event_names(contract: Contract) -> list[str]:
    entries: list[dict[str, Any]] = [dict(item) for item in contract.abi]
    return [str(item["name"]) for item in entries if item.get("type") == "event"]


def decode_logs(contract: Contract, logs: Iterable[LogReceipt]) -> list[ContractEvent]:
    """Decode the logs `contract` emitted (others are skipped), keeping their order."""
    names = _event_names(contract)
    events: list[ContractEvent] = []
    for log in logs:
        if log["address"] != contract.address:
            continue
        for name in names:
            try:
                decoded = getattr(contract.events, name)().process_log(log)
            except MismatchedABI:
                continue
            events.append(_event(decoded))
            break
    return events


def receipt_events(contract: Contract, receipt: TxReceipt) -> list[ContractEvent]:
    """The events `contract` emitted in one transaction."""
    events: list[ContractEvent] = []
    for name in _event_names(contract):
        for decoded in getattr(contract.events, name)().process_receipt(receipt, errors=DISCARD):
            events.append(_event(decoded))
    return sorted(events, key=lambda e: e.log_index)


def events_between(contract: Contract, from_block: int, to_block: int) -> list[ContractEvent]:
    """The events `contract` emitted in blocks `from_block..to_block` (inclusive), in order."""
    logs = contract.w3.eth.get_logs(
        {"address": contract.address, "fromBlock": from_block, "toBlock": to_block}
    )
    return decode_logs(contract, logs)
