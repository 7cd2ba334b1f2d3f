"""A space to explore: labelled training clusters, two triage datasets scored for priority,
and a small image file behind every input."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from chroma_client import Client

CLASSES = {
    "cat": (222, 120, 60),
    "dog": (70, 120, 200),
    "bird": (90, 170, 90),
    "fox": (200, 80, 140),
}
DIM = 32
TRAIN_PER_CLASS = 400
SPACE = "pets-resnet18"


def png(colour: tuple[int, int, int], size: int = 48) -> bytes:
    """A small PNG: a disc of ``colour`` on white."""
    yy, xx = np.mgrid[:size, :size]
    inside = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size / 2.5) ** 2
    pixels = np.where(inside[..., None], np.array(colour, np.uint8), np.uint8(255)).astype(np.uint8)
    raw = b"".join(b"\0" + row.tobytes() for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def images(directory: Path, kind: str, names: list[str]) -> list[str]:
    """One image file per name (the class colour, or grey), their paths as file URIs."""
    paths = []
    for i, name in enumerate(names):
        path = directory / kind / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(CLASSES.get(name, (140, 140, 140))))
        paths.append(path.as_uri())
    return paths


def seed(client: Client, directory: Path, name: str = SPACE) -> dict:
    """Fill space ``name``; returns the counts and the ids of the inputs added."""
    rng = np.random.default_rng(0)
    centres = {label: rng.normal(0, 5, DIM) for label in CLASSES}
    space = client.space(name, model={"name": "resnet18", "layer": "avgpool"})
    labels = [label for label in CLASSES for _ in range(TRAIN_PER_CLASS)]
    train = np.vstack([rng.normal(centres[label], 1.2, (1, DIM)) for label in labels])
    space.add(
        train.astype(np.float32),
        dataset="pets-v1",
        labels=labels,
        input_uris=images(directory, "train", labels),
    )
    triage = {}
    for dataset, shift, n in (("prod-2026-11", 0.0, 300), ("prod-2026-12", 2.5, 200)):
        truth = rng.choice(list(CLASSES), n)
        x = np.vstack([rng.normal(centres[t] + shift, 1.6, (1, DIM)) for t in truth])
        # the model mistakes one input in six for another class
        inferred = np.where(rng.random(n) < 1 / 6, rng.choice(list(CLASSES), n), truth)
        outputs = rng.dirichlet(np.ones(len(CLASSES)) * 0.6, n).astype(np.float32)
        triage[dataset] = space.add(
            x.astype(np.float32),
            dataset=dataset,
            context="triage",
            inferences=inferred.tolist(),
            outputs=outputs,
            input_uris=images(directory, dataset, list(truth)),
        )
    space.compute_priorities(k=10)
    total = len(labels) + sum(len(ids) for ids in triage.values())
    return {"space": name, "total": total, "training": len(labels), "triage": triage}
