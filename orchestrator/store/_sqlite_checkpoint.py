"""Copy the SQLite store's WAL back into its database file on a thread of its own.

Why: SQLite checkpoints by itself (``wal_autocheckpoint``) inside the COMMIT that
takes the WAL past its threshold, on the connection that committed, which is the
event loop's thread (see :mod:`orchestrator.store.sqlite`). That COMMIT then copies
up to 10,000 pages and syncs the database file: replaying a bench's 88 commits
(22,000 units), two of them took 73 and 95 ms, 59% of all COMMIT time, and the
loop did nothing else meanwhile.

A ``PASSIVE`` checkpoint from a second connection copies what it can without
taking the write lock, and ``sqlite3_step`` runs without the GIL, so the copy
happens on the other core while the loop keeps committing. Here it runs after a
commit, at most every ``interval`` seconds. The writer's own autocheckpoint stays
on as the bound on the WAL's size: a writer rewinds the WAL only if it begins while
every frame has been copied, and under steady load the background checkpoint seldom
ends in such a gap; but by the time the autocheckpoint runs it finds few pages left
to copy. The same replay through the store, with 5 ms of other work between
commits (3 runs each): commit time 791-830 -> 725-757 ms, the longest commit 92 ->
26-52 ms (at 50 ms the longest was 24-31 ms, at 250 ms 43-61 ms).

Each complete checkpoint also syncs the database file, so the interval is a trade:
shorter leaves the autocheckpoint less to copy, longer syncs less often.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from urllib.parse import quote

import structlog

__all__ = ["WalCheckpointer"]

log = structlog.get_logger("sagawire.store")


class WalCheckpointer:
    """A thread that runs ``PRAGMA wal_checkpoint(PASSIVE)`` after commits (``nudge``)."""

    def __init__(self, path: str, *, interval: float = 0.1) -> None:
        # Absolute now: a later change of working directory must not point the
        # checkpointer at another file (and mode=rw below never creates one).
        self.path = os.path.abspath(path)
        self.interval = interval
        self.runs = 0
        """Checkpoints that copied every frame the WAL held when they began."""
        self.last: tuple[int, int, int] | None = None
        """The last checkpoint's ``(busy, wal frames, frames copied)``."""
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = False

    def start(self) -> None:
        if self._thread is not None:
            return
        thread = threading.Thread(target=self._run, name="sagawire-sqlite-checkpoint", daemon=True)
        thread.start()
        self._thread = thread  # only once started: close() joins what it finds here

    def nudge(self) -> None:
        """A commit wrote to the WAL. Cheap: sets an event the thread waits on."""
        self._wake.set()

    def close(self) -> None:
        """Stop the thread; a checkpoint in progress finishes first (it is bounded:
        a passive checkpoint copies at most what the WAL holds)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._wake.set()
        thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._wake.wait()
                if self._stopping.is_set():
                    return
                self._wake.clear()
                if conn is None:
                    conn = self._connect()
                if conn is not None:
                    self._checkpoint(conn)
                if self._stopping.wait(self.interval):
                    return
        except Exception:  # a bug, not SQLite: say so where the sidecar's logs go
            log.exception("background WAL checkpointer stopped", path=self.path)
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> sqlite3.Connection | None:
        try:
            uri = f"file:{quote(self.path)}?mode=rw"
            return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            self._warn(exc)
            return None

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            # Nothing is lost: the writer's autocheckpoint still copies the WAL.
            self._warn(exc)
            return
        self.last = (int(row[0]), int(row[1]), int(row[2]))
        if self.last[0] == 0 and self.last[1] == self.last[2]:
            self.runs += 1
        self._failed = False

    def _warn(self, exc: sqlite3.Error) -> None:
        if not self._failed:  # once per streak, not once per commit
            self._failed = True
            log.warning("background WAL checkpoint failed", path=self.path, error=str(exc))
