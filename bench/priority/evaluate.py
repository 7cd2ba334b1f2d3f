"""Chroma's priority and label quality on real labelled data, against the signals users know.

    .venv/bin/python bench/priority/evaluate.py                    # every real data set, seed 0
    .venv/bin/python bench/priority/evaluate.py --seeds 0-4 --json results.json
    .venv/bin/python bench/priority/evaluate.py --datasets digits --timing 200000
    .venv/bin/python bench/priority/evaluate.py --tiny             # our venv only, synthetic

Each data set is split into a training part and a triage part; a seeded 10% of the training
labels are flipped to another class, and a model is fitted on those noisy labels. Two questions,
scored as rankings with AUROC, average precision and precision in the top 1% and 5%:

(a) triage inputs: which ones did the model get wrong? Rankers: ours (`priority`, rows sent
    with the model's probabilities as `outputs`, and again with the inference alone), random,
    k-NN disagreement alone, the linear probe alone, distance alone (`distance_pct`),
    1 - max probability, and cleanlab Datalab's label score of the model's predictions.
(b) training inputs: which labels were flipped? Rankers: ours (`label_quality`'s
    `issue_score`), random, the neighbour vote alone, the probe alone, cleanlab's
    `find_label_issues` on out-of-fold probabilities of the same model (its issues first, each
    group by self-confidence), the same self-confidence without the flags, and
    `Datalab(...).find_issues(features=embeddings)`'s label score.

The scikit-learn sets (digits, wine, breast_cancer) come from its bundled copies; the model, its
embeddings and cleanlab run in bench/.venv-priority (bench/priority/reference.py), which this
script creates from bench/priority/requirements.txt the first time it is needed. The text sets
(reviews, sentiment, sentiment3) are sentence embeddings by all-MiniLM-L6-v2 of corpora that
ship inside PyPI packages, made once by bench/priority/text.py in bench/.venv-text and kept in
bench/.cache/text; their triage inputs come from sources the training inputs never saw.
``synthetic`` (and ``--tiny``) needs only our venv: Gaussian classes, a nearest-class-mean
softmax as the model, and 10% of the triage inputs from two classes the training set lacks;
cleanlab is not run on it. ``--seeds A-B`` runs each seed and prints mean ± standard
deviation; ``--timing N`` times label_quality against Datalab on N synthetic points.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("CHROMA_SIMILARITY_BUILD", "lazy")

from chroma_client import Client  # noqa: E402

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
from arguments import known_names  # noqa: E402
from machine import cpu_model  # noqa: E402
from reference_env import reference_python  # noqa: E402

SKLEARN = ("digits", "wine", "breast_cancer")
TEXT = ("reviews", "sentiment", "sentiment3")
REAL = (*SKLEARN, *TEXT)
KNOWN = (*REAL, "synthetic")
TEXT_CACHE = BENCH.parent / ".cache" / "text"
DESCRIPTIONS = {
    "digits": ("MLP hidden layer", "l2"),
    "wine": ("standardised features", "l2"),
    "breast_cancer": ("standardised features", "l2"),
    "reviews": ("all-MiniLM-L6-v2 sentence embedding; triage: unseen films", "cosine"),
    "sentiment": ("all-MiniLM-L6-v2 sentence embedding; triage: unseen sources", "cosine"),
    "sentiment3": ("all-MiniLM-L6-v2 sentence embedding; triage: unseen sources", "cosine"),
}
METRICS = ("auroc", "ap", "p_at_1pct", "p_at_5pct")
HEADINGS = ("AUROC", "AP", "P@1%", "P@5%")
TRIAGE_RANKERS = {
    "ours": "ours: priority (with outputs)",
    "ours_no_outputs": "ours: priority (inference only)",
    "random": "random",
    "disagreement": "k-NN disagreement alone",
    "probe": "linear probe alone (1 - probe_support)",
    "distance_pct": "distance alone (distance_pct)",
    "one_minus_max_prob": "1 - max probability",
    "datalab_predictions": "cleanlab Datalab on the predictions",
}
TRAINING_RANKERS = {
    "ours": "ours: label_quality issue_score",
    "random": "random",
    "votes": "neighbour vote alone (1 - vote_quality)",
    "probe": "linear probe alone (1 - probe_quality)",
    "cleanlab_issue_first": "cleanlab find_label_issues",
    "cleanlab_self_confidence": "cleanlab self-confidence",
    "datalab_label": "cleanlab Datalab label score",
}
ARRAYS = (
    "train_x",
    "train_given",
    "train_true",
    "triage_x",
    "triage_true",
    "triage_pred",
    "triage_proba",
    "cleanlab_issue_first",
    "cleanlab_self_confidence",
    "datalab_label",
    "datalab_predictions",
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- metrics -----------------------------------------------------------------
def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Probability that a positive outscores a negative, ties counting half (Mann-Whitney)."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    values, inverse = np.unique(scores, return_inverse=True)
    midranks = np.bincount(inverse, ranks) / np.bincount(inverse)
    rank_sum = midranks[inverse][positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Sum over distinct thresholds of (recall gained) x precision, as scikit-learn's
    average_precision_score: tied scores enter together."""
    n_pos = int(positive.sum())
    if n_pos == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    hits = np.cumsum(p)[last]
    precision = hits / (last + 1)
    gained = np.diff(np.r_[0, hits]) / n_pos
    return float((gained * precision).sum())


