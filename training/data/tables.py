"""Table files -> rows, streamed in bounded memory: the inputs of `vigie predict` (and of any stage that reads
records in the served contract's columns rather than corpus articles).

One function: `iter_table_batches(path, skip, batch_rows=1024)` yields lists of at most `batch_rows`
`TableRow`s — `(path, line, record)` — for

- JSON Lines (`.jsonl`, `.ndjson`, `.jsonl.gz`, `.json.gz`; `"-"` reads JSON Lines from standard input), one object
  a line, read line by line; `line` is the file's line number;
- CSV (`.csv`, `.csv.gz`, a header row, UTF-8 or else cp1252), read with pandas in chunks; every value is a string
  (an empty cell is ""); `line` is the row number, from 1, the header not counted;
- Parquet (`.parquet`), read a batch at a time with pyarrow; `line` is the row number, from 1.

`record` holds every column of the row as read (callers pick theirs: `vigie predict` reads `text`, `title`,
`date`, `source` and `id`), with two guarantees: `record["id"]` is a string — the row's own `id` (a string or an
integer), else the line/row number — and no string value holds a lone surrogate (a JSON `"\\ud800"` escape reads
as U+FFFD, as an undecodable byte would). Columns named in `required` (default: `text`) must be there.

Nothing here raises for a bad input except a path that does not exist (`InputError`): a bad line or row (not JSON,
not an object, a missing `text`, an `id` that is neither a string nor an integer, a line over `MAX_LINE_BYTES`) is
a `Skip` with its line number, and a file that cannot be read at all or from some point on (empty, binary, not
Parquet, a truncated or damaged gzip stream or Parquet file, an unterminated CSV quote) is a `Skip` for the file
saying how far it was read — the rows before that point are yielded; a file with no rows at all (blank lines, a
header only) is a `Skip` too.
"""

from __future__ import annotations

import codecs
import gzip
import json
import re
import sys
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

from training.data.article import Skip
from training.data.cleaning import replace_surrogates
from training.data.readers import decode_bytes
from training.errors import InputError
from training.io import batched

SkipSink = Callable[[Skip], None]
STDIN = "-"
MAX_LINE_BYTES = 16 * 1024 * 1024  # one JSON Lines record; a longer line is a counted skip, never held whole
TABLE_FORMATS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".jsonl.gz": "jsonl", ".json.gz": "jsonl",
    ".csv": "csv", ".csv.gz": "csv",
    ".parquet": "parquet",
}
_CSV_BAD_LINE = re.compile(r"Skipping line (\d+): (.*)", re.DOTALL)


class TableRow(NamedTuple):
    path: str  # the file as given ("-" for standard input)
    line: int  # JSON Lines: the line number; CSV and Parquet: the row number (from 1, header not counted)
    record: dict[str, Any]


def table_suffix(path: Path | str) -> str:
    """The suffix TABLE_FORMATS is keyed by: lowercase, a compressed suffix whole (`.jsonl.gz`)."""
    name = Path(path).name.lower()
    return next((s for s in TABLE_FORMATS if "." in s[1:] and name.endswith(s)), Path(name).suffix)


def table_format(path: Path | str) -> str | None:
    """'jsonl', 'csv' or 'parquet' for a table file (and for "-", standard input: 'jsonl'), else None."""
    return "jsonl" if str(path) == STDIN else TABLE_FORMATS.get(table_suffix(path))


def is_table_file(path: Path | str) -> bool:
    return table_format(path) is not None


def table_rows(path: Path | str) -> int | None:
    """The number of rows of a table when it is known without reading it (Parquet metadata), else None."""
    if table_format(path) != "parquet":
        return None
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # noqa: BLE001 - an unreadable file has no known size; reading it says why
        return None


