"""Replica membership and unit leases (``Store.lease_round``, ``Store.leave``) in SQL.

Several sidecars sharing one store divide a group's *units* (partition consumers)
between them: each runs a lease round about once a second, which records its
heartbeat, gives up the units it ``release``-s, takes the ``claim``-ed units nobody
holds, extends the leases it holds, and reads back who holds what. The rules, which
the memory store applies to dicts, are the same everywhere:

* a lease or heartbeat is unexpired while ``expires_at >= now``; a round sets the
  member's heartbeat and every lease it holds to ``now + ttl``;
* a claim takes a unit nobody holds unexpired, or one the member holds already; of two
  members claiming a free unit at once, exactly one gets it;
* ``release`` comes before ``claim``: a unit in both ends held (:func:`requests`);
* members, and leases, expired for more than :data:`FORGET_AFTER` ttls are deleted, so
  a replica that went away for good leaves nothing behind.

Why a round is not on the hot path: it runs once a second per replica, not per
message, and reads only its group's rows (a row per replica and per unit); so it
is written for atomicity and few round trips, not for batch throughput.

SQLite (:func:`sqlite_round`): the statements run in order inside ``BEGIN
IMMEDIATE``, whose write lock makes the round atomic against every other connection
to the file; the clock is read once the lock is held. No round trips to count: the
database is in the process.

PostgreSQL (:data:`PG_ROUND`): one statement, so one round trip, and nothing held
between statements. Not ``BEGIN`` ... ``COMMIT`` around several: a replica whose
network stalls mid-transaction would stay "idle in transaction" on the server, its
row locks held until TCP gives up, and every other replica claiming one of its units
would wait on them past its own ttl. One statement commits or aborts on the server
by itself. Its parts are data-modifying ``WITH`` queries, which all see the snapshot
the statement started with and must not touch a row twice, so each touches its own
rows: the claimed units (upserted, in sorted order so two rounds lock them in the
same order), the member's other leases (released or extended), the others' leases
long expired (deleted). The clock is the server's (``clock_timestamp()``, read once),
so replicas on hosts whose clocks disagree agree on expiry. The view it returns is
the starting snapshot with the round's own writes applied: a unit another replica
took in the same instant may show as unheld until the next round (never as this
member's).
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from orchestrator.store._sqlite_rows import chunks, flat, marks, tuples
from orchestrator.store.base import LeaseView

__all__ = [
    "FORGET_AFTER",
    "PG_LEAVE",
    "PG_ROUND",
    "check_ttl",
    "requests",
    "sqlite_leave",
    "sqlite_round",
    "view_from_pg_rows",
]

FORGET_AFTER = 10
"""Ttls after its expiry that a member's heartbeat, or a lease, is deleted: long enough
that a replica back from a pause finds its row, short enough that replicas that went
away for good (a new name at each start) do not pile up."""


def check_ttl(ttl: float) -> float:
    """``ttl`` as a float; ValueError unless it is a positive, finite number of seconds."""
    ttl = float(ttl)
    if not 0 < ttl < math.inf:
        raise ValueError(f"a lease ttl must be a positive number of seconds, not {ttl!r}")
    return ttl


def requests(claim: Sequence[str], release: Sequence[str]) -> tuple[list[str], list[str]]:
    """``claim`` and ``release`` sorted and without repeats, a unit in both kept in
    ``claim`` only (released, then claimed again: held). Sorted, so that two rounds take
    their row locks in one order (PostgreSQL), and one round never names a row twice."""
    wanted = sorted(set(claim))
    return wanted, sorted(set(release) - set(wanted))


# -- SQLite: statements in order, in one write transaction ------------------------------

_BEAT = (
    "INSERT INTO members (grp, member, expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (grp, member) DO UPDATE SET expires_at = excluded.expires_at"
)
_CLAIM = (
    "INSERT INTO leases (grp, unit, owner, expires_at) VALUES {rows} "
    "ON CONFLICT (grp, unit) DO UPDATE SET owner = excluded.owner, "
    "expires_at = excluded.expires_at "
    "WHERE leases.expires_at < ? OR leases.owner = excluded.owner"
)


def sqlite_round(
    conn: sqlite3.Connection,
    group: str,
    member: str,
    claim: list[str],
    release: list[str],
    ttl: float,
    clock: Callable[[], float] = time.time,
) -> LeaseView:
    """One lease round (the module docstring's rules) in one ``BEGIN IMMEDIATE``
    transaction; ``claim`` and ``release`` as :func:`requests` returns them."""
    conn.execute("BEGIN IMMEDIATE")
    now = clock()  # once the write lock is ours: rounds are ordered as their clocks
    until = now + ttl
    conn.execute(_BEAT, (group, member, until))
    for start, k in chunks(conn, len(release), 1):
        conn.execute(
            f"DELETE FROM leases WHERE grp = ? AND owner = ? AND unit IN ({marks(k)})",
            [group, member, *release[start : start + k]],
        )
    rows = [(group, unit, member, until) for unit in claim]
    for start, k in chunks(conn, len(rows), 5):  # 4 a row, and room for the WHERE's now
        conn.execute(_CLAIM.format(rows=tuples(4, k)), [*flat(rows[start : start + k]), now])
    conn.execute(
        "UPDATE leases SET expires_at = ? WHERE grp = ? AND owner = ?", (until, group, member)
    )
    forget = now - FORGET_AFTER * ttl
    conn.execute("DELETE FROM members WHERE grp = ? AND expires_at < ?", (group, forget))
    conn.execute("DELETE FROM leases WHERE grp = ? AND expires_at < ?", (group, forget))
    owners = conn.execute(
        "SELECT unit, owner FROM leases WHERE grp = ? AND expires_at >= ?", (group, now)
    ).fetchall()
    members = conn.execute(
        "SELECT member FROM members WHERE grp = ? AND expires_at >= ?", (group, now)
    ).fetchall()
    conn.execute("COMMIT")
    return LeaseView(dict(owners), tuple(sorted(m for (m,) in members)), now)


def sqlite_leave(conn: sqlite3.Connection, group: str, member: str) -> None:
    """Delete ``member``'s heartbeat and leases in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("DELETE FROM leases WHERE grp = ? AND owner = ?", (group, member))
    conn.execute("DELETE FROM members WHERE grp = ? AND member = ?", (group, member))
    conn.execute("COMMIT")


# -- PostgreSQL: one statement --------------------------------------------------------

PG_ROUND = f"""
WITH clock AS MATERIALIZED (  -- read once: every part measures by the same now
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), beat AS (
    INSERT INTO members (grp, member, expires_at) SELECT $1, $2, now + $5 FROM clock
    ON CONFLICT (grp, member) DO UPDATE SET expires_at = excluded.expires_at
), released AS (
    DELETE FROM leases WHERE grp = $1 AND owner = $2 AND unit = ANY($4::text[])
), claimed AS (
    INSERT INTO leases AS l (grp, unit, owner, expires_at)
    SELECT $1, c.unit, $2, clock.now + $5
    FROM unnest($3::text[]) WITH ORDINALITY AS c(unit, ord), clock ORDER BY c.ord
    ON CONFLICT (grp, unit) DO UPDATE
    SET owner = excluded.owner, expires_at = excluded.expires_at
    WHERE l.expires_at < (SELECT now FROM clock) OR l.owner = excluded.owner
    RETURNING l.unit, l.owner
), extended AS (
    UPDATE leases l SET expires_at = clock.now + $5 FROM clock
    WHERE l.grp = $1 AND l.owner = $2
      AND l.unit <> ALL($3::text[]) AND l.unit <> ALL($4::text[])
    RETURNING l.unit, l.owner
), forgotten AS (
    DELETE FROM members m USING clock
    WHERE m.grp = $1 AND m.member <> $2 AND m.expires_at < clock.now - {FORGET_AFTER} * $5
), forgotten_leases AS (
    DELETE FROM leases l USING clock
    WHERE l.grp = $1 AND l.owner <> $2 AND l.unit <> ALL($3::text[])
      AND l.expires_at < clock.now - {FORGET_AFTER} * $5
)
SELECT 'now' AS kind, NULL::text AS name, NULL::text AS owner, now FROM clock
UNION ALL SELECT 'lease', unit, owner, NULL FROM claimed
UNION ALL SELECT 'lease', unit, owner, NULL FROM extended
UNION ALL SELECT 'lease', l.unit, l.owner, NULL FROM leases l, clock
    WHERE l.grp = $1 AND l.owner <> $2 AND l.expires_at >= clock.now
      AND l.unit NOT IN (SELECT unit FROM claimed)
UNION ALL SELECT 'member', m.member, NULL, NULL FROM members m, clock
    WHERE m.grp = $1 AND m.member <> $2 AND m.expires_at >= clock.now
"""
"""A lease round: $1 group, $2 member, $3 claim and $4 release (as :func:`requests`
returns them), $5 ttl. Rows of ``(kind, name, owner, now)``: one ``now``, a ``lease``
per unit held (``name`` the unit), a ``member`` per other live member. The parts touch
disjoint rows (the module docstring says why they must): ``released`` and
``extended`` the member's leases outside ``claim``, ``claimed`` the ``claim`` units,
``forgotten_leases`` the others' outside ``claim``; ``beat`` the member's own row,
``forgotten`` the others'. Those other leases are read from the statement's snapshot,
minus the units ``claimed`` took over; the member's own come from what it wrote."""

PG_LEAVE = (
    "WITH gone AS (DELETE FROM leases WHERE grp = $1 AND owner = $2) "
    "DELETE FROM members WHERE grp = $1 AND member = $2"
)
"""A clean stop in one statement: $1 group, $2 member."""


def view_from_pg_rows(rows: Sequence[Sequence[Any]], member: str) -> LeaseView:
    """The :class:`LeaseView` of :data:`PG_ROUND`'s rows, ``member`` listed as live."""
    owners: dict[str, str] = {}
    members = {member}
    now = 0.0
    for kind, name, owner, at in rows:
        if kind == "lease":
            owners[name] = owner
        elif kind == "member":
            members.add(name)
        else:
            now = float(at)
    return LeaseView(owners, tuple(sorted(members)), now)
