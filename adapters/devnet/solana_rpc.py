"""A Solana JSON-RPC devnet: an HTTP server in front of LiteSVM (the real SVM, in process).

It answers the subset of Solana's JSON-RPC API that solana-py's `AsyncClient` uses in this
project, in the real response shapes, so production client code is what tests run. Every
processed transaction (and airdrop) advances the slot by one and rotates the blockhash; the
cluster clock follows wall time plus an offset that tests move with `advance_time`.

With `slot_ms` set, slots follow wall time instead, as on a real cluster: a slot lasts `slot_ms`
milliseconds and holds every transaction processed meanwhile, and a transaction may carry any
blockhash of the last `BLOCKHASH_VALIDITY_SLOTS` slots (several senders, or one sender with many
transactions in flight, sign with the same recent blockhash). Tests of parallel delivery use it.

Methods: getLatestBlockhash, isBlockhashValid, sendTransaction (with preflight),
simulateTransaction, getSignatureStatuses, getTransaction, getSignaturesForAddress, getAccountInfo,
getMultipleAccounts, getProgramAccounts (dataSize and memcmp filters), getBalance, getSlot,
getBlockHeight, requestAirdrop, getMinimumBalanceForRentExemption, getHealth, getVersion,
getGenesisHash, getEpochInfo.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from solders.account import Account
from solders.clock import Clock
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.rpc.responses import RpcSimulateTransactionResult
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata

from fedrelay.adapters.solana._base58 import b58decode, b58encode

JsonDict = dict[str, Any]

#: How many slots a blockhash stays valid, as on a real cluster.
BLOCKHASH_VALIDITY_SLOTS = 150
_MAX_SIGNATURES_PER_ADDRESS = 1000
_SLOT_HASHES_KEPT = 512
_VERSION = {"solana-core": "2.2.0", "feature-set": 0}


class RpcError(Exception):
    """A JSON-RPC error response: code, message and optional data."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass
class _Processed:
    """One executed transaction as the chain remembers it."""

    signature: str
    slot: int
    block_time: int
    err: Any
    tx: VersionedTransaction
    logs: list[str]
    fee: int
    compute_units: int
    pre_balances: list[int]
    post_balances: list[int]


_NEVER_LANDS = ("BlockhashNotFound", "AlreadyProcessed")
"""Transaction errors (in their RPC JSON form) of a transaction that was never included."""


def _err_json(err: Any) -> Any:
    """A solders transaction error in the JSON shape of the RPC API."""
    result = RpcSimulateTransactionResult(err, None, None, None, None)
    return json.loads(result.to_json())["err"]


def _account_json(account: Account, encoding: str) -> JsonDict:
    data = bytes(account.data)
    encoded: Any
    if encoding == "base58":
        encoded = [b58encode(data), "base58"]
    else:
        encoded = [base64.b64encode(data).decode(), "base64"]
    return {
        "data": encoded,
        "executable": account.executable,
        "lamports": account.lamports,
        "owner": str(account.owner),
        "rentEpoch": account.rent_epoch,
        "space": len(data),
    }


def _config(params: list[Any], index: int) -> JsonDict:
    if len(params) > index and isinstance(params[index], dict):
        config: JsonDict = params[index]
        return config
    return {}


