"""File I/O shared by every stage: JSON Lines read and written one way, and atomic writes (a reader sees the old
file or the new one, never half of one)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from training.errors import InputError


def read_jsonl(path: Path, on_error: Callable[[int, str], None] | None = None,
               decode: Callable[[bytes], str] = lambda b: b.decode("utf-8")) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for every non-blank line of a JSON Lines file (gzip when it ends in .gz).
    A line that is not JSON (or not decodable) goes to `on_error(line, message)`, or without it raises an
    InputError naming file:line. File-level errors (missing, unreadable, truncated gzip) propagate."""
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(decode(raw))
            except json.JSONDecodeError as e:
                message = e.msg
            except (ValueError, UnicodeDecodeError) as e:
                message = str(e)
            else:
                yield lineno, value
                continue
            if on_error is None:
                raise InputError(f"{path}:{lineno}: invalid JSON: {message}")
            on_error(lineno, message)


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of `size` consecutive items (the last one shorter): `itertools.batched` arrives with Python 3.12."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def jsonl_text(rows: Iterable[Any]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    """Rows as JSON Lines (UTF-8, one object a line), written atomically."""
    atomic_write_text(Path(path), jsonl_text(rows))


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_jsonl(path: Path, row: Any) -> None:
    """Append one JSON Lines row durably (annotation decisions: losing one on a crash is worse than a slow write)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


@contextmanager
def atomic_directory(target: Path):
    """Yield a temporary folder beside `target`; on success it replaces `target` in one rename, on any
    failure (exception, Ctrl-C) it is removed and `target` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
