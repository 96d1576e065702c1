"""Inter-annotator agreement: Cohen's kappa (two votes per article), Fleiss' kappa (any fixed number of votes
per article), the confusion between first and second votes, and per-class counts."""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from training.data.schema import STANCES, StanceAnnotation, read_stance_annotations


def votes_by_id(files: list[Path]) -> dict[str, list[StanceAnnotation]]:
    """Every annotator's vote per article id (one per annotator: a later line of the same annotator wins)."""
    by_id: dict[str, dict[str, StanceAnnotation]] = defaultdict(dict)
    for f in files:
        for a in read_stance_annotations(f):
            if a.votes:  # an adjudicated file: expand its kept votes
                for v in a.votes:
                    by_id[a.id][v.annotator] = StanceAnnotation(id=a.id, stance=v.stance, confidence=v.confidence,
                                                                annotator=v.annotator, stratum=a.stratum,
                                                                evidence=a.evidence if v.stance != "neutre" else [])
            else:
                by_id[a.id][a.annotator] = a
    return {i: list(v.values()) for i, v in by_id.items()}


def fleiss_kappa(table: np.ndarray) -> float:
    """table[i, j]: how many raters put item i in category j; every row sums to the same n >= 2."""
    n = table.sum(axis=1)[0]
    p_j = table.sum(axis=0) / table.sum()
    p_i = ((table**2).sum(axis=1) - n) / (n * (n - 1))
    p_bar, p_e = p_i.mean(), (p_j**2).sum()
    return float((p_bar - p_e) / (1 - p_e)) if p_e < 1 else 1.0


def agreement(votes: dict[str, list[StanceAnnotation]]) -> dict:
    multi = {i: v for i, v in votes.items() if len(v) >= 2}
    first = [v[0].stance for v in multi.values()]
    second = [v[1].stance for v in multi.values()]
    out: dict = {
        "articles": len(votes),
        "double_annotated": len(multi),
        "per_class_all_votes": dict(Counter(a.stance for v in votes.values() for a in v)),
        "per_class_first_vote": dict(Counter(v[0].stance for v in votes.values())),
    }
    if not multi:
        return out
    out["cohen_kappa"] = float(cohen_kappa_score(first, second, labels=list(STANCES)))
    out["observed_agreement"] = float(np.mean([a == b for a, b in zip(first, second)]))
    out["confusion_first_vs_second"] = confusion_matrix(first, second, labels=list(STANCES)).tolist()
    n_min = min(len(v) for v in multi.values())
    table = np.array([[sum(1 for a in v[:n_min] if a.stance == s) for s in STANCES] for v in multi.values()])
    out["fleiss_kappa"] = fleiss_kappa(table)
    pairs: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for v in multi.values():
        for a, b in combinations(sorted(v, key=lambda x: x.annotator), 2):
            pairs[(a.annotator, b.annotator)].append((a.stance, b.stance))
    out["pairs"] = {
        f"{a}~{b}": {"n": len(p), "agreement": float(np.mean([x == y for x, y in p])),
                     "cohen_kappa": float(cohen_kappa_score(*zip(*p), labels=list(STANCES))) if len({*sum(p, ())}) > 1 else None}
        for (a, b), p in sorted(pairs.items())
    }
    return out


def agreement_report(files: list[Path], only_pairs: bool = True) -> str:
    r = agreement(votes_by_id(files))
    lines = [f"articles: {r['articles']}   double-annotated: {r['double_annotated']}"]
    lines.append("votes per class: " + ", ".join(f"{s} {r['per_class_all_votes'].get(s, 0)}" for s in STANCES))
    if r["double_annotated"]:
        lines.append(f"Cohen's kappa (first vs second vote): {r['cohen_kappa']:.3f}   "
                     f"Fleiss' kappa: {r['fleiss_kappa']:.3f}   observed agreement: {r['observed_agreement']:.3f}")
        lines.append("confusion (rows: first vote, columns: second vote; " + " / ".join(STANCES) + "):")
        for s, row in zip(STANCES, r["confusion_first_vs_second"]):
            lines.append(f"  {s:<14} " + " ".join(f"{x:>5}" for x in row))
        if not only_pairs:
            for k, p in r["pairs"].items():
                kappa = "n/a" if p["cohen_kappa"] is None else f"{p['cohen_kappa']:.3f}"
                lines.append(f"  {k:<14} n={p['n']:<4} agreement={p['agreement']:.3f} kappa={kappa}")
    return "\n".join(lines)
