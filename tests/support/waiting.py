"""Poll a condition in async tests, with a deadline instead of a fixed sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["wait_until"]


async def wait_until(cond: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Return once ``await cond()`` is true; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
