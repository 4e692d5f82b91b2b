"""Typed access to a core: fedrelay's MessageCore, or Wormhole's own core contract.

Both have the interface receivers use (publication, fee, guardian sets, ``parseAndVerifyVM``);
they differ in administration. MessageCore's owner rotates guardians and sets the fee
(:class:`MessageCoreContract`); Wormhole's core takes governance VAAs for both
(:class:`WormholeCoreContract`, payloads in :mod:`fedrelay.protocol.wormhole.governance`).
:func:`core_kind` tells which one is deployed at an address. A ThresholdVerifier beside a core
(:class:`ThresholdVerifierContract`) verifies version-2 VAAs for receivers on a core that takes
version 1 only.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from eth_typing import ChecksumAddress, HexStr
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD
from web3.types import TxReceipt

from fedrelay.adapters.evm.artifacts import load_artifact
from fedrelay.adapters.evm.chain import EvmChain, Signer
from fedrelay.adapters.evm.errors import EvmError
from fedrelay.protocol.hashing import keccak256


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


class CoreKind(enum.StrEnum):
    """Which core contract is deployed: how its guardian set and fee are administered."""

    MESSAGE_CORE = "message_core"  # fedrelay's: the owner calls it directly
    WORMHOLE = "wormhole"  # Wormhole's: governance VAAs


class UnknownCore(EvmError):
    """The address holds neither a MessageCore nor a Wormhole core."""


def core_kind(chain: EvmChain, address: str) -> CoreKind:
    """Probe the core at `address`: MessageCore answers ``owner()``, Wormhole's core
    ``governanceContract()`` (and has no owner).

    Raises:
        UnknownCore: Neither answers.
    """
    target = chain.w3.to_checksum_address(address)
    probes = (("owner()", CoreKind.MESSAGE_CORE), ("governanceContract()", CoreKind.WORMHOLE))
    for signature, kind in probes:
        if _answers(chain, target, signature):
            return kind
    raise UnknownCore(
        f"{target} answers neither owner() (MessageCore) nor governanceContract() (Wormhole core)"
    )


def _answers(chain: EvmChain, target: ChecksumAddress, signature: str) -> bool:
    """Whether `target` returns one word for the argument-less view `signature`."""
    data = HexStr("0x" + keccak256(signature.encode())[:4].hex())
    try:
        answer = chain.w3.eth.call({"to": target, "data": data})
    except ContractLogicError:  # no such function: the call reverts
        return False
    return len(answer) == 32


class _Core:
    """What both cores offer: fee, chain id, guardian sets, verification, publication."""

    abi: ClassVar[list[dict[str, Any]]]

    def __init__(self, chain: EvmChain, address: str) -> None:
        self.chain = chain
        self.address = chain.w3.to_checksum_address(address)
        self.contract = chain.w3.eth.contract(address=self.address, abi=self._abi())

    @classmethod
    def _abi(cls) -> list[dict[str, Any]]:
        raise NotImplementedError

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
        return _parse_and_verify(self.chain, self.contract, vaa)

    def publish_message(
        self, signer: Signer, nonce: int, payload: bytes, consistency_level: int
    ) -> TxReceipt:
        """Publish a message from `signer` itself (tests and tools; contracts publish their own)."""
        fee = self.message_fee()
        function = self.contract.functions.publishMessage(nonce, payload, consistency_level)
        return self.chain.transact(signer, function, value=fee)

    def published_messages(self, receipt: TxReceipt) -> list[PublishedMessage]:
        """The messages published in one transaction, in log order."""
        event = self.contract.events.LogMessagePublished()
        return [_message(e) for e in event.process_receipt(receipt, errors=DISCARD)]

    def published_between(
        self, from_block: int, to_block: int, sender: str | None = None
    ) -> list[PublishedMessage]:
        """The messages published in blocks `from_block..to_block` (inclusive), in chain order;
        only `sender`'s when given."""
        event = self.contract.events.LogMessagePublished()
        filters = None if sender is None else {"sender": sender}
        logs = event.get_logs(argument_filters=filters, from_block=from_block, to_block=to_block)
        return [_message(e) for e in logs]


def _parse_and_verify(chain: EvmChain, contract: Any, vaa: bytes) -> VerifiedVm:
    """`parseAndVerifyVM(vaa)` of a core or a verifier (a view call; nothing is consumed)."""
    vm, valid, reason = chain.call(contract.functions.parseAndVerifyVM(vaa))
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


class _ThresholdKeys:
    """The threshold keys a MessageCore or a ThresholdVerifier holds (docs/protocol.md, 2a)."""

    chain: EvmChain
    contract: Any

    def append_threshold_key(self, signer: Signer, governance_vaa: bytes) -> TxReceipt:
        """Append the threshold key a version-1 governance VAA carries (docs/protocol.md,
        section 2a); anyone may submit it. From then on the contract also verifies version-2 VAAs
        signed under that key.

        Raises:
            ContractRevert: ``InvalidGovernanceVaa``, ``NotGovernance``, ``NotCurrentGuardianSet``,
                ``InvalidGovernancePayload``, ``WrongKeyIndex`` (also a replay) or ``InvalidKey``.
        """
        return self.chain.transact(signer, self.contract.functions.appendKey(governance_vaa))

    def threshold_key_count(self) -> int:
        """How many threshold keys were appended (the next key's index)."""
        return int(self.chain.call(self.contract.functions.keyCount()))


