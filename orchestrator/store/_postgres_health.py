"""What stops a PostgreSQL store, said plainly: driver errors as StoreErrors, and ``ping``'s probe.

Beside :mod:`orchestrator.store._sqlite_health`. A database that went away shows as a
refused or reset connection (``OSError``, SQLSTATE class 08), as a server shutting
down or out of connections (57, 53), or, when the network stalls, only as a time
limit passing (``TimeoutError``): all retryable, and said as such, with the limits
that applied, so the message tells down from stalled. An error in the SQL or the
data (any other SQLSTATE) is not retryable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import asyncpg

from schemas.errors import StoreError

__all__ = ["probe", "translated"]

# SQLSTATE classes worth retrying: connection, transaction rollback (serialization,
# deadlock), insufficient resources, operator intervention (shutdown, not ready).
_RETRYABLE_CLASSES = ("08", "40", "53", "57")


@contextlib.contextmanager
def translated(where: str, operation: str, limits: str) -> Iterator[None]:
    """Driver errors raised inside as StoreErrors naming the store (``where``), the
    ``operation`` and, for a timeout, the ``limits`` in force; retryable or not."""
    try:
        yield
    except asyncpg.PostgresError as exc:
        state = getattr(exc, "sqlstate", "") or ""
        raise StoreError(
            f"{where}: {operation} failed: {exc} (SQLSTATE {state})",
            retryable=state[:2] in _RETRYABLE_CLASSES,
        ) from exc
    except TimeoutError as exc:  # before OSError, of which it is one
        raise StoreError(
            f"{where}: {operation} got no answer in time ({limits}): the database, or "
            "the network to it, is down or stalled",
            retryable=True,
        ) from exc
    except (OSError, asyncpg.InterfaceError) as exc:
        raise StoreError(f"{where}: {operation} failed: {exc!r}", retryable=True) from exc


async def probe(pool: Any, *, limit: float, deadline: float) -> None:
    """``SELECT 1`` on a connection of ``pool`` (acquiring and querying each within
    ``limit`` seconds); ``TimeoutError`` if there is no answer within ``deadline``.

    A hard limit: the query runs as a task of its own, left to end in the background
    when it is late, since giving a stalled connection up (asking the server to cancel,
    then dropping it) takes asyncpg up to a few more limits."""

    async def select_1() -> None:
        async with pool.acquire(timeout=limit) as conn:
            await conn.fetchval("SELECT 1", timeout=limit)

    task = asyncio.ensure_future(select_1())
    try:
        done, _ = await asyncio.wait({task}, timeout=deadline)
        if not done:
            raise TimeoutError
        task.result()
    finally:
        if not task.done():
            task.cancel()
            task.add_done_callback(_consume)


def _consume(task: asyncio.Future[None]) -> None:
    """Retrieve the outcome of a task given up on, so asyncio does not report it."""
    if not task.cancelled():
        task.exception()
