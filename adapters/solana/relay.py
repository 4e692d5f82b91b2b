"""The worker program as a relayer source and destination (``fedrelay.ports.relay`` protocols).

Source (:class:`SolanaSource`): the program writes each published message into the account
``["message", sequence]`` and never closes it, with sequences assigned densely by its config.
So a Solana *position* here is a message sequence: the head is ``config.next_sequence - 1`` read
at the configured commitment (``finalized`` by default), a range of positions is one
``getMultipleAccounts`` call, and a position's hash is the keccak256 of the message account's data
(a rollback that rewrote the account would change it). An observation's ``block_number`` is
therefore the message's sequence, its ``block_hash`` that account hash and its ``tx_hash`` the
message account's address, which is also how a guardian re-reads it.

Destination (:class:`SolanaDestination`): the VAA goes in a ``receive_message`` instruction when
the transaction fits, else it is first written into a buffer account (staged by
:meth:`SolanaDestination.prepare`) and received with ``receive_from_buffer``. Batch entries that do
not fit follow in ``apply_batch`` transactions (:meth:`SolanaDestination.finish`). The replay
record ``["consumed", digest]`` is the consumed flag; ``ALREADY_CONSUMED`` is the program's distinct
"delivered before". Solana has no account nonces: a transaction's recent blockhash bounds its life,
so an attempt that can no longer land is signed anew. Fees are not escalated (no priority fee).
Batch entries that publish a STAKE_CHANGED (a refused task, a slash) name the next message
accounts, predicted when the transaction is signed; when another transaction published first the
program answers ``STALE_SEQUENCE``, which counts as expired: the delivery is signed anew.

Parallel sends (:meth:`SolanaDestination.prepare_parallel`): Solana has no nonce to order a
signer's transactions, so deliveries that do not depend on one another go out together, without
waiting for each other's confirmation, and land in any order, several per slot. Independent
means: one transaction each (no buffer, no follow-up batch part), no worker in common (a
worker's stake and locks decide whether an entry is refused), and at most one of them publishes
messages (only a publisher needs the config's next sequence; the others leave it alone). The
rest is deferred to a later group, and a VAA left out holds back the later ones that depend on
it, so that none overtakes an earlier message it depends on; one that needs more than one
transaction goes the one-at-a-time path. The consumed records (one per digest) keep every
delivery exactly once whatever lands twice: a repeated one is refused with ``ALREADY_CONSUMED``.
Their confirmations are read apart, many signatures per call (:meth:`SolanaDestination.statuses`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment, Confirmed, Finalized
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.compute_budget import set_compute_unit_limit
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionStatus

from fedrelay.adapters.solana import instructions as ix
from fedrelay.adapters.solana import pda
from fedrelay.adapters.solana.client import (
    _MULTIPLE_ACCOUNTS,
    RECEIVE_COMPUTE_UNITS,
    WorkerProgramClient,
    _most_that_fit,
    program_error_of,
)
from fedrelay.adapters.solana.errors import (
    AccountDecodeError,
    AccountNotFound,
    ConfirmationTimeout,
    SolanaAdapterError,
    TransactionFailed,
)
from fedrelay.adapters.solana.layout import (
    SOLANA_CHAIN,
    ProgramConfig,
    ProgramError,
    PublishedMessage,
)
from fedrelay.ports.relay import (
    ChainPosition,
    EmittedMessage,
    Failure,
    FailureKind,
    ParallelGroup,
    SignedDelivery,
    TxState,
    TxStatus,
)
from fedrelay.protocol.wormhole import (
    MessageId,
    ThresholdVaa,
    Vaa,
    WormholeError,
    keccak256,
    parse_any_vaa,
)
from fedrelay.protocol.wormhole.observation import Observation


class SolanaSource:
    """Messages published by one worker program deployment (see the module docstring).

    A position is a message account, read at the same commitment as the head that counts it, so
    a watcher has nothing to read again (``reread`` 0).
    """

    chain_id = SOLANA_CHAIN
    reread = 0

    def __init__(self, rpc: AsyncClient, program_id: Pubkey, commitment: Commitment = Finalized):
        """Read the program at `program_id` through `rpc` at `commitment`."""
        self.rpc = rpc
        self.program_id = program_id
        self.commitment = commitment
        self.source = f"solana:{program_id}"

    async def head(self) -> ChainPosition:
        """The last published sequence (-1 before the first) and its account hash."""
        info = (
            await self.rpc.get_account_info(pda.config_address(self.program_id), self.commitment)
        ).value
        if info is None or info.owner != self.program_id:
            raise AccountNotFound(f"the worker program {self.program_id} has no config account")
        last = ProgramConfig.decode(bytes(info.data)).next_sequence - 1
        if last < 0:
            return ChainPosition(-1, "")
        return ChainPosition(last, await self.position_hash(last) or "")

    async def position_hash(self, number: int) -> str | None:
        """keccak256 of message account `number`'s data, or None if there is no such message."""
        if number < 0:
            return None
        data = await self._message_data(number)
        return None if data is None else _hash(data)

    async def messages_between(self, first: int, last: int) -> Sequence[EmittedMessage]:
        """Messages with sequences `first`..`last`, in order."""
        if last < first:
            return []
        addresses = [pda.message_address(self.program_id, s) for s in range(first, last + 1)]
        found: list[EmittedMessage] = []
        for start in range(0, len(addresses), 100):  # getMultipleAccounts takes up to 100
            chunk = addresses[start : start + 100]
            infos = (await self.rpc.get_multiple_accounts(chunk, self.commitment)).value
            for address, info in zip(chunk, infos, strict=True):
                if info is not None and info.owner == self.program_id:
                    found.append(self._emitted(address, bytes(info.data)))
        return found

    async def fetch_message(self, message_id: MessageId, tx_hash: str) -> EmittedMessage | None:
        """Re-read message `message_id` from its account (`tx_hash` is not needed here)."""
        if message_id.emitter_chain != SOLANA_CHAIN:
            return None
        if message_id.emitter_address != bytes(self.program_id):
            return None
        data = await self._message_data(message_id.sequence)
        if data is None:
            return None
        address = pda.message_address(self.program_id, message_id.sequence)
        return self._emitted(address, data)

    async def _message_data(self, sequence: int) -> bytes | None:
        address = pda.message_address(self.program_id, sequence)
        info = (await self.rpc.get_account_info(address, self.commitment)).value
        if info is None or info.owner != self.program_id:
            return None
        return bytes(info.data)

    def _emitted(self, address: Pubkey, data: bytes) -> EmittedMessage:
        message = PublishedMessage.decode(data)
        observation = Observation(
            emitter_chain=SOLANA_CHAIN,
            emitter_address=bytes(self.program_id),
            sequence=message.sequence,
            nonce=message.nonce,
            timestamp=message.timestamp,
            consistency_level=message.consistency_level,
            payload=message.payload,
            tx_hash=str(address),
            block_number=message.sequence,
            block_hash=_hash(data),
            emitted_at_ms=message.timestamp * 1000,
        )
        return EmittedMessage(observation)


