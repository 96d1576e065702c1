"""Does dropping the training articles whose section looks mislabelled help the topic model?

    .venv/bin/python bench/topic_label_noise.py [--drop 0.02 0.05 0.08 0.12]

Confident-learning style pruning (Northcutt et al. 2021, simplified): 3-fold out-of-fold LinearSVC margins over
the build's train split (the configured topic features and C, balanced, no per-class bias); an article's margin
is its given section's score minus the best other section's; the lowest --drop share of train articles by that
margin are left out and the SVM is refitted on the rest. Scored on `validation`; OrangeSum `test` is never read.
Features come from `bench/topic_mlp.py`'s cache (built on first use). Prints one JSON line per share.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--drop", type=float, nargs="+", default=[0.02, 0.05, 0.08, 0.12])
    ap.add_argument("--config", default=str(REPO / "configs" / "baseline.yaml"))
    ap.add_argument("--cache", default="/tmp/vigie-topic-mlp")
    args = ap.parse_args()

    import numpy as np
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import LinearSVC
    from topic_mlp import features

    from training.config import load_config
    from training.models.baseline import macro_f1

    cfg = load_config(args.config)
    tcfg = cfg.model.topic
    X_train, y_train, X_valid, y_valid, k = features(cfg, Path(args.cache))

    def svm():
        return LinearSVC(C=tcfg.C, class_weight=tcfg.class_weight, tol=tcfg.tol, max_iter=tcfg.max_iter,
                         random_state=cfg.train.seed)

    oof = np.zeros((len(y_train), k))
    for fit_rows, score_rows in StratifiedKFold(3, shuffle=True, random_state=0).split(X_train, y_train):
        oof[score_rows] = svm().fit(X_train[fit_rows], y_train[fit_rows]).decision_function(X_train[score_rows])
    own = oof[np.arange(len(y_train)), y_train]
    best_other = np.where(np.eye(k, dtype=bool)[y_train], -np.inf, oof).max(1)
    margin = own - best_other

    for share in [0.0, *args.drop]:
        keep = margin > np.quantile(margin, share) if share else np.ones(len(y_train), bool)
        start = time.time()
        pred = svm().fit(X_train[keep], y_train[keep]).predict(X_valid)
        print(json.dumps({"drop_share": share, "dropped": int((~keep).sum()),
                          "validation_macro_f1": round(macro_f1(y_valid, pred, k), 4),
                          "validation_accuracy": round(float((pred == y_valid).mean()), 4),
                          "fit_seconds": round(time.time() - start)}), flush=True)


if __name__ == "__main__":
    main()
