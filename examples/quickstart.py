"""Chroma in five minutes: log embeddings, find neighbours, rank inputs, fire a trigger.

    python examples/quickstart.py                 # embedded, data in ./chroma_data
    python examples/quickstart.py http://127.0.0.1:8000   # against a running server

The embeddings here stand in for a model's penultimate layer: three classes as clusters,
plus production inputs of which a few are misclassified and a few come from nowhere near
the training data.
"""

from __future__ import annotations

import sys

import numpy as np

from chroma_client import Client


def fake_model_embeddings(rng, n, center):
    return rng.normal(loc=center, scale=1.0, size=(n, 32)).astype(np.float32)


def main(url: str | None = None) -> None:
    rng = np.random.default_rng(0)
    centers = {name: rng.normal(0, 6, 32) for name in ("cat", "dog", "bird")}
    client = Client(url)
    print(f"Chroma at {client.location}")
    if "quickstart" in set(client.spaces()["name"]):
        client.delete_space("quickstart")
    space = client.space("quickstart", metric="l2", model={"name": "resnet18", "layer": "avgpool"})

    # 1. training inputs with their labels
    for label, center in centers.items():
        space.add(
            fake_model_embeddings(rng, 300, center),
            dataset="pets-v1",
            context="training",
            labels=label,
            input_uris=[f"s3://pets/train/{label}/{i}.jpg" for i in range(300)],
        )

    # 2. production inputs with the model's inferences: mostly right, some wrong, some odd
    right = fake_model_embeddings(rng, 90, centers["cat"])
    wrong = fake_model_embeddings(rng, 6, centers["dog"])  # dogs the model called cats
    odd = fake_model_embeddings(rng, 4, rng.normal(0, 6, 32) * 3)  # nothing like training
    triage_ids = space.add(
        np.vstack([right, wrong, odd]),
        dataset="prod-2026-11",
        context="triage",
        inferences="cat",
        input_uris=[f"s3://pets/prod/{i}.jpg" for i in range(100)],
    )
    print(space.info())

    # 3. neighbours of a suspicious input
    print("\nNearest training inputs of", triage_ids[90])
    print(
        space.nearest_neighbors(ids=[triage_ids[90]], k=5, where={"context": "training"})[
            ["rank", "id", "distance", "label"]
        ]
    )

    # 4. what to relabel and retrain on
    summary = space.compute_priorities(k=10)
    print(f"\nScored {summary['scored']} inputs against {summary['training']} training inputs")
    top = space.priorities(n=10)
    print(top[["input_uri", "priority", "disagreement", "distance_pct", "mahalanobis_pct"]])

    # 5. why the top input scores as it does
    why = space.explain(top["id"].iloc[0], k=5)
    print(f"\n{top['input_uri'].iloc[0]}: neighbours' labels {why.label_votes}")

    # 6. training labels that look wrong, and how far production moved from training
    print("\nTraining labels most likely wrong")
    print(space.label_issues(n=3)[["id", "label", "suggested_label", "issue_score"]])
    print("\nDrift of production against training")
    print(space.drift(seed=0)[["dataset", "class", "rows", "p_value", "ood_rate", "drifted"]])

    # 7. hand the top of the list to the retraining pipeline, spread over the space
    trigger = space.trigger_retraining(
        n=10, strategy="diverse", note="quickstart: relabel ten, no two alike"
    )
    print(f"\nTrigger {trigger.id}: {trigger.count} inputs, status {trigger.status}")
    print("manifest:", trigger.deliveries.get("manifest", {}).get("path"))
    client.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
