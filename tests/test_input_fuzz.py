"""Property-based tests: whatever bytes a file holds, `vigie predict` and `vigie data build` answer with predictions,
counted skips or a clear error (exit status 0, 1, 2 or 3), never a traceback, never a made-up row.

Each property runs a bounded number of examples (the model is loaded once for the module)."""

from __future__ import annotations

import gzip
import io
import json
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training import predict, registry
from training.cli import main
from training.data.article import Article, Skip
from training.data.readers import read_paths
from training.data.tables import iter_table_batches

from tests.conftest import REPO, SHARDS

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])
PREDICT_SUFFIXES = [".txt", ".html", ".jsonl", ".jsonl.gz", ".csv", ".csv.gz", ".parquet"]
BUILD_SUFFIXES = [".txt", ".html", ".jsonl", ".jsonl.gz", ".json.gz", ".csv", ".parquet", ".md"]
ARTICLE = ("La Russie et la Chine dénoncent les sanctions occidentales\n"
           "Moscou et Pékin ont appelé mercredi à la levée des sanctions décidées par les États-Unis et l'Union "
           "européenne, lors d'une rencontre de leurs ministres des affaires étrangères.")

# any code point a JSON parser accepts in a string: lone surrogates (\ud800 escapes), NUL, U+2028, controls
SPECIALS = ["\ud800", "\udfff", "\udc80", "\x00", "\u2028", "\u2029", "\x85", "\ufeff", "\r", "\n", "\x1e", "\t",
            "\U0001f600", "\u0301"]
any_char = st.one_of(st.characters(), st.characters(categories=["Cs"]), st.sampled_from(SPECIALS))
json_text = st.lists(any_char, max_size=60).map("".join)
json_value = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), json_text,
                       st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@pytest.fixture(scope="module")
def fast_predict(trained_store):
    """`vigie predict` in-process against the trained store, with the champion loaded once."""
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", trained_store["uri"])
        mlflow.set_tracking_uri(trained_store["uri"])
        model = registry.load_model("models:/vigie@champion")
        mp.setattr(predict, "load_model", lambda uri: model)
        yield model


def run_predict(capsys, *args) -> tuple[int, str, str]:
    code = main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    assert code in (0, 1, 2, 3), (code, err[-2000:])
    return code, out, err


def predicted_count(err: str) -> int:
    line = next(x for x in err.splitlines() if x.startswith("predicted "))
    return int(line.split()[1])


def read_output(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "jsonl":
        lines = [x for x in path.read_text(encoding="utf-8").split("\n") if x]
        return pd.DataFrame([json.loads(x) for x in lines])
    if fmt == "csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    return pq.read_table(path).to_pandas()


def check_outcome(code: int, err: str, dst: Path, fmt: str) -> pd.DataFrame | None:
    """Exit status and output agree: the rows written are the rows said predicted, each with its answer."""
    if code == 2:
        assert "vigie: error: " in err
        return None
    n = predicted_count(err)
    assert (code == 1) == (n == 0)
    assert (code == 0) == (n > 0 and "skipped" not in err.split("predicted ", 1)[1].split("\n", 1)[0])
    out = read_output(dst, fmt) if dst.stat().st_size else pd.DataFrame()
    assert len(out) == n
    if n:
        assert out["topic"].notna().all() and (out["input_words"].astype(int) > 0).all()
    assert not [p for p in dst.parent.iterdir() if p.name.endswith(".tmp")]
    return out


def damage(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    """`data` with the bytes at the given positions (modulo its length) replaced."""
    out = bytearray(data)
    for i, b in flips:
        if out:
            out[i % len(out)] = b
    return bytes(out)


def good_records(n: int) -> list[dict]:
    with gzip.open(SHARDS / "orangesum_topic_03.jsonl.gz", "rt") as fh:
        return [json.loads(line) for _, line in zip(range(n), fh)]


# --- random bytes, every suffix -------------------------------------------------------------------------


@FUZZ
@given(suffix=st.sampled_from(PREDICT_SUFFIXES), data=st.binary(max_size=3000),
       fmt=st.sampled_from(["jsonl", "csv", "parquet"]))
def test_predict_on_random_bytes(fast_predict, capsys, suffix, data, fmt):
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / f"x{suffix}", Path(d) / "out" / f"pred.{fmt}"
        src.write_bytes(data)
        code, _, err = run_predict(capsys, src, "-o", dst)
        check_outcome(code, err, dst, fmt)


def _tables(records: list[dict], suffix: str) -> bytes:
    if suffix in (".jsonl", ".jsonl.gz"):
        raw = "".join(json.dumps(r) + "\n" for r in records).encode()
        return gzip.compress(raw) if suffix.endswith(".gz") else raw
    buf = io.BytesIO()
    frame = pd.DataFrame(records)
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buf, row_group_size=3)
    else:
        frame.to_csv(buf, index=False, compression="gzip" if suffix.endswith(".gz") else None)
    return buf.getvalue()


@FUZZ
@given(suffix=st.sampled_from([".jsonl", ".jsonl.gz", ".csv", ".csv.gz", ".parquet"]), data=st.data())
def test_predict_on_truncated_or_damaged_tables(fast_predict, capsys, suffix, data):
    recs = [{"id": str(r["id"]), "title": r["title"], "text": r["text"], "date": r["date"]} for r in good_records(8)]
    whole = _tables(recs, suffix)
    cut = data.draw(st.integers(0, len(whole)), label="cut")
    flips = data.draw(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4), label="flips")
    damaged = damage(whole[:cut] if data.draw(st.booleans(), label="truncate") else whole, flips)
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / f"x{suffix}", Path(d) / "pred.jsonl"
        src.write_bytes(bytes(damaged))
        code, _, err = run_predict(capsys, src, "-o", dst)
        out = check_outcome(code, err, dst, "jsonl")
        if bytes(damaged) == whole:
            assert code == 0 and len(out) == len(recs)


