"""The reference side of bench/priority/evaluate.py: data sets, the model, and cleanlab.

Runs in bench/.venv-priority (bench/priority/requirements.txt), started by evaluate.py as

    bench/.venv-priority/bin/python bench/priority/reference.py prepare DIR
    bench/.venv-priority/bin/python bench/priority/reference.py timing DIR

and imports only scikit-learn, cleanlab, numpy and the standard library. It reads DIR/spec.json
and writes .npy files and DIR/reference.json; everything it prints goes to stderr.

``prepare`` builds, for each data set of the spec: a split into a training and a triage part,
a seeded fraction of the training labels flipped to another class, a model fitted on the noisy
training labels, the embeddings, the model's triage predictions and probabilities, and
cleanlab's label scores. The scikit-learn sets come bundled inside scikit-learn (stratified
halves). The text sets are sentence embeddings that bench/priority/text.py wrote to
spec["text_cache"]; their triage part comes from sources the training part never saw (other
films, other kinds of text), and the model is a logistic regression on the embeddings.
Per data set NAME it writes NAME.<array>.npy:

    train_x, train_given, train_true    embeddings, the noisy labels stored, the true labels
    triage_x, triage_true, triage_pred, triage_proba
    cleanlab_issue_first   find_label_issues's issues first (in its self-confidence order),
                           then the rest by self-confidence: higher = label more likely wrong
    cleanlab_self_confidence  1 - p(given label), out of fold: the same ranking without flags
    datalab_label          1 - Datalab's label score from the embeddings (k-NN out of fold)
    datalab_predictions    per triage row, 1 - Datalab's label score of the model's prediction
                           taken as its label, beside the training rows and their labels

``timing`` times Datalab's label issue check on DIR/timing.x.npy and timing.labels.npy.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# Everything printed by a library goes to stderr; only the files carry results.
os.dup2(2, 1)

from cleanlab import Datalab  # noqa: E402
from cleanlab.filter import find_label_issues  # noqa: E402
from cleanlab.rank import get_label_quality_scores  # noqa: E402
from sklearn import datasets  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import cross_val_predict, train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

LOADERS = {
    "digits": datasets.load_digits,
    "wine": datasets.load_wine,
    "breast_cancer": datasets.load_breast_cancer,
}
# text set -> (corpus file written by text.py, how its classes are read from the ratings)
TEXT = {
    "reviews": ("reviews", "sign"),
    "sentiment": ("sentiment", "sign"),
    "sentiment3": ("sentiment", "three"),
}
# sentiment: the kinds of text the model is trained on; the triage part is the other two
SEEN_SOURCES = ("film reviews", "product reviews")


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def flip(labels: np.ndarray, fraction: float, n_classes: int, rng) -> np.ndarray:
    """A copy of ``labels`` with ``fraction`` of them moved to another class, uniformly."""
    noisy = labels.copy()
    chosen = rng.choice(len(labels), size=round(fraction * len(labels)), replace=False)
    shift = rng.integers(1, n_classes, size=len(chosen))
    noisy[chosen] = (labels[chosen] + shift) % n_classes
    return noisy


def model(name: str, seed: int):
    """The model of a data set: a small MLP on the digits (its hidden layer is the embedding),
    logistic regression on the sentence embeddings of text, and on standardised features
    elsewhere."""
    if name in TEXT:
        return LogisticRegression(max_iter=2000)
    if name == "digits":
        mlp = MLPClassifier(hidden_layer_sizes=(32,), alpha=1e-3, max_iter=400, random_state=seed)
        return make_pipeline(StandardScaler(), mlp)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def embed(name: str, fitted, x: np.ndarray) -> np.ndarray:
    """The embedding of ``x``: the sentence embedding itself for text, the MLP's hidden layer
    (ReLU) on the digits, the standardised features elsewhere."""
    if name in TEXT:
        return x
    scaled = fitted[0].transform(x)
    if name == "digits":
        mlp = fitted[-1]
        return np.maximum(scaled @ mlp.coefs_[0] + mlp.intercepts_[0], 0.0)
    return scaled


def text_split(name: str, spec: dict, rng) -> tuple:
    """A text set's training and triage rows, the triage part from unseen sources: half the
    films (drawn by seed) for ``reviews``; tweets and editorials for ``sentiment``, with a
    seeded 80% of each part so that seeds differ."""
    corpus, classes = TEXT[name]
    data = np.load(Path(spec["text_cache"]) / f"{corpus}.npz")
    x, rating, source = data["x"].astype(np.float64), data["rating"], data["source"]
    if classes == "sign":
        y = (rating > 0).astype(np.int64)
    else:
        y = np.digitize(rating, [-0.5, 0.5]).astype(np.int64)
    if corpus == "reviews":
        films = np.unique(source)
        seen = rng.choice(films, size=len(films) // 2, replace=False)
        in_training = np.isin(source, seen)
        keep = np.ones(len(y), dtype=bool)
    else:
        in_training = np.isin(source, SEEN_SOURCES)
        keep = rng.random(len(y)) < 0.8
    train, triage = in_training & keep, ~in_training & keep
    return x[train], x[triage], y[train], y[triage]


def prepare(name: str, spec: dict, out: Path) -> dict:
    seed = spec["seed"]
    rng = np.random.default_rng(seed)
    if name in TEXT:
        train_x, triage_x, train_true, triage_true = text_split(name, spec, rng)
        n_classes = int(max(train_true.max(), triage_true.max())) + 1
        rows = len(train_x) + len(triage_x)
    else:
        x, y = LOADERS[name](return_X_y=True)
        x = x.astype(np.float64)
        n_classes = int(y.max()) + 1
        rows = len(x)
        train_x, triage_x, train_true, triage_true = train_test_split(
            x, y, test_size=spec["triage_fraction"], stratify=y, random_state=seed
        )
    given = flip(train_true, spec["noise"], n_classes, rng)

    fitted = model(name, seed).fit(train_x, given)
    triage_proba = fitted.predict_proba(triage_x)
    triage_pred = fitted.classes_[triage_proba.argmax(axis=1)]
    train_emb, triage_emb = embed(name, fitted, train_x), embed(name, fitted, triage_x)

    started = time.perf_counter()
    oof = cross_val_predict(model(name, seed), train_x, given, cv=5, method="predict_proba")
    issues = find_label_issues(given, oof, return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(given, oof, method="self_confidence")
    issue_first = (1.0 - quality) + np.isin(np.arange(len(given)), issues)
    cleanlab_s = time.perf_counter() - started

    started = time.perf_counter()
    lab = Datalab(data={"label": given}, label_name="label", verbosity=0)
    lab.find_issues(features=train_emb, issue_types={"label": {}})
    datalab_label = 1.0 - lab.get_issues("label")["label_score"].to_numpy()
    datalab_s = time.perf_counter() - started

    # The model's predictions taken as labels, judged beside the training rows' own labels:
    # the triage check cleanlab offers when a user has the predictions but no ground truth.
    both = Datalab(
        data={"label": np.concatenate([given, triage_pred])}, label_name="label", verbosity=0
    )
    both.find_issues(features=np.vstack([train_emb, triage_emb]), issue_types={"label": {}})
    scores = both.get_issues("label")["label_score"].to_numpy()
    datalab_predictions = 1.0 - scores[len(given) :]

    arrays = {
        "train_x": train_emb,
        "train_given": given,
        "train_true": train_true,
        "triage_x": triage_emb,
        "triage_true": triage_true,
        "triage_pred": triage_pred,
        "triage_proba": triage_proba,
        "cleanlab_issue_first": issue_first,
        "cleanlab_self_confidence": 1.0 - quality,
        "datalab_label": datalab_label,
        "datalab_predictions": datalab_predictions,
    }
    for key, value in arrays.items():
        np.save(out / f"{name}.{key}.npy", value)
    log(
        f"{name}: {len(train_x)} training ({int((given != train_true).sum())} flipped), "
        f"{len(triage_x)} triage ({int((triage_pred != triage_true).sum())} wrong), "
        f"embedding dimension {train_emb.shape[1]}"
    )
    return {
        "rows": int(rows),
        "classes": n_classes,
        "dim": int(train_emb.shape[1]),
        "model": type(fitted[-1] if hasattr(fitted, "steps") else fitted).__name__,
        "cleanlab_issues": int(len(issues)),
        "cleanlab_s": cleanlab_s,
        "datalab_s": datalab_s,
    }


def timing(out: Path) -> dict:
    x = np.load(out / "timing.x.npy")
    labels = np.load(out / "timing.labels.npy")
    started = time.perf_counter()
    lab = Datalab(data={"label": labels}, label_name="label", verbosity=0)
    lab.find_issues(features=x, issue_types={"label": {}})
    scores = lab.get_issues("label")["label_score"].to_numpy()
    seconds = time.perf_counter() - started
    np.save(out / "timing.datalab_label.npy", 1.0 - scores)
    return {"datalab_s": seconds}


def versions() -> dict:
    import importlib.metadata
    import platform

    out = {"python": platform.python_version()}
    for package in ("scikit-learn", "cleanlab", "numpy", "scipy"):
        out[package] = importlib.metadata.version(package)
    return out


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    spec = json.loads((out / "spec.json").read_text())
    if mode == "prepare":
        result = {"datasets": {name: prepare(name, spec, out) for name in spec["datasets"]}}
    else:
        result = timing(out)
    result["versions"] = versions()
    (out / "reference.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