@dataclass
class DevnetChain:
    """LiteSVM plus the bookkeeping an RPC node keeps: slots, clock, transaction history.

    All methods are thread-safe; the HTTP server calls them from its worker threads.
    """

    svm: LiteSVM = field(default_factory=lambda: LiteSVM().with_sigverify(True))
    time_offset: int = 0
    frozen_time: int | None = None
    slot_ms: int | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _history: dict[str, _Processed] = field(default_factory=dict)
    _by_address: dict[str, list[str]] = field(default_factory=dict)
    _slot_started: float = field(default_factory=time.monotonic)
    _recent: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.slot_ms is not None:
            if self.slot_ms <= 0:
                raise ValueError(f"slot_ms must be positive, got {self.slot_ms}")
            # Recent blockhashes are checked here (`check_blockhash`): LiteSVM takes the latest.
            self.svm = self.svm.with_blockhash_check(False)
            self._remember_blockhash()
        self._set_clock(self.svm.get_clock().slot)

    # ---- time and slots ------------------------------------------------------------------
    def _set_clock(self, slot: int) -> None:
        old = self.svm.get_clock()
        now = self.frozen_time if self.frozen_time is not None else int(time.time())
        now += self.time_offset
        self.svm.set_clock(
            Clock(slot, old.epoch_start_timestamp, old.epoch, old.leader_schedule_epoch, now)
        )

    def _next_slot(self) -> None:
        slot = self.svm.get_clock().slot + 1
        self.svm.warp_to_slot(slot)
        self._set_clock(slot)
        self.svm.expire_blockhash()
        # Address lookup tables are created against a recent slot found in SlotHashes.
        recent = [(slot, self.svm.latest_blockhash()), *self.svm.get_slot_hashes()]
        self.svm.set_slot_hashes(recent[:_SLOT_HASHES_KEPT])
        if self.slot_ms is not None:
            self._remember_blockhash()

    def _remember_blockhash(self) -> None:
        slot = int(self.svm.get_clock().slot)
        self._recent[str(self.svm.latest_blockhash())] = slot
        for blockhash, seen in list(self._recent.items()):
            if seen < slot - BLOCKHASH_VALIDITY_SLOTS:
                del self._recent[blockhash]

    def _tick(self) -> None:
        """With timed slots: start the slots that wall time has reached since the last one."""
        if self.slot_ms is None:
            return
        elapsed = int((time.monotonic() - self._slot_started) * 1000) // self.slot_ms
        for _ in range(min(elapsed, BLOCKHASH_VALIDITY_SLOTS)):
            self._next_slot()
        self._slot_started += elapsed * self.slot_ms / 1000

    def check_blockhash(self, tx: VersionedTransaction) -> bool:
        """Whether `tx`'s blockhash is recent enough to land (always true without timed slots,
        where LiteSVM itself takes the latest blockhash only)."""
        with self._lock:
            self._tick()
            if self.slot_ms is None:
                return True
            return str(tx.message.recent_blockhash) in self._recent

    def last_valid_height(self) -> int:
        """The last block height at which a transaction signed with the latest blockhash lands:
        the current one without timed slots (LiteSVM takes the latest blockhash only), else
        `BLOCKHASH_VALIDITY_SLOTS` on."""
        with self._lock:
            slot = self.slot
            return slot if self.slot_ms is None else slot + BLOCKHASH_VALIDITY_SLOTS

    def blockhash_valid(self, blockhash: str) -> bool:
        """Whether a transaction signed with `blockhash` can still land."""
        with self._lock:
            self._tick()
            if self.slot_ms is None:
                return blockhash == str(self.svm.latest_blockhash())
            return blockhash in self._recent

    @property
    def slot(self) -> int:
        """The current slot (block height equals slot on this chain)."""
        with self._lock:
            self._tick()
            return int(self.svm.get_clock().slot)

    def latest_blockhash(self) -> str:
        """The blockhash of the current slot."""
        with self._lock:
            self._tick()
            return str(self.svm.latest_blockhash())

    def unix_time(self) -> int:
        """The cluster clock's unix time as programs see it now."""
        with self._lock:
            self._set_clock(self.svm.get_clock().slot)
            return int(self.svm.get_clock().unix_timestamp)

    def advance_time(self, seconds: int) -> None:
        """Move the cluster clock forward (deadlines, unbonding, guardian set expiry)."""
        with self._lock:
            self.time_offset += seconds
            self._next_slot()

    def set_time(self, unix_time: int | None) -> None:
        """Stop the cluster clock at `unix_time` (None: follow wall time again, no offset)."""
        with self._lock:
            self.frozen_time = unix_time
            self.time_offset = 0
            self._next_slot()

    # ---- programs and accounts --------------------------------------------------------------
    def add_program(self, program_id: Pubkey, elf: bytes) -> None:
        """Deploy a program at `program_id`."""
        with self._lock:
            self.svm.add_program(program_id, elf)

    def account(self, address: Pubkey) -> Account | None:
        """The account at `address`, or None."""
        with self._lock:
            return self.svm.get_account(address)

    def set_account(self, address: Pubkey, account: Account) -> None:
        """Overwrite an account (test set-up only: bypasses every runtime rule)."""
        with self._lock:
            self.svm.set_account(address, account)

    def airdrop(self, address: Pubkey, lamports: int) -> str:
        """Credit lamports; returns the airdrop transaction's signature."""
        with self._lock:
            self._set_clock(self.svm.get_clock().slot)
            result = self.svm.airdrop(address, lamports)
            if isinstance(result, FailedTransactionMetadata):
                raise RpcError(-32600, f"airdrop failed: {result.err()}")
            signature = str(result.signature())
            slot = self.slot
            self._history[signature] = _Processed(
                signature, slot, self.unix_time(), None, _empty_tx(), [], 0, 0, [], []
            )
            self._by_address.setdefault(str(address), []).insert(0, signature)
            self._after_transaction()
            return signature

    # ---- transactions -----------------------------------------------------------------------
    def simulate(self, tx: VersionedTransaction) -> TransactionMetadata | FailedTransactionMetadata:
        """Run a transaction without committing it."""
        with self._lock:
            self._tick()
            self._set_clock(self.svm.get_clock().slot)
            result = self.svm.simulate_transaction(tx)
            if isinstance(result, FailedTransactionMetadata):
                return result
            return result.meta()

    def process(self, tx: VersionedTransaction) -> _Processed:
        """Execute and commit a transaction (in a new slot, unless slots are timed)."""
        with self._lock:
            self._tick()
            self._set_clock(self.svm.get_clock().slot)
            keys = list(tx.message.account_keys)
            pre = [self.svm.get_balance(k) or 0 for k in keys]
            result = self.svm.send_transaction(tx)
            meta = result.meta() if isinstance(result, FailedTransactionMetadata) else result
            err = _err_json(result.err()) if isinstance(result, FailedTransactionMetadata) else None
            signature = str(tx.signatures[0])
            record = _Processed(
                signature=signature,
                slot=self.slot,
                block_time=int(self.svm.get_clock().unix_timestamp),
                err=err,
                tx=tx,
                logs=list(meta.logs()),
                fee=int(meta.fee()),
                compute_units=int(meta.compute_units_consumed()),
                pre_balances=pre,
                post_balances=[self.svm.get_balance(k) or 0 for k in keys],
            )
            if err in _NEVER_LANDS:
                # Refused for its blockhash as it ran (another transaction moved the slot on
                # since its preflight): a cluster drops such a transaction, records nothing and
                # charges nothing; its signature never gets a status.
                return record
            if err is None or signature not in self._history:
                self._history[signature] = record
                # The whole history stays, as on an archive node: pages come from `before`.
                for key in keys:
                    self._by_address.setdefault(str(key), []).insert(0, signature)
            self._after_transaction()
            return record

    def _after_transaction(self) -> None:
        """A new slot per transaction; with timed slots only a new blockhash (airdrops sign
        with the latest one, so two alike must not share it)."""
        if self.slot_ms is None:
            self._next_slot()
        else:
            self.svm.expire_blockhash()
            self._remember_blockhash()

    def processed(self, signature: str) -> _Processed | None:
        """The record of a processed transaction, if the chain has seen it."""
        with self._lock:
            return self._history.get(signature)

    def signatures_for(self, address: str) -> list[_Processed]:
        """Transactions that referenced `address`, newest first."""
        with self._lock:
            return [self._history[s] for s in self._by_address.get(address, [])]


