"""Chroma's server core: hook specs, plugin manager, service, protocol and web app."""

__version__ = "0.1.0"
