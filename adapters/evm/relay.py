"""fedrelay's EVM contracts as a relayer source and destination (``fedrelay.ports.relay``
protocols).

Source (:class:`EvmSource`): the messages a fedrelay contract (JobMarket on the coordinator chain,
WorkerHub on a worker chain) publishes through its core, read as ``LogMessagePublished`` logs of
that core filtered by sender. A *position* is a block number and its hash is the block hash, so a
reorg shows as a changed hash at a position the watcher already read. The configured finality is
a block tag (``latest``, ``safe``, ``finalized``) or a number of confirmations below the latest
block. A guardian re-reads one message from its transaction's receipt, and only when that
receipt's block is canonical and final.

Destination (:class:`EvmDestination`): ``receiveMessage(vaa)`` on the same contract, signed by the
relayer's key as an EIP-1559 transaction (gas estimated, fees from the latest base fee and the
node's priority fee, both raised by a quarter per escalation level, which is more than the 10 %
a replacement needs). The contract's ``isConsumed(emitterChain, emitter, sequence)`` is the
consumed flag (one per message, whatever VAA carries it) and its ``AlreadyConsumed`` revert the
distinct "delivered before". A reverted receipt is explained by
replaying the call at its block (the decoded revert reason), or as out of gas when it used all
its gas.

Batches (the port's optional :class:`~fedrelay.ports.relay.BatchDestination`): the destination
can also deliver many VAAs in one ``receiveMessages(vaas)`` transaction
(:meth:`EvmDestination.prepare_batch`), which applies each entry on its own and reports each by a
``BatchEntry`` event, read back on confirmation (:meth:`EvmDestination.batch_outcome`,
:meth:`EvmDestination.batch_results`). How many fit (:meth:`EvmDestination.max_batch`) follows
the destination's block gas limit: a batch may take a share of it (:class:`BatchPolicy`), at the
gas per message the last estimates showed, and never more than the policy's cap. The deliverer
takes the smaller of that and what is queued.

Both talk to the node through web3's asynchronous provider, so one event loop serves every stage.
The calls a relayer makes for every message (blocks, logs, receipts, the pending nonce, the
estimate and the broadcast) go straight through the provider (:func:`_rpc`) and are decoded
here: web3's middleware and result formatters (every address checksummed, every field of a
block, log or receipt rebuilt) took about a third of the relayer's CPU time in a profile of a
burst. A refused estimate is asked again through web3, whose typed error (revert data
included) the deliverer classifies; batch estimates and contract calls keep web3's path.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import aiohttp
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress, HexStr
from hexbytes import HexBytes
from web3 import AsyncWeb3
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    TimeExhausted,
    TransactionNotFound,
    Web3RPCError,
)
from web3.types import BlockIdentifier, RPCEndpoint, TxParams

from fedrelay.adapters.evm.artifacts import CONTRACT_NAMES, load_artifact
from fedrelay.adapters.evm.batch import (
    BATCH_ABI,
    MAX_BATCH,
    BatchEntryResult,
    BatchResult,
    entries_from_logs,
)
from fedrelay.adapters.evm.core import address_to_bytes32
from fedrelay.adapters.evm.errors import (
    AlreadyConsumed,
    ContractRevert,
    EvmError,
    InvalidVaa,
    RequireError,
    core_refusal,
)
from fedrelay.adapters.evm.reverts import RevertDecoder, revert_data
from fedrelay.ports.relay import (
    BatchOutcome,
    ChainPosition,
    EmittedMessage,
    Failure,
    FailureKind,
    SignedDelivery,
    TxState,
    TxStatus,
)
from fedrelay.protocol.wormhole import MessageId, keccak256, parse_any_vaa
from fedrelay.protocol.wormhole.observation import Observation

BlockTag = Literal["latest", "safe", "finalized"]
#: A block tag, or a number of confirmations below the latest block.
Finality = BlockTag | int

_LOG_MESSAGE_PUBLISHED = (
    "0x" + keccak256(b"LogMessagePublished(address,uint64,uint32,bytes,uint8)").hex()
)

# The subset of a fedrelay receiver the relayer uses. The core's LogMessagePublished(address
# indexed sender, uint64 sequence, uint32 nonce, bytes payload, uint8 consistencyLevel) is
# decoded by EvmSource._emitted (the real Wormhole core has the same event).
_RECEIVER_ABI: list[dict[str, Any]] = [
    {"type": "function", "name": "receiveMessage", "stateMutability": "nonpayable",
     "inputs": [{"name": "encodedVaa", "type": "bytes"}], "outputs": []},
    {"type": "function", "name": "isConsumed", "stateMutability": "view",
     "inputs": [{"name": "emitterChain", "type": "uint16"}, {"name": "emitter", "type": "bytes32"},
                {"name": "sequence", "type": "uint64"}],
     "outputs": [{"name": "", "type": "bool"}]},
    {"type": "function", "name": "core", "stateMutability": "view",
     "inputs": [], "outputs": [{"name": "", "type": "address"}]},
    *BATCH_ABI,
]  # fmt: skip

#: Texts of node errors (geth, anvil, reth, erigon) and what they mean for a delivery.
_NODE_ERRORS: tuple[tuple[str, FailureKind], ...] = (
    ("nonce too low", FailureKind.NONCE_TOO_LOW),
    ("already known", FailureKind.NONCE_TOO_LOW),
    ("replacement transaction underpriced", FailureKind.UNDERPRICED),
    ("underpriced", FailureKind.UNDERPRICED),
    ("less than block base fee", FailureKind.UNDERPRICED),
    ("fee cap less than", FailureKind.UNDERPRICED),
    ("max fee per gas less than", FailureKind.UNDERPRICED),
    ("intrinsic gas too low", FailureKind.OUT_OF_GAS),
    ("out of gas", FailureKind.OUT_OF_GAS),
    ("gas required exceeds", FailureKind.OUT_OF_GAS),
)


class FinalityError(EvmError):
    """A finality setting that is neither a known block tag nor a count of confirmations."""


def parse_finality(value: str | int) -> Finality:
    """A finality from configuration: ``latest``, ``safe``, ``finalized`` or confirmations.

    Raises:
        FinalityError: Anything else (a negative count, an unknown tag).
    """
    if isinstance(value, bool):
        raise FinalityError(f"finality must be a block tag or a count, got {value!r}")
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        count = int(value)
        if count < 0:
            raise FinalityError(f"confirmations must be >= 0, got {count}")
        return count
    if value in ("latest", "safe", "finalized"):
        return cast("BlockTag", value)
    raise FinalityError(
        f"EVM finality must be latest, safe, finalized or a number of confirmations, got {value!r}"
    )


def _hex(value: bytes) -> str:
    return "0x" + bytes(value).hex()


#: The most block reads (timestamps of logs that do not carry one) in flight at once.
BLOCK_READS_IN_FLIGHT = 16


_RECEIVE_MESSAGE = keccak256(b"receiveMessage(bytes)")[:4]
_RECEIVE_MESSAGES = keccak256(b"receiveMessages(bytes[])")[:4]


def _receive_call(vaa: bytes) -> str:
    """The calldata of ``receiveMessage(vaa)`` (encoded here: web3's encoder validates the
    ABI again on every call)."""
    return "0x" + (_RECEIVE_MESSAGE + abi_encode(["bytes"], [vaa])).hex()


def _receive_batch_call(vaas: Sequence[bytes]) -> str:
    """The calldata of ``receiveMessages(vaas)``, encoded as :func:`_receive_call` is."""
    return "0x" + (_RECEIVE_MESSAGES + abi_encode(["bytes[]"], [[bytes(v) for v in vaas]])).hex()


#: A JSON-RPC result as the node sends it (quantities as 0x-hex strings).
RawLog = dict[str, Any]


async def _rpc(w3: AsyncWeb3[Any], method: str, params: list[Any]) -> Any:
    """One JSON-RPC call straight through the provider (no middleware, no result formatting):
    the node's result as it sent it, None where it has none.

    Raises:
        Web3RPCError: The node answered with an error.
    """
    answer: Any = await w3.provider.make_request(RPCEndpoint(method), params)
    if answer.get("error") is not None:
        raise Web3RPCError(f"{method}: {answer['error']}", rpc_response=answer)
    return answer.get("result")


def _quantity(value: str) -> int:
    return int(value, 16)


def _log_timestamp(log: RawLog) -> int | None:
    """The block timestamp a node puts in the log itself (``blockTimestamp``: anvil and recent
    geth do), or None when it does not: the block is read then."""
    value: Any = log.get("blockTimestamp")
    if value is None:
        return None
    return _quantity(value) if isinstance(value, str) else int(value)


#: Blocks below its cursor a watcher reads again when the source follows the newest block.
REREAD_AT_HEAD = 2


class EvmSource:
    """Messages one fedrelay contract publishes on its chain (see the module docstring).

    Attributes:
        chain_id: The chain's Wormhole chain id.
        source: The ledger key of the watcher's cursor: ``evm:<chain id>:<emitter>``.
        reread: :data:`REREAD_AT_HEAD` at ``latest`` (or 0 confirmations), else 0 (see
            :class:`~fedrelay.ports.relay.SourceChain`).
        emitter: The contract whose messages are read.
        core: The core contract that emits the logs.
        finality: The block tag, or confirmations, that counts as final.
    """

    def __init__(
        self,
        w3: AsyncWeb3[Any],
        wormhole_chain_id: int,
        emitter: str,
        core: str,
        finality: Finality = "finalized",
    ) -> None:
        """Read messages of `emitter` logged by `core` at `finality`."""
        self.w3 = w3
        self.chain_id = wormhole_chain_id
        self.emitter: ChecksumAddress = AsyncWeb3.to_checksum_address(emitter)
        self.core: ChecksumAddress = AsyncWeb3.to_checksum_address(core)
        self.finality = finality
        self.source = f"evm:{wormhole_chain_id}:{self.emitter.lower()}"
        # A node may answer eth_getLogs for its newest block before it serves that block's logs
        # (anvil did; geth, erigon and lotus have such reports): read at the head, the watcher
        # reads the newest blocks again.
        at_head = finality in ("latest", 0)
        self.reread = REREAD_AT_HEAD if at_head else 0
        self._emitter32 = address_to_bytes32(self.emitter)
        self._timestamps: dict[str, int] = {}
        self._head: asyncio.Task[ChainPosition] | None = None

    @classmethod
    async def of_receiver(
        cls, w3: AsyncWeb3[Any], wormhole_chain_id: int, receiver: str, finality: Finality
    ) -> EvmSource:
        """The source of a fedrelay receiver contract; its core is read from the contract."""
        contract = w3.eth.contract(
            address=AsyncWeb3.to_checksum_address(receiver), abi=_RECEIVER_ABI
        )
        core = await contract.functions.core().call()
        return cls(w3, wormhole_chain_id, receiver, str(core), finality)

    async def head(self) -> ChainPosition:
        """The highest block at the configured finality (-1 when none is final yet).

        Callers asking at the same time share one reading (a guardian checks a batch of
        observations concurrently, each against the head); a later call reads anew.
        """
        task = self._head
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = self._head = asyncio.ensure_future(self._read_head())
        return await asyncio.shield(task)

    async def _read_head(self) -> ChainPosition:
        if isinstance(self.finality, int):
            number = _quantity(await _rpc(self.w3, "eth_blockNumber", [])) - self.finality
            if number < 0:
                return ChainPosition(-1, "")
            return ChainPosition(number, await self.position_hash(number) or "")
        block = await _rpc(self.w3, "eth_getBlockByNumber", [self.finality, False])
        if block is None:
            return ChainPosition(-1, "")  # no block at that finality yet
        self._remember_timestamp(block["hash"], _quantity(block["timestamp"]))
        return ChainPosition(_quantity(block["number"]), block["hash"])

    async def position_hash(self, number: int) -> str | None:
        """The hash of block `number` as the chain has it now; None beyond the head."""
        if number < 0:
            return None
        block = await _rpc(self.w3, "eth_getBlockByNumber", [hex(number), False])
        if block is None:
            return None
        block_hash = str(block["hash"])
        self._remember_timestamp(block_hash, _quantity(block["timestamp"]))  # a reader needs it
        return block_hash

    async def messages_between(self, first: int, last: int) -> Sequence[EmittedMessage]:
        """The emitter's messages in blocks `first`..`last`, in chain order."""
        if last < first:
            return []
        logs: list[RawLog] = await _rpc(
            self.w3,
            "eth_getLogs",
            [
                {
                    "address": self.core,
                    "fromBlock": hex(first),
                    "toBlock": hex(last),
                    "topics": [_LOG_MESSAGE_PUBLISHED, _hex(self._emitter32)],
                }
            ],
        )
        ordered = sorted(
            (log for log in logs or [] if not log.get("removed", False)),
            key=lambda log: (_quantity(log["blockNumber"]), _quantity(log["logIndex"])),
        )
        missing = {str(log["blockHash"]) for log in ordered if _log_timestamp(log) is None}
        missing -= self._timestamps.keys()
        gate = asyncio.Semaphore(BLOCK_READS_IN_FLIGHT)

        async def timestamp(block_hash: str) -> None:
            async with gate:
                await self._timestamp(block_hash)

        await asyncio.gather(*(timestamp(block_hash) for block_hash in missing))
        return [await self._emitted(log) for log in ordered]

    async def fetch_message(self, message_id: MessageId, tx_hash: str) -> EmittedMessage | None:
        """Re-read one message from its transaction's receipt, if canonical and final."""
        if message_id.emitter_chain != self.chain_id:
            return None
        if message_id.emitter_address != self._emitter32:
            return None
        receipt = await _rpc(self.w3, "eth_getTransactionReceipt", [tx_hash])
        if receipt is None:
            return None
        number = _quantity(receipt["blockNumber"])
        if number > (await self.head()).number:
            return None  # not final yet
        if await self.position_hash(number) != receipt["blockHash"]:
            return None  # the receipt's block left the chain
        for log in receipt["logs"]:
            if str(log["address"]).lower() != self.core.lower() or not log["topics"]:
                continue
            if str(log["topics"][0]).lower() != _LOG_MESSAGE_PUBLISHED:
                continue
            message = await self._emitted(log)
            if message.observation.message_id == message_id:
                return message
        return None

    async def _emitted(self, log: RawLog) -> EmittedMessage:
        """The message a ``LogMessagePublished`` log (as the node sends it) carries."""
        topics = log["topics"]
        if len(topics) < 2 or "0x" + str(topics[1])[-40:].lower() != self.emitter.lower():
            raise EvmError(f"log {log['transactionHash']} is from another sender")
        sequence, nonce, payload, consistency = abi_decode(
            ["uint64", "uint32", "bytes", "uint8"], HexBytes(log["data"])
        )
        block_hash = str(log["blockHash"])
        timestamp = _log_timestamp(log)
        if timestamp is None:
            timestamp = await self._timestamp(block_hash)
        observation = Observation(
            emitter_chain=self.chain_id,
            emitter_address=self._emitter32,
            sequence=int(sequence),
            nonce=int(nonce),
            timestamp=timestamp,
            consistency_level=int(consistency),
            payload=bytes(payload),
            tx_hash=str(log["transactionHash"]),
            block_number=_quantity(log["blockNumber"]),
            block_hash=block_hash,
            emitted_at_ms=timestamp * 1000,
        )
        return EmittedMessage(observation)

    async def _timestamp(self, block_hash: str) -> int:
        known = self._timestamps.get(block_hash)
        if known is None:
            block = await _rpc(self.w3, "eth_getBlockByHash", [block_hash, False])
            if block is None:
                raise EvmError(f"block {block_hash} is not on the chain (any more)")
            known = _quantity(block["timestamp"])
            self._remember_timestamp(block_hash, known)
        return known

    def _remember_timestamp(self, block_hash: str, timestamp: int) -> None:
        if len(self._timestamps) > 4096:  # a bounded cache: old blocks are not asked again
            self._timestamps.clear()
        self._timestamps[block_hash] = timestamp


