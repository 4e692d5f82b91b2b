"""The chain registry: one binding per chain kind, so nothing above the adapters asks "which kind?".

A chains file entry names its ``kind`` (``"evm"``, ``"solana"``); :func:`binding` gives the
:class:`ChainBinding` of that kind, which knows everything kind-specific the relayer needs:

- ``connect``: one RPC client for the chain, with its readiness probe and ``close``;
- ``source`` / ``destination``: the chain's :class:`~fedrelay.ports.relay.SourceChain` and
  :class:`~fedrelay.ports.relay.DestinationChain` adapters;
- ``parse_key``: the signer key of that kind, from a key file's text
  (:mod:`fedrelay.protocol.keys`);
- ``signer_account``: the signer's account for nonce repair, on chains that have nonces.

Adding a chain kind is adding a binding here; the relayer's composition root looks kinds up and
never branches on them. Client libraries are imported when a chain of their kind is connected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from fedrelay.ports.relay import DestinationChain, SignerAccount, SourceChain
from fedrelay.protocol import keys
from fedrelay.protocol.redact import redact_text, redact_url


class ChainBindingError(ValueError):
    """A chain is described in a way its kind cannot serve (the message says how)."""


class ChainUnreachable(ConnectionError):
    """A chain cannot be reached at start (or has no such contract); the message says which."""


@dataclass(frozen=True)
class ChainSpec:
    """What a binding needs to know of one chain (an entry of the chains file).

    Attributes:
        name: The chain's name (for messages).
        wormhole_chain_id: Its Wormhole chain id.
        rpc_url: Its RPC endpoint.
        address: The contract (EVM) or program id (Solana) the relayer reads and delivers to.
        finality: The finality messages are read at (a tag, a commitment or confirmations).
    """

    name: str
    wormhole_chain_id: int
    rpc_url: str
    address: str
    finality: str | int


class ChainConnection(Protocol):
    """One RPC client of a chain, probed by ``/readyz``."""

    client: Any

    async def probe(self) -> bool:
        """A real round trip to the chain."""
        ...

    async def close(self) -> None:
        """Close the client."""
        ...


class ChainBinding(Protocol):
    """Everything kind-specific about chains of one kind."""

    kind: str

    def connect(self, spec: ChainSpec) -> ChainConnection:
        """A client of the chain (no round trip yet)."""
        ...

    async def source(self, connection: ChainConnection, spec: ChainSpec) -> SourceChain:
        """The chain's source adapter.

        Raises:
            ChainUnreachable: The chain does not answer, or has no such contract.
            ChainBindingError: The chain is not what the spec says.
        """
        ...

    async def destination(
        self, connection: ChainConnection, spec: ChainSpec, key: str | bytes
    ) -> DestinationChain:
        """The chain's destination adapter, signing with `key`.

        Raises:
            ChainUnreachable: The chain does not answer.
        """
        ...

    def parse_key(self, text: str, where: str) -> str | bytes:
        """A signer key of this kind from a key file's text.

        Raises:
            KeyFileError: Not a key of this kind.
        """
        ...

    def signer_account(
        self, destination: DestinationChain, key: str | bytes
    ) -> SignerAccount | None:
        """The signer's account for nonce repair; None on chains without nonces."""
        ...


# --- EVM ------------------------------------------------------------------------------------------


class _EvmConnection:
    def __init__(self, rpc_url: str) -> None:
        from fedrelay.adapters.evm.rpc import connect

        self.client: Any = connect(rpc_url)

    async def probe(self) -> bool:
        return bool(await self.client.eth.block_number >= 0)

    async def close(self) -> None:
        await self.client.provider.disconnect()


