"""The ``drift`` algorithm: how far each non-training dataset moved from training."""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from chroma_algo_drift import statistics
from chroma_core.algorithm import Algorithm
from chroma_core.filters import parse
from chroma_core.hookspecs import hookimpl
from chroma_wire import checks
from chroma_wire.errors import InvalidInput
from chroma_wire.types import Result

TRAINING = {"context": "training"}
NOT_TRAINING = {"context": {"$ne": "training"}}
BY = ("label", "inference", "auto")
# Rows read at a time while the means and spreads are summed over every row.
READ_ROWS = 50_000
# ``drifted`` also needs the OOD rate above this many times the expected rate.
OOD_FACTOR = 2.0
MAX_SAMPLE = 20_000
MAX_PERMUTATIONS = 10_000

SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("context", pa.string()),
        ("class", pa.string()),
        ("rows", pa.int64()),
        ("train_rows", pa.int64()),
        ("mmd", pa.float64()),
        ("p_value", pa.float64()),
        ("mean_shift", pa.float64()),
        ("ood_rate", pa.float64()),
        ("expected_ood_rate", pa.float64()),
        ("drifted", pa.bool_()),
    ]
)


@dataclass(frozen=True)
class DriftParams:
    sample: int = 2000
    permutations: int = 100
    alpha: float = 0.01
    min_rows: int = 20
    by: str = "auto"
    seed: int = 0
    ood_quantile: float = 0.95
    where: dict | None = field(default=None)


class Drift(Algorithm, name="drift"):
    """How far each non-training dataset's embeddings moved from training, overall and per
    class: kernel MMD with a permutation p-value, mean shift and out-of-distribution rate."""

    def run(self, context, space, params):
        settings = _params(params)
        store = context.store
        training = store.get(space.name, where=parse(TRAINING))
        if training.num_rows < 2:
            raise InvalidInput(
                f"space {space.name!r} has {training.num_rows} training rows; drift compares "
                "other datasets against at least 2 (add them with context='training')"
            )
        where = NOT_TRAINING if settings.where is None else {"$and": [NOT_TRAINING, settings.where]}
        others = store.get(space.name, where=parse(where))
        if others.num_rows == 0:
            matching = "" if settings.where is None else " matching where"
            raise InvalidInput(
                f"space {space.name!r} has no non-training rows{matching}: "
                "there is no dataset to compare with training"
            )
        geometry = _Geometry(store, space.name, space.metric)

        train_seqs = training.column("seq").to_numpy()
        train_class = _classes(training, "label" if settings.by == "label" else "auto")
        class_names = sorted({c for c in train_class if c is not None})
        class_code = {name: i for i, name in enumerate(class_names)}
        train_codes = np.array(
            [-1 if c is None else class_code.get(c, -1) for c in train_class], dtype=np.int64
        )

        other_seqs = others.column("seq").to_numpy()
        other_class = _classes(others, settings.by)
        datasets = others.column("dataset").to_pylist()
        contexts = others.column("context").to_pylist()
        groups = sorted(set(zip(datasets, contexts, strict=True)))
        group_code = {key: i for i, key in enumerate(groups)}
        codes = np.array(
            [group_code[key] for key in zip(datasets, contexts, strict=True)], dtype=np.int64
        )
        n_classes = len(class_names)
        # Classes the training rows do not carry get a code of their own, so they are
        # counted and reported as skipped rather than silently merged.
        extra = sorted({c for c in other_class if c is not None and c not in class_code})
        other_code = {**class_code, **{c: n_classes + i for i, c in enumerate(extra)}}
        all_classes = class_names + extra
        other_class_codes = np.array(
            [-1 if c is None else other_code[c] for c in other_class], np.int64
        )
        pair_codes = np.where(
            other_class_codes >= 0, codes * len(all_classes) + other_class_codes, -1
        )

        train_overall, train_by_class = geometry.moments(
            train_seqs, [np.zeros(len(train_seqs), np.int64), train_codes], [1, n_classes]
        )
        group_overall, group_by_class = geometry.moments(
            other_seqs, [codes, pair_codes], [len(groups), len(groups) * len(all_classes)]
        )

        references: dict[int, tuple[np.ndarray, float]] = {}

        def reference(code: int) -> tuple[np.ndarray, float]:
            # code -1 is every training row, else one training class
            if code not in references:
                pool = train_seqs if code < 0 else train_seqs[train_codes == code]
                rng = _rng(settings.seed, "training", None if code < 0 else class_names[code])
                rows = geometry.read(_sample(pool, settings.sample, rng))
                references[code] = (rows, statistics.ood_threshold(rows, settings.ood_quantile))
            return references[code]

        expected = round(1.0 - settings.ood_quantile, 12)
        records: list[dict] = []
        skipped: list[dict] = []
        for g, (dataset, context) in enumerate(groups):
            in_group = codes == g
            key = (dataset, context, None)
            records.append(
                _compare(
                    key,
                    other_seqs[in_group],
                    group_overall.mean_and_trace(g),
                    train_overall.mean_and_trace(0),
                    len(train_seqs),
                    reference(-1),
                    geometry,
                    settings,
                )
            )
            for c, name in enumerate(all_classes):
                mine = other_seqs[pair_codes == g * len(all_classes) + c]
                if len(mine) == 0:
                    continue
                train_rows = int(np.count_nonzero(train_codes == c)) if c < n_classes else 0
                if len(mine) < settings.min_rows or train_rows < settings.min_rows:
                    skipped.append(
                        {
                            "dataset": dataset,
                            "context": context,
                            "class": name,
                            "rows": len(mine),
                            "train_rows": train_rows,
                        }
                    )
                    continue
                records.append(
                    _compare(
                        (dataset, context, name),
                        mine,
                        group_by_class.mean_and_trace(g * len(all_classes) + c),
                        train_by_class.mean_and_trace(c),
                        train_rows,
                        reference(c),
                        geometry,
                        settings,
                    )
                )
        for record in records:
            record["expected_ood_rate"] = expected
            record["drifted"] = bool(
                record["p_value"] is not None
                and record["p_value"] < settings.alpha
                and record["ood_rate"] > OOD_FACTOR * expected
            )
        table = pa.Table.from_pylist(records, schema=SCHEMA)
        meta = {
            "settings": asdict(settings),
            "training_rows": len(train_seqs),
            "training_classes": {
                name: int(count)
                for name, count in zip(
                    class_names,
                    np.bincount(train_codes[train_codes >= 0], minlength=n_classes),
                    strict=True,
                )
            },
            "compared_rows": len(other_seqs),
            "skipped": skipped,
            "drifted_rule": (f"p_value < alpha and ood_rate > {OOD_FACTOR:g} * expected_ood_rate"),
            "geometry": "unit-normalised rows" if space.metric == "cosine" else "euclidean",
        }
        return Result(table, meta)