def iter_table_batches(path: Path | str, skip: SkipSink, batch_rows: int = 1024,
                       required: Iterable[str] = ("text",)) -> Iterator[list[TableRow]]:
    """Lists of at most `batch_rows` rows of one table file, in file order (see the module docstring)."""
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    fmt = table_format(path)
    if fmt is None:
        raise ValueError(f"{path}: not a table file (suffix '{table_suffix(path)}')")
    name, required = str(path), tuple(required)
    if name != STDIN:
        p = Path(path)
        if not p.exists():
            raise InputError(f"{p}: no such file or directory")
        try:
            if p.is_dir():
                skip(Skip(name, "a folder, not a table file"))
                return
            if p.stat().st_size == 0:
                skip(Skip(name, "empty file"))
                return
        except OSError as e:
            skip(Skip(name, f"unreadable: {e.strerror or e}"))
            return
    reader = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}[fmt]
    said = [0]  # rows and skips of this file: a file with neither is said to hold no rows

    def counted(s: Skip) -> None:
        said[0] += 1
        skip(s)

    def good_rows() -> Iterator[TableRow]:
        for row in reader(name, counted, required, batch_rows):
            said[0] += 1
            problem = normalise_record(row)
            if problem:
                skip(Skip(name, problem, line=row.line))
            else:
                yield row

    yield from batched(good_rows(), batch_rows)
    if not said[0]:
        skip(Skip(name, "no rows (blank lines or a header only)"))


def normalise_record(row: TableRow) -> str | None:
    """Give the record its string `id` and replace lone surrogates, in place; or say why the row cannot be read
    (every table reader applies it to each row it yields)."""
    rec = row.record
    for k, v in rec.items():
        if isinstance(v, str):
            rec[k] = replace_surrogates(v)
    rid = rec.get("id")
    if rid is None or (isinstance(rid, str) and not rid.strip()):
        rec["id"] = str(row.line)
    elif isinstance(rid, bool) or not isinstance(rid, (str, int)):
        return f"'id' must be a string or an integer, got {type(rid).__name__}"
    else:
        rec["id"] = str(rid)
    return None


# --- JSON Lines ----------------------------------------------------------------------------------------


def _open_binary(name: str) -> IO[bytes]:
    if name == STDIN:
        return sys.stdin.buffer
    return gzip.open(name, "rb") if name.lower().endswith(".gz") else open(name, "rb")


def _open_or_skip(name: str, skip: SkipSink) -> IO[bytes] | None:
    """The file (stdin for `-`, decompressed for .gz) open for reading, or None once its OSError is a skip."""
    try:
        return _open_binary(name)
    except OSError as e:
        skip(Skip(name, f"unreadable: {e.strerror or e}"))
        return None


def _jsonl_rows(name: str, skip: SkipSink, required: tuple[str, ...], _batch: int) -> Iterator[TableRow]:
    lineno = 0
    fh = _open_or_skip(name, skip)
    if fh is None:
        return
    try:
        while True:
            raw = fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            lineno += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # drop the rest of the line without holding it
                    raw = fh.readline(MAX_LINE_BYTES)
                skip(Skip(name, f"line longer than {MAX_LINE_BYTES // 2**20} MiB", line=lineno))
                continue
            if not raw.strip():
                continue
            value, problem = parse_jsonl_record(raw, required)
            if problem:
                skip(Skip(name, problem, line=lineno))
                continue
            yield TableRow(name, lineno, value)
    except (OSError, EOFError, zlib.error) as e:  # a truncated or damaged gzip stream, a read error
        skip(Skip(name, f"damaged or truncated file, unread after line {lineno}: {e}"))
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


def parse_jsonl_record(raw: bytes, required: tuple[str, ...] = ("text",)) -> tuple[dict | None, str | None]:
    """One non-blank JSON Lines line -> (the record, None), or (None, why it is not a record with the `required`
    keys, in the words of a skip). Every reader of JSON Lines records uses it (`vigie predict`, the Spark path)."""
    problem, value = _parse_json_line(raw)
    if problem is None and not isinstance(value, dict):
        problem = f"expected a JSON object, got {_json_type(value)}"
    if problem is None and (missing := [c for c in required if c not in value]):
        problem = f"no {', '.join(repr(c) for c in missing)} key"
    return (None, f"bad JSONL line: {problem}") if problem else (value, None)


