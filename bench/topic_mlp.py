"""Does a small neural network on the topic features beat, or add to, the configured linear SVM?

    .venv/bin/python bench/topic_mlp.py [--hidden 256] [--epochs 4] [--blend 0.5] [--config configs/baseline.yaml]

The topic features of the configured pipeline (word TF-IDF + character n-grams of the head) are fitted on the
build's train split (cached under --cache, shared with `bench/topic_label_noise.py`). On them: the configured
LinearSVC (C, balanced class weights, without the per-class bias), and a one-hidden-layer network in the fastText
manner (an `EmbeddingBag` over the sparse features weighted by their TF-IDF values, ReLU, dropout, a linear
layer; balanced cross-entropy; sparse Adam on the embedding), trained on train only. The blend adds the network's
log-probabilities to a softmax of the SVM margins (x --svm-scale, fixed, not fitted), weighted by --blend.
Scored on `validation`; OrangeSum `test` is never read. Prints one JSON line per variant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def features(cfg, cache: Path):
    import numpy as np
    import scipy.sparse as sp

    if (cache / "X_train.npz").exists():
        z = np.load(cache / "y.npz")
        return (sp.load_npz(cache / "X_train.npz"), z["y_train"], sp.load_npz(cache / "X_valid.npz"), z["y_valid"],
                int(z["k"]))
    from training.data.dataset import load_built, task_data
    from training.models.baseline import build_pipeline, frame, shared_words

    dsd, stats, _ = load_built(cfg.data)
    tcfg = cfg.model.topic.model_copy(update={"class_bias_folds": 0})
    train, valid = task_data(dsd["train"], "topic"), task_data(dsd["validation"], "topic")
    k = len(dsd["train"].features["topic"].names)
    words = shared_words(train.texts, tcfg.word_ngram_range, tcfg.title_weight, tcfg.word_min_df)
    columns = build_pipeline(tcfg, words, cfg.train.seed, n_jobs=-1)[:-1]
    X_train = columns.fit_transform(frame(train.texts), train.y).tocsr().astype(np.float32)
    X_valid = columns.transform(frame(valid.texts)).tocsr().astype(np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    sp.save_npz(cache / "X_train.npz", X_train)
    sp.save_npz(cache / "X_valid.npz", X_valid)
    np.savez(cache / "y.npz", y_train=train.y, y_valid=valid.y, k=k)
    print(f"dataset {stats['fingerprint'][:12]}: {X_train.shape[1]} features", file=sys.stderr)
    return X_train, train.y, X_valid, valid.y, k


def train_mlp(X, y, k, hidden, epochs, seed, lr, dropout, batch=64):
    import numpy as np
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    emb = torch.nn.EmbeddingBag(X.shape[1], hidden, mode="sum", sparse=True)
    torch.nn.init.normal_(emb.weight, std=0.05)
    head = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Dropout(dropout), torch.nn.Linear(hidden, k))
    bias = torch.nn.Parameter(torch.zeros(hidden))
    counts = np.bincount(y, minlength=k)
    weight = torch.tensor(len(y) / (k * np.maximum(counts, 1)), dtype=torch.float32)
    opt_sparse = torch.optim.SparseAdam(list(emb.parameters()), lr=lr)
    opt_dense = torch.optim.Adam(list(head.parameters()) + [bias], lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)

    def batch_tensors(rows):
        sub = X[rows]
        return (torch.from_numpy(sub.indices.astype(np.int64)), torch.from_numpy(sub.indptr[:-1].astype(np.int64)),
                torch.from_numpy(sub.data.astype(np.float32)))

    for _ in range(epochs):
        order = rng.permutation(len(y))
        emb.train(); head.train()
        for s in range(0, len(order), batch):
            rows = order[s:s + batch]
            idx, off, w = batch_tensors(rows)
            logits = head(emb(idx, off, per_sample_weights=w) + bias)
            loss = loss_fn(logits, torch.from_numpy(y[rows]))
            opt_sparse.zero_grad(); opt_dense.zero_grad()
            loss.backward()
            opt_sparse.step(); opt_dense.step()

    def predict_log_proba(Xv):
        emb.eval(); head.eval()
        out = []
        with torch.no_grad():
            for s in range(0, Xv.shape[0], 512):
                sub = Xv[s:s + 512]
                idx, off, w = (torch.from_numpy(sub.indices.astype(np.int64)),
                               torch.from_numpy(sub.indptr[:-1].astype(np.int64)), torch.from_numpy(sub.data))
                out.append(torch.log_softmax(head(emb(idx, off, per_sample_weights=w) + bias), 1).numpy())
        return np.vstack(out)

    return predict_log_proba


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--epochs", type=int, nargs="+", default=[4])
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--blend", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument("--svm-scale", type=float, default=5.0, help="SVM margins x this, as log-probabilities")
    ap.add_argument("--config", default=str(REPO / "configs" / "baseline.yaml"))
    ap.add_argument("--cache", default="/tmp/vigie-topic-mlp")
    args = ap.parse_args()

    import numpy as np
    import torch
    from scipy.special import log_softmax
    from sklearn.svm import LinearSVC

    from training.config import load_config
    from training.models.baseline import macro_f1

    torch.set_num_threads(2)
    cfg = load_config(args.config)
    tcfg = cfg.model.topic
    X_train, y_train, X_valid, y_valid, k = features(cfg, Path(args.cache))

    def report(variant, scores, seconds, **extra):
        pred = scores.argmax(1)
        print(json.dumps({"variant": variant, "validation_macro_f1": round(macro_f1(y_valid, pred, k), 4),
                          "validation_accuracy": round(float((pred == y_valid).mean()), 4),
                          "fit_seconds": round(seconds), **extra}), flush=True)

    t = time.time()
    svm = LinearSVC(C=tcfg.C, class_weight=tcfg.class_weight, tol=tcfg.tol, max_iter=tcfg.max_iter,
                    random_state=cfg.train.seed).fit(X_train, y_train)
    svm_scores = svm.decision_function(X_valid)
    report("linear SVM (configured, no per-class bias)", svm_scores, time.time() - t)
    svm_logp = log_softmax(args.svm_scale * svm_scores, axis=1)

    for epochs in args.epochs:
        logps = []
        for seed in range(args.seeds):
            t = time.time()
            logp = train_mlp(X_train, y_train, k, args.hidden, epochs, seed, args.lr, args.dropout)(X_valid)
            logps.append(logp)
            report("network", logp, time.time() - t, seed=seed, epochs=epochs, hidden=args.hidden, lr=args.lr,
                   dropout=args.dropout)
            for b in args.blend:
                report("blend", (1 - b) * svm_logp + b * logp, 0, seed=seed, epochs=epochs, blend=b)
        mean = np.mean(logps, axis=0)
        report("network, seeds averaged", mean, 0, epochs=epochs, seeds=args.seeds)
        for b in args.blend:
            report("blend, seeds averaged", (1 - b) * svm_logp + b * mean, 0, epochs=epochs, blend=b)


if __name__ == "__main__":
    main()