def _compare(
    key: tuple[str, str, str | None],
    seqs: np.ndarray,
    moments: tuple[np.ndarray, float],
    train_moments: tuple[np.ndarray, float],
    train_rows: int,
    reference: tuple[np.ndarray, float],
    geometry: _Geometry,
    settings: DriftParams,
) -> dict:
    dataset, context, name = key
    rng = _rng(settings.seed, f"{dataset}\0{context}", name)
    rows = geometry.read(_sample(seqs, settings.sample, rng))
    train_sample, threshold = reference
    mmd = p_value = None
    if len(rows) >= 2:
        mmd, p_value = statistics.mmd_test(train_sample, rows, settings.permutations, rng)
    return {
        "dataset": dataset,
        "context": context,
        "class": name,
        "rows": len(seqs),
        "train_rows": train_rows,
        "mmd": mmd,
        "p_value": p_value,
        "mean_shift": statistics.mean_shift(moments[0], train_moments[0], train_moments[1]),
        "ood_rate": statistics.ood_rate(rows, train_sample, threshold),
    }


class _Moments:
    """Per-code row counts, sums and sums of squared norms, relative to a common origin."""

    def __init__(self, n_codes: int, dim: int):
        self.counts = np.zeros(n_codes, dtype=np.int64)
        self.sums = np.zeros((n_codes, dim))
        self.squares = np.zeros(n_codes)
        self.origin: np.ndarray | None = None

    def add(self, x: np.ndarray, codes: np.ndarray) -> None:
        keep = codes >= 0
        if not keep.any():
            return
        order = np.argsort(codes[keep], kind="stable")
        sorted_codes = codes[keep][order]
        rows = x[keep][order] - self.origin
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        which = sorted_codes[starts]
        self.counts[which] += np.diff(np.r_[starts, len(sorted_codes)])
        self.sums[which] += np.add.reduceat(rows, starts, axis=0)
        self.squares[which] += np.add.reduceat(np.einsum("ij,ij->i", rows, rows), starts)

    def mean_and_trace(self, code: int) -> tuple[np.ndarray, float]:
        """The mean and the trace of the covariance (sample, n - 1) of one code's rows."""
        n = int(self.counts[code])
        assert self.origin is not None
        if n == 0:
            return np.full(len(self.origin), np.nan), 0.0
        centred_mean = self.sums[code] / n
        spread = self.squares[code] - n * float(centred_mean @ centred_mean)
        trace = max(spread, 0.0) / (n - 1) if n > 1 else 0.0
        return centred_mean + self.origin, trace


