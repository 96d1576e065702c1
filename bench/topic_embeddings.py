"""Does a document vector from word2vec trained on the corpus add to the topic model's sparse features?

    .venv/bin/pip install gensim==4.4.0   # not a dependency of vigie: only this experiment reads it
    .venv/bin/python bench/topic_embeddings.py [--dim 200] [--weights 0.5 1 2] [--config configs/baseline.yaml]

The topic features of the configured pipeline (word TF-IDF + character n-grams of the head) are fitted on the
build's train split; word2vec (CBOW, window 5, min_count 3, 5 epochs) is trained on the same train texts only,
and each article becomes the idf-weighted mean of its word vectors, L2-normalised. A LinearSVC with the
configured C and class weights, without the per-class bias (for speed; it is a constant shift on both sides), is
fitted on the sparse features alone, the document vectors alone, and both side by side (the vectors scaled by
each weight), and scored on `validation`. OrangeSum `test` is never read. Prints one JSON line per variant.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOKEN = re.compile(r"\w+(?:['’]\w+)?")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dim", type=int, default=200)
    ap.add_argument("--weights", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--config", default=str(REPO / "configs" / "baseline.yaml"))
    args = ap.parse_args()

    import numpy as np
    import scipy.sparse as sp
    from gensim.models import Word2Vec
    from sklearn.preprocessing import normalize
    from sklearn.svm import LinearSVC

    from training.config import load_config
    from training.data.dataset import load_built, task_data
    from training.models.baseline import build_pipeline, frame, macro_f1, shared_words

    cfg = load_config(args.config)
    dsd, stats, _ = load_built(cfg.data)
    tcfg = cfg.model.topic.model_copy(update={"class_bias_folds": 0})
    train, valid = task_data(dsd["train"], "topic"), task_data(dsd["validation"], "topic")
    k = len(dsd["train"].features["topic"].names)
    t0 = time.time()
    words = shared_words(train.texts, tcfg.word_ngram_range, tcfg.title_weight, tcfg.word_min_df)
    columns = build_pipeline(tcfg, words, cfg.train.seed, n_jobs=-1)[:-1]
    X_train = columns.fit_transform(frame(train.texts), train.y)
    X_valid = columns.transform(frame(valid.texts))
    print(f"dataset {stats['fingerprint'][:12]}: {X_train.shape[1]} sparse features, {time.time() - t0:.0f} s",
          file=sys.stderr)

    tokens = {name: [TOKEN.findall(t.lower()) for t in d.texts] for name, d in (("train", train), ("valid", valid))}
    w2v = Word2Vec(tokens["train"], vector_size=args.dim, window=5, min_count=3, workers=2, epochs=5,
                   seed=cfg.train.seed)
    doc_freq: dict[str, int] = {}
    for doc in tokens["train"]:
        for w in set(doc):
            doc_freq[w] = doc_freq.get(w, 0) + 1
    n_docs = len(tokens["train"])

    def vector(doc: list[str]) -> np.ndarray:
        known = [w for w in doc if w in w2v.wv.key_to_index]
        if not known:
            return np.zeros(args.dim, np.float32)
        idf = np.log(n_docs / np.array([doc_freq.get(w, 1) for w in known], np.float32))
        return (w2v.wv[known] * idf[:, None]).sum(0) / max(idf.sum(), 1e-6)

    E_train = sp.csr_matrix(normalize(np.vstack([vector(d) for d in tokens["train"]])))
    E_valid = sp.csr_matrix(normalize(np.vstack([vector(d) for d in tokens["valid"]])))

    def report(variant: str, A_train, A_valid, C: float) -> None:
        start = time.time()
        clf = LinearSVC(C=C, class_weight=tcfg.class_weight, tol=tcfg.tol, max_iter=tcfg.max_iter,
                        random_state=cfg.train.seed).fit(A_train, train.y)
        pred = clf.predict(A_valid)
        print(json.dumps({"variant": variant, "validation_macro_f1": round(macro_f1(valid.y, pred, k), 4),
                          "validation_accuracy": round(float((pred == valid.y).mean()), 4),
                          "fit_seconds": round(time.time() - start), "dim": args.dim}), flush=True)

    report("sparse features (configured, no per-class bias)", X_train, X_valid, tcfg.C)
    report("document vectors alone (C 1)", E_train, E_valid, 1.0)
    for w in args.weights:
        report(f"sparse + document vectors x {w}", sp.hstack([X_train, w * E_train]).tocsr(),
               sp.hstack([X_valid, w * E_valid]).tocsr(), tcfg.C)


if __name__ == "__main__":
    main()
