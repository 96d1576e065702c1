"""`vigie predict` reads what the server reads: JSON Lines, CSV, Parquet and stdin in the served contract, besides
.txt/.html articles; writes JSONL, CSV or Parquet as it goes; counts what it skips; exits 0, 1 or 3."""

from __future__ import annotations

import gzip
import io
import json
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training import predict, registry
from training.cli import main
from training.data.tables import iter_table_batches

from tests.conftest import SEED, SHARDS

CHAMPION = "models:/vigie@champion"
FURNITURE = "ad\nLEAVE A REPLY\n- Advertisement -"
ARTICLE = ("L'Iran et la Russie renforcent leur partenariat contre l'Occident\n"
           "Moscou et Téhéran renforceront leur partenariat en matière de sécurité, ont annoncé les deux pays, "
           "qui dénoncent les sanctions américaines et européennes.")


@pytest.fixture(scope="module")
def champion(trained_store):
    """The registered champion, loaded once for the module."""
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", trained_store["uri"])
        mlflow.set_tracking_uri(trained_store["uri"])
        yield {"model": registry.load_model(CHAMPION), "version": registry.model_version(CHAMPION)}


@pytest.fixture
def fast(champion, use_trained_store, monkeypatch):
    """`vigie predict` in-process with the champion already loaded (the loading itself: the subprocess test)."""
    monkeypatch.setattr(predict, "load_model", lambda uri: champion["model"])
    return champion


def articles(n: int) -> list[dict]:
    with gzip.open(SHARDS / "orangesum_topic_03.jsonl.gz", "rt") as fh:
        recs = [json.loads(line) for _, line in zip(range(n), fh)]
    return [{"text": f"{r['title']}\n{r['text']}", "date": r["date"]} for r in recs]


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def run(args, capsys) -> tuple[int, str, str]:
    code = main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def jsonl_out(text: str) -> list[dict]:
    return [json.loads(x) for x in text.split("\n") if x]


def model_columns(champion) -> list[str]:
    out = champion["model"].predict(pd.DataFrame({"text": [ARTICLE]}))
    return list(out.columns)


def test_jsonl_with_text_lines_to_stdout(fast, tmp_path, capsys):
    src = tmp_path / "x.jsonl"
    rows = articles(5)
    write_jsonl(src, rows)
    code, out, err = run([src], capsys)
    assert code == 0, err
    got = jsonl_out(out)
    assert [r["id"] for r in got] == ["1", "2", "3", "4", "5"]  # no `id`: the line number
    assert all(r["line"] == i + 1 and r["path"] == str(src) for i, r in enumerate(got))
    assert set(model_columns(fast)) <= set(got[0])
    assert {"topic_proba_monde", "stance_proba_anti_occident", "input_words"} <= set(got[0])
    assert all(r["model_uri"] == CHAMPION and r["model_version"] == fast["version"] is not None for r in got)
    assert all(isinstance(r["stance_evidence"], list) for r in got)
    assert [r["date"] for r in got] == [r["date"] for r in rows]
    # the same answers as the served model on the same frame
    served = fast["model"].predict(pd.DataFrame(rows))
    assert [r["topic"] for r in got] == served["topic"].tolist()
    assert [r["input_words"] for r in got] == served["input_words"].tolist()
    assert "predicted 5 article(s)" in err


def test_csv_in_csv_out(fast, tmp_path, capsys):
    src, dst = tmp_path / "x.csv", tmp_path / "out" / "pred.csv"
    rows = articles(4)
    pd.DataFrame({"id": ["a1", "a2", "a3", "a4"], "text": [r["text"] for r in rows], "date": [r["date"] for r in rows],
                  "source": ["orangesum"] * 4, "extra": ["ignored"] * 4}).to_csv(src, index=False)
    code, out, err = run([src, "-o", dst], capsys)
    assert code == 0, err
    assert out == ""
    got = pd.read_csv(dst, keep_default_na=False)
    assert got["id"].tolist() == ["a1", "a2", "a3", "a4"] and set(got["source"]) == {"orangesum"}
    assert set(model_columns(fast)) | {"model_uri", "model_version", "path", "line"} <= set(got.columns)
    assert "extra" not in got.columns
    for ev in got["stance_evidence"]:  # a JSON string in CSV
        assert isinstance(json.loads(ev), list)
    assert got["model_version"].astype(str).tolist() == [fast["version"]] * 4
    assert not [p for p in dst.parent.iterdir() if p.name.endswith(".tmp")]


