"""Metrics, figures and reports for one task on one split. Pure: arrays in, numbers and files out.

Metric names follow `{split}_{task}_{metric}` (e.g. `test_topic_macro_f1`); per-class ones add the label as
`metric_label` writes it (`validation_topic_f1_monde`, `validation_topic_f1_societe_culture`): a label's `/`
becomes `_`, so that no metric name holds a `/` (the MLflow UI reads a `/` as a chart-group separator, and a
name with one is awkward to filter or to type). Every metric name with a label in it goes through `metric_label`;
reports and figures keep the labels as they are."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
)

from training.errors import ConfigError


def metric_label(label: str) -> str:
    """A label as it appears in a metric name: `/` -> `_` (`societe/culture` -> `societe_culture`); nothing else
    changes (`high-tech`, `anti_occident` stay as they are)."""
    return label.replace("/", "_")


def metric_labels(labels: list[str]) -> list[str]:
    """`metric_label` of each label; ConfigError when two labels would give one metric name."""
    names = [metric_label(lab) for lab in labels]
    if len(set(names)) < len(names):
        clash = sorted({lab for lab, n in zip(labels, names) if names.count(n) > 1})
        raise ConfigError(f"labels {clash} give the same metric names once '/' is written '_' (metric_label); "
                          "rename one of them (data.sections / data.topic_map)")
    return names


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


RARE_PREVALENCE = 0.10  # a class below this share of a split's rows gets AP, a PR curve and intervals
BOOTSTRAP_RESAMPLES = 1000


def binary_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of boolean predictions against boolean truth, 0 when undefined: `f1_score(truth, predicted,
    zero_division=0)`, in numpy, for the thousands of resamples of `bootstrap_interval` (scikit-learn's input
    checks cost ~6 ms a call, which made the intervals most of a training's time)."""
    tp = np.count_nonzero(truth & predicted)
    denom = np.count_nonzero(truth) + np.count_nonzero(predicted)
    return 2 * tp / denom if denom else 0.0


