"""One Chroma at a time per data directory.

Two services on one directory would each keep their own nearest-neighbour index of the same
rows and save it to the same files, and each would miss the other's deletes: answers with
rows missing, index files written over each other. ClickHouse's embedded engine refuses a
second process anyway, but only after a while and without saying who holds it. So a service
takes an exclusive ``flock`` on ``<data directory>/chroma.lock`` before it opens its store
and keeps it until it closes; the file holds the holder's pid for the error message. The
kernel drops the lock when the holder's process ends, however it ends, so a killed server
never leaves a directory locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from chroma_wire.errors import DirectoryInUse

LOCK_FILE = "chroma.lock"


class DirectoryLock:
    """Held from construction until :meth:`release`; raises ``DirectoryInUse`` at once if
    another service (in this process or another) holds the directory."""

    def __init__(self, directory: Path):
        self.path = directory / LOCK_FILE
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise DirectoryInUse(
                f"the data directory {directory.resolve()} is in use by another Chroma "
                f"({holder}); stop it, or connect to the server that holds it with "
                "Client(url), or use another directory"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    if text == str(os.getpid()):
        return f"this process, pid {text}"
    return f"pid {text}" if text.isdigit() else "a process that has not written its pid yet"
