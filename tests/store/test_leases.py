"""Replica membership and unit leases (``Store.lease_round``, ``Store.leave``), on every store.

Written once as :class:`LeaseContract` and run on memory, SQLite (a file) and
PostgreSQL (a database per test), as :mod:`tests.store.contract` runs the store
contract. ``peer`` is a second replica's store: another store object opened on the
same database for SQLite and PostgreSQL, the same object for memory (its replicas are
tasks of one process). Expiry is real time on each store's clock: the tests use ttls
of a tenth of a second or so and sleep past them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest

from orchestrator.store import _schema
from orchestrator.store.base import Store
from orchestrator.store.memory import MemoryStore
from orchestrator.store.postgres import PostgresStore
from orchestrator.store.sqlite import SqliteStore
from schemas.errors import StoreError
from tests.store._fault_proxy import FaultProxy
from tests.support.postgres import HOST, PORT

StoreFactory = Callable[[], Any]

G = "orders-consumers"
TTL = 5.0  # long enough never to lapse within a test, unless the test sleeps past a short one
SHORT = 0.2


class LeaseContract:
    durable: ClassVar[bool] = False

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("subclasses provide store_factory")

    @pytest.fixture
    async def store(self, store_factory: StoreFactory) -> AsyncIterator[Store]:
        st: Store = store_factory()
        await st.open()
        yield st
        await st.close()

    @pytest.fixture
    async def peer(self, store_factory: StoreFactory, store: Store) -> AsyncIterator[Store]:
        if not self.durable:
            yield store
            return
        st: Store = store_factory()
        await st.open()
        yield st
        await st.close()

    # -- claiming -------------------------------------------------------------------

    async def test_claim_of_a_free_unit(self, store: Store) -> None:
        before = time.time()
        view = await store.lease_round(G, "a", claim=["u1", "u2", "u1"], ttl=TTL)
        assert view.owners == {"u1": "a", "u2": "a"}
        assert view.members == ("a",)
        assert before - 5 < view.now < time.time() + 5  # the store's clock (the server's)
        again = await store.lease_round(G, "a", ttl=TTL)  # held without claiming again
        assert again.owners == {"u1": "a", "u2": "a"}
        assert again.now >= view.now

    async def test_a_unit_held_by_a_live_member_is_not_taken(
        self, store: Store, peer: Store
    ) -> None:
        await store.lease_round(G, "a", claim=["u1"], ttl=TTL)
        view = await peer.lease_round(G, "b", claim=["u1", "u2"], ttl=TTL)
        assert view.owners == {"u1": "a", "u2": "b"}
        assert view.members == ("a", "b")
        view = await store.lease_round(G, "a", claim=["u1", "u2"], ttl=TTL)
        assert view.owners == {"u1": "a", "u2": "b"}

    async def test_an_expired_lease_is_taken_over(self, store: Store, peer: Store) -> None:
        await store.lease_round(G, "a", claim=["u1"], ttl=SHORT)
        await asyncio.sleep(SHORT * 1.5)
        view = await peer.lease_round(G, "b", claim=["u1"], ttl=TTL)
        assert view.owners == {"u1": "b"}
        assert view.members == ("b",)  # a's heartbeat lapsed too
        back = await store.lease_round(G, "a", claim=["u1"], ttl=TTL)  # too late
        assert back.owners == {"u1": "b"}
        assert back.members == ("a", "b")

    async def test_groups_are_apart(self, store: Store, peer: Store) -> None:
        await store.lease_round(G, "a", claim=["u1"], ttl=TTL)
        view = await peer.lease_round("other", "b", claim=["u1"], ttl=TTL)
        assert (view.owners, view.members) == ({"u1": "b"}, ("b",))
        view = await store.lease_round(G, "a", ttl=TTL)
        assert (view.owners, view.members) == ({"u1": "a"}, ("a",))

    # -- giving up ------------------------------------------------------------------

    async def test_release_frees_a_unit_at_once(self, store: Store, peer: Store) -> None:
        await store.lease_round(G, "a", claim=["u1", "u2"], ttl=TTL)
        view = await store.lease_round(G, "a", release=["u1"], ttl=TTL)
        assert view.owners == {"u2": "a"}
        view = await peer.lease_round(G, "b", claim=["u1"], release=["u2"], ttl=TTL)
        assert view.owners == {"u1": "b", "u2": "a"}  # releasing another's lease does nothing

    async def test_a_unit_both_released_and_claimed_stays_held(self, store: Store) -> None:
        await store.lease_round(G, "a", claim=["u1"], ttl=TTL)
        view = await store.lease_round(G, "a", claim=["u1"], release=["u1"], ttl=TTL)
        assert view.owners == {"u1": "a"}

    async def test_leave_drops_the_member_and_its_leases(self, store: Store, peer: Store) -> None:
        await store.lease_round(G, "a", claim=["u1", "u2"], ttl=TTL)
        await peer.lease_round(G, "b", claim=["u3"], ttl=TTL)
        await store.leave(G, "a")
        await store.leave(G, "nobody")  # an unknown member: nothing to do
        view = await peer.lease_round(G, "b", ttl=TTL)
        assert (view.owners, view.members) == ({"u3": "b"}, ("b",))
        view = await peer.lease_round(G, "b", claim=["u1"], ttl=TTL)
        assert view.owners == {"u1": "b", "u3": "b"}

    # -- members --------------------------------------------------------------------

    async def test_members_are_listed_sorted_and_expire(self, store: Store, peer: Store) -> None:
        for name in ("c", "a", "B", "é"):
            await store.lease_round(G, name, ttl=TTL)
        await peer.lease_round(G, "brief", ttl=SHORT)
        view = await store.lease_round(G, "a", ttl=TTL)
        assert view.members == ("B", "a", "brief", "c", "é")  # by code point
        await asyncio.sleep(SHORT * 1.5)
        view = await peer.lease_round(G, "c", ttl=TTL)
        assert view.members == ("B", "a", "c", "é")

    async def test_a_lapsed_member_is_forgotten_after_ten_ttls(
        self, store: Store, peer: Store
    ) -> None:
        """A lapsed lease nobody took is still its member's at its next round (the round
        extends every lease the member holds); once lapsed for more than ten ttls, the
        next round of anyone in the group deletes it, and the member comes back to
        nothing."""
        ttl = 0.1
        await store.lease_round(G, "z", claim=["u1"], ttl=ttl)
        await asyncio.sleep(ttl * 2)
        view = await store.lease_round(G, "z", ttl=ttl)
        assert view.owners == {"u1": "z"}
        await asyncio.sleep(ttl * 13)
        await peer.lease_round(G, "a", ttl=ttl)  # forgets z and its lease
        view = await store.lease_round(G, "z", ttl=TTL)
        assert view.owners == {}
        assert "z" in view.members

    # -- at the same moment ---------------------------------------------------------

    async def test_two_members_claiming_the_same_units_at_once(
        self, store: Store, peer: Store
    ) -> None:
        """Each unit ends held by exactly one, and no two views both call it theirs."""
        units = [f"u{n:02d}" for n in range(16)]
        for attempt in range(8):
            group = f"race{attempt}"
            one, two = await asyncio.gather(
                store.lease_round(group, "a", claim=units, ttl=TTL),
                peer.lease_round(group, "b", claim=units[::-1], ttl=TTL),
            )
            mine_a = {u for u, m in one.owners.items() if m == "a"}
            mine_b = {u for u, m in two.owners.items() if m == "b"}
            assert mine_a.isdisjoint(mine_b)
            assert mine_a | mine_b == set(units)
            final = await store.lease_round(group, "a", ttl=TTL)
            assert final.owners == {u: "a" if u in mine_a else "b" for u in units}
            assert final.members == ("a", "b")

    # -- misuse ---------------------------------------------------------------------

    async def test_a_ttl_must_be_positive(self, store: Store) -> None:
        for ttl in (0.0, -1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="ttl"):
                await store.lease_round(G, "a", ttl=ttl)

    async def test_use_before_open_raises_store_error(self, store_factory: StoreFactory) -> None:
        st: Store = store_factory()
        with pytest.raises(StoreError) as info:
            await st.lease_round(G, "a", ttl=TTL)
        assert not info.value.retryable
        with pytest.raises(StoreError):
            await st.leave(G, "a")

    # -- schema ---------------------------------------------------------------------

    async def test_a_version_4_database_is_migrated_and_leases_work(
        self, store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        if not self.durable:
            pytest.skip("this store forgets everything on close")
        assert _schema.SCHEMA_VERSION == 5
        monkeypatch.setattr(_schema, "SCHEMA_VERSION", 4)
        old: Any = store_factory()
        await old.open()
        try:
            assert old.info().schema_version == 4
            with pytest.raises(StoreError, match="leases|members"):  # no such table yet
                await old.lease_round(G, "a", ttl=TTL)
        finally:
            await old.close()
        monkeypatch.undo()

        new: Any = store_factory()
        await new.open()
        try:
            assert new.info().schema_version == 5
            view = await new.lease_round(G, "a", claim=["u1"], ttl=TTL)
            assert (view.owners, view.members) == ({"u1": "a"}, ("a",))
        finally:
            await new.close()


class TestMemoryLeases(LeaseContract):
    durable = False

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        return MemoryStore


class TestSqliteLeases(LeaseContract):
    durable = True

    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        path = tmp_path / "sagawire.db"
        return lambda: SqliteStore.from_url(f"sqlite:///{path}")


@pytest.mark.postgres
class TestPostgresLeases(LeaseContract):
    durable = True

    @pytest.fixture
    def store_factory(self, database_url: str) -> StoreFactory:
        return lambda: PostgresStore.from_url(database_url)


# -- when the database cannot be reached: retryable, and the same store goes on ----------


async def test_sqlite_write_lock_held_elsewhere_is_retryable(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(str(path), busy_timeout_ms=50)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        for call in (store.lease_round(G, "a", ttl=TTL), store.leave(G, "a")):
            with pytest.raises(StoreError) as info:
                await call
            assert info.value.retryable
        other.execute("ROLLBACK")
        view = await store.lease_round(G, "a", claim=["u1"], ttl=TTL)
        assert view.owners == {"u1": "a"}
    finally:
        other.close()
        await store.close()


@pytest.mark.postgres
async def test_postgres_unreachable_is_retryable(database_url: str) -> None:
    proxy = await FaultProxy(HOST, PORT).start()
    parts = urlsplit(database_url)
    user = parts.netloc.rpartition("@")[0]
    limits = "connect_timeout=1&command_timeout=1&acquire_timeout=1"
    store = PostgresStore.from_url(
        parts._replace(netloc=f"{user}@127.0.0.1:{proxy.port}", query=limits).geturl()
    )
    await store.open()
    try:
        await store.lease_round(G, "a", claim=["u1"], ttl=TTL)
        await proxy.down()
        for call in (store.lease_round(G, "a", ttl=TTL), store.leave(G, "a")):
            started = time.monotonic()
            with pytest.raises(StoreError) as info:
                await call
            assert info.value.retryable
            assert time.monotonic() - started < 5.0
        await proxy.up()
        view = await store.lease_round(G, "a", claim=["u2"], ttl=TTL)
        assert view.owners == {"u1": "a", "u2": "a"}
    finally:
        await store.close()
        await proxy.close()
