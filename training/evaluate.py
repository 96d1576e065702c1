"""Metrics, figures and reports for one task on one split. Pure: arrays in, numbers and files out.

Metric names follow `{split}_{task}_{metric}` (e.g. `test_topic_macro_f1`); per-class ones add the label
(`validation_topic_f1_monde`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, precision_recall_fscore_support


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, bins: int = 10) -> tuple[float, pd.DataFrame]:
    """Top-label ECE with equal-width confidence bins, and the reliability table behind it."""
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
            rows.append({"bin": b, "low": edges[b], "high": edges[b + 1], "count": int(m.sum()),
                         "confidence": float(conf[m].mean()), "accuracy": float(correct[m].mean())})
    return float(ece), pd.DataFrame(rows)


def evaluate_task(split: str, task: str, y: np.ndarray, proba: np.ndarray, labels: list[str], bins: int = 10) -> tuple[dict[str, float], dict]:
    """Metrics (flat, for MLflow) and a report (for the artifacts)."""
    pred = proba.argmax(axis=1)
    present = sorted(set(y.tolist()) | set(pred.tolist()))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=list(range(len(labels))), zero_division=0)
    prefix = f"{split}_{task}"
    metrics = {
        f"{prefix}_accuracy": float(accuracy_score(y, pred)),
        f"{prefix}_macro_f1": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
        f"{prefix}_weighted_f1": float(f1_score(y, pred, average="weighted", zero_division=0)),
        f"{prefix}_n": float(len(y)),
    }
    ece, reliability = expected_calibration_error(proba, y, bins)
    metrics[f"{prefix}_ece"] = ece
    eps = np.clip(proba, 1e-12, 1)
    metrics[f"{prefix}_log_loss"] = float(log_loss(y, eps / eps.sum(axis=1, keepdims=True), labels=list(range(len(labels)))))
    per_class = {}
    for j, lab in enumerate(labels):
        if s[j] == 0 and j not in pred:
            continue
        metrics[f"{prefix}_precision_{lab}"] = float(p[j])
        metrics[f"{prefix}_recall_{lab}"] = float(r[j])
        metrics[f"{prefix}_f1_{lab}"] = float(f[j])
        per_class[lab] = {"precision": float(p[j]), "recall": float(r[j]), "f1": float(f[j]), "support": int(s[j])}
    report = {
        "split": split, "task": task, "n": int(len(y)), "labels": labels, "per_class": per_class,
        "confusion": confusion_matrix(y, pred, labels=list(range(len(labels)))).tolist(),
        "reliability": reliability.to_dict(orient="records"),
        **{k.removeprefix(prefix + "_"): v for k, v in metrics.items()},
    }
    return metrics, report


def selection_metric(metrics: dict[str, float], tasks: list[str]) -> float | None:
    """The registry's selection metric: the mean of the tasks' validation macro-F1."""
    vals = [metrics[f"validation_{t}_macro_f1"] for t in tasks if f"validation_{t}_macro_f1" in metrics]
    return float(np.mean(vals)) if vals else None


def worst_examples(ids: list[str], texts: list[str], y: np.ndarray, proba: np.ndarray, labels: list[str], k: int) -> pd.DataFrame:
    """Misclassified examples, most confidently wrong first."""
    pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    order = wrong[np.argsort(-proba[wrong, pred[wrong]])][:k]
    return pd.DataFrame({
        "id": [ids[i] for i in order],
        "true": [labels[y[i]] for i in order],
        "predicted": [labels[pred[i]] for i in order],
        "confidence": [float(proba[i, pred[i]]) for i in order],
        "title": [texts[i].split("\n", 1)[0][:200] for i in order],
    })


def _pyplot():
    """matplotlib's pyplot on the file-only backend (runs on servers and in CI, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(report: dict, path: Path) -> None:
    plt = _pyplot()
    cm = np.asarray(report["confusion"], dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    labels = report["labels"]
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(labels), 0.8 + 0.55 * len(labels)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{report['split']} {report['task']}: macro-F1 {report['macro_f1']:.3f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_calibration(report: dict, path: Path) -> None:
    plt = _pyplot()
    rel = pd.DataFrame(report["reliability"])
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    if len(rel):
        ax.plot(rel["confidence"], rel["accuracy"], "o-", ms=4)
    ax.set_xlabel("confidence (top label)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{report['split']} {report['task']}: ECE {report['ece']:.3f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