#: The most preflight estimates an :class:`EvmDestination` keeps for the prepares that follow.
ESTIMATES_KEPT = 4096


@dataclass(frozen=True)
class _FeeQuote:
    """One reading of the destination's fees and block gas limit."""

    base_fee: int
    priority_fee: int
    block_gas_limit: int


@dataclass(frozen=True)
class GasPolicy:
    """How a delivery transaction's gas and fees are chosen.

    Attributes:
        gas_margin: The gas limit is the estimate times this.
        escalation: Fees are multiplied by this for each escalation level (replacements).
        base_fee_multiplier: The fee cap covers this many times the latest base fee.
        gas_limit: A fixed gas limit instead of the estimate (None: estimate).
        quote_ttl_s: How long one reading of the latest base fee, priority fee and block gas
            limit serves the transactions signed after it (0: read them for each one). A
            window of deliveries signed together then costs one reading, not one each; fees
            move once a block, so a reading younger than the block time is as fresh.
    """

    gas_margin: float = 1.25
    escalation: float = 1.25
    base_fee_multiplier: int = 2
    gas_limit: int | None = None
    quote_ttl_s: float = 1.0


@dataclass(frozen=True)
class BatchPolicy:
    """How large a batched delivery may grow.

    Attributes:
        max_messages: The most VAAs in one batch (at most :data:`MAX_BATCH`).
        block_gas_share: The share of the destination's block gas limit one batch may take
            (its gas limit included the :class:`GasPolicy` margin), so that a batch fits a
            block next to other traffic.
        initial_gas_per_message: The gas per message assumed before the first estimate.
        assumed_block_gas_limit: The block gas limit assumed before the first block is read
            (every :meth:`EvmDestination.prepare` and ``prepare_batch`` reads the latest).
    """

    max_messages: int = MAX_BATCH
    block_gas_share: float = 0.5
    initial_gas_per_message: int = 250_000
    assumed_block_gas_limit: int = 30_000_000

    def __post_init__(self) -> None:
        if not 1 <= self.max_messages <= MAX_BATCH:
            raise ValueError(f"max_messages must be 1..{MAX_BATCH}, got {self.max_messages}")
        if not 0 < self.block_gas_share <= 1:
            raise ValueError(f"block_gas_share must be in (0, 1], got {self.block_gas_share}")
        if self.initial_gas_per_message <= 0:
            raise ValueError("initial_gas_per_message must be positive")
        if self.assumed_block_gas_limit <= 0:
            raise ValueError("assumed_block_gas_limit must be positive")


