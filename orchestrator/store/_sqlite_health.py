"""What stops a SQLite store, said plainly: driver errors as StoreErrors, and ``ping``'s probe.

A SQLite store does not go away the way a server does; what stops it is the disk
and other processes:

* ``SQLITE_BUSY`` past ``busy_timeout``: another connection (an operator's
  ``sqlite3`` shell, a backup) holds the write lock;
* ``SQLITE_FULL``: the filesystem is full, or the database reached its
  ``max_page_count``;
* ``SQLITE_IOERR``: the disk failed a read or a write.

Each is retryable: the call's transaction rolls back as a whole (the store's
``_call`` rolls back whatever the failed call began), so nothing is half-written,
and the same connection goes on once the condition clears. :func:`translate`
says which of them happened and what clears it, since "database is locked" alone
does not tell an operator where to look.

:func:`probe` is ``ping``: whether a commit could begin now. Reading a row is not
enough, since in WAL mode a reader is never blocked and a full disk still reads;
so it takes the write lock (waiting a short while, not the whole busy timeout)
and checks for room: the database below its ``max_page_count``, and the
filesystem with at least :data:`MIN_FREE_BYTES` to spare. It writes nothing.
"""

from __future__ import annotations

import os
import sqlite3

from schemas.errors import StoreError

__all__ = ["MIN_FREE_BYTES", "free_bytes", "probe", "translate"]

# sqlite3 error names (Python 3.11+) worth retrying: contention, a full disk, I/O.
_RETRYABLE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_PROTOCOL")
_HINTS = {
    "SQLITE_BUSY": "another connection holds the write lock (a shell, a backup, another "
    "sidecar on this file); the store goes on once it lets go",
    "SQLITE_LOCKED": "a table is locked by another statement; retry",
    "SQLITE_FULL": "the disk holding the database is full (or the database reached its "
    "max_page_count); nothing of this call was written, and the store goes on once "
    "there is room",
    "SQLITE_IOERR": "the disk failed a read or write; nothing of this call was written",
}

MIN_FREE_BYTES = 1 << 20
"""Below this much free space on its filesystem, :func:`probe` calls the store full: a
group commit writes a few hundred KiB to the WAL, and a commit that fails for want of
space costs the engine a retry; better to wait, and say why, until there is room."""


def translate(exc: sqlite3.Error, path: str) -> StoreError:
    """``exc`` as a StoreError naming the file, the SQLite error and what clears it;
    retryable for the conditions that pass by themselves (the module docstring)."""
    name = getattr(exc, "sqlite_errorname", "") or type(exc).__name__
    retryable = name.startswith(_RETRYABLE)
    hint = next((h for prefix, h in _HINTS.items() if name.startswith(prefix)), "")
    return StoreError(
        f"sqlite store {path}: {exc} ({name}){'; ' + hint if hint else ''}", retryable=retryable
    )


def free_bytes(path: str) -> int | None:
    """Bytes free to this process on the filesystem holding ``path``; None if unknown
    (an in-memory database, a platform without ``statvfs``)."""
    if path == ":memory:" or not hasattr(os, "statvfs"):
        return None
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def probe(conn: sqlite3.Connection, path: str, *, wait_ms: int, busy_timeout_ms: int) -> None:
    """Return if a commit could begin now; raise a retryable StoreError saying why not.

    Takes the write lock, waiting at most ``wait_ms`` for it (then ``busy_timeout_ms``
    again for the store's own calls), reads the schema version and the page counts,
    and rolls back. A lock held elsewhere raises ``sqlite3.OperationalError``
    (``SQLITE_BUSY``), which the caller translates."""
    conn.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("SELECT value FROM sagawire_meta WHERE key = 'schema_version'")
            pages, limit, unused = (
                int(conn.execute(f"PRAGMA {name}").fetchone()[0])
                for name in ("page_count", "max_page_count", "freelist_count")
            )
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    if pages >= limit and unused == 0:
        raise StoreError(
            f"sqlite store {path}: the database is full: it reached its max_page_count "
            f"({limit} pages); a commit that needs another page would fail (SQLITE_FULL)",
            retryable=True,
        )
    room = free_bytes(path)
    if room is not None and room < MIN_FREE_BYTES:
        raise StoreError(
            f"sqlite store {path}: the disk is full: {room} bytes free on the filesystem "
            f"holding it (less than {MIN_FREE_BYTES >> 20} MiB); free some space",
            retryable=True,
        )
