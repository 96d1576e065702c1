"""`vigie data build`: raw files -> Articles -> labelled, deduplicated, split rows -> DatasetDict on disk.

`build_dataset` runs these steps in order, each a function below:
1. read (`read_inputs`): every source's articles (JSONL shard folders read in parallel), the stance labels and
   the `labels.json` sidecars; one article per id (a repeated id is a counted skip), then the `max_articles` slice;
2. label (`fit_boilerplate`, `label_rows`): the boilerplate lines learned per source, then one row per article
   with a topic; `body` is the body without its source's boilerplate, `text` is `cleaning.model_text`, the
   text the served model reads;
3. group (`find_groups`): duplicate groups (exact or near copies, or same title);
4. split (`assign_splits`), by the rules below;
5. resolve (`resolve_groups`): among the rows a split keeps, a topic conflict inside a group is settled by the
   conflict policy, then exact copies collapse to one row;
6. stats and write (`build_stats`, `write_dataset`): the DatasetDict, the boilerplate model, the config,
   `stats.json` and `inputs.json`, as one atomic folder: an interrupted build leaves the previous one untouched.

A build records what it was made from: `stats.json`'s `fingerprint` (sha256 of every input file's bytes — the
sources, the stance annotations, the `labels.json` sidecars — and of the data config; the runs' and the
registry's `vigie.dataset_fingerprint`) and `inputs.json` (`input_stamp`: each source file's size and mtime,
each label file's sha256, the data config). `stale_inputs` compares a build with today's inputs: `vigie train`
(`dataset.load_built`) rebuilds when they differ, and says what differs.

Split rules (leakage-free by construction):
- duplicate groups live in one split;
- `test` is the reserved evaluation set: OrangeSum `test` + `valid`, minus every article whose group also holds
  an article of another split (those reserved copies are dropped, never moved to train);
- `validation` is carved from the other OrangeSum splits (`train` + `unsplit`), stratified by topic and
  grouped, seed-controlled; `train` is the rest;
- articles of any other source get a deterministic split from a hash of their normalised text, into
  `train` or `validation` only (the test set stays OrangeSum's reserved articles).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from training.config import DataConfig
from training.data.article import Article, Skip
from training.data.cleaning import BoilerplateModel, clean_body, model_text, normalize_many
from training.data.dedup import DedupResult, find_duplicates
from training.data.labels import SIDECAR, read_sidecars, read_stance_labels, topic_of
from training.data.readers import is_orangesum_repo, is_record_file, read_paths
from training.data.schema import RESERVED_SPLITS, SPLITS, STANCES, StanceAnnotation
from training.errors import InputError
from training.io import atomic_directory, atomic_write_text

CARVED = {"train", "unsplit"}  # the OrangeSum splits that validation is carved from
MAX_SKIP_DETAILS = 500


def build_dataset(cfg: DataConfig, progress: bool = True) -> dict:
    """Build the dataset of `cfg` into `<output_dir>/<name>`; returns the stats (also written as stats.json)."""
    t0 = time.time()
    stamp = input_stamp(cfg)  # before reading: an input changed during the build makes the build stale
    skips: list[Skip] = []
    inputs = read_inputs(cfg, skips, progress)
    boiler = fit_boilerplate(inputs.articles, cfg)
    rows = label_rows(inputs, boiler, cfg, skips)
    dup = find_groups(rows, cfg, progress)
    split, split_counts = assign_splits(rows, dup.group, cfg)
    keep, resolve_counts = resolve_groups(rows, dup, split, cfg.conflict_policy)
    by_split = rows_by_split(rows, split, keep)
    stats = build_stats(cfg, inputs, skips, boiler, len(rows), dup, by_split, split_counts + resolve_counts)
    write_dataset(cfg, by_split, boiler, stats, t0, stamp)
    return stats


def _stable_hash(*parts: str) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest(), "big")


# --- 1. read ----------------------------------------------------------------------------------------------


@dataclass
class Inputs:
    """What the read step hands on: the articles to build from, and the labels read beside them."""

    articles: list[Article]
    files: list[Path]  # the paths read (sources, or their shards), for the fingerprint
    annotations: Path | None
    stance_of: dict[str, StanceAnnotation]
    sidecar: dict[str, dict]  # article id -> {topic, stance} from labels.json files


def read_inputs(cfg: DataConfig, skips: list[Skip], progress: bool) -> Inputs:
    """Every source's articles, one per id, sliced to `max_articles`; with the stance labels and the sidecars."""
    articles, read_skips, files = read_sources(cfg, progress)
    skips += read_skips
    annotations = Path(cfg.annotations) if cfg.annotations else None
    if annotations and not annotations.exists():
        raise InputError(f"data.annotations: {annotations}: no such file "
                         "(set data.annotations=null to build without stance labels)")
    stance_of = read_stance_labels(annotations, skips.append)
    sidecar = read_sidecars([Path(s.path) for s in cfg.sources], skips.append)
    articles = first_of_each_id(articles, skips)
    if cfg.max_articles:
        articles = _slice(articles, set(stance_of), set(sidecar), cfg.max_articles, cfg.seed)
    return Inputs(articles, files, annotations, stance_of, sidecar)