def precision_at(scores: np.ndarray, positive: np.ndarray, fraction: float) -> float:
    """Share of positives among the top ``fraction`` (at least one row); rows tied at the cut
    count with their average, the expectation over every order of the ties."""
    m = max(1, math.ceil(fraction * len(scores)))
    cut = np.sort(scores)[::-1][m - 1]
    above, tied = scores > cut, scores == cut
    hits = positive[above].sum() + (m - above.sum()) * positive[tied].mean()
    return float(hits / m)


def evaluate_ranking(scores: np.ndarray, positive: np.ndarray) -> dict:
    scores = np.asarray(scores, dtype=np.float64)
    return {
        "auroc": auroc(scores, positive),
        "ap": average_precision(scores, positive),
        "p_at_1pct": precision_at(scores, positive, 0.01),
        "p_at_5pct": precision_at(scores, positive, 0.05),
    }


# --- data --------------------------------------------------------------------
def synthetic(
    seed: int,
    n_train: int = 600,
    n_triage: int = 300,
    dim: int = 16,
    classes: int = 5,
    noise: float = 0.1,
) -> dict[str, np.ndarray]:
    """Gaussian classes; the model is a softmax over distances to the class means of the noisy
    training labels. A tenth of the triage inputs come from two classes it has never seen."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 1.2, size=(classes + 2, dim))
    train_true = rng.integers(0, classes, n_train)
    unseen = rng.random(n_triage) < 0.1
    triage_true = np.where(unseen, rng.integers(classes, classes + 2, n_triage), 0)
    triage_true[~unseen] = rng.integers(0, classes, int((~unseen).sum()))
    train_x = means[train_true] + rng.normal(size=(n_train, dim))
    triage_x = means[triage_true] + rng.normal(size=(n_triage, dim))
    given = train_true.copy()
    chosen = rng.choice(n_train, size=round(noise * n_train), replace=False)
    given[chosen] = (train_true[chosen] + rng.integers(1, classes, len(chosen))) % classes
    fitted = np.stack([train_x[given == c].mean(axis=0) for c in range(classes)])
    logits = -0.5 * ((triage_x[:, None, :] - fitted[None]) ** 2).sum(axis=2)
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    return {
        "train_x": train_x,
        "train_given": given,
        "train_true": train_true,
        "triage_x": triage_x,
        "triage_true": triage_true,
        "triage_pred": proba.argmax(axis=1),
        "triage_proba": proba,
    }


def run_reference(python: Path, mode: str, directory: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHROMA_")}
    subprocess.run(
        [str(python), str(BENCH / "reference.py"), mode, str(directory)], check=True, env=env
    )
    return json.loads((directory / "reference.json").read_text())


# --- ours --------------------------------------------------------------------
def ours(data: dict[str, np.ndarray], k: int, path: Path, metric: str = "l2") -> dict:
    """Our scores of the triage and training rows, through an embedded client: one space
    whose triage rows carry the model's probabilities, one where they carry its inference
    alone."""
    client = Client(path=str(path))
    n_train, n_triage = len(data["train_x"]), len(data["triage_x"])
    train_ids = [f"t{i}" for i in range(n_train)]
    triage_ids = [f"q{i}" for i in range(n_triage)]
    out: dict = {}
    for name, outputs in (("evaluation", True), ("inference_only", False)):
        space = client.space(name, metric=metric)
        space.add(
            np.asarray(data["train_x"], dtype=np.float32),
            dataset="evaluation",
            context="training",
            labels=[str(v) for v in data["train_given"]],
            ids=train_ids,
        )
        space.add(
            np.asarray(data["triage_x"], dtype=np.float32),
            dataset="evaluation",
            context="triage",
            inferences=[str(v) for v in data["triage_pred"]],
            outputs=np.asarray(data["triage_proba"], dtype=np.float64) if outputs else None,
            ids=triage_ids,
        )
        started = time.perf_counter()
        space.compute_priorities(k=k)
        seconds = time.perf_counter() - started
        frame = space.priorities(n=None).set_index("id").loc[triage_ids]
        if not outputs:
            out["priority_no_outputs"] = frame["priority"].to_numpy(dtype=np.float64)
            continue
        out["priority_s"] = seconds
        for column in ("priority", "disagreement", "distance_pct", "probe_support", "vote_weight"):
            out[column] = frame[column].to_numpy(dtype=np.float64)

        if "label_quality" in set(client.algorithms()["name"]):
            started = time.perf_counter()
            quality = space.run("label_quality", k=k)
            out["label_quality_s"] = time.perf_counter() - started
            by_id = quality.set_index("id").loc[train_ids]
            out["issue_score"] = by_id["issue_score"].to_numpy()
            out["vote_issue"] = 1.0 - by_id["vote_quality"].to_numpy(dtype=np.float64)
            out["probe_issue"] = 1.0 - by_id["probe_quality"].to_numpy(dtype=np.float64)
            out["label_vote_weight"] = quality.attrs["meta"].get("vote_weight")
    client.close()
    return out


# --- one data set ------------------------------------------------------------
def score_dataset(name: str, data: dict[str, np.ndarray], info: dict, args, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="priority-eval-", dir=args.tmp) as tmp:
        mine = ours(data, args.k, Path(tmp) / "data", info.get("metric", "l2"))

    wrong = np.asarray(data["triage_pred"]) != np.asarray(data["triage_true"])
    flipped = np.asarray(data["train_given"]) != np.asarray(data["train_true"])
    triage_scores = {
        "ours": mine["priority"],
        "ours_no_outputs": mine["priority_no_outputs"],
        "random": rng.random(len(wrong)),
        "disagreement": mine["disagreement"],
        "probe": 1.0 - mine["probe_support"],
        "distance_pct": mine["distance_pct"],
        "one_minus_max_prob": 1.0 - np.asarray(data["triage_proba"]).max(axis=1),
        "datalab_predictions": data.get("datalab_predictions"),
    }
    training_scores = {
        "ours": mine.get("issue_score"),
        "random": rng.random(len(flipped)),
        "votes": mine.get("vote_issue"),
        "probe": mine.get("probe_issue"),
    }
    for key in ("cleanlab_issue_first", "cleanlab_self_confidence", "datalab_label"):
        training_scores[key] = data.get(key)

    def rank(scores: dict, positive: np.ndarray) -> dict:
        return {
            key: None if value is None else evaluate_ranking(value, positive)
            for key, value in scores.items()
        }

    return {
        **info,
        "training_rows": int(len(flipped)),
        "flipped": int(flipped.sum()),
        "triage_rows": int(len(wrong)),
        "wrong": int(wrong.sum()),
        "label_quality_found": "issue_score" in mine,
        "priority_s": mine["priority_s"],
        "label_quality_s": mine.get("label_quality_s"),
        "vote_weight": {
            "priority": float(mine["vote_weight"][0]) if len(mine["vote_weight"]) else None,
            "label_quality": mine.get("label_vote_weight"),
        },  # fmt: skip
        "triage": rank(triage_scores, wrong),
        "training": rank(training_scores, flipped),
    }


# The baselines each of ours is held against: what users reach for, and each of our signals
# alone. Without outputs, only what needs no outputs.
TRIAGE_BASELINES = ("disagreement", "probe", "one_minus_max_prob", "datalab_predictions")
TRIAGE_BASELINES_NO_OUTPUTS = ("disagreement", "probe", "datalab_predictions")
TRAINING_BASELINES = (
    "votes",
    "probe",
    "cleanlab_issue_first",
    "cleanlab_self_confidence",
    "datalab_label",
)


def targets(result: dict) -> dict:
    """Each of ours has an AUROC at least the best of its baselines' (those that ran)."""

    def at_least_best(part: str, ours_key: str, baselines: tuple) -> bool | None:
        rows = result[part]
        mine = rows.get(ours_key)
        best = [rows[k]["auroc"] for k in baselines if rows.get(k) and rows[k]["auroc"]]
        if mine is None or mine["auroc"] is None or not best:
            return None
        return mine["auroc"] >= max(best)

    out = {
        "a_with_outputs": at_least_best("triage", "ours", TRIAGE_BASELINES),
        "a_inference_only": at_least_best("triage", "ours_no_outputs", TRIAGE_BASELINES_NO_OUTPUTS),
        "b_label_quality": at_least_best("training", "ours", TRAINING_BASELINES),
    }
    return {k: v for k, v in out.items() if v is not None}


