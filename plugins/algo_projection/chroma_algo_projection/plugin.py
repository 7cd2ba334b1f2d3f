"""The ``projection`` algorithm: a 2-D map of a space's embeddings (PCA), for the explorer.

:class:`Projection` does what every map needs (a seeded sample stratified by dataset and
context, the rows' catalogue fields, a cache per space and parameters that lasts until the
space's rows change); a subclass says how rows become two coordinates. Another plugin can
add a map the explorer offers by registering a subclass named ``projection_<method>``.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chroma_algo_projection.pca import principal_components
from chroma_algo_projection.sampling import stratified_sample
from chroma_core.algorithm import Algorithm
from chroma_core.filters import parse
from chroma_core.hookspecs import hookimpl
from chroma_wire import checks
from chroma_wire.types import Result

if TYPE_CHECKING:
    from chroma_core.context import PluginContext
    from chroma_wire.types import SpaceInfo

STATE = "algo_projection"
MAX_SAMPLE = 1_000_000
#: maps kept per service; one of 100,000 rows takes about 10 MB
CACHE_ENTRIES = 8
CATALOGUE = ("dataset", "context", "label", "inference", "input_uri")

SCHEMA = pa.schema(
    [("id", pa.string()), ("x", pa.float32()), ("y", pa.float32())]
    + [(name, pa.string()) for name in CATALOGUE]
)


@dataclass(frozen=True)
class MapParams:
    #: rows drawn at most, stratified by (dataset, context)
    sample: int = 100_000
    seed: int = 0
    where: dict | None = field(default=None)


class Projection(Algorithm):
    """Base of the algorithms that map a space onto two coordinates.

    ``run`` answers one row per sampled input: ``id``, ``x``, ``y`` and the catalogue
    fields; ``meta`` says how many rows the space holds, how many each (dataset, context)
    gave to the sample, and what :meth:`project` reported."""

    #: rows mapped when the caller gives no ``sample``: a slower method sets fewer
    default_sample = MapParams().sample

    def options(self, params: dict) -> dict:
        """Take this method's own parameters out of ``params`` and check them."""
        return {}

    def project(self, x: np.ndarray, seed: int, options: dict) -> tuple[np.ndarray, dict]:
        """The (n, 2) coordinates of the rows of ``x`` and a summary for ``meta``.

        ``x`` is float32 (n, d), unit-normalised in a cosine space."""
        raise NotImplementedError

    def run(self, context, space, params):
        settings = _params(params, self.default_sample)
        options = self.options(params)
        checks.check_all_used(self.name, params)
        described = json.dumps([asdict(settings), options], sort_keys=True, default=str)
        key = (space.name, space.space_id, self.name, described)
        # read before the rows, so rows added meanwhile make the stored map stale
        version = (context.store.max_seq(space.name), context.store.count(space.name))
        cache = _cache(context)
        found = cache.get(key, version)
        if found is None:
            found = self._compute(context, space, settings, options)
            cache.put(key, version, found)
            return Result(found.table, {**found.meta, "cached": False})
        return Result(found.table, {**found.meta, "cached": True})

    def _compute(
        self, context: PluginContext, space: SpaceInfo, settings: MapParams, options: dict
    ) -> Result:
        store = context.store
        where = parse(settings.where)
        rows = store.get(space.name, where=where)
        groups = pc.binary_join_element_wise(
            pc.fill_null(rows.column("dataset"), ""), pc.fill_null(rows.column("context"), ""), "\0"
        )
        encoded = pc.dictionary_encode(groups).combine_chunks()
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        keys = encoded.dictionary.to_pylist()
        positions = stratified_sample(codes, keys, settings.sample, settings.seed)
        seqs = rows.column("seq").to_numpy()[positions]
        if len(positions) == rows.num_rows:
            found, vectors = store.vectors(space.name, where=where)
        else:
            found, vectors = store.vectors(space.name, seqs=seqs)
        # rows deleted since the catalogue was read drop out; rows added since are not asked
        at = np.searchsorted(found, seqs).clip(max=max(len(found) - 1, 0))
        present = found[at] == seqs if len(found) else np.zeros(len(seqs), dtype=bool)
        positions, at = positions[present], at[present]
        x = np.zeros((0, space.dim or 0), np.float32) if vectors is None else vectors[at]
        if space.metric == "cosine" and len(x):
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.where(norms == 0, 1.0, norms)
        coordinates, summary = self.project(x, settings.seed, options)
        coordinates = np.asarray(coordinates, dtype=np.float32)
        if coordinates.shape != (len(x), 2) or not np.isfinite(coordinates).all():
            raise ValueError(f"{self.name} gave coordinates of shape {coordinates.shape}")
        taken = pa.array(positions)
        table = pa.Table.from_arrays(
            [
                rows.column("id").take(taken),
                pa.array(coordinates[:, 0]),
                pa.array(coordinates[:, 1]),
                *[rows.column(name).take(taken) for name in CATALOGUE],
            ],
            schema=SCHEMA,
        )
        meta = {
            "algorithm": self.name,
            "rows": rows.num_rows,
            "sampled": table.num_rows,
            "strata": _strata(keys, codes, codes[positions]),
            "settings": asdict(settings),
            "options": options,
            "computed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **summary,
        }
        return Result(table, meta)


