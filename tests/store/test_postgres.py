"""The store contract against PostgreSQL; each test owns a fresh database.

Needs a server on 127.0.0.1:5432 with trust auth for ``postgres`` (or the OS
user): skipped on a laptop without one, a failure under ``CI=true``.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from orchestrator.store import open_store
from orchestrator.store._schema import SCHEMA_VERSION
from orchestrator.store.base import Outcome, UnitOfWork
from orchestrator.store.postgres import PostgresStore
from schemas.errors import SchemaVersionError, StoreError
from tests.store.contract import StoreContract, StoreFactory, inst, step

pytestmark = pytest.mark.postgres


class TestPostgresStore(StoreContract):
    durable = True

    @pytest.fixture
    def store_factory(self, database_url: str) -> StoreFactory:
        return lambda: PostgresStore.from_url(database_url)


def test_from_url() -> None:
    store = PostgresStore.from_url("postgres://u:secret@db:6543/sw?pool_max=3&sslmode=disable")
    assert store.pool_max == 3
    assert store.dsn == "postgres://u:secret@db:6543/sw?sslmode=disable"
    assert store.location == "u@db:6543/sw"
    assert "secret" not in str(store.info())
    assert isinstance(open_store("postgresql://u@h/db"), PostgresStore)


async def test_newer_schema_is_refused(database_url: str) -> None:
    store = PostgresStore.from_url(database_url)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(database_url)
    await conn.execute("UPDATE sagawire_meta SET value = '999' WHERE key = 'schema_version'")
    await conn.close()
    with pytest.raises(
        SchemaVersionError, match=rf"version 999.*supports up to version {SCHEMA_VERSION}\b"
    ):
        await store.open()


async def test_unreachable_server_is_a_retryable_store_error() -> None:
    store = PostgresStore.from_url("postgresql://postgres@127.0.0.1:1/nope")
    with pytest.raises(StoreError) as info:
        await store.open()
    assert info.value.retryable


async def test_missing_database_is_not_retryable(database_url: str) -> None:
    store = PostgresStore.from_url(database_url + "_missing")
    with pytest.raises(StoreError) as info:
        await store.open()
    assert not info.value.retryable


async def test_two_writers_race_for_the_same_instance(database_url: str) -> None:
    """Two orchestrators on one database: exactly one wins each contested unit."""
    one, two = PostgresStore.from_url(database_url), PostgresStore.from_url(database_url)
    await one.open()
    await two.open()
    try:
        for n in range(20):
            cid = f"race{n}"
            results = await asyncio.gather(
                one.commit([step(cid, 1), step("own-one", n + 1)]),
                two.commit([UnitOfWork(instance=inst(cid, 1, state="other"))]),
            )
            contested = sorted([results[0][0], results[1][0]], key=lambda o: o.value)
            assert contested == [Outcome.COMMITTED, Outcome.CONFLICT]
            assert results[0][1] == Outcome.COMMITTED
            # The same message delivered to both: one commits, the other is a duplicate.
            dup = await asyncio.gather(one.commit([step(cid, 2)]), two.commit([step(cid, 2)]))
            assert sorted(o[0].value for o in dup) == ["committed", "conflict"] or sorted(
                o[0].value for o in dup
            ) == ["committed", "duplicate"]
            assert (await one.load([("order", cid)]))[("order", cid)].version == 2
    finally:
        await one.close()
        await two.close()