class _Geometry:
    """Reads rows from the store in the geometry the statistics work in."""

    def __init__(self, store, space: str, metric: str):
        self.store = store
        self.space = space
        self.cosine = metric == "cosine"

    def read(self, seqs: np.ndarray) -> np.ndarray:
        """float64 rows of ``seqs`` in the order given."""
        found, vectors = self.store.vectors(self.space, seqs=np.sort(seqs))
        x = self.read_rows(vectors)
        # Rows deleted since the catalogue was read are left out.
        positions = np.searchsorted(found, seqs)
        present = (positions < len(found)) & (found[np.minimum(positions, len(found) - 1)] == seqs)
        return x[positions[present]]

    def moments(
        self, seqs: np.ndarray, code_sets: list[np.ndarray], sizes: list[int]
    ) -> list[_Moments]:
        """Moments of every row of ``seqs`` under each set of codes, read in slices."""
        result: list[_Moments] = []
        for start in range(0, len(seqs), READ_ROWS):
            chunk = seqs[start : start + READ_ROWS]
            chunk_order = np.argsort(chunk, kind="stable")
            found, vectors = self.store.vectors(self.space, seqs=chunk[chunk_order])
            x = self.read_rows(vectors)
            position = np.searchsorted(chunk[chunk_order], found)
            if not result:
                result = [_Moments(size, x.shape[1]) for size in sizes]
                for moments in result:
                    moments.origin = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
            for moments, codes in zip(result, code_sets, strict=True):
                moments.add(x, codes[start : start + READ_ROWS][chunk_order][position])
        return result

    def read_rows(self, vectors: np.ndarray | None) -> np.ndarray:
        """float64 rows, unit-normalised in a cosine space."""
        x = np.asarray(vectors, dtype=np.float64)
        if self.cosine:
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            x /= np.where(norms == 0, 1.0, norms)
        return x


def _classes(table: pa.Table, by: str) -> list[str | None]:
    labels = table.column("label").to_pylist()
    inferences = table.column("inference").to_pylist()
    if by == "label":
        return labels
    if by == "inference":
        return inferences
    return [
        label if label is not None else inference
        for label, inference in zip(labels, inferences, strict=True)
    ]


def _sample(seqs: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if len(seqs) <= size:
        return seqs
    return seqs[np.sort(rng.choice(len(seqs), size, replace=False))]


def _rng(seed: int, side: str, name: str | None) -> np.random.Generator:
    # Each comparison draws from its own stream, so adding a dataset or a class does not
    # change the samples of the others.
    key = f"{side}\0{'' if name is None else name}\0{name is None}".encode()
    return np.random.default_rng([seed, zlib.crc32(key)])


def _params(params: dict) -> DriftParams:
    defaults = DriftParams()
    values = {name: params.pop(name, getattr(defaults, name)) for name in asdict(defaults)}
    checks.check_all_used("drift", params)
    sample = checks.required_int("sample", values["sample"], 10, MAX_SAMPLE)
    permutations = checks.required_int("permutations", values["permutations"], 1, MAX_PERMUTATIONS)
    min_rows = checks.required_int("min_rows", values["min_rows"], 2, 2**62)
    seed = checks.required_int("seed", values["seed"], 0)
    alpha = checks.required_float("alpha", values["alpha"], above=0, below=1)
    if 1.0 / (permutations + 1) >= alpha:
        raise InvalidInput(
            f"with permutations={permutations} the smallest possible p-value is "
            f"1/{permutations + 1}, never below alpha={alpha}: "
            f"use at least {int(np.ceil(1.0 / alpha))} permutations or a larger alpha"
        )
    quantile = checks.required_float("ood_quantile", values["ood_quantile"], 0.5, below=1)
    by = checks.choice("by", values["by"], BY)
    where = checks.optional_where("where", values["where"])
    parse(where)
    return DriftParams(
        sample=sample,
        permutations=permutations,
        alpha=alpha,
        min_rows=min_rows,
        by=by,
        seed=seed,
        ood_quantile=quantile,
        where=where or None,
    )


@hookimpl
def chroma_algorithms():
    return [Drift()]