# --- timing ------------------------------------------------------------------
def timing(args, python: Path | None) -> dict:
    """label_quality and Datalab's label check on the same synthetic N points, d = 32."""
    rng = np.random.default_rng(args.seed)
    n, dim, classes = args.timing, 32, 20
    means = rng.normal(size=(classes, dim))
    true = rng.integers(0, classes, n)
    x = (means[true] + rng.normal(0.0, 0.5, size=(n, dim))).astype(np.float32)
    given = true.copy()
    chosen = rng.choice(n, size=n // 10, replace=False)
    given[chosen] = (true[chosen] + rng.integers(1, classes, len(chosen))) % classes
    out: dict = {"rows": n, "dim": dim, "classes": classes}
    with tempfile.TemporaryDirectory(prefix="priority-timing-", dir=args.tmp) as tmp:
        with Client(path=str(Path(tmp) / "data")) as client:
            space = client.space("timing")
            ids = [f"t{i}" for i in range(n)]
            space.add(x, dataset="timing", labels=[str(v) for v in given], ids=ids)
            if "label_quality" in set(client.algorithms()["name"]):
                started = time.perf_counter()
                frame = space.run("label_quality", k=args.k)
                out["label_quality_s"] = time.perf_counter() - started
                issue = frame.set_index("id").loc[ids, "issue_score"].to_numpy()
                out["label_quality_auroc"] = auroc(issue, given != true)
        if python is not None:
            np.save(Path(tmp) / "timing.x.npy", x)
            np.save(Path(tmp) / "timing.labels.npy", given)
            (Path(tmp) / "spec.json").write_text("{}")
            out["datalab_s"] = run_reference(python, "timing", Path(tmp))["datalab_s"]
            scores = np.load(Path(tmp) / "timing.datalab_label.npy")
            out["datalab_auroc"] = auroc(scores, given != true)
    if "label_quality_s" in out and "datalab_s" in out:
        out["speedup"] = out["datalab_s"] / out["label_quality_s"]
    return out


# --- output ------------------------------------------------------------------
def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(name: str, result: dict, k: int) -> str:
    head = (
        f"{name}: {result['training_rows']:,} training inputs ({result['flipped']} labels "
        f"flipped), {result['triage_rows']:,} triage inputs ({result['wrong']} wrong); "
        f"{result['embedding']}, d = {result['dim']}; model {result['model']}; k = {k}"
    )
    lines = [head]
    parts = (
        ("triage", "(a) triage inputs the model got wrong", TRIAGE_RANKERS),
        ("training", "(b) training inputs whose label was flipped", TRAINING_RANKERS),
    )
    width = max(
        *(len(title) for _, title, _ in parts),
        *(len(label) + 2 for _, _, labels in parts for label in labels.values()),
    )
    for part, title, labels in parts:
        lines.append(f"  {title.ljust(width)}" + "".join(h.rjust(8) for h in HEADINGS))
        for key, label in labels.items():
            row = result[part].get(key)
            if row is None:
                why = "missing" if key == "ours" else "not run"
                cells = why.rjust(8) + "".join("-".rjust(8) for _ in HEADINGS[1:])
            else:
                cells = "".join(fmt(row[m]).rjust(8) for m in METRICS)
            lines.append(f"    {label.ljust(width - 2)}{cells}")
    met = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in result["targets"].items())
    lines.append(f"  targets met: {met}")
    return "\n".join(lines)


