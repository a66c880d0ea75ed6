"""What asyncio reports through the loop's exception handler during a test.

"Task was destroyed but it is pending" and "exception was never retrieved" never
raise: they are reported to the handler, often from a finaliser well after the
cause. Tests that pin such leaks collect the reports and assert there are none."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["loop_reports"]


@asynccontextmanager
async def loop_reports() -> AsyncIterator[list[str]]:
    """Collect the messages reported to the running loop's exception handler inside the
    block, then collect garbage (finalisers report late) before handing the list over."""
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    try:
        yield reported
        gc.collect()
        await asyncio.sleep(0.1)
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
