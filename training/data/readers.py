"""Readers: files on disk -> `Article` records.

Each reader yields Articles and reports what it could not use as `Skip`s (counted, with a reason) instead of
raising, so that one bad file never stops a build. Only structural problems of the caller's own making (a path
that does not exist) raise `InputError`.

`read_paths` walks files and folders and picks the reader by file suffix from two tables (adding a format is
one entry in one of them):
- `ARTICLE_FORMATS`, for files that hold one article (.txt, .html, ...): `read_article_file` reads the small
  file, hands its text to the format's parser, and turns what the parser rejects into a counted `Skip`;
- `RECORD_READERS`, for files that hold many (JSON Lines shards): a reader yields one Article per good line.
A folder in the upstream OrangeSum layout is recognised as such: `orangesum_repo_records` reads that layout
once, for `read_orangesum_repo` here and for the shard conversion of `training.data.fetch`.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

from training.data.article import Article, Skip
from training.data.cleaning import clean_body, clean_title, split_title
from training.errors import InputError
from training.io import read_jsonl

MAX_FILE_BYTES = 20 * 1024 * 1024  # a single news article is never this big; a 50 MB "article" is a wrong file
MIN_HTML_WORDS = 15  # below this, what trafilatura found is page furniture, not an article

SkipSink = Callable[[Skip], None]


def file_suffix(path: Path) -> str:
    """The suffix the reader tables are keyed by: lowercase, a compressed JSON suffix whole (.jsonl.gz)."""
    name = path.name.lower()
    for s in (".jsonl.gz", ".json.gz"):
        if name.endswith(s):
            return s
    return path.suffix.lower()


def decode_bytes(data: bytes) -> str:
    """UTF-8 (with or without BOM), else cp1252, else latin-1 — the encodings French web text comes in.
    Raises ValueError for binary data."""
    if b"\x00" in data[:8192]:
        raise ValueError("binary file (NUL bytes)")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    controls = sum(1 for c in text[:8192] if ord(c) < 32 and c not in "\n\r\t\f")
    if controls > 0.01 * max(1, len(text[:8192])):
        raise ValueError("binary file (control characters)")
    return text


def _read_small_file(path: Path, skip: SkipSink) -> str | None:
    try:
        size = path.stat().st_size
        if size == 0:
            skip(Skip(str(path), "empty file"))
            return None
        if size > MAX_FILE_BYTES:
            skip(Skip(str(path), f"file too large for one article ({size / 2**20:.1f} MiB > {MAX_FILE_BYTES // 2**20} MiB)"))
            return None
        text = decode_bytes(path.read_bytes())
    except PermissionError:
        skip(Skip(str(path), "permission denied"))
        return None
    except OSError as e:
        skip(Skip(str(path), f"unreadable: {e.strerror or e}"))
        return None
    except ValueError as e:
        skip(Skip(str(path), str(e)))
        return None
    if not text.strip():
        skip(Skip(str(path), "empty file (whitespace only)"))
        return None
    return text


def file_id(path: Path) -> str:
    """A file's article id: its name without the extension (ids repeated across files are counted skips)."""
    return re.sub(r"[^\w.-]+", "_", path.stem)[:100] or "article"


# --- plain text pages: first non-empty line is the title ------------------------------------------------


def article_from_text(text: str, *, id: str, source: str, path: str | None = None, **meta) -> Article:
    title, rest = split_title(text)
    if not title.strip():
        raise ValueError("no text")
    title = clean_title(title)
    body = clean_body(rest)
    if not body:
        raise ValueError("no article body after the title")
    return Article(id=id, title=title, body=body, source=source, path=path, **meta)


# --- HTML news pages, through trafilatura --------------------------------------------------------------


