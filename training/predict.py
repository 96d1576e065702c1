"""`vigie predict`: files -> predictions, streamed in batches; it reads what the server reads.

Inputs (any mix, folders walked):
- table files in the served contract (`training/data/tables.py`): JSON Lines (`.jsonl`, `.jsonl.gz`, `-` for
  standard input), CSV and Parquet, with a `text` column (the raw article, title on the first line unless `title`
  is given) and optional `title`, `date` (ISO), `source` and `id` (default: the line / row number). A record that
  has a `title` may carry the lead as `abstract` (the corpus shards' layout): the body is then the lead, then
  `text`. Other columns are ignored.
- article files, read by `training/data/readers.py`: `.txt` (title on line 1) and `.html` pages, one article each.

A row the model would refuse is a counted skip, never sent to it: a `text` that is not a string, empty or too
long, a `title` / `source` that is not a string, and a row with no words left after cleaning (site furniture
only), checked with the model's own boilerplate. An unreadable `date` is predicted as undated, and said.

Output (`--format jsonl|csv|parquet`, default from the `-o` suffix, else JSON Lines on stdout): one row per
predicted article, `id`, `path`, `line`, `title`, `date`, `source`, the model's output columns and `model_uri`,
`model_version`; written as it goes to a temporary file beside the target, renamed at the end.
Exit status: 0 when every input was predicted, 1 when none was, 3 when some were skipped (2: a usage error).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from training.data.article import Skip
from training.data.cleaning import split_title
from training.data.readers import is_article_file, is_orangesum_repo, read_paths, walk_files
from training.data.schema import source_key
from training.data.tables import STDIN, is_table_file, iter_table_batches, table_format, table_rows, table_suffix
from training.errors import InputError, InvalidInput
from training.io import batched
from training.models.contract import article_words, iso_date, output_columns, prepare_text, text_problem
from training.registry import load_model, model_version, pinned_uri
from training.registry import predict as model_predict

FORMATS = ("jsonl", "csv", "parquet")
OUTPUT_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
META_COLUMNS = [("id", "string"), ("path", "string"), ("line", "long"), ("title", "string"), ("date", "string"),
                ("source", "string")]
MODEL_COLUMNS = [("model_uri", "string"), ("model_version", "string")]
NO_WORDS = "no words left after cleaning: site furniture only"
EXIT_ALL, EXIT_NONE, EXIT_SOME_SKIPPED = 0, 1, 3
SHOWN_SKIPS = 10


@dataclass
class Item:
    """One article to predict: the model's input columns, and where it comes from."""

    id: str
    text: str
    title: str | None
    date: str | None  # ISO, or None (absent or unreadable)
    source: str | None
    path: str | None
    line: int | None
    raw_date: Any = None  # what the input said, when it is not a readable date


class Report:
    """Skips counted by reason, the first few kept whole; unreadable dates counted."""

    def __init__(self, on_row_skip: Callable[[], None] = lambda: None):
        self.skipped = 0
        self.reasons: Counter[str] = Counter()
        self.first: list[Skip] = []
        self.bad_dates = 0
        self.first_bad_date: Item | None = None
        self.on_row_skip = on_row_skip

    def skip(self, s: Skip) -> None:
        self.skipped += 1
        self.reasons[s.reason.split(":")[0]] += 1
        if len(self.first) < SHOWN_SKIPS:
            self.first.append(s)
        if s.line is not None:
            self.on_row_skip()


