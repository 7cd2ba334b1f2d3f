"""Which rows of a large space go on the map: a seeded sample stratified by group."""

from __future__ import annotations

import zlib

import numpy as np


def allocate(sizes: np.ndarray, cap: int) -> np.ndarray:
    """How many rows to take from groups of ``sizes`` so that at most ``cap`` are taken.

    Every group gets an equal share of ``cap``; a group smaller than its share is taken
    whole and what it leaves is shared among the others (water filling). A small dataset
    therefore stays whole on a map dominated by a large one. Rows left over after equal
    shares go one each to the largest groups (ties to the first).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if cap < 0:
        raise ValueError("cap must be >= 0")
    if sizes.sum() <= cap:
        return sizes.copy()
    order = np.argsort(sizes, kind="stable")
    taken = np.zeros(len(sizes), dtype=np.int64)
    left, groups = cap, len(sizes)
    for position, group in enumerate(order):
        share = left // (groups - position)
        if sizes[group] <= share:
            taken[group] = sizes[group]
            left -= sizes[group]
            continue
        # every group from here on is at least this large: equal shares, then the rest
        rest = order[position:]
        taken[rest] = share
        extra = left - share * len(rest)
        by_size = rest[np.argsort(-sizes[rest], kind="stable")]
        taken[by_size[:extra]] += 1
        break
    return taken


def stratified_sample(codes: np.ndarray, keys: list, cap: int, seed: int) -> np.ndarray:
    """Sorted positions of at most ``cap`` rows; row i is in group ``keys[codes[i]]``.

    Each group's rows are drawn without replacement from a generator seeded by ``seed``
    and the group's key, so the same rows come back for the same seed and allocation.
    """
    codes = np.asarray(codes, dtype=np.int64)
    n = len(codes)
    if n <= cap:
        return np.arange(n, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes, minlength=len(keys))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    taken = allocate(sizes, cap)
    picked = []
    for code, key in enumerate(keys):
        members = order[starts[code] : starts[code] + sizes[code]]
        if taken[code] == sizes[code]:
            picked.append(members)
            continue
        rng = np.random.default_rng([seed, zlib.crc32(repr(key).encode())])
        picked.append(members[rng.choice(len(members), taken[code], replace=False)])
    return np.sort(np.concatenate(picked))
