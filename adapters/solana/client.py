"""A typed client of the worker program over solana-py's `AsyncClient`.

Every method builds its instructions with `fedrelay.adapters.solana.instructions`, sends one or more
transactions with preflight, waits for confirmation, and raises `TransactionFailed` (carrying
the program's error code) when the chain rejects them. Reads decode accounts with
`fedrelay.adapters.solana.layout`.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.models import MemcmpOpts, TxOpts
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
from fedrelay.adapters.solana._base58 import b58encode
from fedrelay.adapters.solana.errors import (
    AccountNotFound,
    ConfirmationTimeout,
    TransactionExpired,
    TransactionFailed,
)
from fedrelay.adapters.solana.layout import (
    MAX_COMMITMENTS,
    MESSAGE_KIND_BYTES,
    RECIPIENT_ENTRY,
    TASK_ACCOUNT_LEN,
    TASK_COMMITTED_OFFSET,
    TASK_JOB_ID_OFFSET,
    TASK_KIND_BYTES,
    TASK_PUBLISHED_OFFSET,
    TASK_ROUND_OFFSET,
    ConsumedRecord,
    GuardianSetAccount,
    ProgramConfig,
    ProgramError,
    PublishedMessage,
    TaskAccount,
    ThresholdKeyAccount,
    WorkerAccount,
    is_consumed_record,
)
from fedrelay.protocol.wormhole import (
    RoundSettled,
    TaskAssigned,
    ThresholdVaa,
    Vaa,
    decode_payload,
    parse_any_vaa,
    parse_vaa,
)
from fedrelay.protocol.wormhole.threshold import AppendKey

#: Solana's limit on a serialized transaction.
PACKET_DATA_SIZE = 1232
#: VAA bytes written per buffer transaction (leaves room for accounts and signature).
BUFFER_CHUNK = 900
#: Compute units requested for VAA verification (25,000 per signature plus account work).
RECEIVE_COMPUTE_UNITS = 1_400_000
_MULTIPLE_ACCOUNTS = 100  # getMultipleAccounts takes up to 100 addresses
#: Seconds between reading the block height while a sent transaction has no status.
_HEIGHT_CHECK_S = 0.5

_Decoded = TypeVar("_Decoded")


@dataclass(frozen=True)
class Receipt:
    """A confirmed transaction: where it landed and what it cost."""

    signature: Signature
    slot: int
    compute_units: int
    logs: tuple[str, ...]
    applied_keys: tuple[bytes, ...] = ()  # batch entries (worker keys) this transaction applied


@dataclass(frozen=True)
class Delivered:
    """How a VAA was delivered: the receiving path and every transaction it took."""

    path: str  # "receive_message" or "receive_from_buffer"
    receipts: tuple[Receipt, ...]

    @property
    def receive(self) -> Receipt:
        """The transaction that verified and consumed the VAA."""
        return self.receipts[0]


def _most_that_fit(
    build: Callable[[int], Instruction], most: int, payer: Keypair, blockhash: Hash
) -> int | None:
    """The largest n <= most whose instruction `build(n)` fits one transaction, or None."""
    limit = set_compute_unit_limit(RECEIVE_COMPUTE_UNITS)
    for count in range(most, -1, -1):
        message = MessageV0.try_compile(payer.pubkey(), [limit, build(count)], [], blockhash)
        if len(bytes(VersionedTransaction(message, [payer]))) <= PACKET_DATA_SIZE:
            return count
    return None


def program_error_of(err: Any) -> int | None:
    """The worker program's custom error code inside a transaction error, if any."""
    inner = getattr(err, "err", None)
    code = getattr(inner, "code", None)
    return code if isinstance(code, int) else None


def _describe(code: int | None, err: Any) -> str:
    if code is not None and code in ProgramError._value2member_map_:
        return f"worker program rejected the transaction: {ProgramError(code).name} ({code})"
    return f"transaction failed: {err}"