def prediction_columns(labels: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(name, type) of every output column, in order, for a model with these labels (the Spark engine's too)."""
    return META_COLUMNS + output_columns(labels) + MODEL_COLUMNS


def shown_title(it: Item) -> str | None:
    """The output's `title`: the input's, else the first line of the text."""
    return it.title or split_title(it.text)[0].strip() or None


def output_format(output: str | None, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise InputError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
        if fmt == "parquet" and not output:
            raise InputError("--format parquet writes a file: give it with -o FILE.parquet")
        return fmt
    if not output:
        return "jsonl"
    suffix = Path(output).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"-o {output}: cannot tell the format from '{suffix or Path(output).name}' "
                         f"(use .jsonl, .csv or .parquet, or --format)")
    return OUTPUT_SUFFIXES[suffix]


# --- inputs --------------------------------------------------------------------------------------------


def _date(v: Any) -> tuple[str | None, bool]:
    """(ISO date or None, whether the value was there but unreadable)."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()):
        return None, False
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()[:10], False
    iso = iso_date(v)
    return iso, iso is None


def _optional_str(rec: dict, key: str) -> tuple[str | None, str | None]:
    """(the value, or None when absent or blank; a problem when it is neither a string nor null)."""
    v = rec.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None, None
    if not isinstance(v, str):
        return None, f"'{key}' must be a string or null, got {type(v).__name__}"
    return (v if v.strip() else None), None


def item_from_record(rec: dict, path: str, line: int | None) -> Item | str:
    """A served-contract record -> the Item to predict, or why it cannot be one."""
    text = rec.get("text")
    if problem := text_problem(text):
        return problem
    title, problem = _optional_str(rec, "title")
    source, problem2 = _optional_str(rec, "source")
    if problem or problem2:
        return problem or problem2
    abstract = rec.get("abstract")
    if title and isinstance(abstract, str) and abstract.strip():
        text = f"{abstract}\n{text}"  # the lead, then the body: the corpus shards' layout
        if problem := text_problem(text):
            return problem
    date, unreadable = _date(rec.get("date"))
    return Item(str(rec.get("id") or line), text, title, date, source, path, line,
                raw_date=rec.get("date") if unreadable else None)


def _article_items(paths: Iterable[Path], report: Report) -> Iterator[Item]:
    for a in read_paths(paths, report.skip):
        if problem := text_problem(a.text):
            report.skip(Skip(a.path or a.id, problem))
            continue
        date, unreadable = _date(a.date)
        # the page's own address names its site: the source a model's dates are checked against
        yield Item(a.id, a.text, None, date, source_key(a.url), a.path, None, raw_date=a.date if unreadable else None)


def _table_items(path: Path | str, report: Report, batch_size: int) -> Iterator[Item]:
    for batch in iter_table_batches(path, report.skip, batch_rows=batch_size):
        for row in batch:
            got = item_from_record(row.record, row.path, row.line)
            if isinstance(got, str):
                report.skip(Skip(row.path, got, line=row.line))
            else:
                yield got


def _file_items(path: Path, report: Report, batch_size: int) -> Iterator[Item]:
    if is_table_file(path):
        yield from _table_items(path, report, batch_size)
    elif is_article_file(path) or path.name == "labels.json":
        yield from _article_items([path], report)
    else:
        report.skip(Skip(str(path), f"unknown file type '{table_suffix(path) or path.name}' "
                                    "(expected .txt, .html, .jsonl[.gz], .csv[.gz] or .parquet)"))


def iter_items(paths: list[str], report: Report, batch_size: int) -> Iterator[Item]:
    """Every article of the inputs, in order; what cannot be one goes to `report`."""
    for name in paths:
        if name == STDIN:
            yield from _table_items(STDIN, report, batch_size)
            continue
        p = Path(name)
        if p.is_dir() and not is_orangesum_repo(p):
            files = list(walk_files(p, report.skip))
            if not any(is_table_file(f) or is_article_file(f) for f in files):
                report.skip(Skip(str(p), "folder holds no article files"))
            for f in files:
                yield from _file_items(f, report, batch_size)
        elif p.is_dir():
            yield from _article_items([p], report)
        else:
            yield from _file_items(p, report, batch_size)


# --- output --------------------------------------------------------------------------------------------


_ARROW_TYPES = {"string": "string", "double": "float64", "long": "int64"}
_JSON_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _json_line(row: dict) -> str:
    """One JSON Lines row; the code points some readers take for line breaks are escaped."""
    text = json.dumps(row, ensure_ascii=False)
    for c, esc in _JSON_LINE_BREAKS.items():
        if c in text:
            text = text.replace(c, esc)
    return text + "\n"


class Writer:
    """Rows -> JSON Lines, CSV or Parquet, as they come; to a temporary file beside `target`, renamed onto it by
    `commit` (nothing is left behind on failure), or to stdout."""

    def __init__(self, fmt: str, target: str | None, columns: list[tuple[str, str]]):
        self.fmt, self.columns = fmt, columns
        self.names = [c for c, _ in columns]
        self.target = Path(target) if target else None
        self.tmp: Path | None = None
        if self.target is not None:
            if self.target.is_dir():
                raise InputError(f"-o {self.target}: is a folder")
            self.target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent)
            os.close(fd)
            self.tmp = Path(tmp)
        try:
            if fmt == "parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq

                self.schema = pa.schema([(c, getattr(pa, _ARROW_TYPES[t])()) for c, t in columns])
                self.pq_writer = pq.ParquetWriter(str(self.tmp), self.schema)
            else:
                self.fh = open(self.tmp, "w", encoding="utf-8", newline="") if self.tmp else sys.stdout  # noqa: SIM115 - held across writes
                if fmt == "csv":
                    pd.DataFrame(columns=self.names).to_csv(self.fh, index=False)
        except BaseException:
            if self.tmp is not None:
                self.tmp.unlink(missing_ok=True)
            raise

    def write(self, rows: list[dict]) -> None:
        if self.fmt == "jsonl":
            self.fh.write("".join(_json_line(r) for r in rows))
        elif self.fmt == "csv":
            frame = pd.DataFrame(rows, columns=self.names)
            frame["stance_evidence"] = [None if e is None else json.dumps(e, ensure_ascii=False)
                                        for e in frame["stance_evidence"]]
            frame.to_csv(self.fh, header=False, index=False)
        else:
            import pyarrow as pa

            rows = [{**r, "stance_evidence": None if r["stance_evidence"] is None
                     else json.dumps(r["stance_evidence"], ensure_ascii=False)} for r in rows]
            self.pq_writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))
        if self.fmt != "parquet":
            self.fh.flush()

    def commit(self) -> None:
        self._close()
        if self.tmp is not None:
            os.replace(self.tmp, self.target)

    def abort(self) -> None:
        try:
            self._close()
        finally:
            if self.tmp is not None:
                self.tmp.unlink(missing_ok=True)

    def _close(self) -> None:
        if self.fmt == "parquet":
            self.pq_writer.close()
        elif self.fh is not sys.stdout:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v.item() if hasattr(v, "item") else v


# --- the command ---------------------------------------------------------------------------------------


def predict_paths(paths: list[str], model_uri: str, output: str | None = None, batch_size: int = 256,
                  fmt: str | None = None) -> int:
    """Predict every article of `paths`; returns the exit status (module docstring)."""
    from tqdm import tqdm

    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")
    fmt = output_format(output, fmt)
    if paths.count(STDIN) > 1:
        raise InputError("'-' (standard input) can be read once")
    for name in paths:
        if name != STDIN and not Path(name).exists() and not Path(name).is_symlink():
            raise InputError(f"{name}: no such file or directory")
    version = model_version(model_uri)
    model = load_model(pinned_uri(model_uri, version))
    served = model.unwrap_python_model()
    boilerplate = getattr(served, "boilerplate", None)
    columns = prediction_columns(served.meta["labels"])
    names = [c for c, _ in columns]

    totals = [table_rows(p) if table_format(p) == "parquet" else None for p in paths]
    total = sum(totals) if all(t is not None for t in totals) else None
    bar = tqdm(total=total, desc="predict", unit="article", file=sys.stderr, dynamic_ncols=True)
    report = Report(on_row_skip=lambda: bar.update(1))
    predicted = 0
    writer = None
    try:
        writer = Writer(fmt, output, columns)
        for batch in batched(iter_items(paths, report, batch_size), batch_size):
            ready = []
            for it in batch:
                if article_words(prepare_text(it.text, it.title, boilerplate, it.source)) == 0:
                    report.skip(Skip(it.path or it.id, NO_WORDS, line=it.line))
                else:
                    ready.append(it)
            rows = _predict(model, ready, report)
            for it, _ in rows:
                if it.raw_date is not None:
                    report.bad_dates += 1
                    report.first_bad_date = report.first_bad_date or it
            writer.write([{"id": it.id, "path": it.path, "line": it.line, "date": it.date,
                           "title": shown_title(it),
                           "source": it.source, **{k: _clean(row.get(k)) for k in names[len(META_COLUMNS):-2]},
                           "stance_evidence": None if row.get("stance_evidence") is None
                           else json.loads(row["stance_evidence"]),
                           "model_uri": model_uri, "model_version": version} for it, row in rows])
            predicted += len(rows)
            bar.update(len(rows))
        writer.commit()
    except BrokenPipeError:  # `vigie predict ... | head`: the reader left; stop quietly
        writer.abort()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        bar.close()
        return EXIT_NONE
    except BaseException:
        if writer is not None:
            writer.abort()
        bar.close()
        raise
    bar.close()
    print_summary(predicted, report)
    if predicted == 0:
        return EXIT_NONE
    return EXIT_SOME_SKIPPED if report.skipped else EXIT_ALL


def _predict(model, items: list[Item], report: Report) -> list[tuple[Item, dict]]:
    """(item, output row) for the items the model predicts. A refusal of the batch (which the checks above
    should make impossible) is narrowed to the rows refused, each a counted skip."""
    if not items:
        return []
    frame = pd.DataFrame({"text": [it.text for it in items], "title": [it.title for it in items],
                          "date": [it.date for it in items], "source": [it.source for it in items]})
    try:
        pred = model_predict(model, frame)
    except InvalidInput as e:
        message = str(e)
        if len(items) == 1:
            report.skip(Skip(items[0].path or items[0].id, f"refused by the model: {message}", line=items[0].line))
            return []
        half = len(items) // 2
        return _predict(model, items[:half], report) + _predict(model, items[half:], report)
    return list(zip(items, pred.to_dict(orient="records")))


def print_summary(predicted: int, report: Report) -> None:
    line = f"predicted {predicted} article(s)"
    if report.skipped:
        line += f"; skipped {report.skipped}: " + ", ".join(f"{r} ({n})" for r, n in report.reasons.most_common())
    print(line, file=sys.stderr)
    for s in report.first:
        print(f"  skipped {s}", file=sys.stderr)
    if report.skipped > len(report.first):
        print(f"  ... and {report.skipped - len(report.first)} more", file=sys.stderr)
    if report.bad_dates:
        first = report.first_bad_date
        where = f"{first.path}:{first.line}" if first.line is not None else (first.path or first.id)
        print(f"  {report.bad_dates} article(s) with a date that is not YYYY-MM-DD, predicted as undated "
              f"(e.g. {where}: {str(first.raw_date)[:40]!r})", file=sys.stderr)