def _empty_tx() -> VersionedTransaction:
    return VersionedTransaction.default()


class _Rpc:
    """The JSON-RPC methods, each a function of the params list."""

    def __init__(self, chain: DevnetChain) -> None:
        self.chain = chain
        self.methods: dict[str, Callable[[list[Any]], Any]] = {
            "getLatestBlockhash": self.get_latest_blockhash,
            "isBlockhashValid": self.is_blockhash_valid,
            "sendTransaction": self.send_transaction,
            "simulateTransaction": self.simulate_transaction,
            "getSignatureStatuses": self.get_signature_statuses,
            "getTransaction": self.get_transaction,
            "getSignaturesForAddress": self.get_signatures_for_address,
            "getAccountInfo": self.get_account_info,
            "getMultipleAccounts": self.get_multiple_accounts,
            "getProgramAccounts": self.get_program_accounts,
            "getBalance": self.get_balance,
            "getSlot": lambda _p: self.chain.slot,
            "getBlockHeight": lambda _p: self.chain.slot,
            "requestAirdrop": self.request_airdrop,
            "getMinimumBalanceForRentExemption": self.get_minimum_balance,
            "getHealth": lambda _p: "ok",
            "getVersion": lambda _p: _VERSION,
            "getGenesisHash": lambda _p: str(Pubkey.default()),
            "getEpochInfo": self.get_epoch_info,
        }

    def _context(self, value: Any) -> JsonDict:
        return {
            "context": {"apiVersion": _VERSION["solana-core"], "slot": self.chain.slot},
            "value": value,
        }

    @staticmethod
    def _decode_tx(params: list[Any]) -> VersionedTransaction:
        if not params or not isinstance(params[0], str):
            raise RpcError(-32602, "missing the encoded transaction")
        encoding = _config(params, 1).get("encoding", "base58")
        try:
            raw = base64.b64decode(params[0]) if encoding == "base64" else b58decode(params[0])
            return VersionedTransaction.from_bytes(raw)
        except Exception as exc:
            raise RpcError(-32602, f"invalid transaction: {exc}") from exc

    @staticmethod
    def _pubkey(value: Any) -> Pubkey:
        try:
            return Pubkey.from_string(value)
        except Exception as exc:
            raise RpcError(-32602, f"Invalid param: {value!r} is not a public key") from exc

    def get_latest_blockhash(self, _params: list[Any]) -> JsonDict:
        with self.chain._lock:
            blockhash = self.chain.latest_blockhash()
            height = self.chain.last_valid_height()
        return self._context({"blockhash": blockhash, "lastValidBlockHeight": height})

    def is_blockhash_valid(self, params: list[Any]) -> JsonDict:
        if not params or not isinstance(params[0], str):
            raise RpcError(-32602, "missing the blockhash")
        return self._context(self.chain.blockhash_valid(params[0]))

    @staticmethod
    def _simulation(meta: TransactionMetadata | FailedTransactionMetadata) -> JsonDict:
        if isinstance(meta, FailedTransactionMetadata):
            err, inner = meta.err(), meta.meta()
        else:
            err, inner = None, meta
        result = RpcSimulateTransactionResult(
            err, list(inner.logs()), None, int(inner.compute_units_consumed()), None
        )
        value: JsonDict = json.loads(result.to_json())
        return value

    def send_transaction(self, params: list[Any]) -> str:
        tx = self._decode_tx(params)
        if not self.chain.check_blockhash(tx):
            # What a node answers at preflight (and, without it, the transaction never lands).
            data: JsonDict = {"err": "BlockhashNotFound", "logs": [], "accounts": None}
            raise RpcError(-32002, "Transaction simulation failed: Blockhash not found", data)
        if not _config(params, 1).get("skipPreflight", False):
            simulated = self.chain.simulate(tx)
            if isinstance(simulated, FailedTransactionMetadata):
                data = self._simulation(simulated)
                raise RpcError(
                    -32002, f"Transaction simulation failed: {json.dumps(data['err'])}", data
                )
        return self.chain.process(tx).signature

    def simulate_transaction(self, params: list[Any]) -> JsonDict:
        tx = self._decode_tx(params)
        return self._context(self._simulation(self.chain.simulate(tx)))

    def get_signature_statuses(self, params: list[Any]) -> JsonDict:
        statuses: list[JsonDict | None] = []
        for text in params[0] if params else []:
            record = self.chain.processed(text)
            if record is None:
                statuses.append(None)
                continue
            statuses.append(
                {
                    "slot": record.slot,
                    "confirmations": None,
                    "err": record.err,
                    "status": {"Ok": None} if record.err is None else {"Err": record.err},
                    "confirmationStatus": "finalized",
                }
            )
        return self._context(statuses)

    def get_transaction(self, params: list[Any]) -> JsonDict | None:
        record = self.chain.processed(params[0]) if params else None
        if record is None or not record.tx.signatures:
            return None
        encoding = _config(params, 1).get("encoding", "json")
        message = record.tx.message
        legacy = isinstance(message, Message)
        transaction: Any
        if encoding in ("base64", "base58"):
            raw = bytes(record.tx)
            text = base64.b64encode(raw).decode() if encoding == "base64" else b58encode(raw)
            transaction = [text, encoding]
        else:
            transaction = {
                "signatures": [str(s) for s in record.tx.signatures],
                "message": _message_json(message),
            }
        return {
            "slot": record.slot,
            "blockTime": record.block_time,
            "version": "legacy" if legacy else 0,
            "transaction": transaction,
            "meta": {
                "err": record.err,
                "status": {"Ok": None} if record.err is None else {"Err": record.err},
                "fee": record.fee,
                "preBalances": record.pre_balances,
                "postBalances": record.post_balances,
                "innerInstructions": [],
                "logMessages": record.logs,
                "preTokenBalances": [],
                "postTokenBalances": [],
                "rewards": [],
                "loadedAddresses": {"writable": [], "readonly": []},
                "computeUnitsConsumed": record.compute_units,
            },
        }

    def get_signatures_for_address(self, params: list[Any]) -> list[JsonDict]:
        address = str(self._pubkey(params[0] if params else None))
        config = _config(params, 1)
        limit = min(
            int(config.get("limit") or _MAX_SIGNATURES_PER_ADDRESS), _MAX_SIGNATURES_PER_ADDRESS
        )
        before, until = config.get("before"), config.get("until")
        records = self.chain.signatures_for(address)
        if before is not None:
            names = [r.signature for r in records]
            records = records[names.index(before) + 1 :] if before in names else []
        out: list[JsonDict] = []
        for record in records:
            if record.signature == until:
                break
            out.append(
                {
                    "signature": record.signature,
                    "slot": record.slot,
                    "err": record.err,
                    "memo": None,
                    "blockTime": record.block_time,
                    "confirmationStatus": "finalized",
                }
            )
            if len(out) >= limit:
                break
        return out

    def get_account_info(self, params: list[Any]) -> JsonDict:
        address = self._pubkey(params[0] if params else None)
        encoding = _config(params, 1).get("encoding", "base58")
        account = self.chain.account(address)
        return self._context(None if account is None else _account_json(account, encoding))

    def get_multiple_accounts(self, params: list[Any]) -> JsonDict:
        addresses = [self._pubkey(a) for a in (params[0] if params else [])]
        encoding = _config(params, 1).get("encoding", "base64")
        accounts = [self.chain.account(a) for a in addresses]
        return self._context([None if a is None else _account_json(a, encoding) for a in accounts])

    def get_program_accounts(self, params: list[Any]) -> Any:
        program = self._pubkey(params[0] if params else None)
        config = _config(params, 1)
        encoding = config.get("encoding", "base64")
        filters = config.get("filters") or []
        with self.chain._lock:
            found = self.chain.svm.get_program_accounts(program)
        rows = [
            {"pubkey": str(address), "account": _account_json(account, encoding)}
            for address, account in sorted(found, key=lambda pair: str(pair[0]))
            if all(_matches(bytes(account.data), f) for f in filters)
        ]
        return self._context(rows) if config.get("withContext") else rows

    def get_balance(self, params: list[Any]) -> JsonDict:
        account = self.chain.account(self._pubkey(params[0] if params else None))
        return self._context(0 if account is None else account.lamports)

    def request_airdrop(self, params: list[Any]) -> str:
        if len(params) < 2 or not isinstance(params[1], int) or params[1] <= 0:
            raise RpcError(
                -32602, "requestAirdrop takes a public key and a positive lamport amount"
            )
        return self.chain.airdrop(self._pubkey(params[0]), params[1])

    def get_minimum_balance(self, params: list[Any]) -> int:
        if not params or not isinstance(params[0], int) or params[0] < 0:
            raise RpcError(-32602, "getMinimumBalanceForRentExemption takes a data size")
        with self.chain._lock:
            return int(self.chain.svm.minimum_balance_for_rent_exemption(params[0]))

    def get_epoch_info(self, _params: list[Any]) -> JsonDict:
        slot = self.chain.slot
        return {
            "absoluteSlot": slot,
            "blockHeight": slot,
            "epoch": 0,
            "slotIndex": slot,
            "slotsInEpoch": 432000,
            "transactionCount": len(self.chain._history),
        }

    def handle(self, request: Any) -> JsonDict | None:
        """Answer one JSON-RPC request object."""
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return {
                "jsonrpc": "2.0",
                "error": {"code": -32600, "message": "Invalid request"},
                "id": None,
            }
        request_id = request.get("id")
        method = self.methods.get(request["method"])
        if method is None:
            error = {"code": -32601, "message": f"Method not found: {request['method']}"}
            return {"jsonrpc": "2.0", "error": error, "id": request_id}
        params = request.get("params") or []
        try:
            return {"jsonrpc": "2.0", "result": method(params), "id": request_id}
        except RpcError as exc:
            error = {"code": exc.code, "message": exc.message}
            if exc.data is not None:
                error["data"] = exc.data
            return {"jsonrpc": "2.0", "error": error, "id": request_id}


