"""What every system in the comparison is given: embeddings, queries and the exact answers.

Two generators of embeddings (``--data``), both 100 clusters, deterministic for a seed:

``embedding`` (default) is shaped like the output of a trained model. Each cluster (a class
or topic) has a random unit-length centre and its own random 16-dimensional orthonormal
basis; a point is its centre plus a combination of those 16 directions, with spreads falling
off as 1/sqrt(j) along the j-th (the decaying spectrum of real embeddings), plus small
isotropic noise in all d dimensions (a tenth of the within-cluster energy). Every vector is
then scaled to unit length, as most models' embeddings are. Points of one cluster sit at a
cosine similarity of about 0.67, of different clusters about 0; the low intrinsic dimension
is what lets a graph index such as HNSW find true neighbours at high recall.

``isotropic`` is the generator of the first benchmarks: centres drawn from N(0, 4^2) in every
dimension, unit Gaussian noise in all d dimensions around them. Full-rank noise makes all
distances within a cluster nearly equal, a known hard case for HNSW: recall at fixed settings
falls as N grows (0.9 at 1,000,000 with ef=128).

Queries are stored points plus Gaussian noise of 0.3 times the data's within-cluster spread
in each dimension. Row ``i`` has id ``r{i}``; every 40th row (2.5%) is in dataset "rare",
the rest in "common", all in context "training".

A workload is saved as .npy files plus ``spec.json`` in one directory, which is all a
system's runner reads, whatever environment it runs in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLUSTERS = 100
#: dimension of each cluster's own subspace in the ``embedding`` generator
SUBSPACE = 16
#: share of the within-cluster energy that is isotropic noise in the ``embedding`` generator
NOISE_SHARE = 0.1
#: within-cluster energy relative to the unit centre (before scaling to unit length)
SPREAD_ENERGY = 0.5
#: query noise, relative to the within-cluster spread per dimension
QUERY_NOISE = 0.3
BATCH_QUERIES = 1000
GET_IDS = 10_000
GET_FILTER_LIMIT = 100_000
RARE_EVERY = 40
BLOCK = 100_000
FILES = ("data", "queries", "batch", "get_ids")


def embedding_like(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """``(n, d)`` float32 unit vectors as described above, and their within-cluster spread
    per dimension."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLUSTERS, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    k = min(SUBSPACE, d)
    bases = np.stack([np.linalg.qr(rng.normal(size=(d, k)))[0] for _ in range(CLUSTERS)])
    decay = 1 / np.sqrt(np.arange(1, k + 1))
    scales = decay * np.sqrt((1 - NOISE_SHARE) * SPREAD_ENERGY / np.sum(decay**2))
    noise = np.sqrt(NOISE_SHARE * SPREAD_ENERGY / d)
    out = np.empty((n, d), np.float32)
    for start in range(0, n, BLOCK):
        m = min(BLOCK, n - start)
        cluster = rng.integers(0, CLUSTERS, m)
        block = centres[cluster] + rng.normal(0, noise, size=(m, d))
        coefficients = rng.normal(size=(m, k)) * scales
        for c in np.unique(cluster):
            rows = cluster == c
            block[rows] += coefficients[rows] @ bases[c].T
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + m] = block
    return out, float(np.sqrt(SPREAD_ENERGY / d / (1 + SPREAD_ENERGY)))


def isotropic(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """``(n, d)`` float32 points of isotropic Gaussian clusters, and their spread (1)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(CLUSTERS, d)).astype(np.float32)
    out = np.empty((n, d), np.float32)
    for start in range(0, n, BLOCK):
        m = min(BLOCK, n - start)
        out[start : start + m] = centres[rng.integers(0, CLUSTERS, m)] + rng.normal(size=(m, d))
    return out, 1.0


GENERATORS = {"embedding": embedding_like, "isotropic": isotropic}


def near_points(data: np.ndarray, count: int, noise: float, seed: int) -> np.ndarray:
    """``count`` stored points plus Gaussian noise of ``noise`` per dimension."""
    rng = np.random.default_rng(seed)
    picked = data[rng.choice(len(data), count, replace=count > len(data))]
    return (picked + rng.normal(0, noise, picked.shape)).astype(np.float32)


@dataclass
class Workload:
    data: np.ndarray
    #: single-vector queries, unfiltered and filtered
    queries: np.ndarray
    #: the queries sent in one call
    batch: np.ndarray
    #: rows fetched by id
    get_ids: np.ndarray

    @classmethod
    def generate(cls, kind: str, rows: int, dim: int, queries: int) -> Workload:
        data, spread = GENERATORS[kind](rows, dim, seed=0)
        noise = QUERY_NOISE * spread
        get_ids = np.random.default_rng(3).choice(rows, min(GET_IDS, rows), replace=False)
        return cls(
            data=data,
            queries=near_points(data, queries, noise, seed=1),
            batch=near_points(data, BATCH_QUERIES, noise, seed=2),
            get_ids=get_ids.astype(np.int64),
        )

    @property
    def rare(self) -> np.ndarray:
        """Row numbers of the rows in dataset "rare"."""
        return np.arange(0, len(self.data), RARE_EVERY)

    @property
    def get_filter_limit(self) -> int:
        return min(GET_FILTER_LIMIT, len(self.data) - len(self.rare))

    def save(self, directory: Path, spec: dict) -> None:
        """The arrays as .npy files and ``spec`` (index settings, batch sizes...) as JSON."""
        for name in FILES:
            np.save(directory / f"{name}.npy", getattr(self, name))
        spec = {**spec, "rare_every": RARE_EVERY, "get_filter_limit": self.get_filter_limit}
        (directory / "spec.json").write_text(json.dumps(spec, indent=1))
