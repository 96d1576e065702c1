"""`vigie data build`: raw files -> Articles -> labelled, deduplicated, split rows -> DatasetDict on disk.

Split rules (leakage-free by construction):
- duplicate groups (exact or near copies, or same title) live in one split;
- `test` is the reserved evaluation set: OrangeSum `test` + `valid`, minus every article whose group also holds
  an article of another split (those reserved copies are dropped, never moved to train);
- `validation` is carved from the other OrangeSum splits (`train` + `unsplit`), stratified by topic and
  grouped, seed-controlled; `train` is the rest;
- articles of any other source get a deterministic split from a hash of their normalised text, into
  `train` or `validation` only (the test set stays OrangeSum's reserved articles).
The output folder is written atomically: an interrupted build leaves the previous one untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from training.config import DataConfig
from training.data.article import Article, InputError, Skip
from training.data.cleaning import BoilerplateModel, clean_body, normalize_many
from training.data.dedup import find_duplicates
from training.data.labels import read_sidecars, read_stance_labels, topic_of
from training.data.readers import JSONL_SUFFIXES, _suffix, is_orangesum_repo, read_paths
from training.io import atomic_directory, atomic_write_text

RESERVED = {"test", "valid"}
CARVED = {"train", "unsplit"}
SPLITS = ("train", "validation", "test")
MAX_SKIP_DETAILS = 500


def _stable_hash(*parts: str) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest(), "big")


def _read_one(args: tuple[str, str]) -> tuple[list[Article], list[Skip]]:
    path, source = args
    skips: list[Skip] = []
    return list(read_paths([path], skips.append, source)), skips


def read_sources(cfg: DataConfig, progress: bool) -> tuple[list[Article], list[Skip], list[Path]]:
    """All articles of all sources, in a stable order. Folders of JSONL shards are read in parallel."""
    from tqdm import tqdm

    jobs: list[tuple[str, str]] = []
    for src in cfg.sources:
        p = Path(src.path)
        if not p.exists():
            raise InputError(f"data.sources: {p}: no such file or directory")
        name = src.name or p.name
        shards = sorted(f for f in p.iterdir() if f.is_file() and _suffix(f) in JSONL_SUFFIXES) if p.is_dir() else []
        if p.is_dir() and not is_orangesum_repo(p) and len(shards) > 1 and len(shards) == sum(1 for f in p.iterdir() if not f.name.startswith(".") and f.name != "README.md"):
            jobs += [(str(f), name) for f in shards]
        else:
            jobs.append((str(p), name))
    files = [Path(j[0]) for j in jobs]
    workers = min(len(jobs), os.cpu_count() or 1, 4)
    articles: list[Article] = []
    skips: list[Skip] = []
    bar = tqdm(total=len(jobs), desc="read", unit="file", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for arts, sk in pool.map(_read_one, jobs):
                articles += arts
                skips += sk
                bar.update()
    else:
        for job in jobs:
            arts, sk = _read_one(job)
            articles += arts
            skips += sk
            bar.update()
    bar.close()
    return articles, skips, files


def fingerprint(files: Iterable[Path], annotations: Path | None, cfg: DataConfig) -> str:
    """sha256 of every input file's bytes, the annotation file, and the data config."""
    h = hashlib.sha256()
    paths: list[Path] = []
    for f in files:
        paths += sorted(x for x in f.rglob("*") if x.is_file()) if f.is_dir() else [f]
    if annotations and annotations.exists():
        paths.append(annotations)
    for p in paths:
        h.update(p.name.encode())
        try:
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError:
            h.update(b"<unreadable>")
    h.update(json.dumps(cfg.model_dump(exclude={"output_dir"}), sort_keys=True).encode())
    return h.hexdigest()


