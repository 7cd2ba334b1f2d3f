"""The ``chroma`` command: load files into a space, look at spaces, priorities and
triggers, and run the server. Everything but ``chroma run`` goes through the public client,
embedded (``--path``) or against a server (``--url``)."""
