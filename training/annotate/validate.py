"""Check label files: schema, reserved splits, and that every evidence sentence occurs verbatim in its article."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from training.annotate.corpus import load_articles
from training.data.schema import RESERVED_SPLITS, evidence_problems, read_stance_annotations


def validate_files(files: list[Path], corpus: list[Path]) -> tuple[list[str], Counter]:
    """Problems found (empty when all is well) and per-stance counts."""
    problems: list[str] = []
    counts: Counter = Counter()
    anns = []
    for f in files:
        file_anns = read_stance_annotations(f)  # raises InputError on schema errors, naming file and line
        seen: set[tuple[str, str]] = set()
        for a in file_anns:
            key = (a.id, a.annotator)
            if key in seen:
                problems.append(f"{f}: annotator {a.annotator} labelled article {a.id} twice")
            seen.add(key)
        anns += [(f, a) for a in file_anns]
    articles = load_articles(corpus, {a.id for _, a in anns})
    for f, a in anns:
        counts[a.stance] += 1
        art = articles.get(a.id)
        if art is None:
            problems.append(f"{f}: article {a.id} is not in the corpus")
            continue
        if art.origin_split in RESERVED_SPLITS:
            problems.append(f"{f}: article {a.id} is from the reserved split '{art.origin_split}'")
        problems += [f"{f}: {p}" for p in evidence_problems(a, art.text)]
    return problems, counts
