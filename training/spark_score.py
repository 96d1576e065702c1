"""Spark batch scoring of a registered model: `vigie predict --engine spark`, or `score(spark, ...)` from a Spark job.

It reads what `vigie predict` reads, as Parquet and JSON Lines tables (`.parquet`, `.jsonl`, `.ndjson`,
`.jsonl.gz`; files or folders, on any file system Spark reads), and writes what it writes: the columns of
`predict.prediction_columns`, one Parquet dataset partitioned by input file, `<output>/input=<file>/`.

Rows are checked the local way before the model sees them (`predict.item_from_record` and the model's own
boilerplate): a row the model would refuse is a counted skip with its file, line and reason, never a failed job.
The model runs as `mlflow.pyfunc.spark_udf` (`registry.spark_udf`), returning a struct of the output columns.

Resumable by partition: the input files are scored a wave at a time (`files_per_job`, default: the cluster's
cores), each wave one Spark write into `<output>/_staging/`, then each partition is renamed into place and gets
its `_SUCCESS` manifest (counts, skips, the model version, the input's size and time). A partition without a
readable manifest is incomplete; a rerun scores again only those, and the inputs changed since. One run at a
time per output folder. pyspark is imported inside the functions: the rest of vigie never needs Java.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import unquote

from training.data.article import Skip
from training.data.tables import STDIN, TableRow, normalise_record, parse_jsonl_record, table_format, table_suffix
from training.errors import InputError
from training.models.contract import MAX_ROWS, article_words, output_columns, prepare_text
from training.predict import (EXIT_ALL, EXIT_NONE, EXIT_SOME_SKIPPED, NO_WORDS, SHOWN_SKIPS, Item, Report,
                              item_from_record, prediction_columns, print_summary, shown_title)
from training.registry import load_model, model_version, pinned_uri, spark_udf

PARTITION = "input"  # <output>/input=<file>/: the partition column, read back by Spark as `input`
MANIFEST = "_SUCCESS"
FORMATS = ("parquet", "jsonl")
RECORD_COLUMNS = ("id", "text", "title", "abstract", "date", "source")  # what item_from_record reads
# the checked rows: the output's input columns, the model's own `title` and `text`, and why a row is left out
CHECKED = ("input string, path string, line long, id string, title string, date string, source string, "
           "text string, _model_title string, _bad_date string, _skip string")
CHECKED_NAMES = [c.split()[0] for c in CHECKED.split(", ")]
JAVA_MISSING = ("--engine spark needs a Java runtime (17 or later), and there is no `java` on PATH nor in "
                "JAVA_HOME: apt-get install openjdk-17-jre-headless (or set JAVA_HOME)")


@dataclass
class InputFile:
    key: str  # the partition: the file's path below the folder given, made safe for a directory name
    uri: str  # as Spark names it
    shown: str  # as `vigie predict` names it: the path given, and below it for a folder
    fmt: str
    size: int
    mtime: int


@dataclass
class Scored:
    predicted: int
    report: Report
    scored: list[str] = field(default_factory=list)  # the partitions written by this run
    resumed: list[str] = field(default_factory=list)  # those already complete, left as they were


# --- the file system, through Spark's own Hadoop client ----------------------------------------------------


class HadoopFiles:
    """Driver-side file operations through Spark's Hadoop FileSystem: the paths (local, HDFS, S3A, ABFS, GCS) and
    the credentials Spark's readers and writers use. Needs classic Spark (py4j), not Spark Connect."""

    def __init__(self, spark):
        if getattr(spark, "_jsc", None) is None:
            raise InputError("--engine spark needs a classic Spark session (py4j), not Spark Connect")
        self._jvm, self._conf = spark._jvm, spark._jsc.hadoopConfiguration()

    def _fs(self, path: str):
        p = self._jvm.org.apache.hadoop.fs.Path(path)
        return p.getFileSystem(self._conf), p

    def exists(self, path: str) -> bool:
        fs, p = self._fs(path)
        return fs.exists(p)

    def is_dir(self, path: str) -> bool:
        fs, p = self._fs(path)
        return fs.getFileStatus(p).isDirectory()

    def files(self, path: str) -> list[tuple[str, int, int]]:
        """(URI, size, modification time) of the file, or of every file below the folder."""
        fs, p = self._fs(path)
        found, it = [], fs.listFiles(p, True)
        while it.hasNext():
            st = it.next()
            found.append((st.getPath().toString(), st.getLen(), st.getModificationTime()))
        return found

    def qualified(self, path: str) -> str:
        fs, p = self._fs(path)
        return fs.makeQualified(p).toString()

    def delete(self, path: str) -> None:
        fs, p = self._fs(path)
        fs.delete(p, True)

    def mkdirs(self, path: str) -> None:
        fs, p = self._fs(path)
        fs.mkdirs(p)

    def rename(self, src: str, dst: str) -> None:
        fs, p = self._fs(src)
        if not fs.rename(p, self._fs(dst)[1]):
            raise InputError(f"cannot move {src} to {dst}")

    def read_json(self, path: str) -> dict | None:
        """The JSON object in the file, or None when there is none (absent, half written, failing its checksum)."""
        from py4j.protocol import Py4JJavaError

        fs, p = self._fs(path)
        if not fs.exists(p):
            return None
        stream = fs.open(p)
        try:
            value = json.loads(bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream)).decode("utf-8"))
        except (ValueError, Py4JJavaError):
            return None
        finally:
            stream.close()
        return value if isinstance(value, dict) else None

    def write_json(self, path: str, value: dict) -> None:
        fs, p = self._fs(path)
        out = fs.create(p, True)
        try:
            out.write(bytearray(json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8")))
        finally:
            out.close()


# --- inputs --------------------------------------------------------------------------------------------


def partition_key(rel: str) -> str:
    """A file's path below the folder given -> its partition's name: letters, digits, `.`, `-`, `_` only (Spark
    writes any other character of a partition value escaped); folders joined with `__`."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", rel.replace("/", "__"))


def input_files(files: HadoopFiles, paths: list[str], report: Report) -> list[InputFile]:
    """The Parquet and JSON Lines files of `paths`, in order; the rest are counted skips, as `vigie predict`
    counts what it cannot read (hidden files, `_` and `.` names, are left out, as Spark leaves them)."""
    found: dict[str, InputFile] = {}
    for given in paths:
        if given == STDIN:
            raise InputError("--engine spark reads files: '-' (standard input) needs --engine local")
        if not files.exists(given):
            raise InputError(f"{given}: no such file or directory")
        root = files.qualified(given).rstrip("/")
        folder = files.is_dir(given)
        listed = sorted(files.files(given))
        tables = 0
        for uri, size, mtime in listed:
            rel = uri[len(root):].lstrip("/") if folder else uri.rsplit("/", 1)[-1]
            if any(part.startswith(("_", ".")) for part in rel.split("/")):
                continue
            shown = f"{given.rstrip('/')}/{rel}" if folder else given
            fmt = table_format(rel)
            if fmt not in FORMATS:
                report.skip(Skip(shown, f"not a Parquet or JSON Lines table ('{table_suffix(rel) or rel}'): "
                                        "--engine spark reads these two, --engine local the others"))
                continue
            tables += 1
            if size == 0:
                report.skip(Skip(shown, "empty file"))
                continue
            f = InputFile(partition_key(rel), uri, shown, fmt, size, mtime)
            if (other := found.get(f.key)) is not None and other.uri != uri:
                raise InputError(f"{other.shown} and {shown} would share the output partition {PARTITION}={f.key}: "
                                 "score them in separate runs (or rename one)")
            found[f.key] = f
        if folder and not tables:
            report.skip(Skip(given, "folder holds no Parquet or JSON Lines files"))
    return list(found.values())


def _jsonl_lines(spark, uris: list[str]):
    """(_file, _line, value) for every line of the JSON Lines files, numbered from 1 as the local reader numbers
    them. Spark reads a big file in splits: the rows of one split come in order, in one task, where
    monotonically_increasing_id counts up by one; so a line's number is the lines of its file's earlier splits
    plus its place in its own split (one small job counts the lines of each split)."""
    from pyspark.sql import functions as F

    lines = spark.read.text(uris).select(
        F.col("_metadata.file_path").alias("_file"), F.col("_metadata.file_block_start").alias("_block"),
        F.monotonically_increasing_id().alias("_i"), "value")
    blocks = sorted(tuple(r) for r in lines.groupBy("_file", "_block")
                    .agg(F.min("_i").alias("first"), F.count(F.lit(1)).alias("n")).collect())
    shifts, before, last_file = [], 0, None
    for file, block, first, n in blocks:
        before = 0 if file != last_file else before
        shifts.append((file, block, before + 1 - first))
        before, last_file = before + n, file
    shift = spark.createDataFrame(shifts, "_file string, _block long, _shift long")
    return (lines.join(F.broadcast(shift), ["_file", "_block"])
            .select("_file", (F.col("_i") + F.col("_shift")).alias("_line"), "value"))


def _parquet_rows(spark, uris: list[str]):
    """(_file, _line, the contract's columns present) of the Parquet files; dates and integer ids as strings
    (what the local reader accepts of them), other columns as they are, for item_from_record to judge."""
    from pyspark.sql import functions as F

    df = spark.read.option("mergeSchema", "true").parquet(*uris)
    types = dict(df.dtypes)
    cols = [F.col("_metadata.file_path").alias("_file"), (F.col("_metadata.row_index") + 1).alias("_line")]
    for c in RECORD_COLUMNS:
        if c in types:
            as_string = (c == "date" and types[c].startswith(("date", "timestamp"))
                         or c == "id" and types[c] in ("tinyint", "smallint", "int", "bigint"))
            cols.append(F.col(c).cast("string").alias(c) if as_string else F.col(c))
    return df.select(*cols)


def _record(rec: dict, fmt: str) -> tuple[dict | None, str | None]:
    """A row as read by Spark -> (the record, or why it cannot be one); (None, None) for a blank line."""
    if fmt == "parquet":
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in rec.items()}, None
    raw = rec["value"]
    if not raw.strip():
        return None, None
    return parse_jsonl_record(raw.encode("utf-8", "surrogatepass"))


def check_rows(batches: Iterator, fmt: str, files: dict[str, tuple[str, str]], boilerplate) -> Iterator:
    """mapInPandas: rows as read -> CHECKED rows, the local path's checks in the local path's words. `files`:
    the file's URI (unquoted) -> (partition, path shown)."""
    import pandas as pd

    for pdf in batches:
        out = []
        for rec in pdf.to_dict(orient="records"):
            key, path = files[unquote(rec.pop("_file"))]
            line = int(rec.pop("_line"))
            record, problem = _record(rec, fmt)
            if record is None and problem is None:
                continue
            if problem is None:
                problem = normalise_record(TableRow(path, line, record))
            got = problem or item_from_record(record, path, line)
            if isinstance(got, Item) and not article_words(prepare_text(got.text, got.title, boilerplate, got.source)):
                got = NO_WORDS
            if isinstance(got, str):
                out.append({"input": key, "path": path, "line": line, "_skip": got})
            else:
                out.append({"input": key, "path": path, "line": line, "id": got.id, "title": shown_title(got),
                            "date": got.date, "source": got.source, "text": got.text, "_model_title": got.title,
                            "_bad_date": None if got.raw_date is None else str(got.raw_date)[:40]})
        if out:  # object columns: pyspark (4.3) cannot convert pandas 3's Arrow-backed `str` columns
            yield pd.DataFrame(out, columns=CHECKED_NAMES, dtype=object).astype({"line": "int64"})


# --- scoring -------------------------------------------------------------------------------------------


def _struct(columns: list[tuple[str, str]]):
    from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

    types = {"string": StringType(), "double": DoubleType(), "long": LongType()}
    return StructType([StructField(name, types[t]) for name, t in columns])


@contextmanager
def _arrow_batches(spark, rows: int):
    """Arrow batches of `rows` rows for the Python steps: Spark's default (10,000) is more than a model request
    may hold (contract.MAX_ROWS)."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key, None)
    spark.conf.set(key, str(rows))
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


def _spark_message(e: Exception) -> str:
    """The line of a Spark failure that says what went wrong: the Python error of a worker, else the first."""
    lines = [x.strip() for x in str(e).strip().splitlines() if x.strip()] or [type(e).__name__]
    python = [x for x in lines if re.match(r"[\w.]*(Error|Exception): ", x)]
    return (python[-1] if python else lines[0])[:400]


def _score_wave(spark, wave: list[InputFile], udf, *, out: str, files: HadoopFiles, boilerplate, names: list[str],
                model_uri: str, version: str | None, pinned: str) -> dict[str, dict]:
    """Score the wave's files in one Spark write; each partition moved into place, then given its manifest."""
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    started = time.monotonic()
    lookup = {unquote(f.uri): (f.key, f.shown) for f in wave}
    frames = []
    for fmt in FORMATS:
        uris = [f.uri for f in wave if f.fmt == fmt]
        if uris:
            rows = _jsonl_lines(spark, uris) if fmt == "jsonl" else _parquet_rows(spark, uris)
            frames.append(rows.mapInPandas(partial(check_rows, fmt=fmt, files=lookup, boilerplate=boilerplate),
                                           CHECKED))
    checked = frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])
    checked = checked.persist()  # the counts and the write read the checked rows once
    staging = f"{out}/_staging/{uuid.uuid4().hex}"
    try:
        reason = F.substring_index("_skip", ":", 1)
        counts = checked.groupBy(PARTITION, reason.alias("reason")).agg(
            F.count(F.lit(1)).alias("n"), F.count("_bad_date").alias("bad_dates")).collect()
        kind = F.when(F.col("_skip").isNotNull(), "skip").otherwise("date")
        firsts = (checked.where(F.col("_skip").isNotNull() | F.col("_bad_date").isNotNull())
                  .withColumn("kind", kind)
                  .withColumn("n", F.row_number().over(Window.partitionBy(PARTITION, "kind").orderBy("line")))
                  .where(F.col("n") <= SHOWN_SKIPS).select(PARTITION, "kind", "path", "line", "_skip", "_bad_date")
                  .orderBy(PARTITION, "kind", "line").collect())
        model_input = F.struct(F.col("text"), F.col("_model_title").alias("title"), F.col("date"), F.col("source"))
        scored = checked.where(F.col("_skip").isNull()).withColumn("_out", udf(model_input))
        given = {"model_uri": F.lit(model_uri), "model_version": F.lit(version).cast("string")}
        selected = [given[c].alias(c) if c in given else
                    F.col(c) if c in CHECKED_NAMES else F.col("_out").getField(c).alias(c) for c in names]
        scored.select(*selected, PARTITION).write.partitionBy(PARTITION).parquet(staging)

        manifests = {}
        for f in wave:
            final, written = f"{out}/{PARTITION}={f.key}", f"{staging}/{PARTITION}={f.key}"
            mine = [r for r in counts if r[PARTITION] == f.key]
            reasons = {r["reason"]: r["n"] for r in mine if r["reason"] is not None}
            notes = [r for r in firsts if r[PARTITION] == f.key]
            skips, dates = ([[r["path"], r["line"], r["_skip"]] for r in notes if r["kind"] == "skip"],
                            [[r["path"], r["line"], r["_bad_date"]] for r in notes if r["kind"] == "date"])
            files.delete(final)  # what an interrupted run left of it
            if files.exists(written):
                files.rename(written, final)
            else:
                files.mkdirs(final)  # every row of the file skipped: an empty partition, complete all the same
            manifests[f.key] = {
                "input": f.shown, "size": f.size, "mtime": f.mtime, "model": pinned, "model_uri": model_uri,
                "model_version": version, "predicted": sum(r["n"] for r in mine if r["reason"] is None),
                "skipped": sum(reasons.values()), "reasons": reasons,
                "bad_dates": sum(r["bad_dates"] for r in mine if r["reason"] is None),
                "first_skips": skips, "first_bad_date": dates[0] if dates else None,
                "seconds": round(time.monotonic() - started, 1)}
            files.write_json(f"{final}/{MANIFEST}", manifests[f.key])
        return manifests
    finally:
        checked.unpersist()
        files.delete(staging)


def score(spark, model_uri: str, inputs: list[str], output_dir: str, *, batch_size: int = 256,
          files_per_job: int | None = None, env_manager: str = "local",
          log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> Scored:
    """Score the Parquet / JSON Lines files of `inputs` (files or folders) with the model into the Parquet
    dataset `output_dir` (one partition per input file; the module docstring), resuming what an earlier run of
    the same model left complete. Returns the counts over the whole output, the partitions kept included.
    InputError for what the user can fix (a missing input, another model's partitions, a file Spark cannot read)."""
    from pyspark.errors import PySparkException
    from py4j.protocol import Py4JError

    if not 1 <= batch_size <= MAX_ROWS:
        raise InputError(f"--batch-size {batch_size}: must be between 1 and {MAX_ROWS}")
    files = HadoopFiles(spark)
    report = Report()
    listed = todo = input_files(files, inputs, report)
    version = model_version(model_uri)
    pinned = pinned_uri(model_uri, version)
    out = files.qualified(output_dir).rstrip("/")
    done: dict[str, dict] = {}
    for f in list(todo):
        m = files.read_json(f"{out}/{PARTITION}={f.key}/{MANIFEST}")
        if m is None:
            continue
        if m.get("model") != pinned:
            raise InputError(f"{output_dir}: {PARTITION}={f.key} was scored with {m.get('model')}, this run scores "
                             f"with {pinned}: give another output folder, or --model {m.get('model')} to finish it")
        if (m.get("size"), m.get("mtime")) == (f.size, f.mtime):
            done[f.key] = m
    resumed = list(done)
    todo = [f for f in todo if f.key not in done]
    if resumed:
        log(f"resuming {output_dir}: {len(resumed)} partition(s) already complete, {len(todo)} to score")
    files.delete(f"{out}/_staging")  # what killed runs left
    if todo:
        served = load_model(pinned).unwrap_python_model()
        labels, boilerplate = served.meta["labels"], getattr(served, "boilerplate", None)
        udf = spark_udf(spark, pinned, _struct(output_columns(labels)), env_manager=env_manager)
        step = files_per_job or max(1, spark.sparkContext.defaultParallelism)
        run = partial(_score_wave, spark, udf=udf, out=out, files=files, boilerplate=boilerplate,
                      names=[c for c, _ in prediction_columns(labels)], model_uri=model_uri, version=version,
                      pinned=pinned)

        def isolate(wave: list[InputFile]) -> dict[str, dict]:
            """A failed wave is run again a file at a time, to name the file Spark cannot score."""
            try:
                return run(wave)
            except (PySparkException, Py4JError) as e:
                if len(wave) == 1:
                    raise InputError(f"{wave[0].shown}: Spark could not score it: {_spark_message(e)} (the "
                                     f"partitions already written are kept: run again to resume)") from None
                return {k: m for f in wave for k, m in isolate([f]).items()}

        with _arrow_batches(spark, batch_size):
            for i in range(0, len(todo), step):
                started = time.monotonic()
                wave = isolate(todo[i:i + step])
                done.update(wave)
                log(f"scored {min(i + step, len(todo))}/{len(todo)} partition(s): "
                    f"{sum(m['predicted'] for m in wave.values())} predicted, "
                    f"{sum(m['skipped'] for m in wave.values())} skipped ({time.monotonic() - started:.0f} s)")
    files.delete(f"{out}/_staging")
    predicted = _add_manifests(report, [done[f.key] for f in listed])  # in input order
    return Scored(predicted, report, scored=[f.key for f in todo], resumed=resumed)


def _add_manifests(report: Report, manifests) -> int:
    """Add the partitions' skips and unreadable dates to `report`; the number of rows predicted."""
    predicted = 0
    for m in manifests:
        predicted += m["predicted"]
        report.skipped += m["skipped"]
        report.reasons.update(m["reasons"])
        for path, line, reason in m["first_skips"]:
            if len(report.first) < SHOWN_SKIPS:
                report.first.append(Skip(path, reason, line=line))
        report.bad_dates += m["bad_dates"]
        if m["first_bad_date"] and report.first_bad_date is None:
            path, line, raw = m["first_bad_date"]
            report.first_bad_date = Item("", "", None, None, None, path, line, raw_date=raw)
    return predicted


# --- the command ---------------------------------------------------------------------------------------


def require_java() -> None:
    """InputError, saying how to install one, when there is no Java runtime for Spark."""
    home = os.environ.get("JAVA_HOME")
    if not (home and Path(home, "bin", "java").is_file()) and not shutil.which("java"):
        raise InputError(JAVA_MISSING)


def _session():
    """(the active Spark session, or a new one, whether it is new). `vigie predict` run itself, not by
    spark-submit (which sets PYSPARK_GATEWAY_PORT), gets Spark on this machine's cores, with this Python."""
    try:
        from pyspark.errors import PySparkException
        from pyspark.sql import SparkSession
    except ImportError:
        raise InputError("--engine spark needs pyspark: pip install 'vigie[spark]'") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    builder = SparkSession.builder.appName("vigie predict")
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        require_java()
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the workers' Python: without it, `python3`
        builder = builder.master("local[*]")
    try:
        spark = builder.getOrCreate()
    except PySparkException as e:
        raise InputError(f"cannot start Spark: {_spark_message(e)}") from None
    spark.sparkContext.setLogLevel("WARN")
    return spark, True


def predict_spark(paths: list[str], model_uri: str, output: str | None, batch_size: int = 256,
                  fmt: str | None = None) -> int:
    """`vigie predict --engine spark`: `score` into the folder `output`; the summary and exit status of
    `vigie predict` (0 every input predicted, 1 none, 3 some skipped)."""
    if not output:
        raise InputError("--engine spark writes a folder of Parquet partitions: give it with -o FOLDER")
    if fmt not in (None, "parquet") or Path(output).suffix.lower() in (".jsonl", ".ndjson", ".csv"):
        raise InputError(f"--engine spark writes Parquet, not {fmt or Path(output).suffix}: -o FOLDER")
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    spark, created = _session()
    try:
        result = score(spark, model_uri, paths, output, batch_size=batch_size)
    except (PySparkException, Py4JError) as e:  # outside a wave (listing the inputs, reading a manifest)
        raise InputError(f"Spark failed: {_spark_message(e)}") from None
    finally:
        if created:
            spark.stop()
    print_summary(result.predicted, result.report)
    if result.predicted == 0:
        return EXIT_NONE
    return EXIT_SOME_SKIPPED if result.report.skipped else EXIT_ALL
