"""Waiting on the chains and services of the demo: poll a condition until it holds or time runs out.

Chains and the relayer offer no event the demo could await, so every wait is a poll of the
condition itself (never a fixed sleep), and a wait that runs out names what it was waiting for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fedrelay.demo.settings import DemoError


async def until(
    check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, interval: float = 0.5
) -> None:
    """Return once ``check()`` holds; :class:`DemoError` naming ``what`` after ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            while not await check():  # noqa: ASYNC110 - chains have no event to wait on
                await asyncio.sleep(interval)
    except TimeoutError:
        raise DemoError(f"timed out after {timeout_s:.0f}s waiting for {what}") from None
