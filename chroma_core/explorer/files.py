"""Which files the explorer may show: images under the directories an operator listed.

``CHROMA_EXPLORER_FILES`` lists directories (none by default, so nothing is served). A path
is resolved with every symlink followed and served only if what it resolves to lies under
one of them, so neither ``..`` nor a link pointing out of a listed directory reaches
anything else; the file is then opened one path component at a time from the listed
directory, following no link, so a directory swapped for a link meanwhile leads nowhere,
and must be a regular image file of at most ``MAX_BYTES``.
"""

from __future__ import annotations

import mimetypes
import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

from chroma_wire.errors import InvalidInput, NotFound, PayloadTooLarge

MAX_BYTES = 32 << 20
#: what a thumbnail may be; SVG is left out, since it can carry script
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp")


def local_path(uri: str) -> Path:
    """The absolute path an ``input_uri`` names: a ``file://`` URI or an absolute path."""
    if not isinstance(uri, str) or not uri:
        raise InvalidInput("path must be a non-empty string")
    if "\0" in uri:
        raise InvalidInput("path must not contain a NUL character")
    if uri.startswith("file:"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise InvalidInput(f"file URI {uri!r:.200} names another host")
        uri = unquote(parts.path)
    path = Path(uri)
    if not path.is_absolute():
        raise InvalidInput(f"path {uri!r:.200} is not absolute")
    return path


def _open_under(root: Path, parts: tuple[str, ...]) -> int:
    """The file ``root``/``parts`` opened one component at a time from ``root``, none of
    them followed if it is a link: a directory swapped for a link between the check of the
    resolved path and the open cannot lead out of ``root`` (``OSError`` then)."""
    if not parts:
        raise IsADirectoryError(str(root))
    nofollow = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    directory = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            inner = os.open(
                part, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | nofollow, dir_fd=directory
            )
            os.close(directory)
            directory = inner
        return os.open(
            parts[-1], os.O_RDONLY | nofollow | getattr(os, "O_NONBLOCK", 0), dir_fd=directory
        )
    finally:
        os.close(directory)


def read_image(uri: str, roots: tuple[str, ...]) -> tuple[bytes, str]:
    """The bytes and media type of the image ``uri`` names, if it lies under ``roots``."""
    if not roots:
        raise NotFound("this server shows no files: CHROMA_EXPLORER_FILES lists no directory")
    path = local_path(uri)
    refused = NotFound(f"{str(path)!r:.200} is not an image file under CHROMA_EXPLORER_FILES")
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise refused from None
    allowed = [Path(root).resolve() for root in roots]
    root = next((root for root in allowed if real.is_relative_to(root)), None)
    if root is None:
        raise refused
    media_type = mimetypes.guess_type(real.name)[0]
    if media_type not in IMAGE_TYPES:
        raise refused
    try:
        fd = _open_under(root, real.relative_to(root).parts)
    except OSError:
        raise refused from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise refused
        if info.st_size > MAX_BYTES:
            raise PayloadTooLarge(f"{str(real)!r:.200} is larger than {MAX_BYTES} bytes")
        with os.fdopen(os.dup(fd), "rb") as file:
            return file.read(MAX_BYTES + 1)[:MAX_BYTES], media_type
    finally:
        os.close(fd)