class MessageCoreContract(_ThresholdKeys, _Core):
    """A deployed MessageCore: the common core calls, and its owner's administration."""

    @classmethod
    def _abi(cls) -> list[dict[str, Any]]:
        return list(load_artifact("MessageCore").abi)

    def submit_new_guardian_set(self, signer: Signer, keys: Sequence[str]) -> TxReceipt:
        """Rotate to a new guardian set (owner only; Wormhole's core takes a governance VAA:
        :meth:`WormholeCoreContract.submit_guardian_set_upgrade`)."""
        checksummed = [self.chain.w3.to_checksum_address(k) for k in keys]
        return self.chain.transact(
            signer, self.contract.functions.submitNewGuardianSet(checksummed)
        )

    def set_message_fee(self, signer: Signer, fee: int) -> TxReceipt:
        """Set the publication fee (owner only; Wormhole's core takes a governance VAA:
        :meth:`WormholeCoreContract.submit_set_message_fee`)."""
        return self.chain.transact(signer, self.contract.functions.setMessageFee(fee))


class ThresholdVerifierContract(_ThresholdKeys):
    """A deployed ThresholdVerifier: version-2 VAAs verified beside a core that takes version 1
    only (Wormhole's), every other version handed to that core. Receivers deployed with it as their
    verifier (``verifier=`` of :func:`~fedrelay.adapters.evm.deploy.deploy_worker_hub` and
    :func:`~fedrelay.adapters.evm.deploy.deploy_job_market`) take both versions."""

    def __init__(self, chain: EvmChain, address: str) -> None:
        self.chain = chain
        self.address = chain.w3.to_checksum_address(address)
        abi = load_artifact("ThresholdVerifier").abi
        self.contract = chain.w3.eth.contract(address=self.address, abi=list(abi))

    def parse_and_verify(self, vaa: bytes) -> VerifiedVm:
        """Its verdict on `vaa`: version 2 here, any other version the core's (a view call)."""
        return _parse_and_verify(self.chain, self.contract, vaa)

    def core(self) -> str:
        """The core it hands version-1 VAAs to and whose guardian sets sign its governance."""
        return str(self.chain.call(self.contract.functions.core()))


def _function(
    name: str, inputs: Sequence[str], outputs: Sequence[str], mutability: str
) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "inputs": [{"name": "", "type": t} for t in inputs],
        "outputs": [{"name": "", "type": t} for t in outputs],
        "stateMutability": mutability,
    }


#: Wormhole core functions beyond the shared interface (from its published interface).
_WORMHOLE_GOVERNANCE_ABI = (
    _function("submitNewGuardianSet", ["bytes"], [], "nonpayable"),
    _function("submitSetMessageFee", ["bytes"], [], "nonpayable"),
    _function("governanceChainId", [], ["uint16"], "view"),
    _function("governanceContract", [], ["bytes32"], "view"),
    _function("governanceActionIsConsumed", ["bytes32"], ["bool"], "view"),
)


class WormholeCoreContract(_Core):
    """A deployed Wormhole core: the common core calls, and administration by governance VAAs
    (build them with :func:`fedrelay.protocol.wormhole.governance.governance_vaa`)."""

    @classmethod
    def _abi(cls) -> list[dict[str, Any]]:
        return list(load_artifact("IMessageCore").abi) + list(_WORMHOLE_GOVERNANCE_ABI)

    def governance_emitter(self) -> tuple[int, bytes]:
        """The (chain, emitter address) whose VAAs the core takes as governance."""
        chain = int(self.chain.call(self.contract.functions.governanceChainId()))
        return chain, bytes(self.chain.call(self.contract.functions.governanceContract()))

    def governance_applied(self, digest: bytes) -> bool:
        """Whether the governance VAA with `digest` was applied."""
        return bool(self.chain.call(self.contract.functions.governanceActionIsConsumed(digest)))

    def submit_guardian_set_upgrade(self, signer: Signer, vaa: bytes) -> TxReceipt:
        """Apply a guardian set upgrade VAA (action 2); anyone may submit it.

        Raises:
            ContractRevert: ``Error`` with the core's reason (not signed by the current set,
                wrong governance emitter, applied before, index not current + 1, ...).
        """
        return self.chain.transact(signer, self.contract.functions.submitNewGuardianSet(vaa))

    def submit_set_message_fee(self, signer: Signer, vaa: bytes) -> TxReceipt:
        """Apply a set message fee VAA (action 3); anyone may submit it (errors as above)."""
        return self.chain.transact(signer, self.contract.functions.submitSetMessageFee(vaa))


AnyCore = MessageCoreContract | WormholeCoreContract


def open_core(chain: EvmChain, address: str) -> AnyCore:
    """The binding for the core at `address`, by :func:`core_kind`."""
    if core_kind(chain, address) is CoreKind.WORMHOLE:
        return WormholeCoreContract(chain, address)
    return MessageCoreContract(chain, address)


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