# --- JSON strings with any code point ---------------------------------------------------------------------


@FUZZ
@given(rows=st.lists(st.fixed_dictionaries({"text": st.one_of(json_text.map(lambda s: ARTICLE + s), json_value)},
                                           optional={"title": json_value, "date": json_value, "source": json_value,
                                                     "id": json_value, "abstract": json_value}),
                     min_size=1, max_size=5),
       fmt=st.sampled_from(["jsonl", "csv", "parquet"]), ascii_escapes=st.booleans())
def test_predict_on_json_with_any_code_point(fast_predict, capsys, rows, fmt, ascii_escapes):
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "x.jsonl", Path(d) / f"pred.{fmt}"
        # ensure_ascii: lone surrogates travel as \\ud800 escapes; without it, they cannot be UTF-8: U+FFFD
        text = "".join(json.dumps(r, ensure_ascii=ascii_escapes) + "\n" for r in rows)
        src.write_bytes(text.encode("utf-8", errors="replace"))
        code, _, err = run_predict(capsys, src, "-o", dst)
        out = check_outcome(code, err, dst, fmt)
        assert code != 2
        if out is not None and len(out):
            good = [r for r in rows if isinstance(r["text"], str)]
            assert len(out) <= len(good)
            for col in ("id", "title", "source", "stance_evidence"):
                for v in out[col]:
                    assert not isinstance(v, str) or not any(0xD800 <= ord(c) <= 0xDFFF for c in v)


@FUZZ
@given(rows=st.lists(st.fixed_dictionaries({"text": json_text.map(lambda s: ARTICLE + s)},
                                           optional={"title": st.one_of(st.none(), json_text),
                                                     "id": st.one_of(st.integers(), json_text)}),
                     min_size=1, max_size=4))
def test_stdin_jsonl_with_any_code_point(fast_predict, capsys, monkeypatch, rows):
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, err = run_predict(capsys, "-")
    assert code == 0, err
    lines = out.splitlines()  # U+2028, U+0085 escaped: str.splitlines() sees one line a row
    assert [json.loads(x)["line"] for x in lines] == list(range(1, len(rows) + 1))


# --- the table reader alone ---------------------------------------------------------------------------------


@FUZZ
@given(suffix=st.sampled_from([".jsonl", ".jsonl.gz", ".csv", ".csv.gz", ".parquet"]), data=st.binary(max_size=2000),
       batch_rows=st.integers(1, 5))
def test_table_reader_yields_rows_or_skips(suffix, data, batch_rows):
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / f"x{suffix}"
        src.write_bytes(data)
        skips: list[Skip] = []
        for batch in iter_table_batches(src, skips.append, batch_rows=batch_rows):
            assert 1 <= len(batch) <= batch_rows
            for row in batch:
                assert "text" in row.record and isinstance(row.record["id"], str) and row.line >= 1
        assert all(str(src) in str(s) and s.reason for s in skips)


# --- `vigie data build` ---------------------------------------------------------------------------------------


@FUZZ
@given(suffix=st.sampled_from(BUILD_SUFFIXES), data=st.binary(max_size=3000), compress=st.booleans(),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3))
def test_the_build_readers_on_random_bytes(suffix, data, compress, flips):
    """Random bytes, or a valid gzip stream of them with a few bytes damaged: articles or counted skips."""
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / f"x{suffix}"
        src.write_bytes(damage(gzip.compress(data), flips) if suffix.endswith(".gz") and compress else data)
        skips: list[Skip] = []
        got = list(read_paths([src], skips.append))
        assert all(isinstance(a, Article) and a.body for a in got)
        assert got or skips


@pytest.fixture(scope="module")
def build_source(tmp_path_factory):
    """A source folder of 40 good corpus records; each example adds one fuzzed file beside them."""
    src = tmp_path_factory.mktemp("fuzz-src")
    (src / "good.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in good_records(40)),
                                    encoding="utf-8")
    return src


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suffix=st.sampled_from(BUILD_SUFFIXES), data=st.one_of(
    st.binary(max_size=2000),
    st.lists(st.dictionaries(st.sampled_from(["id", "title", "text", "abstract", "label", "date", "tags", "url"]),
                             json_value, max_size=8), max_size=4)
    .map(lambda rs: "".join(json.dumps(r) + "\n" for r in rs).encode())),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=2))
def test_data_build_with_a_fuzzed_file(build_source, capsys, suffix, data, flips):
    with tempfile.TemporaryDirectory() as d:
        fuzzed = build_source / f"fuzzed{suffix}"
        fuzzed.write_bytes(damage(gzip.compress(data), flips) if suffix.endswith(".gz") else data)
        try:
            code = main(["data", "build", str(REPO / "configs" / "baseline.yaml"),
                         f"data.sources=[{{path: {build_source}, name: fuzz}}]", f"data.output_dir={d}",
                         "data.annotations=null", "data.name=fuzz", "--quiet"])
        finally:
            fuzzed.unlink()
        _, err = capsys.readouterr()
        assert "Traceback" not in err
        assert code in (0, 2), err[-2000:]
        if code == 2:
            assert "vigie: error: " in err
        else:
            stats = json.loads((Path(d) / "fuzz" / "stats.json").read_text())
            assert sum(s["rows"] for s in stats["splits"].values()) >= 40 - 4  # a fuzzed record may take a good id
