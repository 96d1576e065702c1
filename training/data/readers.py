"""Readers: files on disk -> `Article` records.

Each reader yields Articles and reports what it could not use as `Skip`s (counted, with a reason) instead of
raising, so that one bad file never stops a build. `read_paths` walks files and folders and picks the reader by
file type. Only structural problems of the caller's own making (a path that does not exist) raise `InputError`.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import urlparse

from training.data.article import Article, InputError, Skip
from training.data.cleaning import clean_body, clean_title, normalize_chars

MAX_FILE_BYTES = 20 * 1024 * 1024  # a single news article is never this big; a 50 MB "article" is a wrong file
MIN_HTML_WORDS = 15  # below this, what trafilatura found is page furniture, not an article
TEXT_SUFFIXES = {".txt", ".text", ".md"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
JSONL_SUFFIXES = {".jsonl", ".jsonl.gz", ".ndjson", ".json.gz"}

SkipSink = Callable[[Skip], None]


def _suffix(path: Path) -> str:
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
    lines = normalize_chars(text).split("\n")
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        raise ValueError("no text")
    title = clean_title(lines[first])
    body = clean_body("\n".join(lines[first + 1 :]))
    if not body:
        raise ValueError("no article body after the title")
    return Article(id=id, title=title, body=body, source=source, path=path, **meta)


def read_text_file(path: Path, skip: SkipSink, source: str | None = None) -> Iterator[Article]:
    text = _read_small_file(path, skip)
    if text is None:
        return
    try:
        yield article_from_text(text, id=file_id(path), source=source or "text", path=str(path))
    except ValueError as e:
        skip(Skip(str(path), str(e)))


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
        abstract=clean_title(doc.description or ""),
        source=source,
        date=doc.date,
        url=url,
        section=section,
        path=path,
        tags=tuple(t.strip() for t in (doc.tags or []) if t.strip()),
    )


def read_html_file(path: Path, skip: SkipSink, source: str | None = None) -> Iterator[Article]:
    text = _read_small_file(path, skip)
    if text is None:
        return
    try:
        yield article_from_html(text, id=file_id(path), source=source or "html", path=str(path))
    except ValueError as e:
        skip(Skip(str(path), str(e)))
    except Exception as e:  # trafilatura/lxml raise assorted parser errors on broken markup
        skip(Skip(str(path), f"HTML could not be parsed: {type(e).__name__}: {e}"))


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
        abstract=clean_title(rec.get("abstract") or ""),
        source=source,
        date=rec.get("date"),
        url=rec.get("url"),
        section=section,
        origin_split=rec.get("split"),
        path=path,
        tags=tuple(str(t) for t in tags),
    )


def read_jsonl_file(path: Path, skip: SkipSink, source: str | None = None) -> Iterator[Article]:
    source = source or "jsonl"
    try:
        if path.stat().st_size == 0:
            skip(Skip(str(path), "empty file"))
            return
        opener = gzip.open if str(path).lower().endswith(".gz") else open
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(decode_bytes(raw))
                    yield article_from_record(rec, source=source, path=str(path))
                except (ValueError, UnicodeDecodeError) as e:
                    skip(Skip(str(path), f"bad JSONL line: {e}", line=lineno))
    except PermissionError:
        skip(Skip(str(path), "permission denied"))
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        skip(Skip(str(path), f"unreadable or truncated file: {e}"))


# --- a checkout of the upstream OrangeSum repository ----------------------------------------------------


def _orangesum_splits(root: Path) -> dict[str, str]:
    split_of: dict[str, str] = {}
    for folder in (root / "splits_title_as_summary", root / "data" / "splits_title_as_summary"):
        for split in ("train", "valid", "test"):
            f = folder / f"{split}.txt"
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


def read_orangesum_repo(root: Path, skip: SkipSink, source: str = "orangesum") -> Iterator[Article]:
    """`data/docs/parsed/<id>.json` (title, heading, article, date) with the section read from the `og:url`
    meta tag of `data/docs/raw/<id>.txt`, and the split from `splits_title_as_summary/`."""
    parsed_dir = root / "data" / "docs" / "parsed"
    raw_dir = root / "data" / "docs" / "raw"
    if not parsed_dir.is_dir():
        raise InputError(f"{root}: not an OrangeSum checkout (no data/docs/parsed/)")
    split_of = _orangesum_splits(root)
    for path in sorted(parsed_dir.glob("*.json"), key=lambda p: (len(p.stem), p.stem)):
        text = _read_small_file(path, skip)
        if text is None:
            continue
        try:
            doc = json.loads(text)
        except ValueError as e:
            skip(Skip(str(path), f"invalid JSON: {e}"))
            continue
        url = None
        raw = raw_dir / f"{path.stem}.txt"
        if raw.exists():
            html = _read_small_file(raw, skip)
            url = _meta_content(html, "og:url") if html else None
        rec = {
            "id": path.stem,
            "title": doc.get("title"),
            "abstract": doc.get("heading"),
            "text": doc.get("article"),
            "date": doc.get("date"),
            "url": url,
            "split": split_of.get(path.stem, "unsplit" if split_of else None),
        }
        try:
            yield article_from_record(rec, source=source, path=str(path))
        except ValueError as e:
            skip(Skip(str(path), str(e)))


# --- dispatch ------------------------------------------------------------------------------------------


def is_orangesum_repo(path: Path) -> bool:
    return (path / "data" / "docs" / "parsed").is_dir()


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


def read_file(path: Path, skip: SkipSink, source: str | None = None) -> Iterator[Article]:
    suffix = _suffix(path)
    if suffix in JSONL_SUFFIXES:
        yield from read_jsonl_file(path, skip, source)
    elif suffix in HTML_SUFFIXES:
        yield from read_html_file(path, skip, source)
    elif suffix in TEXT_SUFFIXES:
        yield from read_text_file(path, skip, source)
    elif path.name == "labels.json":
        return  # the label sidecar of a folder of articles, read by the label stage
    else:
        skip(Skip(str(path), f"unknown file type '{suffix or path.name}' (expected .txt, .html or .jsonl[.gz])"))


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
            if not any(_suffix(f) in TEXT_SUFFIXES | HTML_SUFFIXES | JSONL_SUFFIXES for f in files):
                skip(Skip(str(p), "folder holds no article files"))
            for f in files:
                yield from read_file(f, skip, source)
        else:
            yield from read_file(p, skip, source)
