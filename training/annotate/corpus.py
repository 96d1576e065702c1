"""Look articles up by id in the corpus an annotation pool was drawn from."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from training.data.article import Article
from training.data.readers import article_from_record, read_paths
from training.errors import InputError
from training.io import read_jsonl


def load_articles(paths: Iterable[Path | str], ids: set[str] | None = None) -> dict[str, Article]:
    """Articles by id. With `ids`, JSONL records of other ids are not even cleaned (fast look-ups)."""
    out: dict[str, Article] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise InputError(f"{p}: no such corpus file or folder")
        files = sorted(p.glob("*.jsonl*")) if p.is_dir() else [p]
        if ids is not None and files and all(".jsonl" in f.name for f in files):
            for f in files:
                for _, rec in read_jsonl(f):
                    if str(rec.get("id")) in ids:
                        out[str(rec["id"])] = article_from_record(rec, source="orangesum", path=str(f))
            continue
        for a in read_paths([p], lambda s: None):
            if ids is None or a.id in ids:
                out[a.id] = a
    return out
