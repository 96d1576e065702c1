"""The duplicate groups of `train` that the build drops as ties (the same article filed under two or more
sections, no majority): would they help as training rows?

    .venv/bin/python bench/topic_tie_groups.py [--config configs/baseline.yaml]

The build's steps 1–4 (`training.data.build`: read, label, group, split) are rerun to find the tie groups whose
rows fall in `train`. The configured topic features are fitted on the built train split; classifiers (the
configured C and balanced class weights) are fitted on the train rows alone and on the train rows plus the tie
groups, in three forms: each member with its own section (single-label rows), and, for one-vs-rest binary SVMs,
one multi-section row per group (positive for each of its sections). All are scored on the built `validation`
split, whose ties stay dropped (one truth per article). OrangeSum `test` is never read. One JSON line per variant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "baseline.yaml"))
    args = ap.parse_args()

    import numpy as np
    import scipy.sparse as sp
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import LinearSVC

    from training.config import load_config
    from training.data import build
    from training.data.dataset import load_built, task_data
    from training.models.baseline import ClassBias, build_pipeline, frame, macro_f1, shared_words

    t0 = time.time()
    cfg = load_config(args.config)
    dsd, stats, _ = load_built(cfg.data)
    names = dsd["train"].features["topic"].names
    k = len(names)
    train, valid = task_data(dsd["train"], "topic"), task_data(dsd["validation"], "topic")

    inputs = build.read_inputs(cfg.data, [], False)
    rows = build.label_rows(inputs, build.fit_boilerplate(inputs.articles, cfg.data), cfg.data, [])
    dup = build.find_groups(rows, cfg.data, False)
    split, _ = build.assign_splits(rows, dup.group, cfg.data)
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(dup.group):
        if split[i] == "train":
            members[g].append(i)
    built = set(train.ids)
    ties = []  # per tie group: its members' (text, section position)
    for idx in members.values():
        counts = Counter(rows[i]["topic"] for i in idx).most_common(2)
        if len(counts) == 2 and counts[0][1] == counts[1][1] and not any(rows[i]["id"] in built for i in idx):
            ties.append([(rows[i]["text"], names.index(rows[i]["topic"])) for i in sorted(idx)])
    pairs = Counter(tuple(sorted({names[s] for _, s in g})) for g in ties)
    print(f"dataset {stats['fingerprint'][:12]}: {len(ties)} tie groups in train "
          f"({sum(map(len, ties))} rows); most frequent: {pairs.most_common(5)}", file=sys.stderr)

    tcfg = cfg.model.topic
    words = shared_words(train.texts, tcfg.word_ngram_range, tcfg.title_weight, tcfg.word_min_df)
    columns = build_pipeline(tcfg, words, cfg.train.seed, n_jobs=-1)[:-1]
    X_train = columns.fit_transform(frame(train.texts), train.y)
    X_valid = columns.transform(frame(valid.texts))
    X_first = columns.transform(frame([g[0][0] for g in ties]))  # one row per group: its first member's text
    X_members = columns.transform(frame([t for g in ties for t, _ in g]))
    y_members = np.array([s for g in ties for _, s in g])
    X_plus, y_plus = sp.vstack([X_train, X_members]).tocsr(), np.concatenate([train.y, y_members])

    def svm():
        return LinearSVC(C=tcfg.C, class_weight=tcfg.class_weight, tol=tcfg.tol, max_iter=tcfg.max_iter,
                         random_state=cfg.train.seed)

    def indicator(single: np.ndarray, multi: list[list[int]] = ()) -> np.ndarray:
        M = np.zeros((len(single) + len(multi), k), dtype=np.int8)
        M[np.arange(len(single)), single] = 1
        for r, sections in enumerate(multi):
            M[len(single) + r, sections] = 1
        return M

    def report(variant: str, pred: np.ndarray) -> None:
        print(json.dumps({"variant": variant, "validation_macro_f1": round(macro_f1(valid.y, pred, k), 4),
                          "validation_accuracy": round(float((pred == valid.y).mean()), 4),
                          "seconds": round(time.time() - t0)}), flush=True)

    bias = dict(folds=tcfg.class_bias_folds or 3, n_jobs=-1, random_state=cfg.train.seed)
    report("multi-class SVM, train rows", svm().fit(X_train, train.y).predict(X_valid))
    report("multi-class SVM, + tie members with their own sections", svm().fit(X_plus, y_plus).predict(X_valid))
    report("multi-class SVM + per-class bias, train rows", ClassBias(svm(), **bias).fit(X_train, train.y).predict(X_valid))
    report("multi-class SVM + per-class bias, + tie members", ClassBias(svm(), **bias).fit(X_plus, y_plus).predict(X_valid))
    for variant, X, M in (("one-vs-rest SVMs, train rows", X_train, indicator(train.y)),
                          ("one-vs-rest SVMs, + one multi-section row per tie group",
                           sp.vstack([X_train, X_first]).tocsr(), indicator(train.y, [sorted({s for _, s in g}) for g in ties]))):
        report(variant, OneVsRestClassifier(svm(), n_jobs=-1).fit(X, M).decision_function(X_valid).argmax(1))


if __name__ == "__main__":
    main()
