"""Fakes for `fedrelay worker run` up to its node: a chain connection that connects to nothing
and a node that does what the test says, so that what the command builds around the node (its
trust policy, its proposal watch) is tested on its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from fedrelay.commands import worker as worker_commands

#: The fake node's worker key.
FAKE_WORKER_KEY = b"\x07" * 32


def fake_worker_node(
    monkeypatch: pytest.MonkeyPatch,
    run: Callable[[], Awaitable[None]],
    *,
    seen: dict[str, Any] | None = None,
    stops: list[str] | None = None,
) -> None:
    """Make `worker run` connect to nothing and run a fake node whose ``run`` is ``run``.

    Args:
        monkeypatch: The test's.
        run: What the node does; the command ends when it returns.
        seen: Receives the node's keyword arguments (``trust`` and the rest).
        stops: Gets ``"node"`` appended each time the node is asked to stop.
    """

    @asynccontextmanager
    async def connected(*args: object) -> AsyncIterator[Any]:
        yield SimpleNamespace(signer=SimpleNamespace(worker=SimpleNamespace(key=FAKE_WORKER_KEY)))

    @asynccontextmanager
    async def node(*args: object, **kwargs: Any) -> AsyncIterator[Any]:
        if seen is not None:
            seen.update(kwargs)

        def request_stop() -> None:
            if stops is not None:
                stops.append("node")

        yield SimpleNamespace(request_stop=request_stop, run=run)

    monkeypatch.setattr(worker_commands, "_connected", connected)
    monkeypatch.setattr("fedrelay.worker.process.worker_node", node)
