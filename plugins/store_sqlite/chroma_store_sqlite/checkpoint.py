"""Checkpoints on a thread of their own: a commit appends to the write-ahead log and returns.

In WAL mode a commit writes its pages to the log (``<file>-wal``) and syncs it; copying them
into the database file (a checkpoint) can wait. SQLite would checkpoint inside whichever
commit crosses 1,000 pages, so a bulk add would pay for copying every page twice in its own
time. Here connections never checkpoint themselves; this thread does, passively (never
blocking readers or writers), once the log passes ``wal_bytes`` or after a quiet second.
Durability is unchanged: a committed page is in the synced log until it is in the file.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("chroma.store.sqlite")

#: log size that wakes the checkpointer
WAL_BYTES = 64 << 20
#: log size at which a committing writer checkpoints itself, so the log stays bounded when
#: the checkpointer cannot keep up
WAL_LIMIT_BYTES = 1 << 30
IDLE_SECONDS = 1.0


class Checkpointer:
    def __init__(self, path: Path, connect: Callable[[], sqlite3.Connection]):
        self.wal = Path(f"{path}-wal")
        self._connect = connect
        self._wake = threading.Event()
        self._written = False
        self._stopping = False
        self.checkpoints = 0
        self._thread = threading.Thread(target=self._run, name="chroma-sqlite-checkpoint")
        self._thread.daemon = True
        self._thread.start()

    def committed(self, conn: sqlite3.Connection) -> None:
        """Called by a writer after each commit, on its own connection."""
        self._written = True
        try:
            size = self.wal.stat().st_size
        except OSError:
            return
        if size >= WAL_LIMIT_BYTES:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        elif size >= WAL_BYTES:
            self._wake.set()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stopping:
                self._wake.wait(IDLE_SECONDS)
                self._wake.clear()
                if not self._written:
                    continue
                self._written = False
                try:
                    conn = conn or self._connect()
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # the next round, or the next open, tries again
                    log.warning("checkpoint of %s failed: %s", self.wal, exc)
        finally:
            if conn is not None:
                conn.close()

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=60)
