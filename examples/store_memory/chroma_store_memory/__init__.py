"""An example third-party Chroma store: ``CHROMA_STORE=memory``."""
