"""The exceptions the client raises: the same types in embedded and server mode."""

from chroma_wire.errors import (
    ChromaError,
    Conflict,
    DimensionMismatch,
    DirectoryInUse,
    InvalidBackup,
    InvalidFilter,
    InvalidInput,
    MalformedPayload,
    MethodNotAllowed,
    NotFound,
    NotSupported,
    PayloadTooLarge,
    ProtocolMismatch,
    RequestTimeout,
    ServerError,
    StorageDamaged,
    StorageFull,
    Unauthorized,
)


class ConnectionFailed(ChromaError, status=503):
    """The server could not be reached or did not answer in time."""


class RetriesExhausted(ConnectionFailed):
    """A request safe to send again failed on every attempt the client allows
    (``Client(retries=...)``); ``attempts`` says how many were made."""

    def __init__(self, detail: str, attempts: int = 0):
        super().__init__(detail)
        self.attempts = attempts


class StreamError(ChromaError, status=500):
    """Rows added to a stream were not stored; ``failed_rows`` says how many, the cause is
    chained."""

    def __init__(self, detail: str, failed_rows: int = 0):
        super().__init__(detail)
        self.failed_rows = failed_rows


class StreamFull(ChromaError, status=503):
    """An add waited its whole timeout for room in the stream (``max_pending_rows``)."""


__all__ = [
    "ChromaError",
    "Conflict",
    "ConnectionFailed",
    "DimensionMismatch",
    "DirectoryInUse",
    "InvalidBackup",
    "InvalidFilter",
    "InvalidInput",
    "MalformedPayload",
    "MethodNotAllowed",
    "NotFound",
    "NotSupported",
    "PayloadTooLarge",
    "ProtocolMismatch",
    "RequestTimeout",
    "RetriesExhausted",
    "ServerError",
    "StorageDamaged",
    "StorageFull",
    "StreamError",
    "StreamFull",
    "Unauthorized",
]