def machine() -> dict:
    cpu = cpu_model()
    return {"arch": platform.machine(), "cores": os.cpu_count(), "cpu": cpu}


def versions(reference: dict | None) -> dict:
    out = {"python": platform.python_version()}
    for package in ("chroma", "numpy", "pandas"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    if reference:
        out["reference"] = reference
    return out


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join((__doc__ or "").splitlines()[1:]),
    )
    parser.add_argument(
        "--datasets", default=",".join(REAL), help=f"comma-separated, from: {','.join(KNOWN)}"
    )
    parser.add_argument("--tiny", action="store_true", help="same as --datasets synthetic")
    parser.add_argument("--k", type=int, default=10, help="neighbours, ours")
    parser.add_argument("--noise", type=float, default=0.1, help="training labels flipped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds", default=None, help="A-B: run seeds A to B and report mean ± std (not --seed)"
    )
    parser.add_argument(
        "--timing", type=int, default=0, help="also time label_quality vs Datalab on N points"
    )
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--tmp", default=None, help="where scratch directories go")
    parser.add_argument("--venv", type=Path, default=BENCH.parent / ".venv-priority")
    parser.add_argument("--text-venv", type=Path, default=BENCH.parent / ".venv-text")
    args = parser.parse_args()
    if args.seeds is None:
        args.seeds = [args.seed]
    else:
        first, _, last = args.seeds.partition("-")
        if not (first.isdigit() and (last or first).isdigit()) or int(last or first) < int(first):
            parser.error(f"--seeds takes A-B with A <= B, e.g. 0-4; got {args.seeds!r}")
        args.seeds = list(range(int(first), int(last or first) + 1))
    datasets = ["synthetic"] if args.tiny else args.datasets.split(",")
    args.datasets = known_names(parser, datasets, KNOWN, "data sets")
    return args