def section_from_url(url: str | None) -> str | None:
    """OrangeSum's rule: the section is the url's first path segment (two for societe/*); auto.orange.fr is auto."""
    if not url:
        return None
    parsed = urlparse(url)
    if parsed.netloc.startswith("auto."):
        return "auto"
    parts = [p for p in parsed.path.split("/") if p]
    if len(parts) < 2:
        return None
    if parts[0] == "societe" and len(parts) >= 3:
        return f"societe/{parts[1]}"
    return parts[0]


def article_from_html(html: str, *, id: str, source: str, path: str | None = None) -> Article:
    import trafilatura  # heavy import, only when HTML is read

    doc = trafilatura.bare_extraction(html, include_comments=False, favor_precision=True, with_metadata=True)
    words = len((doc.text or "").split()) if doc is not None else 0
    if words < MIN_HTML_WORDS:
        raise ValueError(f"no article text found in the HTML page ({words} words of main text)")
    url = doc.url
    section = section_from_url(url)
    title = clean_title(doc.title or "")
    if not title:
        raise ValueError("HTML page has no title")
    return Article(
        id=id,
        title=title,
        body=clean_body(doc.text),
        abstract=clean_body(doc.description or ""),
        source=source,
        date=doc.date,
        url=url,
        section=section,
        path=path,
        tags=tuple(t.strip() for t in (doc.tags or []) if t.strip()),
    )


# --- JSON Lines (the OrangeSum shards' format) ----------------------------------------------------------

_STR_FIELDS = ("title", "abstract", "text", "url", "date", "split", "label", "section_meta")


def article_from_record(rec: dict, *, source: str, path: str | None = None) -> Article:
    if not isinstance(rec, dict):
        raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
    if "id" not in rec or isinstance(rec["id"], (dict, list, bool)) or rec["id"] in (None, ""):
        raise ValueError("missing or invalid 'id'")
    for key in _STR_FIELDS:
        if key in rec and rec[key] is not None and not isinstance(rec[key], str):
            raise ValueError(f"field '{key}' must be a string, got {type(rec[key]).__name__}")
    body = clean_body(rec.get("text") or rec.get("body") or "")
    if not body:
        raise ValueError("empty 'text'")
    title = clean_title(rec.get("title") or "")
    if not title:
        raise ValueError("missing 'title'")
    tags = rec.get("tags") or []
    if not isinstance(tags, list):
        raise ValueError("field 'tags' must be a list")
    section = rec.get("label") or rec.get("section") or section_from_url(rec.get("url"))
    return Article(
        id=str(rec["id"]),
        title=title,
        body=body,
        abstract=clean_body(rec.get("abstract") or ""),  # the lead keeps its lines, as in a served text
        source=source,
        date=rec.get("date"),
        url=rec.get("url"),
        section=section,
        origin_split=rec.get("split"),
        path=path,
        tags=tuple(str(t) for t in tags),
    )


def read_jsonl_file(path: Path, skip: SkipSink, source: str | None = None) -> Iterator[Article]:
    """One Article per good line; a line that is not JSON or not an article is a `Skip` with its line number."""
    source = source or "jsonl"
    skipped_lines = []

    def bad_line(lineno: int, message: str) -> None:
        skipped_lines.append(lineno)
        skip(Skip(str(path), f"bad JSONL line: {message}", line=lineno))

    try:
        if path.stat().st_size == 0:
            skip(Skip(str(path), "empty file"))
            return
        lines = 0
        for lineno, rec in read_jsonl(path, on_error=bad_line, decode=decode_bytes):
            lines += 1
            try:
                yield article_from_record(rec, source=source, path=str(path))
            except ValueError as e:
                bad_line(lineno, str(e))
        if not lines and not skipped_lines:
            skip(Skip(str(path), "no records (blank lines only)"))
    except PermissionError:
        skip(Skip(str(path), "permission denied"))
    except (OSError, EOFError, zlib.error) as e:  # a truncated (EOFError) or damaged gzip stream
        skip(Skip(str(path), f"unreadable or truncated file: {e}"))


# --- a checkout of the upstream OrangeSum repository ----------------------------------------------------