def _hash(data: bytes) -> str:
    return "0x" + keccak256(data).hex()


#: The most deliveries one parallel group signs (getSignatureStatuses answers 256 at a time).
MAX_PARALLEL = 64
_SIGNATURE_STATUSES = 256  # getSignatureStatuses takes up to 256 signatures


class SolanaDestination:
    """Delivers VAAs to one worker program deployment, paid and signed by `payer`."""

    chain_id = SOLANA_CHAIN

    def __init__(self, client: WorkerProgramClient, payer: Keypair) -> None:
        """Deliver through `client` (its RPC and program id) with `payer` signing."""
        self.client = client
        self.payer = payer
        self.signer = str(payer.pubkey())

    async def is_consumed(self, vaa: bytes) -> bool:
        """Whether the program holds the replay record of the VAA's digest."""
        return await self.client.is_consumed(parse_any_vaa(vaa).digest)

    async def finish(self, vaa: bytes) -> None:
        """Apply the batch entries a received VAA still has pending (``apply_batch``)."""
        try:
            await self.client.complete_delivery(self.payer, vaa)
        except AccountNotFound:
            return  # not received: nothing to finish

    async def pending_nonce(self) -> int | None:
        """Solana accounts have no nonces."""
        return None

    async def prepare(self, vaa: bytes, nonce: int | None, fee_level: int) -> SignedDelivery:
        """Sign the receiving transaction; a VAA too large for it is first written to a buffer."""
        delivery = await self.client.plan_delivery(parse_any_vaa(vaa))
        payer = self.payer
        program = self.client.program_id
        keys = delivery.worker_keys
        blockhash = (await self.client.rpc.get_latest_blockhash(Confirmed)).value.blockhash
        sequence = await self.client.next_sequence()

        def direct(count: int) -> Instruction:
            part = delivery.part(0, count, sequence)
            return ix.receive_message(program, payer.pubkey(), vaa, part)

        buffer_id = int.from_bytes(delivery.digest[:8], "big")

        def from_buffer(count: int) -> Instruction:
            part = delivery.part(0, count, sequence)
            return ix.receive_from_buffer(program, payer.pubkey(), buffer_id, part)

        fitting = _most_that_fit(direct, len(keys), payer, blockhash)
        if fitting is not None:
            instruction = direct(fitting)
        else:
            count = _most_that_fit(from_buffer, len(keys), payer, blockhash)
            if count is None:
                raise TransactionFailed("receive_from_buffer does not fit a transaction")
            await self.client.write_buffer(payer, buffer_id, vaa)
            sequence = await self.client.next_sequence()
            instruction = from_buffer(count)
            # Each buffer write moved the chain on: sign with a blockhash that is still recent.
            blockhash = (await self.client.rpc.get_latest_blockhash(Confirmed)).value.blockhash
        limit = set_compute_unit_limit(RECEIVE_COMPUTE_UNITS)
        message = MessageV0.try_compile(payer.pubkey(), [limit, instruction], [], blockhash)
        tx = VersionedTransaction(message, [payer])
        return SignedDelivery(tx_id=str(tx.signatures[0]), raw=bytes(tx))

    def max_parallel(self) -> int:
        """The most deliveries one group signs (:data:`MAX_PARALLEL`)."""
        return MAX_PARALLEL

    async def prepare_parallel(
        self, vaas: Sequence[bytes], limit: int = MAX_PARALLEL
    ) -> ParallelGroup:
        """Sign the deliveries among `vaas` that can go out together (see
        :class:`~fedrelay.ports.relay.ParallelGroup`).

        All are signed with one recent blockhash; the consumed records of all `vaas`, then the
        records their deliveries touch, are read a hundred per call. Nothing is sent. A VAA
        left out of the group holds back the later ones that depend on it (a worker in common;
        any publisher after a publisher), so that a message never overtakes an earlier one it
        depends on.

        Args:
            vaas: Signed VAAs, in the order they were queued (earlier ones are preferred).
            limit: The most deliveries to sign (1..:data:`MAX_PARALLEL`).
        """
        if not 1 <= limit <= MAX_PARALLEL:
            raise ValueError(f"limit must be 1..{MAX_PARALLEL}, got {limit}")
        parsed: dict[int, Vaa | ThresholdVaa] = {}
        alone: list[int] = []
        for index, vaa in enumerate(vaas):
            try:
                parsed[index] = parse_any_vaa(vaa)
            except WormholeError:
                alone.append(index)  # the one-at-a-time path says what is wrong with it
        consumed, latest, sequence = await asyncio.gather(
            self._consumed_among(parsed),
            self.client.rpc.get_latest_blockhash(Confirmed),
            self.client.next_sequence(),
        )
        blockhash = latest.value.blockhash
        candidates = [i for i in parsed if i not in consumed]
        plans = await self.client.plan_deliveries([parsed[i] for i in candidates])
        signed: list[tuple[int, SignedDelivery]] = []
        deferred: list[int] = []
        taken: set[bytes] = set()  # workers of the group and of the VAAs left out before
        digests: set[bytes] = set()
        publisher = False  # a publisher is in the group, or was left out before
        for index, delivery in zip(candidates, plans, strict=True):
            keys = set(delivery.worker_keys)
            publishes = delivery.message_count > 0
            if (
                len(signed) >= limit
                or delivery.digest in digests
                or keys & taken
                or (publishes and publisher)
            ):
                deferred.append(index)
            elif tx := self._single_transaction(vaas[index], delivery, sequence, blockhash):
                signed.append((index, SignedDelivery(tx_id=str(tx.signatures[0]), raw=bytes(tx))))
                digests.add(delivery.digest)
            else:
                alone.append(index)
            taken |= keys
            publisher = publisher or publishes
        return ParallelGroup(
            tuple(signed), tuple(sorted(consumed)), tuple(deferred), tuple(sorted(alone))
        )

    def _single_transaction(
        self, vaa: bytes, delivery: ix.Delivery, sequence: int, blockhash: Hash
    ) -> VersionedTransaction | None:
        """The delivery as one ``receive_message`` transaction, or None when it does not fit."""
        payer = self.payer
        program = self.client.program_id
        count = len(delivery.worker_keys)

        def direct(entries: int) -> Instruction:
            return ix.receive_message(
                program, payer.pubkey(), vaa, delivery.part(0, entries, sequence)
            )

        if _most_that_fit(direct, count, payer, blockhash) != count:
            return None
        limit = set_compute_unit_limit(RECEIVE_COMPUTE_UNITS)
        message = MessageV0.try_compile(payer.pubkey(), [limit, direct(count)], [], blockhash)
        return VersionedTransaction(message, [payer])

    async def _consumed_among(self, parsed: dict[int, Vaa | ThresholdVaa]) -> set[int]:
        """Which of the parsed VAAs have a consumed record (read a hundred per call)."""
        program = self.client.program_id
        indices = list(parsed)
        consumed: set[int] = set()
        for start in range(0, len(indices), _MULTIPLE_ACCOUNTS):
            chunk = indices[start : start + _MULTIPLE_ACCOUNTS]
            addresses = [pda.consumed_address(program, parsed[i].digest) for i in chunk]
            infos = (await self.client.rpc.get_multiple_accounts(addresses, Confirmed)).value
            for index, info in zip(chunk, infos, strict=True):
                if info is not None and info.owner == program:
                    consumed.add(index)
        return consumed

    async def broadcast_many(self, deliveries: Sequence[SignedDelivery]) -> list[Exception | None]:
        """Send every delivery at once, none waiting for another; per delivery, the error that
        sending it raised (for :meth:`classify`) or None."""
        results = await asyncio.gather(
            *(self.broadcast(d) for d in deliveries), return_exceptions=True
        )
        errors: list[Exception | None] = []
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancellation and the like are not a delivery's failure
            errors.append(result if isinstance(result, Exception) else None)
        return errors

    async def statuses(self, tx_ids: Sequence[str]) -> list[TxStatus]:
        """The status of each transaction, up to 256 per ``getSignatureStatuses`` call."""
        found: list[TxStatus] = []
        for start in range(0, len(tx_ids), _SIGNATURE_STATUSES):
            chunk = [Signature.from_string(t) for t in tx_ids[start : start + _SIGNATURE_STATUSES]]
            for status in (await self.client.rpc.get_signature_statuses(chunk)).value:
                found.append(_status_of(status))
        return found

    async def broadcast(self, delivery: SignedDelivery) -> None:
        """Send the signed transaction with preflight (a rejection raises with its reason)."""
        await self.client.rpc.send_raw_transaction(
            delivery.raw, opts=TxOpts(preflight_commitment=Confirmed)
        )

    async def status(self, tx_id: str) -> TxStatus:
        """The transaction's status from ``getSignatureStatuses``."""
        signature = Signature.from_string(tx_id)
        return _status_of((await self.client.rpc.get_signature_statuses([signature])).value[0])

    def classify(self, error: Exception) -> Failure:
        """What a Solana error means for a delivery."""
        if isinstance(error, TransactionFailed) and error.program_error is not None:
            return _program_failure(error.program_error, error)
        if isinstance(error, RPCException):
            failure = error.args[0] if error.args else None
            err = getattr(getattr(failure, "data", None), "err", None)
            code = program_error_of(err)
            if code is not None:
                return _program_failure(code, err)
            text = str(error)
            if "BlockhashNotFound" in text or "AlreadyProcessed" in text:
                return Failure(FailureKind.EXPIRED, f"transaction can no longer land: {text}")
            return Failure(FailureKind.OTHER, f"RPC rejected the transaction: {text}")
        if isinstance(error, (SolanaRpcException, httpx.HTTPError, OSError)):
            return Failure(FailureKind.UNAVAILABLE, f"Solana RPC unavailable: {error}")
        if isinstance(error, ConfirmationTimeout):
            return Failure(FailureKind.NOT_CONFIRMED, str(error))
        if isinstance(error, (WormholeError, AccountDecodeError)):
            return Failure(FailureKind.OTHER, f"undeliverable VAA: {error}")
        if isinstance(error, SolanaAdapterError):
            return Failure(FailureKind.OTHER, str(error))
        return Failure(FailureKind.OTHER, f"{type(error).__name__}: {error}")