class WorkerProgramClient:
    """Talks to one deployment of the worker program through a Solana RPC endpoint."""

    def __init__(
        self, rpc: AsyncClient, program_id: Pubkey, *, confirm_timeout: float = 30.0
    ) -> None:
        """Bind the client to an RPC connection and a program id.

        Args:
            rpc: The solana-py connection.
            program_id: Where the worker program is deployed.
            confirm_timeout: Seconds to wait for a sent transaction's confirmation.
        """
        self.rpc = rpc
        self.program_id = program_id
        self.confirm_timeout = confirm_timeout
        self._per_transaction: int | None = None

    # ---- sending ------------------------------------------------------------------------------
    async def build_transaction(
        self,
        instructions: Sequence[Instruction],
        payer: Keypair,
        *signers: Keypair,
    ) -> VersionedTransaction:
        """Sign `instructions` with a fresh blockhash; `payer` pays the fee."""
        tx, _ = await self._signed(instructions, payer, *signers)
        return tx

    async def _signed(
        self, instructions: Sequence[Instruction], payer: Keypair, *signers: Keypair
    ) -> tuple[VersionedTransaction, int]:
        """`instructions` signed with a fresh blockhash, and the last block height at which
        that blockhash lets the transaction land."""
        latest = (await self.rpc.get_latest_blockhash(Confirmed)).value
        message = MessageV0.try_compile(payer.pubkey(), list(instructions), [], latest.blockhash)
        return VersionedTransaction(message, [payer, *signers]), latest.last_valid_block_height

    async def send(
        self,
        instructions: Sequence[Instruction],
        payer: Keypair,
        *signers: Keypair,
        compute_units: int | None = None,
    ) -> Receipt:
        """Send a transaction, wait for it, and return its receipt.

        Raises:
            TransactionFailed: Preflight or execution rejected it (see `program_error`).
            ConfirmationTimeout: It was not confirmed within `confirm_timeout` seconds.
        """
        prefix = [set_compute_unit_limit(compute_units)] if compute_units else []
        tx, last_valid_block_height = await self._signed([*prefix, *instructions], payer, *signers)
        try:
            sent = await self.rpc.send_transaction(tx, opts=TxOpts(preflight_commitment=Confirmed))
        except RPCException as exc:
            failure = exc.args[0] if exc.args else None
            data = getattr(failure, "data", None)
            err = getattr(data, "err", None)
            logs = list(getattr(data, "logs", None) or [])
            code = program_error_of(err)
            raise TransactionFailed(_describe(code, err), program_error=code, logs=logs) from exc
        return await self.confirm(sent.value, last_valid_block_height=last_valid_block_height)

    async def confirm(
        self, signature: Signature, *, last_valid_block_height: int | None = None
    ) -> Receipt:
        """Wait until `signature` is confirmed; raise `TransactionFailed` if it failed.

        Given the last block height its blockhash is valid for, a transaction that still has no
        status once the chain is past that height is known never to land: `TransactionExpired`
        says so then instead of waiting out `confirm_timeout`.

        Raises:
            TransactionFailed: It failed (`TransactionExpired`: it never landed).
            ConfirmationTimeout: No answer within `confirm_timeout` seconds; it may still land.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.confirm_timeout
        next_height_check = loop.time()
        while True:
            status = await self._status(signature)
            if status is not None and status.confirmation_status is not None:
                break
            if (
                status is None
                and last_valid_block_height is not None
                and loop.time() >= next_height_check
            ):
                next_height_check = loop.time() + _HEIGHT_CHECK_S
                height = (await self.rpc.get_block_height(Confirmed)).value
                # Read the status again: it may have landed just before its blockhash expired.
                if height > last_valid_block_height and await self._status(signature) is None:
                    raise TransactionExpired(
                        f"transaction failed: BlockhashNotFound: {signature} had not landed by "
                        f"block height {last_valid_block_height}, the last its blockhash is "
                        "valid for; it never will"
                    )
                continue
            if loop.time() > deadline:
                raise ConfirmationTimeout(
                    f"{signature} not confirmed in {self.confirm_timeout}s", signature=signature
                )
            await asyncio.sleep(0.05)
        found = await self.rpc.get_transaction(
            signature, commitment=Confirmed, max_supported_transaction_version=0
        )
        meta = found.value.transaction.meta if found.value else None
        logs = tuple(meta.log_messages or []) if meta else ()
        if status.err is not None:
            code = program_error_of(status.err)
            raise TransactionFailed(
                _describe(code, status.err), program_error=code, logs=list(logs)
            )
        units = meta.compute_units_consumed if meta and meta.compute_units_consumed else 0
        return Receipt(signature, status.slot, units, logs)

    async def _status(self, signature: Signature) -> TransactionStatus | None:
        return (await self.rpc.get_signature_statuses([signature])).value[0]

    async def landed(self, signature: Signature) -> bool:
        """Whether `signature` has landed and succeeded, as far as the node knows now."""
        status = await self._status(signature)
        return status is not None and status.err is None

    # ---- instructions -------------------------------------------------------------------------
    async def initialize(self, admin: Keypair, args: ix.InitializeArgs) -> Receipt:
        """Create the config, vault and first guardian set."""
        return await self.send([ix.initialize(self.program_id, admin.pubkey(), args)], admin)

    async def set_guardian_set(self, admin: Keypair, addresses: Sequence[bytes]) -> Receipt:
        """Rotate to a new guardian set; the current one expires after the configured TTL."""
        config = await self.fetch_config()
        instruction = ix.set_guardian_set(
            self.program_id, admin.pubkey(), config.guardian_set_index, addresses
        )
        return await self.send([instruction], admin)

    async def register(
        self,
        worker: Keypair,
        *,
        stake_lamports: int,
        payout: bytes,
        capabilities: int,
        nonce: int = 0,
    ) -> Receipt:
        """Stake and register; publishes WORKER_REGISTERED."""
        config = await self.fetch_config()
        instruction = ix.register(
            self.program_id,
            worker.pubkey(),
            stake_lamports=stake_lamports,
            payout=payout,
            capabilities=capabilities,
            sequence=config.next_sequence,
            nonce=nonce,
        )
        return await self.send([instruction], worker)

    async def commit_update(self, worker: Keypair, commitment: ix.Commitment) -> Receipt:
        """Commit the worker's update for its task; the task account keeps it until
        :meth:`publish_commitments` sends it (nothing is published here)."""
        instruction = ix.commit_update(self.program_id, worker.pubkey(), commitment)
        return await self.send([instruction], worker)

    async def publish_commitments(
        self,
        payer: Keypair,
        job_id: int,
        round_number: int,
        tasks: Sequence[bytes],
        *,
        nonce: int = 0,
    ) -> Receipt:
        """Publish the pending commitments of the tasks of ``tasks`` (their worker keys, in
        entry order) of one job round as one UPDATE_COMMITTED; ``payer`` pays the message.

        Raises:
            TransactionFailed: The program refused it: ``ALREADY_PUBLISHED`` when another
                transaction published one of them first, ``NOT_COMMITTED``, ``OTHER_ROUND``,
                ``DUPLICATE_TASK``, ``COMMITMENT_COUNT``.
        """
        addresses = [pda.task_address(self.program_id, job_id, round_number, k) for k in tasks]

        def build(sequence: int) -> Instruction:
            return ix.publish_commitments(
                self.program_id, payer.pubkey(), job_id, round_number, addresses,
                sequence=sequence, nonce=nonce,
            )  # fmt: skip

        return await self._publishing(payer, build)

    def commitments_per_transaction(self) -> int:
        """How many task accounts one publish_commitments transaction has room for (its size
        limit, not the protocol's 32, is what bounds it)."""
        if self._per_transaction is None:
            payer = Keypair.from_seed(bytes(32))
            dummies = [Pubkey(bytes([1 + i]) * 32) for i in range(MAX_COMMITMENTS)]

            def fits(count: int) -> bool:
                instruction = ix.publish_commitments(
                    self.program_id, payer.pubkey(), 2**64 - 1, 2**32 - 1, dummies[:count],
                    sequence=2**64 - 1, nonce=2**32 - 1,
                )  # fmt: skip
                message = MessageV0.try_compile(payer.pubkey(), [instruction], [], Hash.default())
                return len(bytes(VersionedTransaction(message, [payer]))) <= PACKET_DATA_SIZE

            self._per_transaction = next(n for n in range(MAX_COMMITMENTS, 0, -1) if fits(n))
        return self._per_transaction

    async def next_sequence(self) -> int:
        """The sequence the program's next published message gets."""
        return (await self.fetch_config()).next_sequence

    async def stake(self, worker: Keypair, lamports: int) -> Receipt:
        """Add to the worker's bonded stake; publishes STAKE_CHANGED(STAKED)."""
        return await self._publishing(
            worker, lambda seq: ix.stake(self.program_id, worker.pubkey(), lamports, sequence=seq)
        )

    async def begin_unstake(self, worker: Keypair, lamports: int) -> Receipt:
        """Start unbonding `lamports` of bonded stake; publishes STAKE_CHANGED(UNBONDING)."""
        return await self._publishing(
            worker,
            lambda seq: ix.begin_unstake(self.program_id, worker.pubkey(), lamports, sequence=seq),
        )

    async def withdraw(self, worker: Keypair) -> Receipt:
        """Withdraw what finished unbonding; publishes STAKE_CHANGED(WITHDRAWN)."""
        return await self._publishing(
            worker, lambda seq: ix.withdraw(self.program_id, worker.pubkey(), sequence=seq)
        )

    async def release_expired_task(
        self, worker: Keypair, job_id: int, round_number: int
    ) -> Receipt:
        """Release an unsettled task after release_at; publishes STAKE_CHANGED(TASK_RELEASED)."""
        return await self._publishing(
            worker,
            lambda seq: ix.release_expired_task(
                self.program_id, worker.pubkey(), job_id, round_number, sequence=seq
            ),
        )

    async def claim_slashed(
        self, payer: Keypair, digest: bytes, destination: Pubkey, entry: int = RECIPIENT_ENTRY
    ) -> Receipt:
        """Pay a settled batch's slashed lamports to `destination` (anyone may send it)."""
        instruction = ix.claim_slashed(self.program_id, digest, destination, entry)
        return await self.send([instruction], payer)

    async def _publishing(
        self,
        payer: Keypair,
        build: Callable[[int], Instruction],
        *,
        attempts: int = 5,
        compute_units: int | None = None,
    ) -> Receipt:
        """Send an instruction that publishes, naming the then next message account; another
        transaction that took that sequence first (STALE_SEQUENCE) makes it send again."""
        for attempt in range(1, attempts + 1):
            try:
                instruction = build(await self.next_sequence())
                return await self.send([instruction], payer, compute_units=compute_units)
            except TransactionFailed as exc:
                if exc.program_error != ProgramError.STALE_SEQUENCE or attempt == attempts:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def plan_delivery(self, vaa: Vaa | ThresholdVaa) -> ix.Delivery:
        """The accounts a VAA's delivery touches, with the entries that will publish a
        STAKE_CHANGED predicted from the worker and task records the chain holds now."""
        [delivery] = await self.plan_deliveries([vaa])
        return delivery

    async def plan_deliveries(self, vaas: Sequence[Vaa | ThresholdVaa]) -> list[ix.Delivery]:
        """:meth:`plan_delivery` of each VAA, in order, their workers' and tasks' records read
        together (a hundred accounts per ``getMultipleAccounts``)."""
        deliveries = [ix.delivery_for(vaa) for vaa in vaas]
        payloads = [decode_payload(vaa.body.payload) for vaa in vaas]
        addresses: list[Pubkey] = []
        for delivery, payload in zip(deliveries, payloads, strict=True):
            if isinstance(payload, TaskAssigned | RoundSettled):
                keys = delivery.worker_keys
                addresses += [pda.worker_address(self.program_id, Pubkey(k)) for k in keys]
                addresses += [
                    pda.task_address(self.program_id, delivery.job_id, delivery.round, k)
                    for k in keys
                ]
        owned: list[bytes | None] = []
        for start in range(0, len(addresses), _MULTIPLE_ACCOUNTS):
            chunk = addresses[start : start + _MULTIPLE_ACCOUNTS]
            infos = (await self.rpc.get_multiple_accounts(chunk, commitment=Confirmed)).value
            owned += [bytes(i.data) if i and i.owner == self.program_id else None for i in infos]
        planned = []
        for delivery, payload in zip(deliveries, payloads, strict=True):
            if not isinstance(payload, TaskAssigned | RoundSettled):
                planned.append(delivery)
                continue
            count = len(delivery.worker_keys)
            workers = [WorkerAccount.decode(d) if d else None for d in owned[:count]]
            tasks = [TaskAccount.decode(d) if d else None for d in owned[count : 2 * count]]
            owned = owned[2 * count :]
            publishes = ix.predict_publishes(payload, workers, tasks)
            planned.append(replace(delivery, publishes=publishes))
        return planned

    async def receive_vaa(self, payer: Keypair, vaa: bytes) -> Delivered:
        """Deliver a VAA and apply its whole batch.

        The VAA travels in the instruction when it fits, else through a buffer account. As many
        batch entries as fit go with it; the rest follow in `apply_batch` transactions. Entries
        that publish a STAKE_CHANGED get the next message accounts (predicted by
        :meth:`plan_delivery`).

        Raises:
            TransactionFailed: The program rejected it; `ProgramError.ALREADY_CONSUMED` means
                it was delivered before.
        """
        delivery = await self.plan_delivery(parse_any_vaa(vaa))
        keys = delivery.worker_keys
        blockhash = (await self.rpc.get_latest_blockhash(Confirmed)).value.blockhash
        sequence = await self.next_sequence()

        def direct(count: int) -> Instruction:
            part = delivery.part(0, count, sequence)
            return ix.receive_message(self.program_id, payer.pubkey(), vaa, part)

        fitting = _most_that_fit(direct, len(keys), payer, blockhash)
        if fitting is not None:
            first = await self.send([direct(fitting)], payer, compute_units=RECEIVE_COMPUTE_UNITS)
            path, count = "receive_message", fitting
        else:
            first, count = await self._receive_buffered(payer, vaa, delivery, blockhash)
            path = "receive_from_buffer"
        receipts = [replace(first, applied_keys=keys[:count])]
        while count < len(keys):
            receipts.append(await self._apply_next(payer, delivery, count, blockhash))
            count += len(receipts[-1].applied_keys)
        return Delivered(path, tuple(receipts))

    async def _apply_next(
        self, payer: Keypair, delivery: ix.Delivery, applied: int, blockhash: Hash
    ) -> Receipt:
        keys = delivery.worker_keys

        def apply(count: int, sequence: int = 0) -> Instruction:
            part = delivery.part(applied, applied + count, sequence)
            return ix.apply_batch(self.program_id, payer.pubkey(), part)

        step = _most_that_fit(apply, len(keys) - applied, payer, blockhash)
        if not step:
            raise TransactionFailed("not even one batch entry fits an apply_batch transaction")
        receipt = await self._publishing(
            payer, lambda seq: apply(step, seq), compute_units=RECEIVE_COMPUTE_UNITS
        )
        return replace(receipt, applied_keys=keys[applied : applied + step])

    async def _receive_buffered(
        self, payer: Keypair, vaa: bytes, delivery: ix.Delivery, blockhash: Hash
    ) -> tuple[Receipt, int]:
        buffer_id = int.from_bytes(delivery.digest[:8], "big")
        keys = delivery.worker_keys

        def from_buffer(count: int, sequence: int = 0) -> Instruction:
            part = delivery.part(0, count, sequence)
            return ix.receive_from_buffer(self.program_id, payer.pubkey(), buffer_id, part)

        count = _most_that_fit(from_buffer, len(keys), payer, blockhash)
        if count is None:
            raise TransactionFailed("receive_from_buffer does not fit a transaction")
        await self.write_buffer(payer, buffer_id, vaa)
        receipt = await self.send(
            [from_buffer(count, await self.next_sequence())],
            payer,
            compute_units=RECEIVE_COMPUTE_UNITS,
        )
        return receipt, count

    async def complete_delivery(self, payer: Keypair, vaa: bytes) -> tuple[Receipt, ...]:
        """Apply the entries of an already received VAA that are still pending.

        A delivery interrupted between its transactions leaves the VAA consumed with part of the
        batch applied; calling this finishes it (and does nothing when nothing is pending).

        Raises:
            AccountNotFound: The VAA was never received.
        """
        parsed = parse_any_vaa(vaa)
        record = await self.fetch_consumed(parsed.digest)
        if record.applied >= len(ix.delivery_for(parsed).worker_keys):
            return ()
        delivery = await self.plan_delivery(parsed)
        blockhash = (await self.rpc.get_latest_blockhash(Confirmed)).value.blockhash
        receipts: list[Receipt] = []
        applied = record.applied
        while applied < len(delivery.worker_keys):
            receipts.append(await self._apply_next(payer, delivery, applied, blockhash))
            applied += len(receipts[-1].applied_keys)
        return tuple(receipts)

    async def receive_vaa_buffered(
        self, payer: Keypair, vaa: bytes, delivery: ix.Delivery | None = None
    ) -> Receipt:
        """Write the VAA into a buffer and receive it from there (no follow-up transactions)."""
        delivery = delivery or await self.plan_delivery(parse_any_vaa(vaa))
        blockhash = (await self.rpc.get_latest_blockhash(Confirmed)).value.blockhash
        receipt, _count = await self._receive_buffered(payer, vaa, delivery, blockhash)
        return receipt

    async def write_buffer(self, payer: Keypair, buffer_id: int, data: bytes) -> list[Receipt]:
        """Write `data` into buffer `buffer_id`, one chunk per transaction."""
        receipts = []
        for offset in range(0, len(data), BUFFER_CHUNK):
            chunk = data[offset : offset + BUFFER_CHUNK]
            instruction = ix.write_buffer(
                self.program_id, payer.pubkey(), buffer_id, len(data), offset, chunk
            )
            receipts.append(await self.send([instruction], payer))
        return receipts

    async def append_threshold_key(
        self, payer: Keypair, governance_vaa: bytes, buffer_id: int = 0x7455_5300
    ) -> Receipt:
        """Append the threshold key a version-1 governance VAA carries (docs/solana.md,
        `append_threshold_key`): the VAA goes through buffer `buffer_id` of `payer`, which the
        instruction closes. From index 1 on, the previous key and its guardian set come along.

        Raises:
            TransactionFailed: The program refused it (`NOT_GOVERNANCE`, `GOVERNANCE_PAYLOAD`,
                `THRESHOLD_KEY_EXISTS`, `UNKNOWN_THRESHOLD_KEY`, ...).
        """
        vaa = parse_vaa(governance_vaa)
        index = AppendKey.from_bytes(vaa.body.payload).tss_index
        previous = None
        if index > 0:
            previous = (await self.fetch_threshold_key(index - 1)).guardian_set_index
        await self.write_buffer(payer, buffer_id, governance_vaa)
        instruction = ix.append_threshold_key(
            self.program_id, payer.pubkey(), buffer_id,
            guardian_set_index=vaa.guardian_set_index, index=index,
            previous_guardian_set_index=previous,
        )  # fmt: skip
        return await self.send([instruction], payer, compute_units=RECEIVE_COMPUTE_UNITS)

    # ---- reads --------------------------------------------------------------------------------
    async def _account_data(self, address: Pubkey) -> bytes | None:
        info = (await self.rpc.get_account_info(address, commitment=Confirmed)).value
        if info is None or info.owner != self.program_id:
            return None
        return bytes(info.data)

    async def _decode(self, address: Pubkey, what: str, decoder: type[_Decoded]) -> _Decoded:
        data = await self._account_data(address)
        if data is None:
            raise AccountNotFound(f"no {what} account at {address}")
        decoded: _Decoded = decoder.decode(data)  # type: ignore[attr-defined]
        return decoded

    async def fetch_config(self) -> ProgramConfig:
        """The program's config (raises `AccountNotFound` before `initialize`)."""
        return await self._decode(pda.config_address(self.program_id), "config", ProgramConfig)

    async def fetch_guardian_set(self, index: int) -> GuardianSetAccount:
        """Guardian set `index`."""
        address = pda.guardian_set_address(self.program_id, index)
        return await self._decode(address, "guardian set", GuardianSetAccount)

    async def fetch_threshold_key(self, index: int) -> ThresholdKeyAccount:
        """Threshold key `index` (version-2 VAAs)."""
        address = pda.threshold_key_address(self.program_id, index)
        return await self._decode(address, "threshold key", ThresholdKeyAccount)

    async def fetch_worker(self, worker: Pubkey) -> WorkerAccount:
        """A worker's stake record."""
        address = pda.worker_address(self.program_id, worker)
        return await self._decode(address, "worker", WorkerAccount)

    async def fetch_task(self, job_id: int, round_number: int, worker_key: bytes) -> TaskAccount:
        """A task record."""
        address = pda.task_address(self.program_id, job_id, round_number, worker_key)
        return await self._decode(address, "task", TaskAccount)

    async def pending_commitments(self, job_id: int, round_number: int) -> list[TaskAccount]:
        """The tasks of a job round whose commitment is held and not yet published, by worker
        key: one ``getProgramAccounts`` with a size filter and memcmp filters on the task's
        kind, job_id, round, committed (1) and published (0) fields."""
        found = await self.rpc.get_program_accounts(
            self.program_id,
            commitment=Confirmed,
            encoding="base64",
            filters=[
                TASK_ACCOUNT_LEN,
                MemcmpOpts(offset=0, bytes=b58encode(TASK_KIND_BYTES)),
                MemcmpOpts(offset=TASK_JOB_ID_OFFSET, bytes=b58encode(struct.pack("<Q", job_id))),
                MemcmpOpts(
                    offset=TASK_ROUND_OFFSET, bytes=b58encode(struct.pack("<I", round_number))
                ),
                MemcmpOpts(offset=TASK_COMMITTED_OFFSET, bytes=b58encode(b"\x01")),
                MemcmpOpts(offset=TASK_PUBLISHED_OFFSET, bytes=b58encode(b"\x00")),
            ],
        )
        tasks = [TaskAccount.decode(bytes(row.account.data)) for row in found.value]
        return sorted((t for t in tasks if t.pending), key=lambda t: t.worker_key)

    async def fetch_message(self, sequence: int) -> PublishedMessage:
        """Published message `sequence`."""
        address = pda.message_address(self.program_id, sequence)
        return await self._decode(address, "message", PublishedMessage)

    async def messages_from(self, first_sequence: int, limit: int = 100) -> list[PublishedMessage]:
        """Published messages with sequence >= `first_sequence`, in order (what watchers read)."""
        end = min((await self.fetch_config()).next_sequence, first_sequence + limit)
        if end <= first_sequence:
            return []
        addresses = [pda.message_address(self.program_id, s) for s in range(first_sequence, end)]
        infos = (await self.rpc.get_multiple_accounts(addresses, commitment=Confirmed)).value
        return [PublishedMessage.decode(bytes(i.data)) for i in infos if i is not None]

    async def all_messages(self) -> list[PublishedMessage]:
        """Every published message, found with `getProgramAccounts` and a kind filter."""
        found = await self.rpc.get_program_accounts(
            self.program_id,
            commitment=Confirmed,
            encoding="base64",
            filters=[MemcmpOpts(offset=0, bytes=b58encode(MESSAGE_KIND_BYTES))],
        )
        messages = [PublishedMessage.decode(bytes(row.account.data)) for row in found.value]
        return sorted(messages, key=lambda m: m.sequence)

    async def fetch_consumed(self, digest: bytes) -> ConsumedRecord:
        """The replay record of a received VAA (with its batch progress)."""
        address = pda.consumed_address(self.program_id, digest)
        return await self._decode(address, "consumed record", ConsumedRecord)

    async def is_consumed(self, digest: bytes) -> bool:
        """Whether a VAA with this digest was already received."""
        data = await self._account_data(pda.consumed_address(self.program_id, digest))
        return data is not None and is_consumed_record(data)

    async def balance(self, address: Pubkey) -> int:
        """Lamports at `address`."""
        return int((await self.rpc.get_balance(address, commitment=Confirmed)).value)

    async def airdrop(self, address: Pubkey, lamports: int) -> None:
        """Request an airdrop (devnet) and wait for it."""
        try:
            sent = await self.rpc.request_airdrop(address, lamports, commitment=Confirmed)
        except (RPCException, SolanaRpcException) as exc:
            raise TransactionFailed(f"airdrop of {lamports} to {address} failed: {exc}") from exc
        await self.confirm(sent.value)
