"""One EVM chain as the adapter sees it: a web3 connection, a signing account, and transactions
whose reverts come back as the adapter's `ContractRevert` errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress, Hash32
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError
from web3.types import TxReceipt

from fedrelay.adapters.evm.artifacts import CONTRACT_NAMES, load_artifact
from fedrelay.adapters.evm.errors import EvmError, TransactionFailed
from fedrelay.adapters.evm.reverts import RevertDecoder, revert_data

DEFAULT_RECEIPT_TIMEOUT = 60.0


def first_block_reaching(
    timestamp_of: Callable[[int], int], timestamp: int, low: int, high: int
) -> int:
    """The first block of ``low``..``high`` whose timestamp is at least ``timestamp``, or
    ``high`` when none before it is: a binary search, since timestamps never decrease along a
    chain (``timestamp_of`` reads a block's; ``high`` itself is never read)."""
    while low < high:
        middle = (low + high) // 2
        if timestamp_of(middle) >= timestamp:
            high = middle
        else:
            low = middle + 1
    return low


class Signer:
    """A private key that signs transactions. Its repr shows the address only."""

    __slots__ = ("_account",)

    def __init__(self, private_key: str | bytes) -> None:
        self._account: LocalAccount = Account.from_key(private_key)

    @property
    def address(self) -> ChecksumAddress:
        """The checksummed address."""
        return self._account.address

    def sign(self, transaction: dict[str, Any]) -> bytes:
        """Sign a transaction dict and return its raw bytes."""
        return bytes(self._account.sign_transaction(transaction).raw_transaction)

    def sign_hash(self, digest: bytes) -> tuple[int, int, int]:
        """Sign a 32-byte digest as it is (no message prefix): ``(r, s, v)``, ``s`` low, ``v``
        27 or 28. For digests a contract recovers with ``ecrecover``, such as EIP-712 ones."""
        if len(digest) != 32:
            raise ValueError(f"a digest is 32 bytes, got {len(digest)}")
        signed = self._account.unsafe_sign_hash(Hash32(digest))
        return int(signed.r), int(signed.s), int(signed.v)

    def __repr__(self) -> str:
        return f"Signer(address={self.address})"


GAS_MARGIN_PERCENT = 125
"""Gas limit sent, as a percentage of the node's estimate."""


class EvmChain:
    """A web3 connection plus the decoder for fedrelay's contract errors."""

    def __init__(self, rpc_url: str, receipt_timeout: float = DEFAULT_RECEIPT_TIMEOUT) -> None:
        self.w3 = Web3(Web3.HTTPProvider(rpc_url))
        self.receipt_timeout = receipt_timeout
        self.decoder = RevertDecoder(load_artifact(name).abi for name in CONTRACT_NAMES)

    @property
    def chain_id(self) -> int:
        """The EVM chain id (not the Wormhole chain id)."""
        return int(self.w3.eth.chain_id)

    def call(self, function: ContractFunction, block: int | None = None) -> Any:
        """Run a view call (at ``block`` when given, else the latest); a revert raises the
        decoded `ContractRevert`."""
        try:
            return function.call() if block is None else function.call(block_identifier=block)
        except ContractLogicError as exc:
            raise self._decoded(exc) from exc

    def transact(self, signer: Signer, function: ContractFunction, value: int = 0) -> TxReceipt:
        """Send `function` as a transaction from `signer` and wait for its receipt.

        Gas is estimated first, so a call that would revert raises the decoded
        `ContractRevert` without sending anything.

        Raises:
            ContractRevert: The call reverts (decoded custom error).
            TransactionFailed: The transaction was mined with status 0.
        """
        params: dict[str, Any] = {"from": signer.address, "value": value}
        try:
            transaction = dict(function.build_transaction(params))  # type: ignore[arg-type]
        except ContractLogicError as exc:
            raise self._decoded(exc) from exc
        estimate = transaction.get("gas")
        if isinstance(estimate, int):
            # The estimate is the least gas the call succeeded with at the estimating block;
            # mined a block later (another timestamp, warm or cold storage) it can run out just
            # short of the end, so leave a margin (unused gas is not charged).
            transaction["gas"] = estimate * GAS_MARGIN_PERCENT // 100
        return self.send(signer, transaction)

    def send(self, signer: Signer, transaction: dict[str, Any]) -> TxReceipt:
        """Sign and broadcast a prepared transaction; wait for a successful receipt."""
        transaction.setdefault("chainId", self.chain_id)
        transaction["nonce"] = self.w3.eth.get_transaction_count(signer.address, "pending")
        tx_hash = self.w3.eth.send_raw_transaction(signer.sign(transaction))
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.receipt_timeout)
        if receipt["status"] != 1:
            raise TransactionFailed(f"transaction 0x{bytes(tx_hash).hex()} reverted on chain")
        return receipt

    def _decoded(self, exc: ContractLogicError) -> EvmError:
        data = revert_data(exc.data)
        if data is None:
            return TransactionFailed(f"call reverted without decodable data: {exc}")
        return self.decoder.decode(data)