def test_parquet_in_parquet_out_with_a_known_total(fast, tmp_path, capsys):
    import datetime as dt

    src, dst = tmp_path / "x.parquet", tmp_path / "pred.parquet"
    rows = articles(6)
    titles = [r["text"].split("\n", 1)[0] for r in rows]
    bodies = [r["text"].split("\n", 1)[1] for r in rows]
    dates = [dt.date.fromisoformat(r["date"]) for r in rows]  # a Parquet date column
    pq.write_table(pa.table({"id": list(range(10, 16)), "title": titles, "text": bodies, "date": dates}), src,
                   row_group_size=2)
    code, _, err = run([src, "-o", dst, "--batch-size", "4"], capsys)
    assert code == 0, err
    assert "6/6" in err  # the bar's total, from the Parquet metadata
    t = pq.read_table(dst)
    assert t.schema.field("topic_score").type == pa.float64() and t.schema.field("input_words").type == pa.int64()
    assert t.schema.field("stance_evidence").type == pa.string()
    got = t.to_pylist()
    assert [r["id"] for r in got] == [str(i) for i in range(10, 16)]
    assert [r["title"] for r in got] == titles and [r["date"] for r in got] == [r["date"] for r in rows]
    served = fast["model"].predict(pd.DataFrame({"text": bodies, "title": titles, "date": [r["date"] for r in rows]}))
    assert [r["topic"] for r in got] == served["topic"].tolist()


def test_stdin_jsonl(fast, monkeypatch, capsys):
    data = "".join(json.dumps(r) + "\n" for r in articles(3))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.encode())))
    code, out, err = run(["-"], capsys)
    assert code == 0, err
    got = jsonl_out(out)
    assert [(r["path"], r["id"]) for r in got] == [("-", "1"), ("-", "2"), ("-", "3")]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_each_output_format_by_flag(fast, tmp_path, capsys, fmt):
    src, dst = tmp_path / "x.jsonl", tmp_path / "pred.out"
    write_jsonl(src, articles(3))
    code, _, err = run([src, "-o", dst, "--format", fmt], capsys)
    assert code == 0, err
    got = {"jsonl": lambda: pd.read_json(dst, lines=True), "csv": lambda: pd.read_csv(dst),
           "parquet": lambda: pd.read_parquet(dst)}[fmt]()
    assert len(got) == 3 and {"topic", "stance", "input_words", "model_version"} <= set(got.columns)


def test_an_unknown_output_suffix_is_a_clear_error(fast, tmp_path, capsys):
    src = tmp_path / "x.jsonl"
    write_jsonl(src, articles(1))
    code, _, err = run([src, "-o", tmp_path / "pred.xlsx"], capsys)
    assert code == 2 and "vigie: error: -o" in err and ".xlsx" in err
    code, _, err = run([src, "--format", "parquet"], capsys)
    assert code == 2 and "-o FILE.parquet" in err
    code, _, err = run([tmp_path / "nope.jsonl"], capsys)
    assert code == 2 and "nope.jsonl: no such file" in err


def test_a_furniture_only_row_is_a_counted_skip(fast, tmp_path, capsys):
    with pytest.raises(Exception, match="no words"):  # the model itself refuses the whole batch for it
        fast["model"].predict(pd.DataFrame({"text": [ARTICLE, FURNITURE]}))
    src = tmp_path / "x.jsonl"
    write_jsonl(src, [{"text": ARTICLE, "id": "good"}, {"text": FURNITURE, "id": "furniture"}])
    code, out, err = run([src], capsys)
    assert code == 3, err
    assert [r["id"] for r in jsonl_out(out)] == ["good"]
    assert "skipped 1" in err and "no words left after cleaning (1)" in err
    assert f"{src}:2: no words left after cleaning" in err