def _parse_json_line(raw: bytes) -> tuple[str | None, Any]:
    try:
        return None, json.loads(decode_bytes(raw))
    except json.JSONDecodeError as e:
        return f"invalid JSON: {e.msg} (column {e.colno})", None
    except RecursionError:
        return "invalid JSON: nested too deeply", None
    except ValueError as e:  # not text (NUL or control bytes), an integer of more than 4300 digits
        return f"invalid JSON: {e}", None


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


# --- CSV -----------------------------------------------------------------------------------------------


def _sniff_encoding(sample: bytes) -> str:
    """utf-8-sig when the first bytes decode as UTF-8 (a character cut at the end of the sample allowed), else
    cp1252. ValueError for a binary file."""
    if b"\x00" in sample:
        raise ValueError("binary file (NUL bytes)")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
        return "utf-8-sig"
    except UnicodeDecodeError:
        return "cp1252"


def _csv_rows(name: str, skip: SkipSink, required: tuple[str, ...], batch: int) -> Iterator[TableRow]:
    import pandas as pd

    rows_read = 0
    fh = _open_or_skip(name, skip)
    if fh is None:
        return
    try:
        try:
            encoding = _sniff_encoding(fh.read(65536))
            fh.seek(0)
        except ValueError as e:
            skip(Skip(name, str(e)))
            return
        chunks = pd.read_csv(fh, chunksize=batch, dtype=str, keep_default_na=False, na_filter=False,
                             encoding=encoding, encoding_errors="replace", on_bad_lines="warn")
        columns_checked = False
        while True:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                chunk = next(chunks, None)
            for w in caught:  # pandas reports a line with the wrong number of fields as a warning, and drops it
                m = _CSV_BAD_LINE.match(str(w.message))
                if m:
                    skip(Skip(name, f"malformed CSV line {m.group(1)}: {m.group(2).strip()}"))
            if chunk is None:
                break
            if not columns_checked:
                missing = [c for c in required if c not in chunk.columns]
                if missing:
                    cols = ", ".join(map(str, chunk.columns[:10]))
                    skip(Skip(name, f"no {', '.join(repr(c) for c in missing)} column (columns: {cols})"))
                    return
                columns_checked = True
            for rec in chunk.to_dict(orient="records"):
                rows_read += 1
                yield TableRow(name, rows_read, {str(k): v for k, v in rec.items()})
    except pd.errors.EmptyDataError:
        skip(Skip(name, "empty CSV file (no header row)"))
    except (pd.errors.ParserError, ValueError, OSError, EOFError, zlib.error) as e:
        skip(Skip(name, f"damaged CSV, unread after row {rows_read}: {str(e).strip()}"))
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


# --- Parquet -------------------------------------------------------------------------------------------


def _parquet_rows(name: str, skip: SkipSink, required: tuple[str, ...], batch: int) -> Iterator[TableRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    errors = (pa.ArrowException, OSError, ValueError, EOFError, MemoryError)
    try:
        pf = pq.ParquetFile(name)
        columns = pf.schema_arrow.names
    except errors as e:
        skip(Skip(name, f"not a readable Parquet file: {e}"))
        return
    missing = [c for c in required if c not in columns]
    if missing:
        skip(Skip(name, f"no {', '.join(repr(c) for c in missing)} column (columns: {', '.join(columns[:10])})"))
        return
    rows_read = 0
    try:
        for rb in pf.iter_batches(batch_size=batch):
            for rec in rb.to_pylist():
                rows_read += 1
                yield TableRow(name, rows_read, rec)
    except errors as e:
        skip(Skip(name, f"damaged Parquet file, unread after row {rows_read}: {e}"))
    finally:
        pf.close()
