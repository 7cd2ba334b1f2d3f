"""One Chroma at a time per data directory.

Two services on one directory would each keep their own nearest-neighbour index of the same
rows and save it to the same files, and each would miss the other's deletes: answers with
rows missing, index files written over each other. ClickHouse's embedded engine refuses a
second process anyway, but only after a while and without saying who holds it. So a service
takes an exclusive ``flock`` on the data directory itself, and another on
``<data directory>/chroma.lock``, before it opens its store, and keeps both until it closes;
the file holds the holder's pid for the error message. A lock file can be deleted by
accident (a clean-up script, ``rm`` of what looks like a stale lock), and the next opener
would make a new one and lock it; the directory cannot go while it holds the store, so its
lock still refuses that opener. The kernel drops both locks when the holder's process ends,
however it ends, so a killed server never leaves a directory locked.
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
        self._directory_fd: int | None = None
        directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fd = -1
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            for held in (directory_fd, fd):
                try:
                    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise DirectoryInUse(
                        f"the data directory {directory.resolve()} is in use by another "
                        f"Chroma ({_holder(fd, held == directory_fd)}); stop it, or connect "
                        "to the server that holds it with Client(url), or use another "
                        "directory"
                    ) from None
        except BaseException:
            for opened in (fd, directory_fd):
                if opened >= 0:
                    os.close(opened)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd
        self._directory_fd = directory_fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)
        if self._directory_fd is not None:
            os.close(self._directory_fd)
            self._directory_fd = None


def _holder(fd: int, by_directory: bool) -> str:
    """Who holds the directory, as its lock file says; ``by_directory``: only the directory's
    own lock refused us, so the file read is a new one (the holder's was deleted)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    if text == str(os.getpid()):
        return f"this process, pid {text}"
    if text.isdigit():
        return f"pid {text}"
    if by_directory:
        return f"a process whose {LOCK_FILE} was deleted while it held the directory"
    return "a process that has not written its pid yet"
