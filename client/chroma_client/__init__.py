"""Chroma's Python client: log model embeddings, find neighbours, rank inputs to retrain on."""

from chroma_client import errors
from chroma_client.client import Client, Explanation, Space, SpaceSummary, Trigger
from chroma_wire import __version__

__all__ = ["Client", "Explanation", "Space", "SpaceSummary", "Trigger", "__version__", "errors"]
