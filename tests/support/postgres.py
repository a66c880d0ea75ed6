"""A fresh PostgreSQL database per test, dropped afterwards (``database_url`` fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.support.services import require, unique

HOST, PORT = "127.0.0.1", 5432


async def admin_connection() -> tuple[asyncpg.Connection, str]:
    """A connection to the ``postgres`` database, as the first role that works."""
    error: Exception | None = None
    for user in ("postgres", "root"):
        try:
            conn = await asyncpg.connect(host=HOST, port=PORT, user=user, database="postgres")
            return conn, user
        except (asyncpg.PostgresError, OSError) as exc:
            error = exc
    raise RuntimeError(f"no PostgreSQL role works on {HOST}:{PORT}: {error}")


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    require("postgres", HOST, PORT)
    admin, user = await admin_connection()
    name = unique("sw_")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{user}@{HOST}:{PORT}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
