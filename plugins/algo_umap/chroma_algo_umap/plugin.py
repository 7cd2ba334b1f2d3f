"""The ``projection_umap`` algorithm: a 2-D map that keeps each input near its nearest
neighbours (UMAP, through umap-learn), on the sample and cache every map shares
(:class:`chroma_algo_projection.plugin.Projection`).

The algorithm is offered only where umap-learn is installed (``pip install
chroma-algo-umap[umap]``): without it nothing is registered, and the explorer lists PCA
alone.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np

from chroma_algo_projection.plugin import Projection
from chroma_core.hookspecs import hookimpl
from chroma_wire import checks
from chroma_wire.errors import InvalidInput

#: rows mapped when no ``sample`` is given: UMAP takes about a minute at 20,000 on 2 cores
DEFAULT_SAMPLE = 20_000


class Umap(Projection, name="projection_umap"):
    """A 2-D map of the space that keeps each input near its nearest neighbours (UMAP),
    over a seeded sample stratified by dataset and context (20,000 rows unless ``sample``
    says otherwise), cached until the space's rows change."""

    default_sample = DEFAULT_SAMPLE

    def options(self, params: dict) -> dict:
        neighbors = checks.required_int("n_neighbors", params.pop("n_neighbors", 15), 2, 200)
        min_dist = checks.optional_float("min_dist", params.pop("min_dist", 0.1))
        if min_dist is None or not 0.0 <= min_dist <= 1.0:
            raise InvalidInput(f"min_dist must lie in [0, 1], got {min_dist!r}")
        return {"n_neighbors": neighbors, "min_dist": float(min_dist)}

    def project(self, x, seed, options):
        if len(x) < 3:
            # too few points for a neighbourhood graph: lay them on a line
            return np.column_stack([np.arange(len(x)), np.zeros(len(x))]), {"method": "umap"}
        import umap  # imported when asked: numba compiles on first use

        started = time.perf_counter()
        reducer = umap.UMAP(
            n_components=2,
            n_neighbors=min(options["n_neighbors"], len(x) - 1),
            min_dist=options["min_dist"],
            # rows arrive unit length in a cosine space: euclidean then ranks as cosine
            metric="euclidean",
            random_state=seed,
            # a fixed seed already makes it run on one thread
            n_jobs=1,
        )
        coordinates = reducer.fit_transform(np.asarray(x, dtype=np.float32))
        return coordinates, {
            "method": "umap",
            "n_neighbors": reducer.n_neighbors,
            "min_dist": options["min_dist"],
            "seconds": round(time.perf_counter() - started, 3),
        }


def available() -> bool:
    """Whether umap-learn can be imported here."""
    return importlib.util.find_spec("umap") is not None


@hookimpl
def chroma_algorithms():
    return [Umap()] if available() else []