def _read_one(args: tuple[str, str]) -> tuple[list[Article], list[Skip]]:
    path, source = args
    skips: list[Skip] = []
    return list(read_paths([path], skips.append, source)), skips


def _only_shards(folder: Path) -> list[Path]:
    """The shards of a folder that holds several and nothing else (a README aside), else []."""
    if not folder.is_dir() or is_orangesum_repo(folder):
        return []
    shards = sorted(f for f in folder.iterdir() if f.is_file() and is_record_file(f))
    entries = sum(1 for f in folder.iterdir() if not f.name.startswith(".") and f.name != "README.md")
    return shards if len(shards) > 1 and len(shards) == entries else []


def _read_jobs(cfg: DataConfig) -> list[tuple[str, str]]:
    """(path, source name) pairs to read: one per source, or one per shard of a folder of shards."""
    jobs: list[tuple[str, str]] = []
    for src in cfg.sources:
        p = Path(src.path)
        if not p.exists():
            raise InputError(f"data.sources: {p}: no such file or directory")
        name = src.name or p.name
        jobs += [(str(f), name) for f in _only_shards(p)] or [(str(p), name)]
    return jobs


def read_sources(cfg: DataConfig, progress: bool) -> tuple[list[Article], list[Skip], list[Path]]:
    """All articles of all sources, in a stable order. Folders of JSONL shards are read in parallel."""
    from tqdm import tqdm

    jobs = _read_jobs(cfg)
    workers = min(len(jobs), os.cpu_count() or 1, 4)

    def results() -> Iterator[tuple[list[Article], list[Skip]]]:
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                yield from pool.map(_read_one, jobs)
        else:
            yield from map(_read_one, jobs)

    articles: list[Article] = []
    skips: list[Skip] = []
    for arts, sk in tqdm(results(), total=len(jobs), desc="read", unit="file", disable=not progress):
        articles += arts
        skips += sk
    return articles, skips, [Path(path) for path, _ in jobs]


def first_of_each_id(articles: list[Article], skips: list[Skip]) -> list[Article]:
    seen: set[str] = set()
    unique: list[Article] = []
    for a in articles:
        if a.id in seen:
            skips.append(Skip(a.path or a.source, f"duplicate id '{a.id}' (first occurrence kept)"))
            continue
        seen.add(a.id)
        unique.append(a)
    return unique


