"""Opening the SQLite store's file: its URL, the connection's pragmas, the schema migration.

Functions of a URL, a path or a connection, no state; :mod:`orchestrator.store.sqlite`
runs them on its thread when it opens (its docstring lists the URL's options). The
schema's versions and their statements are in :mod:`orchestrator.store._schema`.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

from orchestrator.store import _schema as s
from orchestrator.store._sqlite_health import translate
from schemas.errors import ConfigError

__all__ = ["UrlOptions", "connect", "migrate", "parse_url"]


class UrlOptions(NamedTuple):
    path: str
    synchronous: str
    busy_timeout_ms: int
    cache_mb: int


def parse_url(url: str) -> UrlOptions:
    """The file and options of a ``sqlite://`` URL; ConfigError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/"):
        raise ConfigError(
            f"bad SQLite URL {url!r}; use sqlite:///relative.db, sqlite:////abs/path.db "
            "or sqlite:///:memory:"
        )
    path = parts.path[1:]
    if not path:
        raise ConfigError(f"SQLite URL {url!r} names no file")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"synchronous", "busy_timeout", "cache_mb"}
    if unknown:
        raise ConfigError(f"unknown SQLite URL option(s) {sorted(unknown)} in {url!r}")
    try:
        busy = int(query.get("busy_timeout", "5000"))
    except ValueError:
        raise ConfigError(f"busy_timeout must be milliseconds in {url!r}") from None
    try:
        cache_mb = int(query.get("cache_mb", "32"))
    except ValueError:
        cache_mb = -1
    if cache_mb < 1:
        raise ConfigError(f"cache_mb must be a positive number of MiB in {url!r}")
    return UrlOptions(path, query.get("synchronous", "NORMAL"), busy, cache_mb)


def connect(
    path: str, *, synchronous: str, busy_timeout_ms: int, cache_mb: int
) -> tuple[sqlite3.Connection, bool]:
    """The store's connection to ``path`` and whether its journal is a WAL (not for
    ``:memory:``); a StoreError if the file cannot be opened."""
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(
            path,
            isolation_level=None,
            timeout=busy_timeout_ms / 1000,
            cached_statements=512,  # the multi-row writes' few shapes per table
            check_same_thread=False,  # used from two threads, never at once (the store's lock)
        )
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA temp_store=MEMORY")
        # The page cache should hold the hot B-tree pages. The inbox's keys are
        # message ids, random by nature, so its inserts touch pages all over its
        # index: 100,000 bench sagas ran at ~4,900 transitions/s with 16 MiB,
        # ~5,200/s with 32 MiB (RSS +79 MB) and ~5,500/s with 64 MiB (RSS +120 MB).
        conn.execute(f"PRAGMA cache_size=-{cache_mb * 1024}")
        conn.execute("PRAGMA wal_autocheckpoint=10000")
        return conn, str(mode).lower() == "wal"
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise translate(exc, path) from exc


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Bring the database to :data:`~orchestrator.store._schema.SCHEMA_VERSION` in one
    transaction (refusing a newer one); the version it is now at."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS sagawire_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
    )
    row = conn.execute("SELECT value FROM sagawire_meta WHERE key = 'schema_version'").fetchone()
    found = 0 if row is None else int(row[0])
    s.check_version(found, f"SQLite database {path}")
    for sql in s.pending_migrations(found, s.SQLITE_MIGRATIONS):
        conn.execute(sql)
    conn.execute(
        "INSERT INTO sagawire_meta (key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(s.SCHEMA_VERSION),),
    )
    conn.execute("COMMIT")
    return s.SCHEMA_VERSION
