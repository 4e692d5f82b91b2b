"""Per-entry results of a batched delivery: ``receiveMessages(bytes[])`` on JobMarket, WorkerHub.

A batch transaction succeeds even when some of its VAAs are refused: each entry is received on
its own and reported by one ``BatchEntry(index, digest, result, reason)`` event. The result of a
transaction is therefore read back from its receipt's logs, not from its status; this module
decodes them (with the refused entries' revert data decoded by the contracts' ABIs) for the
synchronous wrappers and for the relayer's destination adapter alike.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from web3.contract import Contract
from web3.types import TxReceipt

from fedrelay.adapters.evm.chain import EvmChain, Signer
from fedrelay.adapters.evm.errors import ContractRevert, EvmError
from fedrelay.adapters.evm.reverts import RevertDecoder
from fedrelay.protocol.hashing import keccak256

#: topic0 of ``BatchEntry(uint256 indexed index, bytes32 indexed digest, uint8 result, bytes)``.
BATCH_ENTRY_TOPIC = keccak256(b"BatchEntry(uint256,bytes32,uint8,bytes)")

#: The most entries one batch holds (Hyperlane's and Hermes' relayers batch about as many).
MAX_BATCH = 32

#: The ABI of the batch entry point and its event (the same on JobMarket and WorkerHub).
BATCH_ABI: list[dict[str, Any]] = [
    {"type": "function", "name": "receiveMessages", "stateMutability": "payable",
     "inputs": [{"name": "vaas", "type": "bytes[]"}],
     "outputs": [{"name": "results", "type": "uint8[]"}]},
    {"type": "event", "name": "BatchEntry", "anonymous": False, "inputs": [
        {"name": "index", "type": "uint256", "indexed": True},
        {"name": "digest", "type": "bytes32", "indexed": True},
        {"name": "result", "type": "uint8", "indexed": False},
        {"name": "reason", "type": "bytes", "indexed": False},
    ]},
]  # fmt: skip


class BatchResult(enum.IntEnum):
    """What a batch did with one of its entries (the contracts' result codes)."""

    APPLIED = 1  # verified, consumed and acted upon
    CONSUMED = 2  # delivered before (or earlier in the same batch): skipped
    INVALID = 3  # not a message for this contract (signatures, emitter, header, target)
    FAILED = 4  # a message for this contract whose application reverted (see the reason)


class BatchDecodeError(EvmError):
    """A receipt's batch events do not describe the batch that was sent."""


@dataclass(frozen=True)
class BatchEntryResult:
    """One entry of a batch as the contract reported it.

    Attributes:
        index: The entry's position in the batch.
        digest: The VAA digest (32 zero bytes when the VAA was too short to have one).
        result: What the contract did with it.
        reason: The decoded revert of a refused entry (INVALID, FAILED); None otherwise.
    """

    index: int
    digest: bytes
    result: BatchResult
    reason: ContractRevert | None = None

    @property
    def delivered(self) -> bool:
        """Whether the message is consumed on chain now (applied here, or before)."""
        return self.result in (BatchResult.APPLIED, BatchResult.CONSUMED)


def entry_from_log(
    topics: Sequence[bytes], data: bytes, decoder: RevertDecoder
) -> BatchEntryResult:
    """Decode one ``BatchEntry`` log (its topics and data)."""
    if len(topics) != 3 or bytes(topics[0]) != BATCH_ENTRY_TOPIC:
        raise BatchDecodeError("not a BatchEntry log")
    result, reason = abi_decode(["uint8", "bytes"], bytes(data))
    try:
        kind = BatchResult(int(result))
    except ValueError as exc:
        raise BatchDecodeError(f"unknown batch result {result}") from exc
    decoded = decoder.decode(bytes(reason)) if reason else None
    return BatchEntryResult(
        int.from_bytes(bytes(topics[1]), "big"), bytes(topics[2]), kind, decoded
    )


def entries_from_logs(
    logs: Iterable[Mapping[str, Any]], receiver: str, count: int, decoder: RevertDecoder
) -> list[BatchEntryResult]:
    """The results of a ``count``-entry batch from the logs of its receipt.

    Args:
        logs: The receipt's logs (web3 log dicts).
        receiver: The contract the batch was sent to (logs of other contracts are skipped).
        count: How many VAAs the batch held.
        decoder: Decodes refused entries' revert data.

    Raises:
        BatchDecodeError: The receipt does not report each of the ``count`` entries once.
    """
    wanted = receiver.lower()
    found: dict[int, BatchEntryResult] = {}
    for log in logs:
        topics = [bytes(t) for t in log["topics"]]
        if str(log["address"]).lower() != wanted or not topics or topics[0] != BATCH_ENTRY_TOPIC:
            continue
        entry = entry_from_log(topics, bytes(log["data"]), decoder)
        if entry.index in found or entry.index >= count:
            raise BatchDecodeError(f"entry {entry.index} reported twice or outside the batch")
        found[entry.index] = entry
    if len(found) != count:
        raise BatchDecodeError(f"the receipt reports {len(found)} of {count} batch entries")
    return [found[i] for i in range(count)]


@dataclass(frozen=True)
class BatchDelivery:
    """A mined batch: its receipt and what it did with each entry, in batch order."""

    receipt: TxReceipt
    entries: list[BatchEntryResult]

    @property
    def applied(self) -> list[int]:
        """Indices of the entries this transaction applied."""
        return [e.index for e in self.entries if e.result == BatchResult.APPLIED]


def receive_batch(
    chain: EvmChain, signer: Signer, contract: Contract, vaas: Sequence[bytes], value: int = 0
) -> BatchDelivery:
    """Send ``receiveMessages(vaas)`` to a receiver and read each entry's result back.

    Raises:
        ValueError: No VAA, or more than :data:`MAX_BATCH`.
        ContractRevert: The batch as a whole reverted (``BatchOutOfGas`` when the estimate
            was too low for an entry).
    """
    if not vaas or len(vaas) > MAX_BATCH:
        raise ValueError(f"a batch holds 1..{MAX_BATCH} VAAs, got {len(vaas)}")
    function = contract.functions.receiveMessages([bytes(v) for v in vaas])
    receipt = chain.transact(signer, function, value=value)
    entries = entries_from_logs(receipt["logs"], contract.address, len(vaas), chain.decoder)
    return BatchDelivery(receipt, entries)
