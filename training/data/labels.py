"""Labels: topic from the site section (through the config's map), stance from the adjudicated annotations,
and both from a `labels.json` sidecar for articles without a section (like the seed).

Nothing here raises on bad label data: every problem is a counted `Skip` with the file and line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from training.data.article import Article, Skip
from training.data.schema import STANCES, StanceAnnotation, iter_stance_annotations

SIDECAR = "labels.json"
SkipSink = Callable[[Skip], None]


def topic_of(article: Article, sections: set[str], topic_map: dict[str, str], sidecar: dict[str, dict]) -> tuple[str | None, str | None]:
    """(topic, reason it has none)."""
    section = article.section or (sidecar.get(article.id) or {}).get("topic")
    if not section:
        return None, "no section and no topic label"
    if section not in sections and section not in topic_map.values():
        return None, f"unknown section '{section}'"
    return topic_map.get(section, section), None


def read_sidecars(source_paths: list[Path], skip: SkipSink) -> dict[str, dict]:
    """`labels.json` files beside article files: {"<article id>": {"topic": ..., "stance": ...}}."""
    out: dict[str, dict] = {}
    for root in source_paths:
        for f in ([root / SIDECAR] if root.is_dir() else [root.parent / SIDECAR]):
            if not f.is_file():
                continue
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
                if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
                    raise ValueError("expected {article id: {topic, stance}}")
            except (OSError, ValueError) as e:
                skip(Skip(str(f), f"bad labels file: {e}"))
                continue
            for id_, labels in data.items():
                if labels.get("stance") not in (None, *STANCES):
                    skip(Skip(str(f), f"article {id_}: invalid stance '{labels.get('stance')}'"))
                    labels = {k: v for k, v in labels.items() if k != "stance"}
                out[str(id_)] = labels
    return out


def read_stance_labels(path: Path | None, skip: SkipSink) -> dict[str, StanceAnnotation]:
    """The adjudicated stance file: one decision per id. Invalid lines and ids with conflicting decisions
    are counted skips (a conflicted id gets no label rather than a guessed one)."""
    if path is None or not path.exists():
        return {}
    by_id: dict[str, StanceAnnotation] = {}
    conflicted: set[str] = set()
    for lineno, ann in iter_stance_annotations(path, on_error="skip", skip=skip):
        prev = by_id.get(ann.id)
        if prev is not None and prev.stance != ann.stance:
            conflicted.add(ann.id)
            skip(Skip(str(path), f"conflicting annotations for article {ann.id}: {prev.stance} vs {ann.stance}", line=lineno))
        by_id.setdefault(ann.id, ann)
    for id_ in conflicted:
        del by_id[id_]
    return by_id
