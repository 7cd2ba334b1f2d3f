"""What Chroma's client and server share, and nothing server-side: the wire protocol, the
table of operations, the error types, the value types, the limits and the input checks.

The client package depends on this one alone; the server core builds on it too.
"""

__version__ = "0.1.0"
