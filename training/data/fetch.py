"""`vigie data fetch orangesum`: get the corpus into `data/raw/orangesum/shards/` (JSON Lines shards).

Three ways in:
- a local folder that already holds the shards (`<dir>/shards/*.jsonl.gz`, like ../shared/data/orangesum):
  linked, not copied;
- a local clone of the upstream repository (`data/docs/parsed/<id>.json`): converted to shards;
- the upstream repository over HTTP: the url list, the split lists and every `parsed/<id>.json` are downloaded
  (resumable: files already on disk and valid are kept; each download is verified as JSON with an article),
  then converted to shards.
Sections come from each page's url: the url list's line i belongs to `parsed/<i>.json` for i <= 31,134 and to
`parsed/<i + 236>.json` after (a second scraping round shifted the numbering); for a clone without the url
list, from the `og:url` meta tag of `raw/<id>.txt`. The clone itself is read by
`training.data.readers.orangesum_repo_records`, the same reader that reads a checkout given as a data source;
this module only adds the url list and writes the records as shards.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from training.data.article import Skip
from training.data.readers import ORANGESUM_SPLIT_FILES, orangesum_repo_records, section_from_url
from training.errors import InputError
from training.io import atomic_directory

UPSTREAM = "https://raw.githubusercontent.com/Tixierae/OrangeSum/main/"
URL_LIST = "data/links/urls_final.txt"
SHIFT_AFTER, SHIFT = 31134, 236
SHARD_SIZE = 4000


def id_for_line(i: int) -> int:
    """The upstream README's mapping from a line of the url list to a parsed file number."""
    return i if i <= SHIFT_AFTER else i + SHIFT


def _get(url: str, timeout: float = 20.0) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "vigie-fetch"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def _valid_parsed(data: bytes) -> bool:
    try:
        doc = json.loads(data)
    except ValueError:
        return False
    return isinstance(doc, dict) and bool(str(doc.get("article") or "").strip())


def download_upstream(base_url: str, clone: Path, progress: bool = True, workers: int = 8) -> Path:
    """Mirror the files the corpus needs into `clone` (upstream layout). Resumable."""
    from tqdm import tqdm

    base_url = base_url.rstrip("/") + "/"
    try:
        urls = _get(base_url + URL_LIST).decode("utf-8").splitlines()
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise InputError(
            f"cannot download OrangeSum from {base_url} ({getattr(e, 'reason', e)}). Offline? Point at a local copy "
            "instead: `vigie data fetch orangesum --from PATH` (a clone of the upstream repository, or a folder "
            "holding shards/*.jsonl.gz such as ../shared/data/orangesum)") from None
    (clone / URL_LIST).parent.mkdir(parents=True, exist_ok=True)
    (clone / URL_LIST).write_text("\n".join(urls) + "\n")
    for rel in (*ORANGESUM_SPLIT_FILES.values(), "list_of_duplicates.txt"):
        try:
            data = _get(base_url + rel)
        except urllib.error.HTTPError:
            continue
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        (clone / rel).write_bytes(data)
    parsed = clone / "data" / "docs" / "parsed"
    parsed.mkdir(parents=True, exist_ok=True)
    todo = [id_for_line(i) for i, u in enumerate(urls) if u.strip()]
    todo = [i for i in todo if not ((parsed / f"{i}.json").exists() and _valid_parsed((parsed / f"{i}.json").read_bytes()))]
    failures: list[str] = []

    def fetch(i: int) -> None:
        try:
            data = _get(f"{base_url}data/docs/parsed/{i}.json")
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            failures.append(f"{i}.json: {getattr(e, 'reason', e)}")
            return
        if not _valid_parsed(data):
            failures.append(f"{i}.json: not a parsed article")
            return
        tmp = parsed / f".{i}.json.part"
        tmp.write_bytes(data)
        os.replace(tmp, parsed / f"{i}.json")  # a file is either complete or absent

    with ThreadPoolExecutor(workers) as pool:
        list(tqdm(pool.map(fetch, todo), total=len(todo), desc="download", unit="article", disable=not progress))
    if failures:
        print(f"{len(failures)} article(s) could not be downloaded (run again to resume): {failures[:5]}")
    return clone


def _urls_from_url_list(clone: Path) -> dict[str, str]:
    """id -> url, from the url list when the clone has it (a downloaded clone does; a git clone may not)."""
    f = clone / URL_LIST
    if not f.exists():
        return {}
    return {str(id_for_line(i)): u.strip() for i, u in enumerate(f.read_text().splitlines()) if u.strip()}


def _shard_record(rec: dict) -> dict:
    """A record in the shards' format: an integer id where the file name is one, the section as `label`."""
    id_ = rec["id"]
    return {
        "id": int(id_) if id_.isdigit() else id_, "label": section_from_url(rec["url"]), "url": rec["url"],
        "date": rec["date"], "split": rec["split"] or "unsplit",
        "title": rec["title"], "abstract": rec["abstract"], "text": rec["text"],
    }


def clone_to_shards(clone: Path, shards: Path) -> int:
    """Convert an upstream clone into gzip JSONL shards in the format of ../shared/data/orangesum/shards.
    Files of the clone that cannot be used are counted on stdout (an unreadable parsed file leaves its article out)."""
    skips: list[Skip] = []
    records = [_shard_record(rec) for _, rec in orangesum_repo_records(clone, skips.append, _urls_from_url_list(clone))]
    with atomic_directory(shards) as tmp:
        for k in range(0, max(len(records), 1), SHARD_SIZE):
            with gzip.open(tmp / f"orangesum_topic_{k // SHARD_SIZE:02d}.jsonl.gz", "wt", encoding="utf-8") as fh:
                for r in records[k : k + SHARD_SIZE]:
                    fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    if skips:
        print(f"{len(skips)} file(s) of the clone could not be used: {[str(s) for s in skips[:5]]}")
    return len(records)


def fetch_orangesum(dest: Path, source: str | None = None, base_url: str | None = None, progress: bool = True) -> Path:
    dest = Path(dest)
    if source:
        src = Path(source).resolve()
        if not src.exists():
            raise InputError(f"--from {source}: no such folder")
        shard_dir = src / "shards" if (src / "shards").is_dir() else src
        if any(shard_dir.glob("*.jsonl*")):
            if dest.is_symlink() or dest.is_file():
                dest.unlink()
            elif dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if shard_dir == src / "shards":
                dest.symlink_to(src, target_is_directory=True)
            else:
                dest.mkdir()
                (dest / "shards").symlink_to(shard_dir, target_is_directory=True)
            print(f"linked {dest} -> {src}")
            return dest
        if (src / "data" / "docs" / "parsed").is_dir():
            n = clone_to_shards(src, dest / "shards")
            print(f"converted {n} articles from the clone {src} into {dest / 'shards'}")
            return dest
        raise InputError(f"--from {source}: neither a folder of shards (*.jsonl.gz) nor an OrangeSum clone (data/docs/parsed/)")
    clone = download_upstream(base_url or UPSTREAM, dest / "upstream", progress)
    n = clone_to_shards(clone, dest / "shards")
    print(f"downloaded and converted {n} articles into {dest / 'shards'}")
    return dest
