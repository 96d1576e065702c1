"""`vigie evaluate`: a labelled file scored by the champion, the run it logs, and the files it refuses."""

import gzip
import json

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.metrics import f1_score

from tests.conftest import SHARDS
from training.assess import model_inputs, read_table
from training.cli import main
from training.errors import InputError

CHAMPION = "models:/vigie@champion"


def reserved_records(n: int = 200) -> list[dict]:
    """OrangeSum's own test and valid articles (never trained or annotated on) as raw labelled rows."""
    with gzip.open(SHARDS / "orangesum_topic_03.jsonl.gz", "rt") as fh:
        recs = [json.loads(line) for line in fh]
    recs = [r for r in recs if r.get("split") in ("test", "valid") and r.get("text") and r.get("label")][:n]
    return [{"id": str(r["id"]), "text": f"{r['title']}\n{r['text']}", "date": r["date"], "topic": r["label"]} for r in recs]


@pytest.fixture
def labelled_file(tmp_path):
    recs = reserved_records()
    recs[0]["topic"], recs[1]["topic"], recs[2]["topic"] = "sport", "sport", "économie"  # not the model's labels
    recs[3]["topic"] = None
    del recs[4]["topic"]
    recs[5]["text"] = "   "  # the model refuses it
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    return path, recs


def test_evaluate_scores_the_file_and_links_the_run_to_the_model(use_trained_store, labelled_file, capsys):
    path, recs = labelled_file
    assert main(["evaluate", "--model", CHAMPION, str(path), "--batch-size", "64"]) == 0
    out, err = capsys.readouterr()
    kept = recs[6:]
    assert "topic: macro-F1" in out and "politique" in out and "macro" in out
    assert "3 row(s) with a label the model does not know" in err and "'sport' (2), 'économie' (1)" in err
    assert "topic: 2 row(s) without a label" in err
    assert "1 row(s) refused by the model" in err and "'text' is empty" in err

    client = MlflowClient()
    exp = client.get_experiment_by_name("vigie-evaluation")
    (found,) = client.search_runs([exp.experiment_id])
    run = client.get_run(found.info.run_id)  # search results leave the run's model inputs out
    m = run.data.metrics
    assert m["evaluation_topic_n"] == len(kept) and m["evaluation_rows"] == len(recs)
    assert m["evaluation_topic_unknown_label"] == 3 and m["evaluation_topic_unlabelled"] == 2 and m["evaluation_refused"] == 1
    # the same macro-F1 as the model's own predictions on the kept rows, over all its labels
    model = mlflow.pyfunc.load_model(CHAMPION)
    labels = [c.removeprefix("topic_proba_") for c in model.metadata.get_output_schema().input_names()
              if c.startswith("topic_proba_")]
    pred = model.predict(pd.DataFrame({"text": [r["text"] for r in kept], "date": [r["date"] for r in kept]}))["topic"]
    expected = f1_score([r["topic"] for r in kept], pred, labels=labels, average="macro", zero_division=0)
    assert m["evaluation_topic_macro_f1"] == pytest.approx(expected)
    assert f"{expected:.4f}" in out
    assert f"{len(kept)} rows" in out and f"{len(kept)}.0" not in out  # counts print as counts

    version = client.get_model_version_by_alias("vigie", "champion")
    assert run.data.tags["vigie.evaluated_model_uri"] == CHAMPION
    assert run.data.tags["vigie.evaluated_model_version"] == str(version.version)
    model_id = client.get_run(version.run_id).data.tags["vigie.model_id"]  # the model the training run logged
    assert run.data.tags["vigie.evaluated_model_id"] == model_id
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.name == path.name and {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "evaluation"
    assert model_id in {mi.model_id for mi in run.inputs.model_inputs}
    logged = client.get_logged_model(model_id)
    mine = {x.key: x for x in logged.metrics if x.run_id == run.info.run_id}
    assert mine["evaluation_topic_macro_f1"].value == pytest.approx(expected)
    assert mine["evaluation_topic_macro_f1"].dataset_name == path.name
    artifacts = {f.path for d in ("figures", "reports") for f in client.list_artifacts(run.info.run_id, d)}
    assert {"figures/confusion_evaluation_topic.png", "figures/calibration_evaluation_topic.png",
            "reports/metrics_evaluation_topic.json", "reports/summary_evaluation.json"} <= artifacts


def test_split_name_and_experiment_options(use_trained_store, tmp_path, capsys):
    path = tmp_path / "eval.csv"
    recs = reserved_records(40)
    pd.DataFrame([{"title": r["text"].split("\n", 1)[0], "text": r["text"].split("\n", 1)[1], "topic": r["topic"]}
                  for r in recs]).to_csv(path, index=False)
    assert main(["evaluate", str(path), "--experiment", "vigie-eval-other", "--split-name", "heldout"]) == 0
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("vigie-eval-other").experiment_id])
    assert run.data.metrics["heldout_topic_n"] == 40 and "heldout_topic_macro_f1" in run.data.metrics
    assert "evaluation_topic_macro_f1" not in run.data.metrics


@pytest.mark.parametrize("name, content, problem", [
    ("bad.jsonl", '{"title": "Un titre", "topic": "monde"}\n', "no 'text' key"),
    ("bad.csv", "title,topic\nUn titre,monde\n", "no 'text' column"),
    ("bad.jsonl", '{"text": "Un titre\\nUn article.", "label": "monde"}\n', "no label column"),
    ("bad.jsonl", '{"text": "Un titre\\nUn article.", "topic": "monde"}\n{"text": \n', "invalid JSON"),
    ("bad.jsonl", '["text", "topic"]\n', "expected a JSON object"),
    ("bad.jsonl", "", "empty file"),
])
def test_a_bad_file_exits_2_naming_the_file(tmp_path, capsys, name, content, problem):
    path = tmp_path / name
    path.write_text(content)
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and problem in err and "Traceback" not in err


def test_read_table_formats_and_errors(tmp_path):
    frame = pd.DataFrame({"text": ["Titre\nCorps de l'article."], "stance": ["neutre"], "date": pd.to_datetime(["2020-06-15"])})
    frame.to_parquet(tmp_path / "t.parquet")
    got = read_table(tmp_path / "t.parquet")
    assert list(got["stance"]) == ["neutre"] and model_inputs(got)["date"].tolist() == ["2020-06-15"]
    frame.drop(columns="date").to_csv(tmp_path / "t.csv", index=False)
    assert read_table(tmp_path / "t.csv")["text"].tolist() == ["Titre\nCorps de l'article."]
    (tmp_path / "t.parquet").write_bytes(b"not parquet")
    (tmp_path / "t.txt").write_text("x")
    for name, problem in (("missing.jsonl", "no such file"), ("t.parquet", "not a readable Parquet file"),
                          ("t.txt", "unknown table format")):
        with pytest.raises(InputError, match=problem) as e:
            read_table(tmp_path / name)
        assert str(tmp_path / name) in str(e.value)


def test_model_inputs_gives_the_contract_its_types():
    frame = pd.DataFrame({"text": ["Titre\nCorps."] * 2, "date": ["2020-06-15", None],
                          "source": ["orangesum", float("nan")], "topic": ["monde", "auto"]})
    got = model_inputs(frame)
    assert list(got.columns) == ["text", "date", "source"]
    assert got["date"].tolist() == ["2020-06-15", None] and got["source"].tolist() == ["orangesum", None]