def _message_json(message: Any) -> JsonDict:
    header = message.header
    keys = [str(k) for k in message.account_keys]
    body: JsonDict = {
        "header": {
            "numRequiredSignatures": header.num_required_signatures,
            "numReadonlySignedAccounts": header.num_readonly_signed_accounts,
            "numReadonlyUnsignedAccounts": header.num_readonly_unsigned_accounts,
        },
        "accountKeys": keys,
        "recentBlockhash": str(message.recent_blockhash),
        "instructions": [
            {
                "programIdIndex": ix.program_id_index,
                "accounts": list(bytes(ix.accounts)),
                "data": b58encode(bytes(ix.data)),
                "stackHeight": None,
            }
            for ix in message.instructions
        ],
    }
    if isinstance(message, MessageV0):
        body["addressTableLookups"] = []
    return body


def _matches(data: bytes, spec: Any) -> bool:
    if not isinstance(spec, dict):
        raise RpcError(-32602, f"invalid filter {spec!r}")
    if "dataSize" in spec:
        return len(data) == int(spec["dataSize"])
    memcmp = spec.get("memcmp")
    if isinstance(memcmp, dict):
        offset = int(memcmp.get("offset", 0))
        encoded = memcmp.get("bytes", "")
        wanted = (
            base64.b64decode(encoded) if memcmp.get("encoding") == "base64" else b58decode(encoded)
        )
        return data[offset : offset + len(wanted)] == wanted
    raise RpcError(-32602, f"unsupported filter {spec!r}")


