"""The exceptions the client raises: the same types in embedded and server mode."""

from chroma_core.errors import (
    ChromaError,
    Conflict,
    DimensionMismatch,
    InvalidFilter,
    InvalidInput,
    MalformedPayload,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ProtocolMismatch,
    ServerError,
    Unauthorized,
)


class ConnectionFailed(ChromaError):
    """The server could not be reached or did not answer in time."""

    status = 503


__all__ = [
    "ChromaError",
    "Conflict",
    "ConnectionFailed",
    "DimensionMismatch",
    "InvalidFilter",
    "InvalidInput",
    "MalformedPayload",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "ProtocolMismatch",
    "ServerError",
    "Unauthorized",
]
