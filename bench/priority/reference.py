"""The reference side of bench/priority/evaluate.py: data sets, the model, and cleanlab.

Runs in bench/.venv-priority (bench/priority/requirements.txt), started by evaluate.py as

    bench/.venv-priority/bin/python bench/priority/reference.py prepare DIR
    bench/.venv-priority/bin/python bench/priority/reference.py timing DIR

and imports only scikit-learn, cleanlab, numpy and the standard library. It reads DIR/spec.json
and writes .npy files and DIR/reference.json; everything it prints goes to stderr.

``prepare`` builds, for each data set of the spec, from data bundled inside scikit-learn (no
download): a stratified split into a training half and a triage half, a seeded fraction of the
training labels flipped to another class, a model fitted on the noisy training labels, the
embeddings, the model's triage predictions and probabilities, and cleanlab's label scores of the
training rows. Per data set NAME it writes NAME.<array>.npy:

    train_x, train_given, train_true    embeddings, the noisy labels stored, the true labels
    triage_x, triage_true, triage_pred, triage_proba
    cleanlab_issue_first   find_label_issues's issues first (in its self-confidence order),
                           then the rest by self-confidence: higher = label more likely wrong
    cleanlab_self_confidence  1 - p(given label), out of fold: the same ranking without flags
    datalab_label          1 - Datalab's label score from the embeddings (k-NN out of fold)

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
    logistic regression on standardised features elsewhere."""
    if name == "digits":
        mlp = MLPClassifier(hidden_layer_sizes=(32,), alpha=1e-3, max_iter=400, random_state=seed)
        return make_pipeline(StandardScaler(), mlp)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def embed(name: str, fitted, x: np.ndarray) -> np.ndarray:
    """The embedding of ``x``: the MLP's hidden layer (ReLU) on the digits, the standardised
    features elsewhere."""
    scaled = fitted[0].transform(x)
    if name == "digits":
        mlp = fitted[-1]
        return np.maximum(scaled @ mlp.coefs_[0] + mlp.intercepts_[0], 0.0)
    return scaled


def prepare(name: str, spec: dict, out: Path) -> dict:
    seed = spec["seed"]
    rng = np.random.default_rng(seed)
    x, y = LOADERS[name](return_X_y=True)
    x = x.astype(np.float64)
    n_classes = int(y.max()) + 1
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
    }
    for key, value in arrays.items():
        np.save(out / f"{name}.{key}.npy", value)
    log(
        f"{name}: {len(train_x)} training ({int((given != train_true).sum())} flipped), "
        f"{len(triage_x)} triage ({int((triage_pred != triage_true).sum())} wrong), "
        f"embedding dimension {train_emb.shape[1]}"
    )
    return {
        "rows": int(len(x)),
        "classes": n_classes,
        "dim": int(train_emb.shape[1]),
        "model": type(fitted[-1]).__name__,
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