def binary_average_precision(truth: np.ndarray, score: np.ndarray) -> float:
    """`average_precision_score(truth, score)` in numpy (NaN without a positive): the precision at each distinct
    score threshold, weighted by the recall it adds."""
    order = np.argsort(-score, kind="mergesort")
    hits = np.cumsum(truth[order])
    if hits[-1] == 0:
        return float("nan")
    s = score[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # the last row of each tie group
    tps = hits[last]
    precision = tps / (last + 1)
    recall_gain = np.diff(np.r_[0, tps]) / tps[-1]
    return float(np.sum(recall_gain * precision))


def bootstrap_interval(y: np.ndarray, pred: np.ndarray, score: np.ndarray, j: int, seed: int = 0) -> dict[str, tuple[float, float]]:
    """95 % percentile-bootstrap intervals of class j's F1 and average precision (rows resampled with
    replacement): the figures of a class with a handful of rows move a lot with which rows happen to be there.
    AP is undefined on a resample without a row of the class: its interval is taken over the resamples that
    have one (NaN when none does), rather than scipy's NaN interval and DegenerateDataWarning."""
    from scipy.stats import DegenerateDataWarning, bootstrap

    def f1(yy, pp):
        return binary_f1(yy == j, pp == j)

    def ap(yy, ss):
        return binary_average_precision(yy == j, ss)

    out = {}
    for name, stat, other in (("f1", f1, pred), ("ap", ap, score)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateDataWarning)
            res = bootstrap((y, other), stat, paired=True, vectorized=False, n_resamples=BOOTSTRAP_RESAMPLES,
                            method="percentile", rng=np.random.default_rng(seed))
        low, high = res.confidence_interval.low, res.confidence_interval.high
        if np.isnan(low) or np.isnan(high):
            defined = res.bootstrap_distribution[~np.isnan(res.bootstrap_distribution)]
            low, high = np.percentile(defined, [2.5, 97.5]) if len(defined) else (np.nan, np.nan)
        out[name] = (float(low), float(high))
    return out


def evaluate_task(split: str, task: str, y: np.ndarray, proba: np.ndarray, labels: list[str], bins: int = 10,
                  intervals: bool = True) -> tuple[dict[str, float], dict]:
    """Metrics (flat, for MLflow) and a report (for the artifacts).

    Macro-F1 averages over every label of the task (a class absent from the split and never predicted counts
    as F1 0: the metric does not grow when a class is missing). Every class gets precision, recall and F1 at
    the decision rule (the argmax of the probabilities) and its support; a rare class (present, under
    RARE_PREVALENCE of the rows) also gets its average precision (the ranking, independent of the threshold)
    and bootstrap intervals for F1 and AP (`intervals=False` skips them, for per-epoch evaluations)."""
    y = np.asarray(y)
    pred = proba.argmax(axis=1)
    every = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=every, zero_division=0)
    prefix = f"{split}_{task}"
    metrics = {
        f"{prefix}_accuracy": float(accuracy_score(y, pred)),
        f"{prefix}_macro_f1": float(f1_score(y, pred, labels=every, average="macro", zero_division=0)),
        f"{prefix}_weighted_f1": float(f1_score(y, pred, labels=every, average="weighted", zero_division=0)),
        f"{prefix}_n": float(len(y)),
    }
    ece, reliability = expected_calibration_error(proba, y, bins)
    metrics[f"{prefix}_ece"] = ece
    eps = np.clip(proba, 1e-12, 1)
    metrics[f"{prefix}_log_loss"] = float(log_loss(y, eps / eps.sum(axis=1, keepdims=True), labels=every))
    per_class, curves = {}, {}
    for j, (lab, name) in enumerate(zip(labels, metric_labels(labels))):
        row = {"precision": float(p[j]), "recall": float(r[j]), "f1": float(f[j]), "support": int(s[j]),
               "predicted": int((pred == j).sum())}
        if 0 < s[j] < RARE_PREVALENCE * len(y):
            row["ap"] = float(average_precision_score(y == j, proba[:, j]))
            if intervals:
                ci = bootstrap_interval(y, pred, proba[:, j], j)
                row["f1_ci"], row["ap_ci"] = ci["f1"], ci["ap"]
            prec, rec, thr = precision_recall_curve(y == j, proba[:, j])
            curves[lab] = {"precision": prec.tolist(), "recall": rec.tolist(), "ap": row["ap"], "support": int(s[j]),
                           "at_decision": (float(p[j]), float(r[j]))}
        per_class[lab] = row
        for k, v in row.items():
            if isinstance(v, tuple):
                metrics[f"{prefix}_{k.removesuffix('_ci')}_{name}_ci_low"], metrics[f"{prefix}_{k.removesuffix('_ci')}_{name}_ci_high"] = v
            else:
                metrics[f"{prefix}_{k}_{name}"] = float(v)
    report = {
        **{k.removeprefix(prefix + "_"): v for k, v in metrics.items()},  # first: the float `n` gives way to the int
        "split": split, "task": task, "n": int(len(y)), "labels": labels, "per_class": per_class, "pr_curves": curves,
        "confusion": confusion_matrix(y, pred, labels=every).tolist(),
        "reliability": reliability.to_dict(orient="records"),
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


def headless_pyplot():
    """matplotlib's pyplot on the file-only backend (runs on servers and in CI, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(report: dict, path: Path) -> None:
    plt = headless_pyplot()
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
    plt = headless_pyplot()
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


def plot_precision_recall(report: dict, path: Path) -> bool:
    """The precision-recall curve of each rare class, its AP and count, and the point the decision rule sits at.
    False (nothing written) when the split has no rare class."""
    if not report.get("pr_curves"):
        return False
    plt = headless_pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for lab, c in report["pr_curves"].items():
        line, = ax.step(c["recall"], c["precision"], where="post", label=f"{lab}: AP {c['ap']:.2f} (n={c['support']})")
        prec, rec = c["at_decision"]
        ax.plot([rec], [prec], "o", color=line.get_color())
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.set_title(f"{report['split']} {report['task']}: precision-recall (dot: the decision rule)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
