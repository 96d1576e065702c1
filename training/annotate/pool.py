"""Annotation pools: which articles to read, in which order, and why (the stratum).

Strata:
- `prefilter`: every article that passes the documented pre-filter (see prefilter.py), ranked by its score;
- `random`: a seeded random sample from outside the pre-filter, to measure what the pre-filter misses;
- `model`: once a stance model exists, articles ranked by it (highest non-neutral probability and most
  uncertain first: active learning).
Only the `train` and `unsplit` splits may be sampled: the reserved evaluation splits are refused.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

from training.annotate.prefilter import PREFILTER_VERSION, prefilter
from training.data.article import Article
from training.data.cleaning import normalize_many
from training.data.schema import RESERVED_SPLITS, StanceAnnotation
from training.errors import InputError
from training.io import read_jsonl, write_jsonl

ALLOWED_SPLITS = ("train", "unsplit")


def check_splits(splits: Iterable[str]) -> list[str]:
    splits = list(splits)
    reserved = sorted(set(splits) & RESERVED_SPLITS)
    if reserved:
        raise InputError(
            f"split(s) {', '.join(reserved)} are reserved for evaluation and are never annotated; "
            f"sample from {' / '.join(ALLOWED_SPLITS)}"
        )
    unknown = sorted(set(splits) - set(ALLOWED_SPLITS))
    if unknown:
        raise InputError(f"unknown split(s) {', '.join(unknown)}; expected {' / '.join(ALLOWED_SPLITS)}")
    return splits


def candidates(articles: Iterable[Article], splits: Iterable[str]) -> list[Article]:
    """Articles of the allowed splits, first of each exact-duplicate group (same body or same title) only."""
    splits = set(check_splits(splits))
    kept = [a for a in articles if a.origin_split not in RESERVED_SPLITS and a.origin_split in splits]
    bodies, titles = normalize_many([a.body for a in kept]), normalize_many([a.title for a in kept])
    seen: set[str] = set()
    out = []
    for a, body_key, title_key in zip(kept, bodies, titles):
        keys = (body_key, "title:" + title_key)
        if any(k in seen for k in keys):
            continue
        seen.update(keys)
        out.append(a)
    return out


def build_pool(
    articles: Iterable[Article],
    *,
    splits: Iterable[str] = ALLOWED_SPLITS,
    random_size: int = 300,
    seed: int = 0,
    model_scores: dict[str, list[float]] | None = None,
    model_size: int = 0,
    exclude: set[str] = frozenset(),
) -> list[dict]:
    """Pool rows: id, stratum, rank, score. `model_scores` maps id -> [p_anti, p_neutre, p_pro]."""
    cands = [a for a in candidates(articles, splits) if a.id not in exclude]
    rows: list[dict] = []
    scored = [(prefilter(a), a) for a in cands]
    selected = sorted((x for x in scored if x[0].selected), key=lambda x: (-x[0].score, x[1].id))
    for rank, (res, a) in enumerate(selected):
        rows.append({"id": a.id, "stratum": "prefilter", "rank": rank, "score": res.score, "section": a.section,
                     "split": a.origin_split, "prefilter_version": PREFILTER_VERSION})
    taken = {r["id"] for r in rows}
    outside = sorted(a.id for res, a in scored if not res.selected)
    section_of = {a.id: (a.section, a.origin_split) for a in cands}
    for rank, id_ in enumerate(random.Random(seed).sample(outside, min(random_size, len(outside)))):
        rows.append({"id": id_, "stratum": "random", "rank": rank, "score": None, "section": section_of[id_][0],
                     "split": section_of[id_][1], "seed": seed})
        taken.add(id_)
    if model_scores and model_size:
        rows += _model_stratum(model_scores, section_of, taken, model_size)
    return rows


def priority(probs: list[float]) -> float:
    """How much a model-ranked article is worth reading: a likely stance, or the most uncertain."""
    anti, neutral, pro = probs
    return max(anti, pro) + (1.0 - abs(max(anti, pro) - neutral))


def _model_stratum(model_scores: dict[str, list[float]], section_of: dict[str, tuple], taken: set[str], size: int,
                   stratum: str = "model") -> list[dict]:
    ranked = sorted((i for i in model_scores if i in section_of and i not in taken),
                    key=lambda i: (-priority(model_scores[i]), i))
    return [{"id": id_, "stratum": stratum, "rank": rank, "score": round(priority(model_scores[id_]), 4),
             "section": section_of[id_][0], "split": section_of[id_][1]} for rank, id_ in enumerate(ranked[:size])]


def build_round_pool(
    articles: Iterable[Article],
    labelled: dict[str, StanceAnnotation],
    model_scores: dict[str, list[float]],
    *,
    splits: Iterable[str] = ALLOWED_SPLITS,
    model_size: int = 1500,
    random_size: int = 300,
    reread_size: int = 300,
    seed: int = 1,
    tag: str = "r2",
) -> list[dict]:
    """A further annotation round after a first one. `labelled`: id -> final label of every article already read.
    Strata, all among the unread candidates unless said:
    - `model`: ranked by the model (`priority`: likely stance, or most uncertain);
    - `random_<tag>`: a seeded random sample from outside the pre-filter (what the pre-filter misses);
    - `reread`: already-read `neutre` articles of the `prefilter` stratum that the model scores highest (max of
      anti/pro), for a blind second reading.
    """
    cands = candidates(articles, splits)
    section_of = {a.id: (a.section, a.origin_split) for a in cands}
    unread = {a.id for a in cands} - set(labelled)
    rows = _model_stratum(model_scores, section_of, set(labelled), model_size)
    taken = {r["id"] for r in rows} | set(labelled)
    outside = sorted(a.id for a in cands if a.id in unread and a.id not in taken and not prefilter(a).selected)
    for rank, id_ in enumerate(random.Random(seed).sample(outside, min(random_size, len(outside)))):
        rows.append({"id": id_, "stratum": f"random_{tag}", "rank": rank, "score": None, "section": section_of[id_][0],
                     "split": section_of[id_][1], "seed": seed})
    neutral_read = [i for i, a in labelled.items()
                    if a.stance == "neutre" and a.stratum == "prefilter" and i in section_of and i in model_scores]
    ranked = sorted(neutral_read, key=lambda i: (-max(model_scores[i][0], model_scores[i][2]), i))
    for rank, id_ in enumerate(ranked[:reread_size]):
        rows.append({"id": id_, "stratum": "reread", "rank": rank,
                     "score": round(max(model_scores[id_][0], model_scores[id_][2]), 4),
                     "section": section_of[id_][0], "split": section_of[id_][1]})
    return rows


def write_pool(path: Path, rows: list[dict]) -> None:
    write_jsonl(path, rows)


def read_pool(path: Path) -> list[dict]:
    try:
        rows = [r for _, r in read_jsonl(Path(path))]  # an invalid line: InputError naming file:line
    except FileNotFoundError:
        raise InputError(f"{path}: no such pool file (create it with `vigie annotate sample`)") from None
    for i, r in enumerate(rows, start=1):
        if r.get("split") in RESERVED_SPLITS:
            raise InputError(f"{path}:{i}: article {r.get('id')} is from the reserved split {r['split']}")
    return rows