ORANGESUM_SPLIT_FILES = {s: f"splits_title_as_summary/{s}.txt" for s in ("train", "valid", "test")}


def is_orangesum_repo(path: Path) -> bool:
    return (path / "data" / "docs" / "parsed").is_dir()


def _orangesum_splits(root: Path) -> dict[str, str]:
    split_of: dict[str, str] = {}
    for base in (root, root / "data"):
        for split, rel in ORANGESUM_SPLIT_FILES.items():
            f = base / rel
            if f.exists():
                for line in f.read_text().split():
                    split_of[line.strip().removesuffix(".json")] = split
    return split_of


def _meta_content(html: str, prop: str) -> str | None:
    m = re.search(rf'<meta[^>]+(?:property|name)="{re.escape(prop)}"[^>]*>', html)
    if not m:
        return None
    c = re.search(r'content="([^"]*)"', m.group(0))
    return c.group(1) if c else None


def _page_url(raw: Path, skip: SkipSink) -> str | None:
    """The `og:url` meta tag of a saved page, if the page is there."""
    if not raw.exists():
        return None
    html = _read_small_file(raw, skip)
    return _meta_content(html, "og:url") if html else None


def orangesum_repo_records(root: Path, skip: SkipSink,
                           urls: dict[str, str] | None = None) -> Iterator[tuple[Path, dict]]:
    """(parsed file, raw record) for every article of an upstream checkout, in id order. A record is
    {id, title, abstract, text, date, url, split}: `data/docs/parsed/<id>.json` (title, heading, article, date),
    the url from `urls` (id -> url) or else the `og:url` meta tag of `data/docs/raw/<id>.txt`, and the split
    from `splits_title_as_summary/` ("unsplit" for an id in none of the lists; None when there are no lists)."""
    if not is_orangesum_repo(root):
        raise InputError(f"{root}: not an OrangeSum checkout (no data/docs/parsed/)")
    split_of = _orangesum_splits(root)
    urls = urls or {}
    docs = root / "data" / "docs"
    for path in sorted((docs / "parsed").glob("*.json"), key=lambda p: (len(p.stem), p.stem)):
        text = _read_small_file(path, skip)
        if text is None:
            continue
        try:
            doc = json.loads(text)
        except ValueError as e:
            skip(Skip(str(path), f"invalid JSON: {e}"))
            continue
        if not isinstance(doc, dict):
            skip(Skip(str(path), f"expected a JSON object, got {type(doc).__name__}"))
            continue
        id_ = path.stem
        yield path, {
            "id": id_,
            "title": doc.get("title"),
            "abstract": doc.get("heading"),
            "text": doc.get("article"),
            "date": doc.get("date"),
            "url": urls.get(id_) or _page_url(docs / "raw" / f"{id_}.txt", skip),
            "split": split_of.get(id_, "unsplit" if split_of else None),
        }


def read_orangesum_repo(root: Path, skip: SkipSink, source: str = "orangesum") -> Iterator[Article]:
    for path, rec in orangesum_repo_records(root, skip):
        try:
            yield article_from_record(rec, source=source, path=str(path))
        except ValueError as e:
            skip(Skip(str(path), str(e)))


# --- dispatch ------------------------------------------------------------------------------------------


class ArticleFormat(NamedTuple):
    """A file type that holds one article. `parse(text, id=, source=, path=)` returns the Article, or raises
    ValueError (with the reason to count) when the file holds none."""

    name: str  # names the format in skip reasons ("HTML could not be parsed: ...")
    parse: Callable[..., Article]
    default_source: str  # the articles' source when the caller names none


TEXT_FORMAT = ArticleFormat("text", article_from_text, default_source="text")
HTML_FORMAT = ArticleFormat("HTML", article_from_html, default_source="html")
ARTICLE_FORMATS: dict[str, ArticleFormat] = {
    ".txt": TEXT_FORMAT, ".text": TEXT_FORMAT, ".md": TEXT_FORMAT,
    ".html": HTML_FORMAT, ".htm": HTML_FORMAT, ".xhtml": HTML_FORMAT,
}
RecordReader = Callable[[Path, SkipSink, str | None], Iterator[Article]]
RECORD_READERS: dict[str, RecordReader] = {
    ".jsonl": read_jsonl_file, ".jsonl.gz": read_jsonl_file, ".ndjson": read_jsonl_file, ".json.gz": read_jsonl_file,
}


