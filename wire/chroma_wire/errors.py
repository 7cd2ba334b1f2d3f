"""Every failure a user can act on, one exception type each.

Each type carries the HTTP status the server answers with; the JSON body is
``{"error": <class name>, "detail": <message>}`` and the client raises the same
class again from it.
"""

from __future__ import annotations


class ChromaError(Exception):
    """Base class of every error Chroma raises on purpose."""

    status = 500

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail

    def to_json(self) -> dict:
        return {"error": type(self).__name__, "detail": self.detail}


class InvalidInput(ChromaError):
    """A value, type, shape or parameter is not acceptable."""

    status = 400


class DimensionMismatch(InvalidInput):
    """Embeddings do not have the dimension the space was fixed to."""


class InvalidFilter(InvalidInput):
    """A ``where`` filter uses an unknown operator, key or value type."""


class MalformedPayload(InvalidInput):
    """A request body could not be decoded (truncated or foreign Arrow, bad JSON)."""


class PayloadTooLarge(InvalidInput):
    """A request body is larger than the server accepts."""

    status = 413


class InvalidBackup(InvalidInput):
    """A back-up directory is not one this Chroma can restore: another format version, a
    missing or changed file, or counts and dimensions that disagree with its manifest."""


class NotFound(ChromaError):
    """A space, id, trigger or algorithm does not exist."""

    status = 404


class MethodNotAllowed(ChromaError):
    """An HTTP method the route does not take (only a hand-made request can send one)."""

    status = 405


class Conflict(ChromaError):
    """The request contradicts what is stored (duplicate id, other metric)."""

    status = 409


class ProtocolMismatch(ChromaError):
    """Client and server speak different versions of the wire protocol."""

    status = 426


class Unauthorized(ChromaError):
    """The request lacks valid credentials."""

    status = 401


class DirectoryInUse(ChromaError):
    """Another Chroma holds the data directory (each directory serves one at a time)."""

    status = 423


class ServerError(ChromaError):
    """The server failed; the request may be retried."""

    status = 500


ERRORS: dict[str, type[ChromaError]] = {
    cls.__name__: cls
    for cls in (
        ChromaError,
        InvalidInput,
        DimensionMismatch,
        InvalidFilter,
        MalformedPayload,
        PayloadTooLarge,
        InvalidBackup,
        NotFound,
        MethodNotAllowed,
        Conflict,
        ProtocolMismatch,
        Unauthorized,
        DirectoryInUse,
        ServerError,
    )
}


def from_json(body: dict) -> ChromaError:
    """The exception a JSON error body describes (``ServerError`` when unknown)."""
    cls = ERRORS.get(str(body.get("error")), ServerError)
    return cls(str(body.get("detail", "")))
