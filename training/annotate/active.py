"""The model-ranked stratum (active learning): a stance model's probabilities for candidate articles."""

from __future__ import annotations

import pandas as pd

from training.data.article import Article
from training.data.schema import STANCES
from training.errors import InputError
from training.registry import load_model

BATCH = 512


def score_with_model(model_uri: str, articles: list[Article]) -> dict[str, list[float]]:
    model = load_model(model_uri)
    cols = [f"stance_proba_{s}" for s in STANCES]  # the order build_pool's [p_anti, p_neutre, p_pro] expects
    out: dict[str, list[float]] = {}
    for k in range(0, len(articles), BATCH):
        batch = articles[k : k + BATCH]
        pred = model.predict(pd.DataFrame({"text": [a.text for a in batch]}))
        if pred["stance"].isna().all():
            raise InputError(f"{model_uri} has no stance head: it cannot rank articles for the model stratum")
        for a, row in zip(batch, pred[cols].itertuples(index=False)):
            out[a.id] = [float(x) for x in row]
    return out