def _slice(articles: list[Article], stance_ids: set[str], always: set[str], n: int, seed: int) -> list[Article]:
    """A deterministic slice of n articles: the hand-labelled ones (sidecar) always, half of the rest from the
    stance-annotated ones, the remainder at random."""
    order = sorted(articles, key=lambda a: _stable_hash(str(seed), a.id))
    annotated = [a for a in order if a.id in stance_ids and a.id not in always][: n // 2]
    taken = {a.id for a in annotated} | (always & {a.id for a in articles})
    rest = [a for a in order if a.id not in taken][: n - len(annotated)]
    keep = taken | {a.id for a in rest}
    return [a for a in articles if a.id in keep]


def assign_splits(
    rows: list[dict], groups: list[int], cfg: DataConfig
) -> tuple[list[str | None], Counter]:
    """Split name per row (None: dropped as a leak of the reserved set)."""
    counts: Counter = Counter()
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    split: list[str | None] = [None] * len(rows)
    carve: dict[str, list[int]] = defaultdict(list)  # topic -> group ids to carve validation from
    for g, idx in members.items():
        reserved = [i for i in idx if rows[i]["origin_split"] in RESERVED]
        others = [i for i in idx if rows[i]["origin_split"] not in RESERVED]
        if reserved and not others:
            for i in idx:
                split[i] = "test"
            continue
        if reserved:
            counts["reserved_dropped_as_duplicates_of_other_splits"] += len(reserved)
        if any(rows[i]["origin_split"] in CARVED for i in others):
            topic = Counter(rows[i]["topic"] for i in others).most_common(1)[0][0]
            carve[topic].append(g)
        else:  # other sources: a deterministic split from the text itself
            key = min(rows[i]["dedup_key"] for i in others)
            bucket = _stable_hash("split", key) / 2**64
            for i in others:
                split[i] = "validation" if bucket < cfg.validation_fraction else "train"
    for topic in sorted(carve):
        gids = sorted(carve[topic], key=lambda g: _stable_hash(str(cfg.seed), topic, rows[g]["id"]))
        n_val = round(cfg.validation_fraction * len(gids))
        for k, g in enumerate(gids):
            for i in members[g]:
                if rows[i]["origin_split"] not in RESERVED:
                    split[i] = "validation" if k < n_val else "train"
    return split, counts


def build_dataset(cfg: DataConfig, progress: bool = True) -> dict:
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    t0 = time.time()
    skip_list: list[Skip] = []
    articles, read_skips, files = read_sources(cfg, progress)
    skip_list += read_skips
    annotations_path = Path(cfg.annotations) if cfg.annotations else None
    if annotations_path and not annotations_path.exists():
        raise InputError(f"data.annotations: {annotations_path}: no such file (set data.annotations=null to build without stance labels)")
    stance_of = read_stance_labels(annotations_path, skip_list.append)
    sidecar = read_sidecars([Path(s.path) for s in cfg.sources], skip_list.append)

    # one article per id
    seen_ids: set[str] = set()
    unique: list[Article] = []
    for a in articles:
        if a.id in seen_ids:
            skip_list.append(Skip(a.path or a.source, f"duplicate id '{a.id}' (first occurrence kept)"))
            continue
        seen_ids.add(a.id)
        unique.append(a)
    articles = unique
    if cfg.max_articles:
        articles = _slice(articles, set(stance_of), set(sidecar), cfg.max_articles, cfg.seed)

    # boilerplate lines learned per source (a no-op where bodies have no recurring lines)
    boiler = BoilerplateModel(cfg.boilerplate.min_docs, cfg.boilerplate.min_fraction).fit((a.source, a.body) for a in articles)
    if boiler.lines:
        articles = [
            a if a.source not in boiler.lines else Article(**{**a.__dict__, "body": clean_body(a.body, a.source, boiler)})
            for a in articles
        ]

    # labels
    sections, rows = set(cfg.sections), []
    stance_names = ["anti_occident", "neutre", "pro_occident"]
    for a in articles:
        topic, why = topic_of(a, sections, cfg.topic_map, sidecar)
        if topic is None:
            skip_list.append(Skip(f"{a.path or a.source} (article {a.id})", why))
            continue
        if not a.body.strip():
            skip_list.append(Skip(f"{a.path or a.source} (article {a.id})", "empty body after cleaning"))
            continue
        ann = stance_of.get(a.id)
        stance = ann.stance if ann else (sidecar.get(a.id) or {}).get("stance")
        rows.append({
            "id": a.id, "title": a.title, "abstract": a.abstract, "body": a.body, "text": a.text,
            "source": a.source, "section": a.section or "", "date": a.date or "", "url": a.url or "",
            "origin_split": a.origin_split or "", "topic": topic,
            "stance": stance_names.index(stance) if stance else -1,
            "stance_stratum": ann.stratum if ann else ("sidecar" if stance else ""),
        })
    known = {r["id"] for r in rows}
    for id_ in sorted(set(stance_of) - known):
        skip_list.append(Skip(str(annotations_path), f"annotation for unknown id '{id_}' (not in the built articles)"))
    reserved_annotated = [r["id"] for r in rows if r["origin_split"] in RESERVED and r["stance"] != -1]
    if reserved_annotated:
        raise InputError(f"{annotations_path}: annotations for reserved evaluation articles {reserved_annotated[:10]}: "
                         "the test/valid splits are never annotated")
    if not rows:
        raise InputError("data build: no article left after reading and labelling (see the skipped inputs above)")

    # duplicates
    if progress:
        print(f"dedup: {len(rows)} articles ...", flush=True)
    keys = normalize_many([r["body"] for r in rows])
    for r, k in zip(rows, keys):
        r["dedup_key"] = k
    nd = cfg.near_dup
    dup = find_duplicates([r["body"] for r in rows], [r["title"] for r in rows], threshold=nd.threshold,
                          num_perm=nd.num_perm, shingle_size=nd.shingle_size, min_title_words=nd.min_title_words)
    split, split_counts = assign_splits(rows, dup.group, cfg)

    # label conflicts inside groups, then exact copies collapse to one row
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(dup.group):
        if split[i] is not None:
            members[g].append(i)
    keep = [s is not None for s in split]
    conflicts = Counter()
    for g, idx in members.items():
        topics = Counter(rows[i]["topic"] for i in idx)
        if len(topics) > 1:
            conflicts["groups"] += 1
            (top, n1), (_, n2) = topics.most_common(2)
            if n1 == n2 and cfg.conflict_policy == "majority_first":
                top, n2 = rows[min(idx)]["topic"], -1
            if cfg.conflict_policy == "drop" or n1 == n2:
                for i in idx:
                    keep[i] = False
                conflicts["rows_dropped"] += len(idx)
            else:
                for i in idx:
                    if rows[i]["topic"] != top:
                        rows[i]["topic"] = top
                        conflicts["rows_relabelled"] += 1
        first_of_copy: dict[int, int] = {}
        for i in idx:
            if not keep[i]:
                continue
            j = first_of_copy.setdefault(dup.exact_of[i], i)
            if j != i:
                keep[i] = False
                split_counts["exact_copies_removed"] += 1
                if rows[j]["stance"] == -1 and rows[i]["stance"] != -1:
                    rows[j]["stance"], rows[j]["stance_stratum"] = rows[i]["stance"], rows[i]["stance_stratum"]
    for i, g in enumerate(dup.group):
        rows[i]["group"] = str(rows[g]["id"])

    features = Features({
        "id": Value("string"), "title": Value("string"), "abstract": Value("string"), "body": Value("string"),
        "text": Value("string"), "source": Value("string"), "section": Value("string"), "date": Value("string"),
        "url": Value("string"), "origin_split": Value("string"), "group": Value("string"),
        "topic": ClassLabel(names=cfg.topics), "stance": ClassLabel(names=stance_names), "stance_stratum": Value("string"),
    })
    columns = list(features)
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for i, r in enumerate(rows):
        if keep[i]:
            by_split[split[i]].append(r)
    dsd = DatasetDict({
        s: Dataset.from_dict({c: [r[c] if c != "topic" else cfg.topics.index(r[c]) for r in rs] for c in columns}, features=features)
        for s, rs in by_split.items()
    })

    reasons = Counter(s.reason.split(":")[0].split(" '")[0] for s in skip_list)
    stats = {
        "name": cfg.name,
        "fingerprint": fingerprint(files, annotations_path, cfg),
        "splits": {
            s: {
                "rows": len(rs),
                "topic": dict(sorted(Counter(r["topic"] for r in rs).items())),
                "stance": dict(sorted(Counter(stance_names[r["stance"]] for r in rs if r["stance"] != -1).items())),
                "stance_labelled": sum(1 for r in rs if r["stance"] != -1),
            }
            for s, rs in by_split.items()
        },
        "dedup": {
            "articles_in": len(rows),
            "groups_with_several_articles": sum(1 for c in Counter(dup.group).values() if c > 1),
            "near_duplicate_pairs": dup.near_pairs,
            "exact_copies_removed": split_counts["exact_copies_removed"],
            "reserved_dropped_as_duplicates_of_other_splits": split_counts["reserved_dropped_as_duplicates_of_other_splits"],
            "removed": split_counts["exact_copies_removed"] + split_counts["reserved_dropped_as_duplicates_of_other_splits"] + conflicts["rows_dropped"],
        },
        "label_conflicts": {"policy": cfg.conflict_policy, **{k: conflicts[k] for k in ("groups", "rows_dropped", "rows_relabelled")}},
        "skipped": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "skipped_details": [str(s) for s in skip_list[:MAX_SKIP_DETAILS]],
        "boilerplate_lines": {s: len(v) for s, v in boiler.lines.items()},
        "inputs": [str(f) for f in files] + ([str(annotations_path)] if annotations_path else []),
    }
    out = Path(cfg.output_dir) / cfg.name
    with atomic_directory(out) as tmp:
        dsd.save_to_disk(str(tmp), num_shards={s: 1 for s in dsd})  # one shard each: empty splits load too
        atomic_write_text(tmp / "boilerplate.json", json.dumps(boiler.to_json()))
        atomic_write_text(tmp / "config.json", json.dumps(cfg.model_dump(), indent=2, ensure_ascii=False))
        stats["seconds"] = round(time.time() - t0, 2)
        stats["output"] = str(out)
        atomic_write_text(tmp / "stats.json", json.dumps(stats, indent=2, ensure_ascii=False))
    return stats