def is_record_file(path: Path) -> bool:
    """A file of many articles (a JSON Lines shard), which a build may read in parallel with its siblings."""
    return file_suffix(path) in RECORD_READERS


def is_article_file(path: Path) -> bool:
    return file_suffix(path) in ARTICLE_FORMATS or is_record_file(path)


def read_article_file(path: Path, skip: SkipSink, fmt: ArticleFormat, source: str | None = None) -> Iterator[Article]:
    """The one Article of a single-article file, or a counted `Skip` saying why there is none."""
    text = _read_small_file(path, skip)
    if text is None:
        return
    try:
        yield fmt.parse(text, id=file_id(path), source=source or fmt.default_source, path=str(path))
    except ValueError as e:
        skip(Skip(str(path), str(e)))
    except Exception as e:  # trafilatura/lxml raise assorted parser errors on broken markup
        skip(Skip(str(path), f"{fmt.name} could not be parsed: {type(e).__name__}: {e}"))


def read_file(path: Path, skip: SkipSink, source: str | None = None) -> Iterator[Article]:
    suffix = file_suffix(path)
    if suffix in RECORD_READERS:
        yield from RECORD_READERS[suffix](path, skip, source)
    elif suffix in ARTICLE_FORMATS:
        yield from read_article_file(path, skip, ARTICLE_FORMATS[suffix], source)
    elif path.name == "labels.json":
        return  # the label sidecar of a folder of articles, read by the label stage
    else:
        skip(Skip(str(path), f"unknown file type '{suffix or path.name}' (expected .txt, .html or .jsonl[.gz])"))


def _walk(root: Path, skip: SkipSink) -> Iterator[Path]:
    """Files below root, sorted, following no symlink twice (symlink loops are skipped, not followed)."""
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
        except OSError as e:
            skip(Skip(str(folder), f"unreadable: {e.strerror or e}"))
            continue
        if (st.st_dev, st.st_ino) in seen:
            skip(Skip(str(folder), "symlink loop (folder already visited)"))
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except PermissionError:
            skip(Skip(str(folder), "permission denied"))
            continue
        except OSError as e:
            skip(Skip(str(folder), f"unreadable: {e.strerror or e}"))
            continue
        subdirs = []
        for entry in entries:
            p = Path(entry.path)
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    subdirs.append(p)
                elif entry.is_file():
                    yield p
                else:
                    skip(Skip(str(p), "not a regular file (broken link or special file)"))
            except OSError as e:
                skip(Skip(str(p), f"unreadable: {e.strerror or e}"))
        stack.extend(reversed(subdirs))


def walk_files(root: Path, skip: SkipSink) -> Iterator[Path]:
    """The files below a folder, sorted, as `read_paths` walks them (hidden entries left out, symlink loops and
    special files counted as skips)."""
    return _walk(root, skip)


def read_paths(paths: Iterable[Path | str], skip: SkipSink, source: str | None = None) -> Iterator[Article]:
    """Read files and folders (an OrangeSum checkout is recognised as such)."""
    for p in map(Path, paths):
        if not p.exists() and not p.is_symlink():
            raise InputError(f"{p}: no such file or directory")
        if p.is_dir():
            if is_orangesum_repo(p):
                yield from read_orangesum_repo(p, skip, source or "orangesum")
                continue
            files = list(_walk(p, skip))
            if not any(is_article_file(f) for f in files):
                skip(Skip(str(p), "folder holds no article files"))
            for f in files:
                yield from read_file(f, skip, source)
        else:
            yield from read_file(p, skip, source)