class BatchTooLarge(EvmError):
    """A batch's gas exceeds the policy's share of the block gas limit: send fewer VAAs.

    Attributes:
        count: How many VAAs the refused batch held.
        fits: How many fit at the gas per message this batch's estimate showed (at least 1).
    """

    def __init__(self, count: int, fits: int, gas: int, budget: int) -> None:
        self.count = count
        self.fits = fits
        super().__init__(
            f"a batch of {count} needs {gas} gas, over the {budget} a batch may take: "
            f"send at most {fits}"
        )


class EvmDestination:
    """Delivers VAAs to one fedrelay receiver contract, signed and paid by `key`.

    The key never leaves this object: its repr and :attr:`signer` show the address only.
    """

    def __init__(
        self,
        w3: AsyncWeb3[Any],
        wormhole_chain_id: int,
        receiver: str,
        key: str | bytes,
        evm_chain_id: int,
        gas: GasPolicy | None = None,
        batch: BatchPolicy | None = None,
    ) -> None:
        """Deliver to `receiver` on the chain behind `w3`, signing with `key`."""
        self.w3 = w3
        self.chain_id = wormhole_chain_id
        self.evm_chain_id = evm_chain_id
        self.receiver: ChecksumAddress = AsyncWeb3.to_checksum_address(receiver)
        self._account: LocalAccount = Account.from_key(key)
        self.signer = str(self._account.address)
        self.gas = gas or GasPolicy()
        self.batch = batch or BatchPolicy()
        self._gas_per_message = self.batch.initial_gas_per_message
        self._block_gas_limit = self.batch.assumed_block_gas_limit
        self._contract = w3.eth.contract(address=self.receiver, abi=_RECEIVER_ABI)
        self._decoder = _decoder()
        self._estimates: dict[bytes, int] = {}  # VAA -> gas limit, from preflight()
        self._batch_gases: dict[str, int] = {}  # batch calldata -> gas, from preflight_batch()
        self._quote: asyncio.Task[_FeeQuote] | None = None
        self._quoted_at = -math.inf

    def __repr__(self) -> str:
        return (
            f"EvmDestination(chain={self.chain_id}, receiver={self.receiver}, signer={self.signer})"
        )

    async def is_consumed(self, vaa: bytes) -> bool:
        """Whether the receiver consumed the VAA's message (its emitter chain, emitter and
        sequence: any VAA of the same message counts)."""
        message = parse_any_vaa(vaa).message_id
        function = self._contract.functions.isConsumed(
            message.emitter_chain, message.emitter_address, message.sequence
        )
        return bool(await function.call())

    async def finish(self, vaa: bytes) -> None:
        """Nothing: an EVM delivery is one transaction."""

    async def pending_nonce(self) -> int:
        """The signer's next nonce, pending transactions included."""
        count = await _rpc(self.w3, "eth_getTransactionCount", [self.signer, "pending"])
        return _quantity(count)

    async def preflight(self, vaa: bytes) -> None:
        """Estimate ``receiveMessage(vaa)`` now (a refused VAA raises here) and keep its gas
        limit for the next :meth:`prepare` of this VAA (at most :data:`ESTIMATES_KEPT` kept)."""
        if self.gas.gas_limit is not None:
            return
        gas = await self._estimate(vaa)
        if len(self._estimates) >= ESTIMATES_KEPT:
            self._estimates.clear()  # unused ones: their deliveries went another way
        self._estimates[vaa] = gas

    async def prepare(self, vaa: bytes, nonce: int | None, fee_level: int) -> SignedDelivery:
        """Sign ``receiveMessage(vaa)``; a VAA the contract would refuse raises here (estimate,
        unless :meth:`preflight` just made it)."""
        gas = self.gas.gas_limit or self._estimates.pop(vaa, None) or await self._estimate(vaa)
        return await self._sign(_receive_call(vaa), gas, nonce, fee_level)

    async def _estimate(self, vaa: bytes) -> int:
        data = HexStr(_receive_call(vaa))
        call: TxParams = {"from": self._account.address, "to": self.receiver, "data": data}
        try:
            gas = _quantity(await _rpc(self.w3, "eth_estimateGas", [call]))
        except Web3RPCError:
            # Refused (a revert, most often): asked again through web3, which raises the typed
            # error, revert data included, that classify() reads; the raw answer would lose it.
            gas = int(await self.w3.eth.estimate_gas(call))
        return math.ceil(gas * self.gas.gas_margin)

    # ---- batches ---------------------------------------------------------------------------

    def max_batch(self) -> int:
        """How many VAAs the next batch may hold (at least 1).

        The policy's cap, and no more than the policy's share of the block gas limit (of the
        latest block a prepare read) holds at the gas per message the last batch estimate
        showed (with the gas margin).
        """
        budget = int(self._block_gas_limit * self.batch.block_gas_share)
        per_message = math.ceil(self._gas_per_message * self.gas.gas_margin)
        return max(1, min(self.batch.max_messages, budget // per_message))

    async def prepare_batch(
        self, vaas: Sequence[bytes], nonce: int | None, fee_level: int
    ) -> SignedDelivery:
        """Sign ``receiveMessages(vaas)``: one transaction delivering every VAA of `vaas`.

        Consumed and refused VAAs do not make it fail (each entry's result is read back with
        :meth:`batch_results`); nothing is applied before it is broadcast. Its gas is the
        estimate with the policy's margin; the estimate also updates the gas per message that
        :meth:`max_batch` sizes batches with.

        Args:
            vaas: The signed VAAs, 1 to the policy's `max_messages`.
            nonce: The nonce to use (None: the signer's pending nonce).
            fee_level: 0 for the normal fee, n for the n-th escalation (replacements).

        Raises:
            ValueError: No VAA, or more than the policy allows.
            BatchTooLarge: The batch needs more gas than the policy's share of the block gas
                limit; it says how many fit.
        """
        if not vaas or len(vaas) > self.batch.max_messages:
            raise ValueError(f"a batch holds 1..{self.batch.max_messages} VAAs, got {len(vaas)}")
        data = _receive_batch_call(vaas)
        estimate = self._batch_gases.pop(data, None) or await self._batch_gas(data)
        self._learn_gas(estimate, len(vaas))
        gas = math.ceil(estimate * self.gas.gas_margin)
        await self._fees()  # the block gas limit the budget is a share of
        budget = int(self._block_gas_limit * self.batch.block_gas_share)
        if gas > budget and len(vaas) > 1:
            fits = max(1, budget * len(vaas) // gas)
            raise BatchTooLarge(len(vaas), fits, gas, budget)
        return await self._sign(data, gas, nonce, fee_level)

    async def preflight_batch(self, vaas: Sequence[bytes]) -> None:
        """Measure the gas of ``receiveMessages(vaas)`` now and keep it for the next
        :meth:`prepare_batch` of these VAAs (at most :data:`ESTIMATES_KEPT` batches kept)."""
        if not vaas or len(vaas) > self.batch.max_messages:
            return  # prepare_batch refuses it with the reason
        data = _receive_batch_call(vaas)
        gas = await self._batch_gas(data)
        if len(self._batch_gases) >= ESTIMATES_KEPT:
            self._batch_gases.clear()  # unused ones: their batches went another way
        self._batch_gases[data] = gas

    async def _batch_gas(self, data: str) -> int:
        """The gas a batch call needs, from one execution of it.

        ``eth_estimateGas`` searches for the lowest sufficient limit by executing the call over
        and over: for a batch of 32 VAAs that took 218-352 ms of the benchmark's anvil, while
        ``eth_createAccessList`` executes it once (23-87 ms) and reports the gas it used. The
        search's figure was at most 1.0243 times that one (1 to 32 VAAs, every batch of one
        benchmark run); it is raised by 64/63 for the gas an external call must leave behind,
        and the policy's margin is applied on top. A node without the method, or a call it
        reports as failing, is asked ``eth_estimateGas`` through web3, which raises the typed
        refusal that :meth:`classify` reads, as before.
        """
        call: TxParams = {"from": self._account.address, "to": self.receiver, "data": HexStr(data)}
        try:
            answer = await _rpc(self.w3, "eth_createAccessList", [call, "latest"])
        except Web3RPCError:
            answer = None
        if isinstance(answer, dict) and "gasUsed" in answer and not answer.get("error"):
            return math.ceil(_quantity(answer["gasUsed"]) * 64 / 63)
        return int(await self.w3.eth.estimate_gas(call))

    async def batch_outcome(self, tx_id: str, vaas: Sequence[bytes]) -> BatchOutcome:
        """What the confirmed batch `tx_id` did with each of `vaas`: applied, or why not
        (consumed before, or the decoded refusal of that entry alone)."""
        entries = await self.batch_results(tx_id, len(vaas))
        reasons: list[str | None] = []
        for entry in entries:
            failure = self.entry_failure(entry)
            reasons.append(None if failure is None else failure.reason)
        return BatchOutcome(
            applied=tuple(e.result == BatchResult.APPLIED for e in entries),
            reasons=tuple(reasons),
            invalid=tuple(e.result == BatchResult.INVALID for e in entries),
        )

    async def batch_results(self, tx_id: str, count: int) -> list[BatchEntryResult]:
        """Each entry's result from the receipt of a confirmed ``count``-entry batch.

        Raises:
            BatchDecodeError: The receipt does not report the batch's entries.
            TransactionNotFound: The transaction has no receipt (yet).
        """
        receipt = await _rpc(self.w3, "eth_getTransactionReceipt", [tx_id])
        if receipt is None:
            raise TransactionNotFound(f"transaction {tx_id} has no receipt")
        logs = [
            {"address": log["address"], "topics": [HexBytes(t) for t in log["topics"]],
             "data": HexBytes(log["data"])}
            for log in receipt["logs"]
        ]  # fmt: skip
        return entries_from_logs(logs, self.receiver, count, self._decoder)

    async def simulate_batch(self, vaas: Sequence[bytes]) -> list[BatchResult]:
        """What ``receiveMessages(vaas)`` would do with each VAA now (a call; nothing is sent)."""
        results = await self._contract.functions.receiveMessages([bytes(v) for v in vaas]).call(
            {"from": self._account.address}
        )
        return [BatchResult(int(r)) for r in results]

    def entry_failure(self, entry: BatchEntryResult) -> Failure | None:
        """What a batch entry's result means for its delivery: None when applied here."""
        if entry.result == BatchResult.APPLIED:
            return None
        if entry.result == BatchResult.CONSUMED:
            return Failure(
                FailureKind.ALREADY_CONSUMED, f"the receiver consumed 0x{entry.digest.hex()}"
            )
        reason = entry.reason
        said = core_refusal(reason) if isinstance(reason, (InvalidVaa, RequireError)) else reason
        return Failure(
            FailureKind.REVERTED, f"batch entry {entry.index} {entry.result.name.lower()}: {said}"
        )

    def _learn_gas(self, estimate: int, count: int) -> None:
        """Take the gas per message of the latest batch estimate (a batch that turns out
        heavier is refused by :class:`BatchTooLarge` and teaches the higher figure at once)."""
        self._gas_per_message = max(1, math.ceil(estimate / count))

    async def _fees(self) -> _FeeQuote:
        """The latest base fee, priority fee and block gas limit, read at most once per
        :attr:`GasPolicy.quote_ttl_s` (concurrent callers share one reading)."""
        loop = asyncio.get_running_loop()
        task = self._quote
        if (
            task is None
            or task.get_loop() is not loop
            or (task.done() and loop.time() - self._quoted_at >= self.gas.quote_ttl_s)
        ):
            task = self._quote = loop.create_task(self._read_fees())
            self._quoted_at = loop.time()
        try:
            quote = await asyncio.shield(task)
        except BaseException:
            if self._quote is task:
                self._quote = None  # a failed reading is not kept
            raise
        self._block_gas_limit = quote.block_gas_limit
        return quote

    async def _read_fees(self) -> _FeeQuote:
        block, tip = await asyncio.gather(
            self.w3.eth.get_block("latest"), self.w3.eth.max_priority_fee
        )
        return _FeeQuote(int(block.get("baseFeePerGas", 0)), int(tip), int(block["gasLimit"]))

    async def _sign(
        self, data: HexStr | str, gas: int, nonce: int | None, fee_level: int
    ) -> SignedDelivery:
        """Sign a call of the receiver with `gas`, fees escalated to `fee_level`."""
        quote = await self._fees()
        bump = self.gas.escalation**fee_level
        tip = math.ceil(quote.priority_fee * bump)
        fee_cap = math.ceil((quote.base_fee * self.gas.base_fee_multiplier) * bump) + tip
        if nonce is None:
            nonce = await self.pending_nonce()
        transaction: dict[str, Any] = {
            "type": 2,
            "chainId": self.evm_chain_id,
            "nonce": nonce,
            "to": self.receiver,
            "data": data,
            "value": 0,
            "gas": gas,
            "maxFeePerGas": fee_cap,
            "maxPriorityFeePerGas": tip,
        }
        signed = self._account.sign_transaction(transaction)
        return SignedDelivery(
            tx_id=_hex(signed.hash),
            raw=bytes(signed.raw_transaction),
            nonce=nonce,
            fee_per_gas=fee_cap,
        )

    async def broadcast(self, delivery: SignedDelivery) -> None:
        """Send the signed transaction; sending one the node already has is no error."""
        try:
            await _rpc(self.w3, "eth_sendRawTransaction", ["0x" + delivery.raw.hex()])
        except Web3RPCError:  # its rpc_response carries the node's message, as classify() reads
            if await self._known(delivery.tx_id):
                return  # sent before (a resumed attempt): nothing more to do
            raise

    async def status(self, tx_id: str) -> TxStatus:
        """The transaction's status from its receipt; a reverted one comes with its reason."""
        receipt = await _rpc(self.w3, "eth_getTransactionReceipt", [tx_id])
        if receipt is None:
            return TxStatus(TxState.PENDING if await self._known(tx_id) else TxState.UNKNOWN)
        if _quantity(receipt["status"]) == 1:
            return TxStatus(TxState.CONFIRMED)
        failure = await self._why_failed(
            tx_id, _quantity(receipt["gasUsed"]), _quantity(receipt["blockNumber"])
        )
        return TxStatus(TxState.FAILED, failure)

    def classify(self, error: Exception) -> Failure:
        """What an error from this adapter (or web3 under it) means for the delivery."""
        if isinstance(error, AlreadyConsumed):
            return Failure(
                FailureKind.ALREADY_CONSUMED, f"the receiver consumed 0x{error.digest.hex()}"
            )
        if isinstance(error, ContractRevert) and error.name == "BatchOutOfGas":
            return Failure(FailureKind.OUT_OF_GAS, f"an entry of the batch ran out of gas: {error}")
        if isinstance(error, (InvalidVaa, RequireError)):
            # a raw Error(string) is a core (Wormhole's) refusing the VAA through a receiver
            # that passes it on, or a require in the receiver: terminal either way
            return Failure(FailureKind.REVERTED, f"receiveMessage reverted: {core_refusal(error)}")
        if isinstance(error, ContractRevert):
            return Failure(FailureKind.REVERTED, f"receiveMessage reverted: {error}")
        if isinstance(error, ContractLogicError):
            data = revert_data(error.data)
            if data:
                return self.classify(self._decoder.decode(data))
            return Failure(FailureKind.REVERTED, f"receiveMessage reverted: {error}")
        if isinstance(error, TimeExhausted):
            return Failure(FailureKind.NOT_CONFIRMED, str(error))
        if isinstance(error, (aiohttp.ClientError, ProviderConnectionError, OSError, TimeoutError)):
            return Failure(
                FailureKind.UNAVAILABLE, f"EVM RPC unavailable: {type(error).__name__}: {error}"
            )
        if isinstance(error, Web3RPCError):
            text = _rpc_message(error)
            lowered = text.lower()
            for marker, kind in _NODE_ERRORS:
                if marker in lowered:
                    return Failure(kind, f"node refused the transaction: {text}")
            return Failure(FailureKind.OTHER, f"node refused the transaction: {text}")
        return Failure(FailureKind.OTHER, f"{type(error).__name__}: {error}")

    async def _known(self, tx_id: str) -> bool:
        return await _rpc(self.w3, "eth_getTransactionByHash", [tx_id]) is not None

    async def _why_failed(self, tx_id: str, gas_used: int, block_number: int) -> Failure:
        """Why a mined transaction reverted: out of gas, or the revert reason of its replay.

        The call is replayed on the state of its block. A revert without data is replayed again
        without the gas limit: if it then passes, the limit was the cause (a sub-call, such as the
        core's signature check, ran out of the gas it was forwarded).
        """
        tx = await self.w3.eth.get_transaction(HexStr(tx_id))
        if gas_used >= int(tx["gas"]):
            return Failure(FailureKind.OUT_OF_GAS, f"{tx_id} ran out of gas (used all {gas_used})")
        # the receipt's block: a node may answer the transaction lookup before it indexes the
        # transaction's block, and a replay anywhere else says nothing about this one
        block: BlockIdentifier = block_number
        replay: TxParams = {"from": tx["from"], "to": tx["to"], "data": tx["input"]}
        try:
            await self.w3.eth.call({**replay, "gas": tx["gas"]}, block)
        except ContractLogicError as exc:
            if revert_data(exc.data):
                return self.classify(exc)
        except Web3RPCError as exc:
            return Failure(FailureKind.REVERTED, f"{tx_id} reverted: {_rpc_message(exc)}")
        try:
            await self.w3.eth.call(replay, block)
        except ContractLogicError as exc:
            if revert_data(exc.data):
                return self.classify(exc)
            return Failure(FailureKind.REVERTED, f"{tx_id} reverted without a reason")
        except Web3RPCError as exc:
            return Failure(FailureKind.REVERTED, f"{tx_id} reverted: {_rpc_message(exc)}")
        return Failure(
            FailureKind.OUT_OF_GAS, f"{tx_id} ran out of gas in a sub-call (limit {tx['gas']})"
        )


def _rpc_message(error: Web3RPCError) -> str:
    response = error.rpc_response or {}
    inner = response.get("error") if isinstance(response, dict) else None
    if isinstance(inner, dict) and "message" in inner:
        return str(inner["message"])
    return str(error)


_DECODER: list[RevertDecoder] = []


def _decoder() -> RevertDecoder:
    if not _DECODER:
        _DECODER.append(RevertDecoder(load_artifact(name).abi for name in CONTRACT_NAMES))
    return _DECODER[0]