def test_damaged_lines_are_counted_skips_with_file_and_line(fast, tmp_path, capsys):
    src = tmp_path / "x.jsonl"
    src.write_text("\n".join([json.dumps({"text": ARTICLE}), "{not json", "[1, 2]", json.dumps({"title": "t"}),
                              json.dumps({"text": 12}), json.dumps({"text": ARTICLE, "id": {"a": 1}}),
                              json.dumps({"text": "  "}), json.dumps({"text": ARTICLE, "title": 3}), ""]))
    gz = tmp_path / "y.jsonl.gz"
    full = gzip.compress("".join(json.dumps({"text": ARTICLE, "id": f"g{i}"}) + "\n" for i in range(200)).encode())
    gz.write_bytes(full[: len(full) // 2])  # truncated
    code, out, err = run([src, gz], capsys)
    assert code == 3, err
    ids = [r["id"] for r in jsonl_out(out)]
    assert ids[0] == "1" and all(i.startswith("g") for i in ids[1:])
    for where, why in [(2, "invalid JSON"), (3, "expected a JSON object, got an array"), (4, "no 'text' key"),
                       (5, "'text' must be a string, got int"), (6, "'id' must be a string or an integer"),
                       (7, "'text' is empty"), (8, "'title' must be a string or null")]:
        assert f"{src}:{where}: " in err and why in err, (where, why)
    assert f"{gz}: damaged or truncated file" in err
    assert "skipped 8" in err


def test_nothing_predicted_exits_1(fast, tmp_path, capsys):
    csv = tmp_path / "x.csv"
    pd.DataFrame({"body": ["Un article sans colonne text"]}).to_csv(csv, index=False)
    fur = tmp_path / "y.jsonl"
    write_jsonl(fur, [{"text": FURNITURE}])
    empty = tmp_path / "z.parquet"
    empty.write_bytes(b"")
    dst = tmp_path / "pred.jsonl"
    code, _, err = run([csv, fur, empty, "-o", dst], capsys)
    assert code == 1, err
    assert f"{csv}: no 'text' column (columns: body)" in err and f"{empty}: empty file" in err
    assert "predicted 0 article(s); skipped 3" in err
    assert dst.read_text() == ""  # an empty result, written as one, never a made-up row


def test_article_files_and_folders_still_work(fast, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text(SEED.read_text(encoding="utf-8"), encoding="utf-8")
    write_jsonl(folder / "b.jsonl", [{"text": ARTICLE}])
    (folder / "c.pdf").write_bytes(b"%PDF-1.4")
    code, out, err = run([folder], capsys)
    assert code == 3, err
    got = jsonl_out(out)
    assert [(r["id"], r["line"]) for r in got] == [("a", None), ("1", 1)]
    assert got[0]["title"] and got[0]["path"] == str(folder / "a.txt")
    assert "unknown file type '.pdf'" in err


def test_abstract_is_the_lead_when_a_title_is_given(fast, tmp_path, capsys):
    with gzip.open(SHARDS / "orangesum_topic_03.jsonl.gz", "rt") as fh:
        recs = [json.loads(line) for _, line in zip(range(20), fh)]
    recs = [{k: r[k] for k in ("id", "title", "abstract", "text")} for r in recs if r.get("abstract")][:3]
    src = tmp_path / "x.jsonl"
    write_jsonl(src, recs)
    code, out, err = run([src], capsys)
    assert code == 0, err
    served = fast["model"].predict(pd.DataFrame({"title": [r["title"] for r in recs],
                                                 "text": [f"{r['abstract']}\n{r['text']}" for r in recs]}))
    got = jsonl_out(out)
    assert [r["input_words"] for r in got] == served["input_words"].tolist()
    assert [r["id"] for r in got] == [str(r["id"]) for r in recs]


def test_streams_in_batches_and_writes_atomically(fast, tmp_path, capsys, monkeypatch):
    src, dst = tmp_path / "x.jsonl", tmp_path / "pred.jsonl"
    write_jsonl(src, articles(7))
    sizes = []
    real = fast["model"].predict

    class Spy:
        def __init__(self, fail_at=None):
            self.fail_at = fail_at

        def predict(self, frame):
            sizes.append(len(frame))
            if len(sizes) == self.fail_at:
                raise KeyboardInterrupt
            return real(frame)

        def unwrap_python_model(self):
            return fast["model"].unwrap_python_model()

    monkeypatch.setattr(predict, "load_model", lambda uri: Spy())
    assert run([src, "-o", dst, "--batch-size", "3"], capsys)[0] == 0
    assert sizes == [3, 3, 1]
    before = dst.read_text()
    sizes.clear()
    monkeypatch.setattr(predict, "load_model", lambda uri: Spy(fail_at=2))
    code, _, err = run([src, "-o", dst, "--batch-size", "3"], capsys)
    assert code == 130 and sizes == [3, 3] and "interrupted" in err
    assert dst.read_text() == before  # the interrupted run left the old file, and no temporary one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.jsonl", "x.jsonl"]


def test_model_version_of_uris(use_trained_store):
    version = registry.model_version(CHAMPION)
    assert version is not None and version.isdigit()
    assert registry.model_version(f"models:/vigie/{version}") == version
    assert registry.model_version("models:/vigie@no-such-alias") is None
    assert registry.model_version(f"runs:/{use_trained_store['run_id']}/model") is None
    assert registry.pinned_uri(CHAMPION, version) == f"models:/vigie/{version}"


def test_the_table_reader_api(tmp_path):
    """The reader alone: batches of (path, line, record), skips with line numbers, the id defaulted."""
    src = tmp_path / "x.jsonl"
    src.write_text('{"text": "a"}\n\n{"text": "b", "id": 5}\nnope\n{"text": "c\\ud800", "id": "k"}\n')
    skips = []
    batches = list(iter_table_batches(src, skips.append, batch_rows=2))
    assert [[(r.line, r.record["id"]) for r in b] for b in batches] == [[(1, "1"), (3, "5")], [(5, "k")]]
    assert batches[1][0].record["text"] == "c\ufffd"
    assert [(s.line, s.reason.split(":")[0]) for s in skips] == [(4, "bad JSONL line")]
