from chroma_core.hookspecs import hookimpl  # noqa: F401
