"""5-fold out-of-fold anti_occident AP and F1 of one stance baseline configuration, on the built dataset's train
stance labels only (validation and test are never read). The selection of `model.stance` in baseline.yaml.

    .venv/bin/python bench/stance_cv.py '{"C": 10, "evidence_weight": 1.0, "class_bias_folds": 3, "bias_target": "anti_occident"}'

The JSON holds BaselineTaskConfig fields over a logistic-regression base (word 1-2 grams, min_df 2, balanced).
Each fold refits the whole pipeline (evidence scorer and class biases too: the decision rule is nested)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    from datasets import load_from_disk
    from sklearn.metrics import average_precision_score, f1_score
    from sklearn.model_selection import StratifiedKFold

    from training.data.dataset import task_data
    from training.models.baseline import build_pipeline, frame, proba_full, shared_words
    from training.models.baseline_family import BaselineTaskConfig

    overrides = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    dsd = load_from_disk(str(REPO / "data" / "processed" / "orangesum"))
    labels = list(dsd["train"].features["stance"].names)
    d = task_data(dsd["train"], "stance")
    cfg = BaselineTaskConfig(**{"classifier": "logreg", "class_weight": "balanced", "word_ngram_range": (1, 2),
                                "word_min_df": 2, **overrides})
    X = frame(d.texts, d.dates, d.evidence)
    oof = np.zeros((len(d.y), len(labels)))
    t0 = time.time()
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(X, d.y):
        words = shared_words([d.texts[i] for i in tr], cfg.word_ngram_range, cfg.title_weight, cfg.word_min_df)
        pipe = build_pipeline(cfg, words, classes=labels).fit(X.iloc[tr], d.y[tr])
        oof[te] = proba_full(pipe, pipe[:-1].transform(X.iloc[te]), len(labels))
    anti = labels.index("anti_occident")
    pos = d.y == anti
    print(json.dumps(overrides), f"{len(d.y)} labels ({pos.sum()} anti): AP {average_precision_score(pos, oof[:, anti]):.3f} "
          f"F1 {f1_score(pos, oof.argmax(1) == anti):.3f}  predicted anti {(oof.argmax(1) == anti).sum()}  "
          f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
