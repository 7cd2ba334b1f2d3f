"""Print how planted near-copies and ordinary neighbours sit relative to the median
nearest-neighbour distance, the figures README.md's choice of ``ratio`` rests on.

    .venv/bin/python plugins/algo_duplicates/calibration.py
"""

from __future__ import annotations

import numpy as np

from chroma_algo_duplicates.pairs import calibrate, neighbors

ROWS = 5_000
PLANTED = 50
CLUSTERS = 20
SPREAD = 0.3
COPY_NOISE = (0.001, 0.01)


def planted(rng: np.random.Generator, dim: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Clustered rows with ``PLANTED`` near-copies appended; the originals' indices."""
    centres = rng.standard_normal((CLUSTERS, dim)) * 3
    x = centres[rng.integers(0, CLUSTERS, ROWS)] + SPREAD * rng.standard_normal((ROWS, dim))
    originals = rng.choice(ROWS, PLANTED, replace=False)
    copies = x[originals] + noise * SPREAD * rng.standard_normal((PLANTED, dim))
    return np.vstack([x, copies]).astype(np.float32), originals


def main() -> None:
    rng = np.random.default_rng(0)
    print("metric  dim  copy_noise  median_nn  copy/median(max)  ordinary/median(min)  fp@0.1")
    for metric in ("l2", "cosine"):
        for dim in (4, 8, 16, 32, 128):
            for noise in COPY_NOISE:
                x, originals = planted(rng, dim, noise)
                n = len(x)
                _, median = calibrate(x, np.arange(ROWS), 1.0, metric)
                found = neighbors(x, np.arange(n), 1, metric)
                nearest = found.distances[:, 0]
                copies = nearest[ROWS:]
                plain = np.ones(n, dtype=bool)
                plain[ROWS:] = False
                plain[originals] = False
                # the threshold calibrate() gives for ratio 0.1
                threshold = median * (0.01 if metric == "cosine" else 0.1)
                print(
                    f"{metric:6}  {dim:3}  {noise:10}  {median:9.4f}  "
                    f"{copies.max() / median:16.5f}  {nearest[plain].min() / median:20.4f}  "
                    f"{int((nearest[plain] <= threshold).sum()):6}"
                )


if __name__ == "__main__":
    main()
