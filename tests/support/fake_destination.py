"""An EVM-like destination chain kept in memory, for the deliver stage's unit tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from fedrelay.ports.relay import Failure, FailureKind, SignedDelivery, TxState, TxStatus
from fedrelay.protocol.wormhole import keccak256, parse_vaa

CHAIN = 4


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it."""


class FakeChainError(Exception):
    """An error of the fake chain, of a known kind."""

    def __init__(self, kind: FailureKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass
class _Tx:
    digest: bytes
    nonce: int
    fee: int
    state: TxState = TxState.PENDING
    failure: Failure | None = None


@dataclass
class FakeDestination:
    """An EVM-like destination kept in memory.

    It simulates chain faults that cannot be produced for real here: nonces taken by someone
    else, underpriced bids, transactions that never get mined, out-of-gas and reverts, an
    endpoint that is down, and a process killed between broadcast and bookkeeping.
    """

    chain_id: int = CHAIN
    signer: str = "0xrelayer"
    nonce: int = 0  # the next nonce the chain accepts
    mining: bool = True  # broadcast transactions are mined at once
    min_fee: int = 0  # bids below this are refused as underpriced
    stale_nonce_reads: int = 0  # pending_nonce() answers this many times with an old value
    down: int = 0  # calls to fail with a connection error
    revert: dict[bytes, Failure] = field(default_factory=dict)  # digest -> what mining says
    kill_before_send: int = 0  # broadcasts to kill before the chain sees them
    kill_after_send: int = 0  # broadcasts to kill after the chain took them
    consumed: set[bytes] = field(default_factory=set)
    applied: list[bytes] = field(default_factory=list)  # digests applied, in order
    txs: dict[str, _Tx] = field(default_factory=dict)
    prepared: list[SignedDelivery] = field(default_factory=list)
    broadcasts: list[str] = field(default_factory=list)

    def _reachable(self) -> None:
        if self.down:
            self.down -= 1
            raise ConnectionRefusedError("connection refused")

    async def is_consumed(self, vaa: bytes) -> bool:
        self._reachable()
        return parse_vaa(vaa).digest in self.consumed

    async def finish(self, vaa: bytes) -> None:
        self._reachable()

    async def pending_nonce(self) -> int | None:
        self._reachable()
        pending = [tx.nonce for tx in self.txs.values() if tx.state == TxState.PENDING]
        if self.stale_nonce_reads:
            self.stale_nonce_reads -= 1
            return self.nonce - 1
        return max([self.nonce - 1, *pending]) + 1

    async def prepare(self, vaa: bytes, nonce: int | None, fee_level: int) -> SignedDelivery:
        self._reachable()
        assert nonce is not None
        fee = 100 * (125**fee_level) // (100**fee_level)  # +25% per level
        raw = json.dumps({"vaa": vaa.hex(), "nonce": nonce, "fee": fee}).encode()
        signed = SignedDelivery("0x" + keccak256(raw).hex(), raw, nonce, fee)
        self.prepared.append(signed)
        return signed

    async def broadcast(self, delivery: SignedDelivery) -> None:
        self._reachable()
        if self.kill_before_send:
            self.kill_before_send -= 1
            raise Killed
        body = json.loads(delivery.raw)
        nonce, fee = body["nonce"], body["fee"]
        if nonce < self.nonce:
            raise FakeChainError(FailureKind.NONCE_TOO_LOW, f"nonce too low: {nonce}")
        if fee < self.min_fee:
            raise FakeChainError(FailureKind.UNDERPRICED, "replacement transaction underpriced")
        self.broadcasts.append(delivery.tx_id)
        digest = parse_vaa(bytes.fromhex(body["vaa"])).digest
        self.txs.setdefault(delivery.tx_id, _Tx(digest, nonce, fee))
        if self.mining:
            self.mine()
        if self.kill_after_send:
            self.kill_after_send -= 1
            raise Killed

    def mine(self) -> None:
        """Include pending transactions in nonce order (one per nonce, highest fee wins)."""
        while True:
            ready = [
                (tx_id, tx)
                for tx_id, tx in self.txs.items()
                if tx.state == TxState.PENDING and tx.nonce == self.nonce
            ]
            if not ready:
                return
            tx_id, tx = max(ready, key=lambda item: item[1].fee)
            self.nonce += 1
            for other in self.txs.values():
                if other is not tx and other.nonce == tx.nonce and other.state == TxState.PENDING:
                    other.state = TxState.UNKNOWN  # dropped: its nonce was taken
            self._apply(tx_id, tx)

    def _apply(self, tx_id: str, tx: _Tx) -> None:
        """What an included transaction does."""
        if tx.digest in self.consumed:
            tx.state = TxState.FAILED
            tx.failure = Failure(FailureKind.ALREADY_CONSUMED, f"AlreadyConsumed({tx_id})")
        elif tx.digest in self.revert:
            tx.state, tx.failure = TxState.FAILED, self.revert[tx.digest]
        else:
            tx.state = TxState.CONFIRMED
            self.consumed.add(tx.digest)
            self.applied.append(tx.digest)

    async def status(self, tx_id: str) -> TxStatus:
        self._reachable()
        tx = self.txs.get(tx_id)
        if tx is None:
            return TxStatus(TxState.UNKNOWN)
        return TxStatus(tx.state, tx.failure)

    def classify(self, error: Exception) -> Failure:
        if isinstance(error, FakeChainError):
            return Failure(error.kind, str(error))
        if isinstance(error, ConnectionError):
            return Failure(FailureKind.UNAVAILABLE, str(error))
        return Failure(FailureKind.OTHER, str(error))
