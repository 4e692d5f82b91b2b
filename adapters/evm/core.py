"""Typed access to a MessageCore (or the real Wormhole core, which has the same interface)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from web3.logs import DISCARD
from web3.types import TxReceipt

from fedrelay.adapters.evm.artifacts import load_artifact
from fedrelay.adapters.evm.chain import EvmChain, Signer


def address_to_bytes32(address: str) -> bytes:
    """Left-pad a 20-byte EVM address to the protocol's bytes32 form."""
    raw = bytes.fromhex(address.removeprefix("0x"))
    if len(raw) != 20:
        raise ValueError(f"an EVM address is 20 bytes, got {len(raw)} from {address!r}")
    return bytes(12) + raw


@dataclass(frozen=True)
class PublishedMessage:
    """A `LogMessagePublished` event: one message a contract published through the core."""

    emitter: str
    sequence: int
    nonce: int
    payload: bytes
    consistency_level: int
    block_number: int
    block_hash: bytes
    transaction_hash: bytes
    log_index: int

    @property
    def emitter_address(self) -> bytes:
        """The emitter as the bytes32 a VAA carries."""
        return address_to_bytes32(self.emitter)


@dataclass(frozen=True)
class VerifiedVm:
    """What the core says about a VAA: its parsed identity and whether it verifies."""

    valid: bool
    reason: str
    digest: bytes
    guardian_set_index: int
    emitter_chain: int
    emitter_address: bytes
    sequence: int
    payload: bytes


@dataclass(frozen=True)
class GuardianSetInfo:
    """A guardian set as stored by the core; `expiration_time` 0 means current."""

    keys: tuple[str, ...]
    expiration_time: int


class MessageCoreContract:
    """A deployed MessageCore: publication fee, guardian sets, VAA verification, message events."""

    def __init__(self, chain: EvmChain, address: str) -> None:
        self.chain = chain
        self.address = chain.w3.to_checksum_address(address)
        self.contract = chain.w3.eth.contract(
            address=self.address, abi=list(load_artifact("MessageCore").abi)
        )

    def message_fee(self) -> int:
        """The native fee `publishMessage` charges per message."""
        return int(self.chain.call(self.contract.functions.messageFee()))

    def wormhole_chain_id(self) -> int:
        """The Wormhole chain id this core reports."""
        return int(self.chain.call(self.contract.functions.chainId()))

    def current_guardian_set_index(self) -> int:
        """Index of the current guardian set."""
        return int(self.chain.call(self.contract.functions.getCurrentGuardianSetIndex()))

    def guardian_set(self, index: int) -> GuardianSetInfo:
        """The guardian set stored at `index` (empty keys when there is none)."""
        keys, expiration = self.chain.call(self.contract.functions.getGuardianSet(index))
        return GuardianSetInfo(tuple(str(k) for k in keys), int(expiration))

    def parse_and_verify(self, vaa: bytes) -> VerifiedVm:
        """Ask the core to parse and verify `vaa` (a view call; nothing is consumed)."""
        vm, valid, reason = self.chain.call(self.contract.functions.parseAndVerifyVM(vaa))
        return VerifiedVm(
            valid=bool(valid),
            reason=str(reason),
            digest=bytes(vm[10]),
            guardian_set_index=int(vm[8]),
            emitter_chain=int(vm[3]),
            emitter_address=bytes(vm[4]),
            sequence=int(vm[5]),
            payload=bytes(vm[7]),
        )

    def publish_message(
        self, signer: Signer, nonce: int, payload: bytes, consistency_level: int
    ) -> TxReceipt:
        """Publish a message from `signer` itself (tests and tools; contracts publish their own)."""
        fee = self.message_fee()
        function = self.contract.functions.publishMessage(nonce, payload, consistency_level)
        return self.chain.transact(signer, function, value=fee)

    def submit_new_guardian_set(self, signer: Signer, keys: Sequence[str]) -> TxReceipt:
        """Rotate to a new guardian set (owner only)."""
        checksummed = [self.chain.w3.to_checksum_address(k) for k in keys]
        return self.chain.transact(
            signer, self.contract.functions.submitNewGuardianSet(checksummed)
        )

    def set_message_fee(self, signer: Signer, fee: int) -> TxReceipt:
        """Set the publication fee (owner only)."""
        return self.chain.transact(signer, self.contract.functions.setMessageFee(fee))

    def published_messages(self, receipt: TxReceipt) -> list[PublishedMessage]:
        """The messages published in one transaction, in log order."""
        event = self.contract.events.LogMessagePublished()
        return [_message(e) for e in event.process_receipt(receipt, errors=DISCARD)]

    def published_between(self, from_block: int, to_block: int) -> list[PublishedMessage]:
        """The messages published in blocks `from_block..to_block` (inclusive), in chain order."""
        event = self.contract.events.LogMessagePublished()
        logs = event.get_logs(from_block=from_block, to_block=to_block)
        return [_message(e) for e in logs]


def _message(event: Any) -> PublishedMessage:
    args = event["args"]
    return PublishedMessage(
        emitter=str(args["sender"]),
        sequence=int(args["sequence"]),
        nonce=int(args["nonce"]),
        payload=bytes(args["payload"]),
        consistency_level=int(args["consistencyLevel"]),
        block_number=int(event["blockNumber"]),
        block_hash=bytes(event["blockHash"]),
        transaction_hash=bytes(event["transactionHash"]),
        log_index=int(event["logIndex"]),
    )
