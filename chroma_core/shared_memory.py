"""Requests read from shared memory, for clients on the server's own machine.

At start the server writes a proof file of random bytes in its directory (``/dev/shm``) and
``GET /api/v1/shm`` advertises the directory, the file's name and the SHA-256 of its bytes.
A client that reads the same bytes there sees the same memory; it writes a request's Arrow
stream to a file of its own in that directory and names the file in the ``X-Chroma-Shm``
header, and the server maps the file instead of reading the body from the socket. The client
removes its file once the reply is in.

A client that sends ``X-Chroma-Shm-Reply: accept <key>``, the key derived from the proof
file's bytes (so only a client that reads this directory can send it), may get a large
Arrow reply the same way: the server writes it to a new file, names it in the
``X-Chroma-Shm-Reply`` reply header with an empty body, and the client maps it and removes
it. Replies parked and not yet taken hold at most ``max_bytes`` in all (beyond, replies go
on the socket); a sweep every few seconds removes the files clients took from the count,
and removes those still there a minute after they were written (their client died
meanwhile); all of them go at shutdown.

The server opens only names of the form ``chroma-<letters, digits, _ or ->`` directly inside
its directory, through a descriptor of the directory and with ``O_NOFOLLOW``, and maps only a
regular file owned by its own user that no other user can write, no larger than
``max_body_bytes``. It reads a request file into its own memory in one copy rather than
mapping it: a map of a file the client truncates meanwhile would kill the server (SIGBUS)
the moment it touched the missing pages.

``CHROMA_SHARED_MEMORY=0`` turns it off; ``CHROMA_SHARED_MEMORY_DIR`` picks another directory.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
import threading
import time

import pyarrow as pa

from chroma_core.config import Settings
from chroma_wire.errors import MalformedPayload, PayloadTooLarge
from chroma_wire.protocol import SHM_REPLY_ACCEPT, decode_arrow, reply_key, write_arrow

DEFAULT_DIRECTORY = "/dev/shm"
PREFIX = "chroma-"
NAME = re.compile(r"^chroma-[A-Za-z0-9_-]{1,128}$")
REPLY_PREFIX = f"{PREFIX}reply-"
# replies smaller than this go on the socket, which is as quick for them
REPLY_MIN_BYTES = 1 << 20
# a reply file still there this many seconds after it was written is the server's to remove
REPLY_LIFETIME = 60.0
# seconds between two sweeps of the reply files
SWEEP_SECONDS = 5.0

log = logging.getLogger("chroma.server")


class Unreadable(MalformedPayload):
    """The named file is not there or not readable by the server: the client sends the body
    through the socket instead."""

    def to_json(self) -> dict:
        return {"error": "MalformedPayload", "detail": self.detail}


class SharedMemory:
    """The server's side: its proof file and the requests it maps."""

    def __init__(self, directory: str, max_bytes: int):
        self.directory = os.path.realpath(directory)
        self.max_bytes = max_bytes
        self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._secret = secrets.token_bytes(32)
        self._reply_key = reply_key(self._secret)
        # name: (when written, bytes) of each reply file not yet known to be taken
        self._replies: dict[str, tuple[float, int]] = {}
        self._replies_lock = threading.Lock()
        self._closing = threading.Event()
        self._sweeper = threading.Thread(
            target=self._sweep_every, name="chroma-shm-sweeper", daemon=True
        )
        self.proof = f"{PREFIX}proof-{secrets.token_hex(16)}"
        try:
            with self._create(self.proof) as file:
                file.write(self._secret)
        except OSError:
            os.close(self._dir_fd)
            raise
        self._sweeper.start()

    def accepts_reply(self, header: str | None) -> bool:
        """Whether a request's ``X-Chroma-Shm-Reply`` header shows its client reads this
        directory (``accept <key>``)."""
        if not header or not header.startswith(SHM_REPLY_ACCEPT + " "):
            return False
        return hmac.compare_digest(header[len(SHM_REPLY_ACCEPT) + 1 :].strip(), self._reply_key)

    def parked(self) -> tuple[int, int]:
        """Reply files not yet known to be taken, and their bytes."""
        with self._replies_lock:
            return len(self._replies), sum(size for _, size in self._replies.values())

    def _create(self, name: str):
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=self._dir_fd,
        )
        return open(fd, "wb")

    @classmethod
    def start(cls, settings: Settings) -> SharedMemory | None:
        """Shared memory for this server, or None when it is turned off or unavailable."""
        if not settings.shared_memory:
            return None
        directory = settings.shared_memory_dir or DEFAULT_DIRECTORY
        try:
            return cls(directory, settings.max_body_bytes)
        except OSError as exc:
            log.info("shared-memory requests are off: cannot use %s (%s)", directory, exc)
            return None

    def offer(self) -> dict:
        """What ``GET /api/v1/shm`` answers: where to write requests and how to check that
        this directory is the client's too."""
        return {
            "directory": self.directory,
            "proof": self.proof,
            "digest": hashlib.sha256(self._secret).hexdigest(),
            "max_bytes": self.max_bytes,
        }

    def read(self, name: str) -> tuple[dict, pa.Table]:
        """The params and table of the request in file ``name``, mapped without a copy."""
        if not NAME.match(name):
            raise MalformedPayload(
                f"a shared-memory request must name a file directly inside the server's "
                f"directory, starting with {PREFIX!r} and holding only letters, digits, _ "
                f"and -; {name[:200]!r} is not such a name"
            )
        if name == self.proof or name.startswith(REPLY_PREFIX):
            raise MalformedPayload(f"{name!r} is a file of the server, not a request")
        try:
            fd = os.open(
                name,
                os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                dir_fd=self._dir_fd,
            )
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise MalformedPayload(
                    f"the shared-memory request {name!r} is a symbolic link; name a regular file"
                ) from None
            raise Unreadable(
                f"cannot open the shared-memory request {name!r} in {self.directory}: "
                f"{exc.strerror}"
            ) from None
        try:
            info = os.fstat(fd)
            _check_file(name, info, self.max_bytes)
            if info.st_size == 0:
                return decode_arrow(b"")
            # copied, never mapped: a client (of the server's own user) that truncates its
            # file while the server reads a map of it would kill the server with SIGBUS
            return decode_arrow(_read_whole(name, fd, info.st_size), self.max_bytes)
        finally:
            os.close(fd)

    def write_reply(self, params: dict, table: pa.Table) -> str | None:
        """The name of a new file holding the reply's Arrow stream, or None to send it on the
        socket (too small to gain, or the directory is full)."""
        if table.nbytes < REPLY_MIN_BYTES:
            return None
        name = f"{REPLY_PREFIX}{secrets.token_hex(16)}"
        with self._replies_lock:
            parked = sum(size for _, size in self._replies.values())
            if parked + table.nbytes > self.max_bytes:
                return None  # clients are slow to take theirs: this one goes on the socket
            self._replies[name] = (time.monotonic(), table.nbytes)
        try:
            with self._create(name) as file:
                write_arrow(file, params, table)
        except OSError as exc:
            log.warning("shared-memory reply not written, sending it on the socket: %s", exc)
            with self._replies_lock:
                self._replies.pop(name, None)
            self._unlink(name)
            return None
        return name

    def _sweep_every(self) -> None:
        while not self._closing.wait(SWEEP_SECONDS):
            self.sweep()

    def sweep(self, now: float | None = None) -> None:
        """Forget the replies their clients took, and remove those left too long."""
        now = time.monotonic() if now is None else now
        with self._replies_lock:
            names = list(self._replies.items())
        taken, old = [], []
        for name, (when, _) in names:
            try:
                os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                taken.append(name)
                continue
            except OSError:
                pass
            if when <= now - REPLY_LIFETIME:
                old.append(name)
        with self._replies_lock:
            for name in taken + old:
                self._replies.pop(name, None)
        for name in old:
            self._unlink(name)
        if old:
            log.info("removed %d shared-memory replies no client took", len(old))

    def _remove_replies(self, written_before: float) -> None:
        with self._replies_lock:
            old = [name for name, (when, _) in self._replies.items() if when <= written_before]
            for name in old:
                del self._replies[name]
        for name in old:
            self._unlink(name)

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self._dir_fd)
        except OSError:
            pass

    def close(self) -> None:
        self._closing.set()
        self._remove_replies(float("inf"))
        self._unlink(self.proof)
        os.close(self._dir_fd)


def _read_whole(name: str, fd: int, size: int) -> pa.Buffer:
    """The file's ``size`` bytes, read into one Arrow buffer (the table refers to it without
    another copy); ``MalformedPayload`` if the file is shorter by then (it changed)."""
    buffer = pa.allocate_buffer(size)
    view = memoryview(buffer).cast("B")
    done = 0
    while done < size:
        got = os.preadv(fd, [view[done:]], done)
        if got == 0:
            raise MalformedPayload(
                f"the shared-memory request {name!r} shrank to {done} bytes while it was read; "
                "leave the file as it is until the reply is in"
            )
        done += got
    return buffer


def _check_file(name: str, info: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise MalformedPayload(f"the shared-memory request {name!r} is not a regular file")
    if info.st_uid != os.geteuid():
        raise MalformedPayload(
            f"the shared-memory request {name!r} is not owned by the server's user"
        )
    if info.st_mode & 0o022:
        raise MalformedPayload(
            f"the shared-memory request {name!r} is writable by other users; create it 0600"
        )
    if info.st_size > max_bytes:
        raise PayloadTooLarge(
            f"the shared-memory request has {info.st_size} bytes, more than the limit of "
            f"{max_bytes}"
        )
