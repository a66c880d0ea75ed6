"""Opening the PostgreSQL store: its URL's options, and the schema migration.

Beside :mod:`orchestrator.store._sqlite_open`, which does the same for SQLite;
:mod:`orchestrator.store.postgres` says what the options mean. The schema's
versions and their statements are in :mod:`orchestrator.store._schema`.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from adapters._util import redact_url
from orchestrator.store import _schema as s
from schemas.errors import ConfigError

__all__ = ["UrlOptions", "migrate", "parse_url"]

_MIGRATION_LOCK = 0x5A6A_3172  # pg_advisory_xact_lock key: one migrating process at a time
_TIMEOUTS = ("connect_timeout", "command_timeout", "acquire_timeout")


class UrlOptions(NamedTuple):
    dsn: str  # what asyncpg gets: the URL without the options below
    pool_min: int
    pool_max: int
    connect_timeout: float
    command_timeout: float
    acquire_timeout: float


def parse_url(url: str) -> UrlOptions:
    """The DSN and the store's own options of a ``postgresql://`` URL. The options are
    taken out of the DSN: asyncpg would send an unknown one to the server as a setting,
    which refuses it. Errors name the option and show the URL without its password."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"not a PostgreSQL URL: {redact_url(url)!r}")
    query = dict(parse_qsl(parts.query))
    try:
        pool_min = int(query.pop("pool_min", "1"))
        pool_max = int(query.pop("pool_max", "10"))
    except ValueError:
        raise ConfigError(f"pool_min/pool_max must be integers in {redact_url(url)!r}") from None
    limits: list[float] = []
    for name in _TIMEOUTS:
        try:
            limits.append(float(query.pop(name, "5")))
        except ValueError:
            limits.append(0.0)
        if not 0 < limits[-1] < float("inf"):
            raise ConfigError(f"{name} must be a positive number of seconds in {redact_url(url)!r}")
    dsn = urlunsplit(parts._replace(query=urlencode(query)))
    return UrlOptions(dsn, pool_min, max(pool_min, pool_max), *limits)


async def migrate(conn: Any, location: str, slow: float) -> int:
    """Bring the database to :data:`~orchestrator.store._schema.SCHEMA_VERSION` inside the
    caller's transaction, one process at a time (refusing a newer one); the version it
    is now at. The lock waits for another process's migration, and a migration may
    build an index on a big table: both get the ``slow`` limit, in seconds."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK, timeout=slow)
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS sagawire_meta (key text PRIMARY KEY, value text NOT NULL)"
    )
    found = await conn.fetchval("SELECT value FROM sagawire_meta WHERE key = 'schema_version'")
    found = 0 if found is None else int(found)
    s.check_version(found, f"PostgreSQL database {location}")
    for sql in s.pending_migrations(found, s.POSTGRES_MIGRATIONS):
        await conn.execute(sql, timeout=slow)
    await conn.execute(
        "INSERT INTO sagawire_meta (key, value) VALUES ('schema_version', $1) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        str(s.SCHEMA_VERSION),
    )
    return s.SCHEMA_VERSION