class PrincipalComponents(Projection, name="projection"):
    """A 2-D map of the space: its first two principal components (PCA) over a seeded sample
    stratified by dataset and context, cached until the space's rows change."""

    def project(self, x, seed, options):
        found = principal_components(x, seed=seed)
        return found.coordinates, {
            "method": "pca",
            "solver": found.solver,
            "explained_variance_ratio": [float(v) for v in found.variance_ratio],
        }


class _Cache:
    """Maps by (space, parameters), each with the space's (max seq, count) when computed;
    one whose space has changed since is never answered."""

    def __init__(self):
        self.lock = threading.Lock()
        self.entries: OrderedDict[tuple, tuple[tuple, Result]] = OrderedDict()

    def get(self, key: tuple, version: tuple) -> Result | None:
        with self.lock:
            entry = self.entries.get(key)
            if entry is None or entry[0] != version:
                return None
            self.entries.move_to_end(key)
            return entry[1]

    def put(self, key: tuple, version: tuple, result: Result) -> None:
        with self.lock:
            self.entries[key] = (version, result)
            self.entries.move_to_end(key)
            while len(self.entries) > CACHE_ENTRIES:
                self.entries.popitem(last=False)

    def drop(self, space: str) -> None:
        with self.lock:
            for key in [key for key in self.entries if key[0] == space]:
                del self.entries[key]


def _cache(context: PluginContext) -> _Cache:
    return context.state(STATE, _Cache)


def _strata(keys: list, codes: np.ndarray, sampled: np.ndarray) -> list[dict]:
    rows = np.bincount(codes, minlength=len(keys))
    taken = np.bincount(sampled, minlength=len(keys))
    out = []
    for code, key in enumerate(keys):
        dataset, _, context = key.partition("\0")
        out.append(
            {
                "dataset": dataset,
                "context": context,
                "rows": int(rows[code]),
                "sampled": int(taken[code]),
            }
        )
    return out


def _params(params: dict, default_sample: int) -> MapParams:
    defaults = MapParams()
    sample = checks.required_int("sample", params.pop("sample", default_sample), 1, MAX_SAMPLE)
    seed = checks.required_int("seed", params.pop("seed", defaults.seed), 0)
    where = checks.optional_where("where", params.pop("where", defaults.where))
    parse(where)
    return MapParams(sample=sample, seed=seed, where=where or None)


@hookimpl
def chroma_algorithms():
    return [PrincipalComponents()]


@hookimpl
def chroma_rows_added(context, space, seqs, rows):
    _cache(context).drop(space.name)


@hookimpl
def chroma_rows_deleted(context, space, seqs):
    _cache(context).drop(space.name)


@hookimpl
def chroma_space_deleted(context, space):
    _cache(context).drop(space.name)