def text_embeddings(args) -> None:
    """The text sets' sentence embeddings in bench/.cache/text, made once in bench/.venv-text."""
    if all((TEXT_CACHE / f"{c}.npz").exists() for c in ("reviews", "sentiment")):
        return
    python = reference_python(args.text_venv, BENCH / "requirements-text.txt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHROMA_")}
    log(f"embedding the text corpora into {TEXT_CACHE} (minutes, once) ...")
    subprocess.run([str(python), str(BENCH / "text.py"), str(TEXT_CACHE)], check=True, env=env)


def run_seed(args, seed: int, python: Path | None) -> tuple[dict, dict | None]:
    """Every data set of ``args`` scored on one seed; and the reference tools' versions."""
    real = [d for d in args.datasets if d in REAL]
    prepared: dict[str, dict] = {}
    reference_versions = None
    loaded: dict[str, dict] = {}
    if real:
        assert python is not None
        with tempfile.TemporaryDirectory(prefix="priority-data-", dir=args.tmp) as tmp:
            spec = {
                "datasets": real,
                "seed": seed,
                "noise": args.noise,
                "triage_fraction": 0.5,
                "text_cache": str(TEXT_CACHE),
            }
            (Path(tmp) / "spec.json").write_text(json.dumps(spec))
            reference = run_reference(python, "prepare", Path(tmp))
            prepared, reference_versions = reference["datasets"], reference["versions"]
            for name in real:
                loaded[name] = {a: np.load(Path(tmp) / f"{name}.{a}.npy") for a in ARRAYS}

    results: dict[str, dict] = {}
    for name in args.datasets:
        log(f"scoring {name} (seed {seed}) ...")
        if name == "synthetic":
            data = synthetic(seed, noise=args.noise)
            info = {"embedding": "Gaussian classes", "model": "nearest class mean", "dim": 16}
        else:
            data = loaded[name]
            embedding, metric = DESCRIPTIONS[name]
            info = {"embedding": embedding, "metric": metric, **prepared[name]}
        result = score_dataset(name, data, info, args, seed)
        result["targets"] = targets(result)
        results[name] = result
    return results, reference_versions


