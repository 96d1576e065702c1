"""`vigie predict --engine spark` (training/spark_score.py): on a local Spark, the registered champion scores 1,000
OrangeSum train articles in Parquet and JSON Lines files exactly as the local `vigie predict` does (same rows, same
columns, same answers, same skips), one partition per input file, and a rerun scores only what is not complete."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training import predict, spark_score
from training.cli import main
from training.errors import InputError

from tests.conftest import SHARDS

CHAMPION = "models:/vigie@champion"
FURNITURE = "ad\nLEAVE A REPLY\n- Advertisement -"
N_ARTICLES = 1000


def test_no_java_is_a_clear_error_saying_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(InputError, match="apt-get install openjdk-17-jre-headless"):
        spark_score.require_java()


def test_usage_errors_come_before_spark_starts(tmp_path, capsys):
    src = tmp_path / "x.jsonl"
    src.write_text('{"text": "Un article"}\n')
    for args, said in [([src], "give it with -o FOLDER"), ([src, "-o", tmp_path / "out.csv"], "writes Parquet"),
                       ([src, "-o", tmp_path / "out", "--format", "jsonl"], "writes Parquet")]:
        assert main(["predict", "--engine", "spark", *map(str, args)]) == 2
        err = capsys.readouterr().err
        assert f"vigie: error: --engine spark {said}" in err or said in err, err
        assert "Traceback" not in err


@pytest.fixture(scope="module")
def spark():
    try:
        spark_score.require_java()
    except InputError as e:
        pytest.fail(str(e))  # never a silent skip: CI installs a JRE (.ci/run)
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYSPARK_PYTHON", sys.executable)  # the Python workers: this venv's (read when Spark starts)
        session = (SparkSession.builder.master("local[2]").appName("vigie-test")
                   .config("spark.sql.shuffle.partitions", "2").config("spark.ui.enabled", "false")
                   .config("spark.driver.memory", "1g")
                   # small splits: the big JSON Lines file is read in several, whose line numbers must still be right
                   .config("spark.sql.files.maxPartitionBytes", str(256 * 1024))
                   .config("spark.sql.files.openCostInBytes", str(64 * 1024))
                   .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def train_articles(n: int) -> list[dict]:
    """The first `n` train-split articles of the shards (never valid/test)."""
    rows = []
    for shard in sorted(SHARDS.glob("*.jsonl.gz")):
        with gzip.open(shard, "rt", encoding="utf-8") as fh:
            for line in fh:
                r = json.loads(line)
                if r["split"] == "train":
                    rows.append(r)
                    if len(rows) == n:
                        return rows
    raise AssertionError(f"only {len(rows)} train articles in {SHARDS}")


def write_archive(root: Path) -> None:
    """1,000 articles in the contract's layouts: Parquet with a title column, int ids and a Parquet date;
    Parquet with the title on the text's first line and no id; the shards' own JSON Lines (gzip); plain JSON
    Lines with blank lines, an unreadable date and three rows the model must never see."""
    arts = train_articles(N_ARTICLES)
    a, b, c, d = arts[:250], arts[250:450], arts[450:600], arts[600:]
    (root / "sub").mkdir(parents=True)
    pq.write_table(pa.table({"id": [r["id"] for r in a], "title": [r["title"] for r in a],
                             "text": [r["text"] for r in a], "source": ["actu.orange.fr"] * len(a),
                             "date": [dt.date.fromisoformat(r["date"]) for r in a]}), root / "a.parquet",
                   row_group_size=60)
    pq.write_table(pa.table({"text": [f"{r['title']}\n{r['text']}" for r in b], "date": [r["date"] for r in b]}),
                   root / "sub" / "b.parquet", row_group_size=50)
    with gzip.open(root / "c.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps({k: r[k] for k in ("id", "title", "abstract", "text", "date")}, ensure_ascii=False)
                      + "\n" for r in c)
    lines = [json.dumps({"text": f"{r['title']}\n{r['text']}", "date": r["date"]}, ensure_ascii=False) for r in d]
    lines[7] = json.dumps({"text": f"{d[7]['title']}\n{d[7]['text']}", "date": "hier"}, ensure_ascii=False)
    bad = [json.dumps({"text": FURNITURE}), "{not json", json.dumps({"text": 12})]
    lines = lines[:100] + bad[:1] + [""] + lines[100:300] + bad[1:] + [""] + lines[300:]
    (root / "d.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def summary(err: str) -> tuple[int, Counter, set[str]]:
    """(predicted, skips by reason, the skips shown) from a `vigie predict` summary."""
    m = re.search(r"predicted (\d+) article\(s\)(?:; skipped \d+: (.*))?", err)
    reasons = Counter({r: int(n) for r, n in re.findall(r"(.+?) \((\d+)\)(?:, |$)", m.group(2) or "")})
    return int(m.group(1)), reasons, set(re.findall(r"^  skipped (.*)$", err, re.M))


def partitions(out: Path) -> dict[str, set[tuple[str, int]]]:
    """partition -> its data files (name, modification time)."""
    return {p.name: {(f.name, f.stat().st_mtime_ns) for f in p.glob("*.parquet")} for p in out.glob("input=*")}


def assert_same_rows(local: pa.Table, spark: pa.Table) -> None:
    key = [("path", "ascending"), ("line", "ascending")]
    a, b = local.sort_by(key).to_pydict(), spark.sort_by(key).to_pydict()
    assert a["path"] == b["path"] and a["line"] == b["line"]
    for col, t in zip(local.schema.names, local.schema.types):
        if pa.types.is_floating(t):
            x, y = np.array(a[col], dtype=float), np.array(b[col], dtype=float)
            assert np.allclose(x, y, rtol=0, atol=1e-12, equal_nan=True), col
        elif col == "stance_evidence":
            assert [json.loads(v) for v in a[col]] == [json.loads(v) for v in b[col]]
        else:
            assert a[col] == b[col], col


@pytest.mark.slow
def test_spark_scores_like_the_local_path_and_resumes(spark, use_trained_store, tmp_path, capsys):
    archive, out = tmp_path / "archive 2020", tmp_path / "scored"  # a space: Spark writes file URIs %-encoded
    write_archive(archive)

    local_out, started = tmp_path / "local.parquet", time.monotonic()
    assert predict.predict_paths([str(archive)], CHAMPION, output=str(local_out)) == predict.EXIT_SOME_SKIPPED
    local_err, local_run = capsys.readouterr().err, time.monotonic() - started
    local = pq.read_table(local_out)
    assert local.num_rows == N_ARTICLES

    started = time.monotonic()
    result = spark_score.score(spark, CHAMPION, [str(archive)], str(out), files_per_job=2, log=lambda m: None)
    first_run = time.monotonic() - started
    with capsys.disabled():
        print(f"\nspark: {N_ARTICLES} articles, 4 partitions in 2 waves, {first_run:.1f} s "
              f"(local vigie predict: {local_run:.1f} s)")

    # every article predicted as the local path predicts it, in the local path's columns and types
    assert sorted(result.scored) == ["a.parquet", "c.jsonl.gz", "d.jsonl", "sub__b.parquet"] and not result.resumed
    assert sorted(partitions(out)) == [f"input={k}" for k in sorted(result.scored)]
    parts = [pq.read_table(p) for p in sorted(out.glob("input=*"))]
    assert all(t.schema.names == local.schema.names and t.schema.types == local.schema.types for t in parts)
    whole = pq.read_table(out)  # the dataset: the local columns, and the partition Spark reads back
    assert whole.schema.names == local.schema.names + ["input"]
    assert_same_rows(local, pa.concat_tables(parts))
    assert set(pa.concat_tables(parts)["model_version"].to_pylist()) == {str(use_trained_store["register"].version)}

    # the rows the model would refuse: counted skips with file, line and the local path's reason
    predicted, reasons, shown = summary(local_err)
    assert (result.predicted, result.report.reasons) == (predicted, reasons) == (N_ARTICLES, Counter(
        {"no words left after cleaning": 1, "bad JSONL line": 1, "'text' must be a string, got int": 1}))
    assert {str(s) for s in result.report.first} == shown
    assert any(s.startswith(f"{archive}/d.jsonl:101: no words left") for s in shown), shown
    assert result.report.bad_dates == 1 and result.report.first_bad_date.line == 8
    manifests = {p.parent.name: json.loads(p.read_text()) for p in out.glob("input=*/_SUCCESS")}
    assert {k: m["predicted"] for k, m in manifests.items()} == {
        "input=a.parquet": 250, "input=sub__b.parquet": 200, "input=c.jsonl.gz": 150, "input=d.jsonl": 400}
    assert manifests["input=d.jsonl"]["skipped"] == 3

    # a rerun scores only what is not complete: a partition deleted, one interrupted before its manifest
    before = partitions(out)
    shutil.rmtree(out / "input=c.jsonl.gz")
    (out / "input=sub__b.parquet" / "_SUCCESS").unlink()
    started = time.monotonic()
    assert main(["predict", "--engine", "spark", str(archive), "-o", str(out)]) == predict.EXIT_SOME_SKIPPED
    err = capsys.readouterr().err
    with capsys.disabled():
        print(f"spark rerun: 2 of 4 partitions (350 articles), {time.monotonic() - started:.1f} s")
    assert "Traceback" not in err
    assert "2 partition(s) already complete, 2 to score" in err
    assert summary(err) == summary(local_err)  # the summary covers the whole output, the kept partitions too
    after = partitions(out)
    assert {k: after[k] == before[k] for k in before} == {
        "input=a.parquet": True, "input=sub__b.parquet": False, "input=c.jsonl.gz": False, "input=d.jsonl": True}
    assert_same_rows(local, pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("input=*"))]))
    assert not (out / "_staging").exists()

    # nothing to do: every partition complete
    assert main(["predict", "--engine", "spark", str(archive), "-o", str(out)]) == predict.EXIT_SOME_SKIPPED
    assert "4 partition(s) already complete, 0 to score" in capsys.readouterr().err
    assert partitions(out) == after

    # partitions of another model version are never mixed in
    m = json.loads((out / "input=a.parquet" / "_SUCCESS").read_text())
    files = spark_score.HadoopFiles(spark)  # as the scorer writes it (the local file system keeps checksums)
    files.write_json(str(out / "input=a.parquet" / "_SUCCESS"), {**m, "model": "models:/vigie/999"})
    assert main(["predict", "--engine", "spark", str(archive), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "vigie: error:" in err and "was scored with models:/vigie/999" in err and "Traceback" not in err