def _status_of(found: TransactionStatus | None) -> TxStatus:
    """A transaction's status from its ``getSignatureStatuses`` entry."""
    if found is None:
        return TxStatus(TxState.UNKNOWN)
    if found.err is not None:
        return TxStatus(TxState.FAILED, _program_failure(program_error_of(found.err), found.err))
    if found.confirmation_status is None:
        return TxStatus(TxState.PENDING)
    return TxStatus(TxState.CONFIRMED)


def _program_failure(code: int | None, err: object) -> Failure:
    """The failure a worker program error (or another transaction error) stands for."""
    if code == ProgramError.ALREADY_CONSUMED:
        return Failure(FailureKind.ALREADY_CONSUMED, "the program consumed this VAA before")
    if code == ProgramError.STALE_SEQUENCE:
        return Failure(
            FailureKind.EXPIRED, "another transaction published first: sign with fresh accounts"
        )
    if code is not None and code in ProgramError._value2member_map_:
        return Failure(FailureKind.REVERTED, f"worker program: {ProgramError(code).name} ({code})")
    if code is None and "BlockhashNotFound" in str(err):
        # Refused for its blockhash: it did not execute (no effect, no fee), so it is signed
        # anew, never given up on.
        return Failure(FailureKind.EXPIRED, f"transaction can no longer land: {err}")
    return Failure(FailureKind.REVERTED, f"transaction failed: {err}")
