"""The Arrow layout of a batch of rows, as the client sends it and stores receive it."""

from __future__ import annotations

import pyarrow as pa

TEXT_FIELDS = ("id", "dataset", "context", "input_uri", "inference", "label", "metadata")
REQUIRED_TEXT = ("id", "dataset", "context")


def rows_schema(dim: int) -> pa.Schema:
    """The schema of a batch of ``dim``-dimensional rows as stores receive it."""
    return pa.schema(
        [pa.field(name, pa.string(), nullable=name not in REQUIRED_TEXT) for name in TEXT_FIELDS]
        + [
            pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("output", pa.list_(pa.float32())),
        ]
    )
