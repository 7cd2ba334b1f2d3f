"""Every failure a user can act on, one exception type each.

Each type carries the HTTP status the server answers with; the JSON body is
``{"error": <class name>, "detail": <message>}`` and the client raises the same
class again from it.
"""

from __future__ import annotations

#: every error type by name, as the JSON body names it; a subclass registers itself
ERRORS: dict[str, type[ChromaError]] = {}


class ChromaError(Exception):
    """Base class of every error Chroma raises on purpose. A subclass names its HTTP status
    as a class keyword, ``class Gone(ChromaError, status=410)``, or inherits its base's."""

    status = 500

    def __init_subclass__(cls, status: int | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status
        ERRORS[cls.__name__] = cls

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail

    def to_json(self) -> dict:
        return {"error": type(self).__name__, "detail": self.detail}


ERRORS[ChromaError.__name__] = ChromaError


class InvalidInput(ChromaError, status=400):
    """A value, type, shape or parameter is not acceptable."""


class DimensionMismatch(InvalidInput):
    """Embeddings do not have the dimension the space was fixed to."""


class InvalidFilter(InvalidInput):
    """A ``where`` filter uses an unknown operator, key or value type."""


class MalformedPayload(InvalidInput):
    """A request body could not be decoded (truncated or foreign Arrow, bad JSON)."""


class PayloadTooLarge(InvalidInput, status=413):
    """A request body is larger than the server accepts."""


class InvalidBackup(InvalidInput):
    """A back-up directory is not one this Chroma can restore: another format version, a
    missing or changed file, or counts and dimensions that disagree with its manifest."""


class RequestTimeout(ChromaError, status=408):
    """A request's body stopped arriving before it was complete."""


class NotFound(ChromaError, status=404):
    """A space, id, trigger or algorithm does not exist."""


class MethodNotAllowed(ChromaError, status=405):
    """An HTTP method the route does not take: only a hand-made request can send one, since
    the client builds every request from the table of operations."""


class Conflict(ChromaError, status=409):
    """The request contradicts what is stored (duplicate id, other metric)."""


class ProtocolMismatch(ChromaError, status=426):
    """Client and server speak different versions of the wire protocol: install the same
    release of both."""


class Unauthorized(ChromaError, status=401):
    """The request lacks valid credentials."""


class DirectoryInUse(ChromaError, status=423):
    """Another Chroma holds the data directory: each directory serves one at a time, so that
    two processes never write the same files."""


class NotSupported(ChromaError, status=501):
    """The store serving this Chroma lacks an optional capability the operation needs (e.g.
    restoring a back-up): serve the data from a store that has it."""


class ServerError(ChromaError, status=500):
    """The server failed; the request may be retried."""


class StorageDamaged(ServerError, status=500):
    """The store's files are damaged: the server refuses writes to them and names what to
    do (see docs/reliability.md)."""


class StorageFull(ServerError, status=507):
    """The store's disk (or its database's size limit) is full: nothing of the request was
    stored. Free space, then send it again."""


def from_json(body: dict) -> ChromaError:
    """The exception a JSON error body describes (``ServerError`` when unknown)."""
    cls = ERRORS.get(str(body.get("error")), ServerError)
    return cls(str(body.get("detail", "")))