class EvmBinding:
    """EVM chains (``fedrelay.adapters.evm``)."""

    kind = "evm"

    def connect(self, spec: ChainSpec) -> ChainConnection:
        return _EvmConnection(spec.rpc_url)

    async def source(self, connection: ChainConnection, spec: ChainSpec) -> SourceChain:
        from fedrelay.adapters.evm.relay import EvmSource, parse_finality

        finality = parse_finality(spec.finality)
        try:
            return await EvmSource.of_receiver(
                connection.client, spec.wormhole_chain_id, spec.address, finality
            )
        except Exception as exc:
            raise ChainUnreachable(
                f"chain {spec.name!r}: cannot read the core of the contract at "
                f"{spec.address} through {redact_url(spec.rpc_url)}: {type(exc).__name__}: "
                f"{redact_text(str(exc), [spec.rpc_url])}"
            ) from None

    async def destination(
        self, connection: ChainConnection, spec: ChainSpec, key: str | bytes
    ) -> DestinationChain:
        from fedrelay.adapters.evm.relay import EvmDestination

        try:
            evm_chain_id = int(await connection.client.eth.chain_id)
        except Exception as exc:
            raise ChainUnreachable(
                f"chain {spec.name!r}: cannot reach {redact_url(spec.rpc_url)}: "
                f"{type(exc).__name__}: {redact_text(str(exc), [spec.rpc_url])}"
            ) from None
        return EvmDestination(
            connection.client, spec.wormhole_chain_id, spec.address, key, evm_chain_id
        )

    def parse_key(self, text: str, where: str) -> str | bytes:
        return keys.parse_evm_key(text, where)

    def signer_account(
        self, destination: DestinationChain, key: str | bytes
    ) -> SignerAccount | None:
        from fedrelay.adapters.evm.nonces import EvmSignerAccount
        from fedrelay.adapters.evm.relay import EvmDestination

        assert isinstance(destination, EvmDestination)
        assert isinstance(key, str)
        return EvmSignerAccount(destination, key)


# --- Solana ---------------------------------------------------------------------------------------


class _SolanaConnection:
    def __init__(self, rpc_url: str) -> None:
        from solana.rpc.async_api import AsyncClient

        self.client: Any = AsyncClient(rpc_url)

    async def probe(self) -> bool:
        return bool((await self.client.get_slot()).value >= 0)

    async def close(self) -> None:
        await self.client.close()


class SolanaBinding:
    """Solana (``fedrelay.adapters.solana``): the worker program is source and destination."""

    kind = "solana"

    def connect(self, spec: ChainSpec) -> ChainConnection:
        return _SolanaConnection(spec.rpc_url)

    async def source(self, connection: ChainConnection, spec: ChainSpec) -> SourceChain:
        from solana.rpc.commitment import Commitment
        from solders.pubkey import Pubkey

        from fedrelay.adapters.solana.relay import SolanaSource

        source = SolanaSource(
            connection.client, Pubkey.from_string(spec.address), Commitment(str(spec.finality))
        )
        if source.chain_id != spec.wormhole_chain_id:
            raise ChainBindingError(
                f"chain {spec.name!r}: the Solana worker program speaks as Wormhole chain "
                f"{source.chain_id}, the chains file says {spec.wormhole_chain_id}"
            )
        return source

    async def destination(
        self, connection: ChainConnection, spec: ChainSpec, key: str | bytes
    ) -> DestinationChain:
        from solders.keypair import Keypair
        from solders.pubkey import Pubkey

        from fedrelay.adapters.solana.client import WorkerProgramClient
        from fedrelay.adapters.solana.relay import SolanaDestination

        program = WorkerProgramClient(connection.client, Pubkey.from_string(spec.address))
        payer = Keypair.from_bytes(bytes(key) if isinstance(key, bytes) else b"")
        return SolanaDestination(program, payer)

    def parse_key(self, text: str, where: str) -> str | bytes:
        return keys.parse_solana_keypair(text, where)

    def signer_account(
        self, destination: DestinationChain, key: str | bytes
    ) -> SignerAccount | None:
        return None  # a transaction carries a recent blockhash, not an account nonce


# --- the registry ---------------------------------------------------------------------------------

BINDINGS: dict[str, ChainBinding] = {b.kind: b for b in (EvmBinding(), SolanaBinding())}


def binding(kind: str) -> ChainBinding:
    """The binding of chains of `kind`.

    Raises:
        ChainBindingError: No binding serves that kind.
    """
    try:
        return BINDINGS[kind]
    except KeyError:
        raise ChainBindingError(
            f"no chain binding for kind {kind!r}; known: {', '.join(sorted(BINDINGS))}"
        ) from None