class _Handler(BaseHTTPRequestHandler):
    rpc: _Rpc  # set on the per-server subclass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = json.loads(self.rfile.read(length))
        except json.JSONDecodeError:
            reply: Any = {
                "jsonrpc": "2.0",
                "error": {"code": -32700, "message": "Parse error"},
                "id": None,
            }
        else:
            if isinstance(request, list):
                reply = [self.rpc.handle(r) for r in request]
            else:
                reply = self.rpc.handle(request)
        body = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: transaction bytes are not for logs."""


@dataclass
class SolanaDevnet:
    """A running devnet: the chain and the URL of its JSON-RPC endpoint."""

    chain: DevnetChain
    url: str

    def add_program(self, program_id: Pubkey, elf: bytes) -> None:
        """Deploy a program."""
        self.chain.add_program(program_id, elf)

    def advance_time(self, seconds: int) -> None:
        """Move the cluster clock forward."""
        self.chain.advance_time(seconds)


@contextmanager
def serve_devnet(
    host: str = "127.0.0.1", port: int = 0, slot_ms: int | None = None
) -> Iterator[SolanaDevnet]:
    """Run a devnet JSON-RPC server on a background thread for the duration of the block.

    Args:
        host: Interface to bind; loopback by default.
        port: TCP port; 0 picks a free one.
        slot_ms: Timed slots of this many milliseconds (None: one slot per transaction).

    Yields:
        The devnet, with `url` to give to `AsyncClient`.
    """
    chain = DevnetChain(slot_ms=slot_ms)
    handler = type("DevnetHandler", (_Handler,), {"rpc": _Rpc(chain)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="solana-devnet", daemon=True)
    thread.start()
    try:
        yield SolanaDevnet(chain, f"http://{host}:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def main(argv: list[str] | None = None) -> None:
    """Run a devnet until interrupted: ``python -m fedrelay.adapters.devnet.solana_rpc [--port N]
    [--slot-ms MS] [--program ID=PATH]``."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description="Solana JSON-RPC devnet over LiteSVM")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8899)
    parser.add_argument(
        "--program", action="append", default=[], metavar="ID=PATH", help="deploy a program"
    )
    parser.add_argument(
        "--slot-ms", type=int, default=None, help="wall-clock slots of this many milliseconds"
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    with serve_devnet(args.host, args.port, slot_ms=args.slot_ms) as devnet:
        for spec in args.program:
            program_id, _, path = spec.partition("=")
            devnet.add_program(Pubkey.from_string(program_id), Path(path).read_bytes())
        print(f"solana devnet listening on {devnet.url}", flush=True)
        with suppress(KeyboardInterrupt):
            stop.wait()


if __name__ == "__main__":  # pragma: no cover
    main()