def summarise(runs: list[dict]) -> dict:
    """Per data set, part and ranker: mean and standard deviation over the seeds of each
    metric; the targets judged on the means."""
    out: dict = {}
    for name in runs[0]:
        entry: dict = {"seeds": len(runs)}
        for part in ("triage", "training"):
            entry[part] = {}
            for key in runs[0][name][part]:
                rows = [run[name][part].get(key) for run in runs]
                if any(row is None for row in rows):
                    entry[part][key] = None
                    continue
                entry[part][key] = {
                    metric: {
                        "mean": float(np.mean([row[metric] for row in rows])),
                        "std": float(np.std([row[metric] for row in rows])),
                    }
                    for metric in METRICS
                    if all(row[metric] is not None for row in rows)
                }
        means = {
            part: {
                key: None if row is None else {m: v["mean"] for m, v in row.items()}
                for key, row in entry[part].items()
            }
            for part in ("triage", "training")
        }
        for m in METRICS:  # a ranker whose metric was None on some seed
            for part in means.values():
                for row in part.values():
                    if row is not None:
                        row.setdefault(m, None)
        entry["targets"] = targets(means)
        out[name] = entry
    return out


def summary_table(name: str, entry: dict, first: dict) -> str:
    """Mean AUROC ± std and mean AP ± std of each ranker over the seeds."""
    head = (
        f"{name}: about {first['training_rows']:,} training inputs ({first['flipped']} "
        f"flipped), {first['triage_rows']:,} triage inputs ({first['wrong']} wrong) a seed; "
        f"{first['embedding']}, d = {first['dim']}; model {first['model']}; "
        f"mean ± std over {entry['seeds']} seeds"
    )
    lines = [head]
    parts = (
        ("triage", "(a) triage inputs the model got wrong", TRIAGE_RANKERS),
        ("training", "(b) training inputs whose label was flipped", TRAINING_RANKERS),
    )
    width = max(len(label) for _, _, labels in parts for label in labels.values()) + 2
    for part, title, labels in parts:
        lines.append(f"  {title.ljust(width)}{'AUROC'.rjust(15)}{'AP'.rjust(15)}")
        for key, label in labels.items():
            row = entry[part].get(key)
            cells = ""
            for metric in ("auroc", "ap"):
                value = None if row is None else row.get(metric)
                text = "-" if value is None else f"{value['mean']:.3f} ± {value['std']:.3f}"
                cells += text.rjust(15)
            lines.append(f"    {label.ljust(width - 2)}{cells}")
    met = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in entry["targets"].items())
    lines.append(f"  targets met on the means: {met}")
    return "\n".join(lines)


def main() -> None:
    args = parse()
    real = [d for d in args.datasets if d in REAL]
    if any(d in TEXT for d in args.datasets):
        text_embeddings(args)
    python = (
        reference_python(args.venv, BENCH / "requirements.txt") if real or args.timing else None
    )
    runs: list[dict] = []
    reference_versions = None
    for seed in args.seeds:
        results, reference_versions = run_seed(args, seed, python)
        runs.append(results)

    command = shlex.join(["bench/priority/evaluate.py", *sys.argv[1:]])
    m = machine()
    v = versions(reference_versions)
    print(f"machine: {m['arch']}, {m['cores']} cores, {m['cpu']}")
    lib = f"Python {v['python']}, chroma {v.get('chroma', '?')}, numpy {v.get('numpy', '?')}"
    if reference_versions:
        r = reference_versions
        lib += f"; scikit-learn {r['scikit-learn']}, cleanlab {r['cleanlab']}"
    print(lib)
    print(f"command: {command}\n")
    summary = summarise(runs) if len(runs) > 1 else None
    for name in runs[0]:
        if summary is None:
            print(table(name, runs[0][name], args.k) + "\n")
        else:
            print(summary_table(name, summary[name], runs[0][name]) + "\n")

    timed = timing(args, python) if args.timing else None
    if timed:
        print(
            f"label issues on {timed['rows']:,} synthetic points (d = {timed['dim']}, "
            f"{timed['classes']} classes, 10% flipped): label_quality "
            f"{fmt(timed.get('label_quality_s'))} s (AUROC {fmt(timed.get('label_quality_auroc'))})"
            f", Datalab {fmt(timed.get('datalab_s'))} s (AUROC {fmt(timed.get('datalab_auroc'))})"
            f", Datalab / ours {fmt(timed.get('speedup'))}"
        )
    if args.json:
        payload = {
            "command": command,
            "machine": m,
            "versions": v,
            "settings": {"k": args.k, "noise": args.noise, "seeds": args.seeds},
            "metrics": list(METRICS),
            "datasets": runs[0],
            "runs": dict(zip(map(str, args.seeds), runs, strict=True)),
            "summary": summary,
            "timing": timed,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