def _slice(articles: list[Article], stance_ids: set[str], always: set[str], n: int, seed: int) -> list[Article]:
    """A deterministic slice of n articles: the hand-labelled ones (sidecar) always, half of the rest from the
    stance-annotated ones, the remainder at random."""
    order = sorted(articles, key=lambda a: _stable_hash(str(seed), a.id))
    annotated = [a for a in order if a.id in stance_ids and a.id not in always][: n // 2]
    taken = {a.id for a in annotated} | (always & {a.id for a in articles})
    rest = [a for a in order if a.id not in taken][: n - len(annotated)]
    keep = taken | {a.id for a in rest}
    return [a for a in articles if a.id in keep]


# --- 2. label ---------------------------------------------------------------------------------------------


def fit_boilerplate(articles: list[Article], cfg: DataConfig) -> BoilerplateModel:
    """Lines learned as boilerplate per source (none where bodies have no recurring lines)."""
    model = BoilerplateModel(cfg.boilerplate.min_docs, cfg.boilerplate.min_fraction)
    return model.fit((a.source, a.body) for a in articles)


def label_rows(inputs: Inputs, boiler: BoilerplateModel, cfg: DataConfig, skips: list[Skip]) -> list[dict]:
    """One row per article that has a topic and a body left once its source's boilerplate is out."""
    sections = set(cfg.sections)
    rows = []
    for a in inputs.articles:
        where = f"{a.path or a.source} (article {a.id})"
        topic, why = topic_of(a, sections, cfg.topic_map, inputs.sidecar)
        if topic is None:
            skips.append(Skip(where, why))
            continue
        body = clean_body(a.body, a.source, boiler) if a.source in boiler.lines else a.body
        if not body.strip():
            skips.append(Skip(where, "empty body after cleaning"))
            continue
        rows.append(article_row(a, body, topic, inputs, boiler))
    check_labelled_rows(rows, inputs, skips)
    return rows


def article_row(a: Article, body: str, topic: str, inputs: Inputs, boiler: BoilerplateModel) -> dict:
    """A dataset row; the stance from the annotations, else from the sidecar, else -1 (no label)."""
    ann = inputs.stance_of.get(a.id)
    stance = ann.stance if ann else (inputs.sidecar.get(a.id) or {}).get("stance")
    return {
        "id": a.id, "title": a.title, "abstract": a.abstract, "body": body,
        "text": model_text(a.title, a.body, lead=a.abstract, source=a.source, boilerplate=boiler),
        "source": a.source, "section": a.section or "", "date": a.date or "", "url": a.url or "",
        "origin_split": a.origin_split or "", "topic": topic,
        "stance": STANCES.index(stance) if stance else -1,
        "stance_stratum": ann.stratum if ann else ("sidecar" if stance else ""),
        "stance_evidence": list(ann.evidence) if ann else [],  # the annotators' verbatim sentences
    }


def check_labelled_rows(rows: list[dict], inputs: Inputs, skips: list[Skip]) -> None:
    """An annotation of no built article is a counted skip; one of a reserved article, or no row at all, an error."""
    known = {r["id"] for r in rows}
    for id_ in sorted(set(inputs.stance_of) - known):
        skips.append(Skip(str(inputs.annotations), f"annotation for unknown id '{id_}' (not in the built articles)"))
    reserved_annotated = [r["id"] for r in rows if r["origin_split"] in RESERVED_SPLITS and r["stance"] != -1]
    if reserved_annotated:
        raise InputError(f"{inputs.annotations}: annotations for reserved evaluation articles "
                         f"{reserved_annotated[:10]}: the test/valid splits are never annotated")
    if not rows:
        raise InputError("data build: no article left after reading and labelling (see the skipped inputs above)")


# --- 3. group ---------------------------------------------------------------------------------------------


def find_groups(rows: list[dict], cfg: DataConfig, progress: bool) -> DedupResult:
    """Duplicate groups of the rows (by body, and by title); sets each row's `dedup_key`."""
    if progress:
        print(f"dedup: {len(rows)} articles ...", flush=True)
    for r, k in zip(rows, normalize_many([r["body"] for r in rows])):
        r["dedup_key"] = k
    nd = cfg.near_dup
    return find_duplicates([r["body"] for r in rows], [r["title"] for r in rows], threshold=nd.threshold,
                           num_perm=nd.num_perm, shingle_size=nd.shingle_size, min_title_words=nd.min_title_words)


# --- 4. split ---------------------------------------------------------------------------------------------


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
        reserved = [i for i in idx if rows[i]["origin_split"] in RESERVED_SPLITS]
        others = [i for i in idx if rows[i]["origin_split"] not in RESERVED_SPLITS]
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
                if rows[i]["origin_split"] not in RESERVED_SPLITS:
                    split[i] = "validation" if k < n_val else "train"
    return split, counts


def rows_by_split(rows: list[dict], split: list[str | None], keep: list[bool]) -> dict[str, list[dict]]:
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for r, s, kept in zip(rows, split, keep):
        if kept:
            by_split[s].append(r)
    return by_split


# --- 5. resolve ----------------------------------------------------------------------------------------------


def resolve_groups(rows: list[dict], dup: DedupResult, split: list[str | None],
                   policy: str) -> tuple[list[bool], Counter]:
    """Which rows are kept, and the counts: in each group, among the rows that have a split, a topic conflict is
    settled by `policy`, then exact copies collapse to one row. Sets each row's `group` column."""
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(dup.group):
        if split[i] is not None:
            members[g].append(i)
    keep = [s is not None for s in split]
    counts: Counter = Counter()
    for idx in members.values():
        settle_topic_conflict(rows, idx, policy, keep, counts)
        collapse_exact_copies(rows, idx, dup.exact_of, keep, counts)
    for i, g in enumerate(dup.group):
        rows[i]["group"] = str(rows[g]["id"])
    return keep, counts


def settle_topic_conflict(rows: list[dict], idx: list[int], policy: str, keep: list[bool], counts: Counter) -> None:
    """A group whose rows carry different topics is dropped (`drop`, or a tie) or relabelled to its majority
    topic; under `majority_first` a tie takes the topic of the group's first row."""
    topics = Counter(rows[i]["topic"] for i in idx)
    if len(topics) < 2:
        return
    counts["groups"] += 1
    (top, n1), (_, n2) = topics.most_common(2)
    if n1 == n2 and policy == "majority_first":
        top, n2 = rows[min(idx)]["topic"], -1
    if policy == "drop" or n1 == n2:
        for i in idx:
            keep[i] = False
        counts["rows_dropped"] += len(idx)
        return
    for i in idx:
        if rows[i]["topic"] != top:
            rows[i]["topic"] = top
            counts["rows_relabelled"] += 1


def collapse_exact_copies(rows: list[dict], idx: list[int], exact_of: list[int], keep: list[bool],
                          counts: Counter) -> None:
    """Keep the first kept row of each exact copy; it takes over a stance label that only a copy carries."""
    first_of_copy: dict[int, int] = {}
    for i in idx:
        if not keep[i]:
            continue
        j = first_of_copy.setdefault(exact_of[i], i)
        if j != i:
            keep[i] = False
            counts["exact_copies_removed"] += 1
            if rows[j]["stance"] == -1 and rows[i]["stance"] != -1:
                for key in ("stance", "stance_stratum", "stance_evidence"):
                    rows[j][key] = rows[i][key]


# --- 6. stats and write ---------------------------------------------------------------------------------


def to_dataset_dict(by_split: dict[str, list[dict]], topics: list[str]):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

    features = Features({
        "id": Value("string"), "title": Value("string"), "abstract": Value("string"), "body": Value("string"),
        "text": Value("string"), "source": Value("string"), "section": Value("string"), "date": Value("string"),
        "url": Value("string"), "origin_split": Value("string"), "group": Value("string"),
        "topic": ClassLabel(names=topics), "stance": ClassLabel(names=list(STANCES)), "stance_stratum": Value("string"),
        "stance_evidence": List(Value("string")),
    })
    def column(rows: list[dict], c: str) -> list:
        return [topics.index(r[c]) for r in rows] if c == "topic" else [r[c] for r in rows]

    return DatasetDict({
        s: Dataset.from_dict({c: column(rs, c) for c in features}, features=features) for s, rs in by_split.items()
    })


def write_dataset(cfg: DataConfig, by_split: dict[str, list[dict]], boiler: BoilerplateModel, stats: dict,
                  t0: float, stamp: dict | None = None) -> None:
    """The DatasetDict, the boilerplate model, the config, the stats (completed with the time taken and the
    output folder) and the input stamp, written as one atomic folder."""
    dsd = to_dataset_dict(by_split, cfg.topics)
    out = Path(cfg.output_dir) / cfg.name
    with atomic_directory(out) as tmp:
        dsd.save_to_disk(str(tmp), num_shards={s: 1 for s in dsd})  # one shard each: empty splits load too
        atomic_write_text(tmp / "boilerplate.json", json.dumps(boiler.to_json()))
        atomic_write_text(tmp / "config.json", json.dumps(cfg.model_dump(), indent=2, ensure_ascii=False))
        stats["seconds"] = round(time.time() - t0, 2)
        stats["output"] = str(out)
        atomic_write_text(tmp / "stats.json", json.dumps(stats, indent=2, ensure_ascii=False))
        atomic_write_text(tmp / INPUTS_FILE, json.dumps(stamp if stamp is not None else input_stamp(cfg), indent=2,
                                                        ensure_ascii=False))


# --- what a build was made from: the fingerprint, the input stamp, the staleness check ------------------

INPUTS_FILE = "inputs.json"


def _expand(files: Iterable[Path]) -> list[Path]:
    """The files themselves, and every file under a folder (sorted)."""
    paths: list[Path] = []
    for f in files:
        paths += sorted(x for x in f.rglob("*") if x.is_file()) if f.is_dir() else [f]
    return paths


def sidecar_files(cfg: DataConfig) -> list[Path]:
    """The `labels.json` sidecars the build reads (as `labels.read_sidecars` finds them), those that exist."""
    roots = [Path(s.path) for s in cfg.sources]
    return [f for f in dict.fromkeys(r / SIDECAR if r.is_dir() else r.parent / SIDECAR for r in roots) if f.is_file()]


def fingerprint(files: Iterable[Path], annotations: Path | None, cfg: DataConfig) -> str:
    """sha256 of every input file's bytes (the sources, the annotation file, the sidecars beside source files),
    and of the data config."""
    h = hashlib.sha256()
    paths = _expand(files)
    if annotations and annotations.exists():
        paths.append(annotations)
    paths += [f for f in sidecar_files(cfg) if f not in paths]  # a folder's sidecar is already among its files
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


def _sha256(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _source_files(cfg: DataConfig) -> dict[str, list[int] | None]:
    """Every source file, as the build reads them, with [size, mtime in ns]; a source that does not exist: None."""
    out: dict[str, list[int] | None] = {}
    for src in cfg.sources:
        root = Path(src.path)
        if not root.exists():
            out[str(root)] = None
            continue
        for f in _expand(_only_shards(root) or [root]):
            st = f.stat()
            out[str(f)] = [st.st_size, st.st_mtime_ns]
    return out


def input_stamp(cfg: DataConfig) -> dict:
    """What a build of `cfg` reads (`inputs.json`): `sources`, each source file's [size, mtime in ns, sha256];
    `labels`, each label file's sha256 (the stance annotations, the sidecars; a configured annotation file that
    does not exist: null); `config`, the data config. Reading every byte costs little beside a build."""
    sources = {k: v + [_sha256(Path(k))] for k, v in _source_files(cfg).items() if v is not None}
    labels: dict[str, str | None] = {}
    if cfg.annotations:
        labels[str(cfg.annotations)] = _sha256(Path(cfg.annotations))
    for f in sidecar_files(cfg):
        labels[str(f)] = _sha256(f)
    return {"sources": sources, "labels": labels, "config": cfg.model_dump(mode="json", exclude={"output_dir"})}


@dataclass
class Staleness:
    """How a build differs from today's inputs. `reasons`: what changed ([] when the build is current);
    `missing`: sources that are gone (the build cannot be checked against them, nor rebuilt); `labels_checked`:
    whether the label files were compared (not for a build without `inputs.json` whose sources are gone)."""

    reasons: list[str]
    missing: list[str]
    labels_checked: bool = True


def _names(paths: list[str], n: int = 3) -> str:
    return ", ".join(paths[:n]) + (f" and {len(paths) - n} more" if len(paths) > n else "")


def stale_inputs(cfg: DataConfig, built: Path) -> Staleness:
    """How the build in `built` (a built dataset folder) differs from what a build of `cfg` would read today.

    The data config is compared as a whole, the label files by content (hashed: they are small), the source
    files by size and mtime, and a source file whose mtime alone moved by content (a touched or copied file with
    the same bytes is no change). A build made before `inputs.json` existed is compared by its fingerprint."""
    stored_cfg = json.loads((built / "config.json").read_text())
    if stored_cfg != json.loads(json.dumps(cfg.model_dump())):
        return Staleness(["the data config changed"], [])
    now = _source_files(cfg)
    missing = [k for k, v in now.items() if v is None]
    present = {k: v for k, v in now.items() if v is not None}
    if not (built / INPUTS_FILE).is_file():
        if missing:
            return Staleness([], missing, labels_checked=False)
        files = [Path(job) for job, _ in _read_jobs(cfg)]
        fp = fingerprint(files, Path(cfg.annotations) if cfg.annotations else None, cfg)
        if fp == json.loads((built / "stats.json").read_text()).get("fingerprint"):
            return Staleness([], [])
        return Staleness(["its inputs' fingerprint differs (a source or a label file changed)"], [])
    stored = json.loads((built / INPUTS_FILE).read_text())
    reasons = []
    labels = {str(cfg.annotations): _sha256(Path(cfg.annotations))} if cfg.annotations else {}
    labels |= {str(f): _sha256(f) for f in sidecar_files(cfg)}
    def with_missing(k: str) -> bool:  # a file of a source that is gone (a folder's labels.json): not checkable
        return any(Path(k).is_relative_to(m) for m in missing)

    for k in dict.fromkeys([*stored["labels"], *labels]):
        if stored["labels"].get(k) != labels.get(k) and not with_missing(k):
            role = "data.annotations" if k == str(cfg.annotations) else "labels file"
            what = "changed" if labels.get(k) and stored["labels"].get(k) else "is gone" if k not in labels or not labels[k] else "is new"
            reasons.append(f"{role} {k} {what}")
    old = stored["sources"]
    changed = [k for k, v in present.items() if k in old and old[k][:2] != v
               and (old[k][0] != v[0] or _sha256(Path(k)) != old[k][2])]
    added = [k for k in present if k not in old]
    gone = [k for k in old if k not in present and not with_missing(k)]
    for what, keys in (("changed", changed), ("new", added), ("gone", gone)):
        if keys:
            reasons.append(f"source files {what}: {_names(keys)}")
    return Staleness(reasons, missing)


def split_stats(rows: list[dict]) -> dict:
    return {
        "rows": len(rows),
        "topic": dict(sorted(Counter(r["topic"] for r in rows).items())),
        "stance": dict(sorted(Counter(STANCES[r["stance"]] for r in rows if r["stance"] != -1).items())),
        "stance_labelled": sum(1 for r in rows if r["stance"] != -1),
    }


def build_stats(cfg: DataConfig, inputs: Inputs, skips: list[Skip], boiler: BoilerplateModel, articles_in: int,
                dup: DedupResult, by_split: dict[str, list[dict]], counts: Counter) -> dict:
    """stats.json: rows per split, what dedup and the conflict policy removed, the skipped inputs and why."""
    reasons = Counter(s.reason.split(":")[0].split(" '")[0] for s in skips)
    removed = sum(counts[k] for k in ("exact_copies_removed", "reserved_dropped_as_duplicates_of_other_splits",
                                      "rows_dropped"))
    return {
        "name": cfg.name,
        "fingerprint": fingerprint(inputs.files, inputs.annotations, cfg),
        "splits": {s: split_stats(rs) for s, rs in by_split.items()},
        "dedup": {
            "articles_in": articles_in,
            "groups_with_several_articles": sum(1 for c in Counter(dup.group).values() if c > 1),
            "near_duplicate_pairs": dup.near_pairs,
            "exact_copies_removed": counts["exact_copies_removed"],
            "reserved_dropped_as_duplicates_of_other_splits": counts["reserved_dropped_as_duplicates_of_other_splits"],
            "removed": removed,
        },
        "label_conflicts": {"policy": cfg.conflict_policy,
                            **{k: counts[k] for k in ("groups", "rows_dropped", "rows_relabelled")}},
        "skipped": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "skipped_details": [str(s) for s in skips[:MAX_SKIP_DETAILS]],
        "boilerplate_lines": {s: len(v) for s, v in boiler.lines.items()},
        "inputs": [str(f) for f in inputs.files] + ([str(inputs.annotations)] if inputs.annotations else []),
    }
