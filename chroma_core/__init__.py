"""Chroma's server core: hook specs, plugin manager, service and web app."""

from chroma_wire import __version__

__all__ = ["__version__"]
