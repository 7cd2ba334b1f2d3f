"""Requests through shared memory to a server on this machine.

The server advertises a directory and a proof file in it (``GET /api/v1/shm``, see
:mod:`chroma_core.shared_memory`). When this process reads the same bytes there, it writes
each large Arrow request to a new file of its own in that directory (``chroma-<random>``,
mode 0600, created exclusively) and sends only the file's name; the caller removes the file
once the reply is in. Anything that does not check out leaves requests on the socket.
Large replies come back the same way: the server names a file it wrote, and this process
maps it and removes it.
"""

from __future__ import annotations

import hashlib
import hmac
import mmap
import os
import re
import secrets
import stat
from dataclasses import dataclass

import httpx
import pyarrow as pa

from chroma_client.errors import ServerError
from chroma_wire.protocol import SHM_ROUTE, decode_arrow, write_arrow
from chroma_wire.protocol import reply_key as protocol_reply_key

PREFIX = "chroma-"
REPLY_NAME = re.compile(r"^chroma-reply-[0-9a-f]{32}$")
ENV = "CHROMA_SHARED_MEMORY"
# below this many bytes of table the socket is as quick as a file
MIN_BYTES = 1 << 16
_OFF = ("0", "false", "no", "off")


def wanted(option: bool | None) -> bool:
    """Whether to try shared memory: the ``shared_memory`` option, else ``CHROMA_SHARED_MEMORY``
    (on unless 0, false, no or off)."""
    if option is not None:
        return option
    return os.environ.get(ENV, "1").strip().lower() not in _OFF


@dataclass(frozen=True)
class SharedMemory:
    """A directory this process shares with the server."""

    directory: str
    max_bytes: int
    #: what ``X-Chroma-Shm-Reply`` carries after ``accept``: derived from the proof file
    reply_key: str = ""

    def write(self, params: dict, table: pa.Table) -> str | None:
        """The path of a new file holding the request's Arrow stream, or None when it
        cannot be written (the directory is full or gone)."""
        path = os.path.join(self.directory, PREFIX + secrets.token_hex(16))
        try:
            fd = os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
        except OSError:
            return None
        try:
            with open(fd, "wb") as file:
                write_arrow(file, params, table)
        except OSError:
            remove(path)
            return None
        return path

    def read_reply(self, name: str) -> tuple[dict, pa.Table]:
        """The params and table of a reply the server left in file ``name``, mapped without
        a copy; the file is removed."""
        if not REPLY_NAME.match(name):
            raise ServerError(f"the server named a shared-memory reply {name[:100]!r}, not one")
        path = os.path.join(self.directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise ServerError(f"cannot open the reply the server left in {path}: {exc}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
                raise ServerError(f"the reply the server left in {path} is not an Arrow stream")
            return decode_arrow(mmap.mmap(fd, info.st_size, access=mmap.ACCESS_READ))
        finally:
            os.close(fd)
            remove(path)


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def negotiate(http: httpx.Client) -> SharedMemory | None:
    """The server's shared memory when it offers some and its proof file reads the same here."""
    try:
        response = http.get(SHM_ROUTE)
        offer = response.json() if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(offer, dict):
        return None
    directory, proof, digest = offer.get("directory"), offer.get("proof"), offer.get("digest")
    max_bytes = offer.get("max_bytes")
    if not (
        isinstance(directory, str)
        and os.path.isabs(directory)
        and isinstance(proof, str)
        and proof.startswith(PREFIX)
        and "/" not in proof
        and isinstance(digest, str)
        and isinstance(max_bytes, int)
    ):
        return None
    content = _read_proof(os.path.join(directory, proof))
    if content is None or not hmac.compare_digest(hashlib.sha256(content).hexdigest(), digest):
        return None
    return SharedMemory(directory, max_bytes, protocol_reply_key(content))


def _read_proof(path: str, limit: int = 4096) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)
