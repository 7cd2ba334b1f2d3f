"""Chroma's Python client: log model embeddings, find neighbours, rank inputs to retrain on."""

from chroma_client import errors
from chroma_client.client import Client, Explanation, Space, SpaceSummary, Trigger
from chroma_client.stream import Stream
from chroma_client.watch import Watch, Watched
from chroma_wire import __version__

__all__ = [
    "Client",
    "Explanation",
    "Space",
    "SpaceSummary",
    "Stream",
    "Trigger",
    "Watch",
    "Watched",
    "__version__",
    "errors",
]
