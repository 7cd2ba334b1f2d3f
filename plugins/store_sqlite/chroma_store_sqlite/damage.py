"""Noticing a damaged database: at start, and whenever SQLite says so.

- **On every statement**: SQLite's ``SQLITE_CORRUPT`` ("database disk image is malformed")
  and ``SQLITE_NOTADB`` are :class:`StorageDamaged`, naming the file; from the first one on,
  the store refuses writes (a write to a damaged b-tree can spread the damage), and goes on
  answering reads, so what is intact can still be exported.
- **At start**, a database file up to ``CHECK_BYTES`` is checked with ``PRAGMA
  quick_check`` (some seconds a gigabyte); a larger one is checked by SQLite as pages are
  read.
- **The write-ahead log**: SQLite replays the log after a crash up to its first frame whose
  checksum fails, and drops every frame after it, committed or not. Frames after that
  point that still carry the log's salts, one of them closing a transaction, are commits
  that were acknowledged and may be lost (unless they had been copied into the database
  already): :func:`lost_commits` counts them (from the frame headers, before and after
  SQLite's replay), the log is copied aside for recovery, and an ``ERROR`` says so.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import struct
import time
from pathlib import Path

from chroma_wire.errors import StorageDamaged

log = logging.getLogger("chroma.store.sqlite")

#: database files up to this size are checked in full at start
CHECK_BYTES = 256 << 20
_DAMAGE_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_HEADER = 32
_FRAME_HEADER = 24


def is_damage(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite saying the file is damaged or not a database."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _DAMAGE_CODES:
        return True
    text = str(exc)
    return "malformed" in text or "file is not a database" in text


def damaged(path: Path, what: str) -> StorageDamaged:
    return StorageDamaged(
        f"the SQLite database {path} is damaged ({what}); this server refuses writes to it "
        "so as not to spread the damage, and answers reads of what is intact: export what "
        "you can (chroma export), then restore a back-up into a new directory (see "
        "docs/reliability.md, 'A damaged SQLite database')"
    )


def committed_frames(wal: Path) -> tuple[int, int] | None:
    """``(frames, last commit)``: the frames of the log at ``wal`` carrying its header's salts,
    and the number (from 1) of the last of them that closes a transaction; None when there
    is no log to replay. Reads frame headers only."""
    try:
        with open(wal, "rb") as file:
            header = file.read(_WAL_HEADER)
            if len(header) < _WAL_HEADER:
                return None
            magic, _, page_size, _, salt1, salt2 = struct.unpack(">6I", header[:24])
            if magic not in _WAL_MAGIC or not 512 <= page_size <= 65536:
                return None
            frame_size = _FRAME_HEADER + page_size
            frames = last_commit = 0
            number = 0
            while True:
                file.seek(_WAL_HEADER + number * frame_size)
                frame = file.read(_FRAME_HEADER)
                if len(frame) < _FRAME_HEADER:
                    break
                number += 1
                _, commit, frame_salt1, frame_salt2 = struct.unpack(">4I", frame[:16])
                if (frame_salt1, frame_salt2) != (salt1, salt2):
                    continue  # left from an earlier run of the log
                frames = number
                if commit:
                    last_commit = number
            return frames, last_commit
    except OSError:
        return None


def replayed_frames(conn: sqlite3.Connection) -> int:
    """The frames of the log SQLite took as valid when it opened the database."""
    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(row[1]) if row and row[1] is not None and row[1] >= 0 else 0


def lost_commits(path: Path, before: tuple[int, int] | None, replayed: int) -> str | None:
    """What SQLite's replay dropped of the log, when it dropped commits; the log is then
    copied aside (``<db>-wal.damaged-<time>``), before anything writes over it."""
    if before is None or before[1] <= replayed:
        return None
    wal = Path(f"{path}-wal")
    aside = Path(f"{path}-wal.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    try:
        shutil.copyfile(wal, aside)
        kept = f"the log is copied to {aside}"
    except OSError as exc:
        kept = f"the log could not be copied aside ({exc})"
    return (
        f"its write-ahead log is damaged at frame {replayed + 1}: SQLite dropped frames "
        f"{replayed + 1} to {before[1]}, which may hold acknowledged commits not yet copied "
        f"into the database; {kept} (docs/reliability.md, 'A damaged SQLite database')"
    )


def quick_check(conn: sqlite3.Connection, path: Path) -> str | None:
    """What ``PRAGMA quick_check`` finds wrong with the database (its first lines), or None
    when it is sound or too large to check at start."""
    try:
        size = path.stat().st_size
    except OSError:
        return None
    if size > CHECK_BYTES:
        log.info("%s is %d MB: not checked at start (SQLite checks pages as it reads them)",
                 path, size >> 20)  # fmt: skip
        return None
    try:
        found = [row[0] for row in conn.execute("PRAGMA quick_check(5)").fetchall()]
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            return str(exc)
        raise
    return None if found == ["ok"] else "; ".join(found)
