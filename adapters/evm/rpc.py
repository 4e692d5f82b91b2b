"""An asynchronous JSON-RPC connection to an EVM node that keeps its HTTP connections open.

web3's :class:`~web3.providers.rpc.AsyncHTTPProvider` looks its HTTP session up in a cache for
every request, under a thread lock taken through a thread pool, and its default session closes
the TCP connection after each response (``force_close``). A relayer makes thousands of small
requests a minute to the same node (guardians re-reading receipts, the deliverer estimating,
sending and confirming), so both costs land on every message: profiling the deliver stage showed
most of its CPU time in that lock and in new connections rather than in the relayer's own work.

:class:`KeepAliveHTTPProvider` keeps web3's request path (encoding, retries, batch requests,
middleware) and replaces only where the session comes from: one ``aiohttp`` session per event
loop, made on first use, with a pool of keep-alive connections (:data:`CONNECTIONS` at most).
``disconnect`` closes it.

:func:`connect` also leaves out web3's validation middleware: it asks the node for its chain id
before every call or estimate that names one (one more round trip each). The adapters sign with
the chain id they were configured with and check it against the node once, at start.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from web3 import AsyncWeb3
from web3._utils.http_session_manager import HTTPSessionManager
from web3.providers.rpc import AsyncHTTPProvider

#: The most connections one provider keeps open to its node (requests beyond wait their turn).
CONNECTIONS = 64


class _OneSessionPerLoop(HTTPSessionManager):
    """web3's session manager with one kept-alive session per event loop and no lock."""

    def __init__(self, timeout_s: float, connections: int) -> None:
        super().__init__()
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._connections = connections
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    async def async_cache_and_return_session(
        self,
        endpoint_uri: Any,
        session: aiohttp.ClientSession | None = None,
        request_timeout: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        current = self._sessions.get(id(loop))
        if current is None or current.closed:
            current = session or aiohttp.ClientSession(
                raise_for_status=True,
                timeout=request_timeout or self._timeout,
                connector=aiohttp.TCPConnector(limit=self._connections),
            )
            self._sessions[id(loop)] = current
        return current

    async def close_sessions(self) -> None:
        """Close this loop's session (others belong to loops that may be gone)."""
        session = self._sessions.pop(id(asyncio.get_running_loop()), None)
        if session is not None and not session.closed:
            await session.close()


class KeepAliveHTTPProvider(AsyncHTTPProvider):
    """web3's asynchronous HTTP provider on kept-alive connections (see the module docstring)."""

    def __init__(self, endpoint_uri: str, timeout_s: float, connections: int = CONNECTIONS) -> None:
        super().__init__(endpoint_uri, request_kwargs={"timeout": aiohttp.ClientTimeout(timeout_s)})
        self._sessions = _OneSessionPerLoop(timeout_s, connections)
        self._request_session_manager = self._sessions

    async def disconnect(self) -> None:
        await self._sessions.close_sessions()


def connect(rpc_url: str, timeout_s: float = 10.0) -> AsyncWeb3[Any]:
    """An asynchronous web3 connection to `rpc_url` with a per-request time limit."""
    w3 = AsyncWeb3(KeepAliveHTTPProvider(rpc_url, timeout_s))
    w3.middleware_onion.remove("validation")
    return w3
