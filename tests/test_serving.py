"""Registry gate, the pyfunc contract, batch prediction and the real scoring server."""

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from training.config import load_config
from training.registry import register_best
from training.train import train

from tests.conftest import REPO, SEED, SHARDS, small_overrides

CHAMPION = "models:/vigie@champion"


def test_register_promotes_the_best_run(use_trained_store):
    reg = use_trained_store["register"]
    assert reg.promoted and reg.run_id == use_trained_store["run_id"]
    v = MlflowClient().get_model_version_by_alias("vigie", "champion")
    assert v.run_id == use_trained_store["run_id"]
    assert "validation_macro_f1_mean" in v.description and "fingerprint" in v.description
    again = register_best(experiment="vigie-test")
    assert not again.promoted and "already" in again.message


def test_a_worse_run_does_not_move_the_champion(use_trained_store):
    tmp = use_trained_store["tmp"]
    worse = train(load_config(REPO / "configs" / "baseline.yaml", small_overrides(tmp) + [
        "experiment=vigie-worse", "model.topic.classifier=complement_nb", "model.topic.alpha=50", "model.stance.enabled=false"]))
    assert worse["metrics"]["validation_macro_f1_mean"] < use_trained_store["metrics"]["validation_macro_f1_mean"]
    before = MlflowClient().get_model_version_by_alias("vigie", "champion").version
    res = register_best(experiment="vigie-worse")
    assert not res.promoted and "only runs serving the same tasks are compared" in res.message
    assert MlflowClient().get_model_version_by_alias("vigie", "champion").version == before


def test_the_champion_honours_the_contract(use_trained_store):
    model = mlflow.pyfunc.load_model(CHAMPION)
    raw = SEED.read_text(encoding="utf-8")
    from training.models.contract import prepare_text

    out_raw = model.predict(pd.DataFrame({"text": [raw]}))
    out_clean = model.predict(pd.DataFrame({"text": [prepare_text(raw)]}))
    pd.testing.assert_frame_equal(out_raw, out_clean)
    cols = set(out_raw.columns)
    assert {"topic", "topic_score", "stance", "stance_score"} <= cols
    assert {"topic_proba_monde", "stance_proba_anti_occident"} <= cols
    row = out_raw.iloc[0]
    probs = [row[c] for c in cols if c.startswith("topic_proba_")]
    assert abs(sum(probs) - 1) < 1e-6 and row["topic_score"] == max(probs)
    # title column variant: same article given as title + body
    title, body = raw.split("\n", 1)
    out_title = model.predict(pd.DataFrame({"text": [body], "title": [title]}))
    assert out_title.iloc[0]["topic"] == row["topic"]
    batch = model.predict(pd.DataFrame({"text": [raw] * 7}))
    assert len(batch) == 7


def test_stance_evidence_comes_from_the_article_body(use_trained_store):
    """The sentences behind a stance decision are the article's own (never the site's furniture), at most three,
    best first; a neutral decision has none; the served column is the same list as JSON."""
    import numpy as np

    from training.models.contract import prepare_text

    model = mlflow.pyfunc.load_model(CHAMPION)
    pm = model.unwrap_python_model()
    raw = SEED.read_text(encoding="utf-8")
    prepared = prepare_text(raw, boilerplate=pm.boilerplate)
    labels = pm.meta["labels"]["stance"]
    anti = {"stance": (labels, np.array([[1.0, 0.0, 0.0]]))}
    ev = pm.scorer.evidence([prepared], anti)[0]
    assert 1 <= len(ev) <= 3
    body = prepared.split("\n", 1)[1]
    assert all(e["sentence"] in body and 0 <= e["score"] <= 1 for e in ev)
    assert not any(f in e["sentence"] for e in ev for f in ("LEAVE A REPLY", "Advertisement", "Articles Liés"))
    assert [e["score"] for e in ev] == sorted((e["score"] for e in ev), reverse=True)
    assert pm.scorer.evidence([prepared], {"stance": (labels, np.array([[0.0, 1.0, 0.0]]))}) == [[]]
    out = model.predict(pd.DataFrame({"text": [raw]}))
    served = json.loads(out.loc[0, "stance_evidence"])
    if out.loc[0, "stance"] == "neutre":
        assert served == []
    else:
        decided = {"stance": (labels, out[[f"stance_proba_{lab}" for lab in labels]].to_numpy(dtype=float))}
        assert served == pm.scorer.evidence([prepared], decided)[0]


def test_a_model_without_a_stance_head_says_so(use_trained_store):
    runs = mlflow.search_runs(experiment_names=["vigie-worse"])
    if not len(runs):
        pytest.skip("needs the run of test_a_worse_run_does_not_move_the_champion")
    model = mlflow.pyfunc.load_model(runs.iloc[0]["tags.vigie.model_uri"])
    out = model.predict(pd.DataFrame({"text": [SEED.read_text()]}))
    assert out.iloc[0]["stance"] is None and out.iloc[0]["topic"]
    assert out.iloc[0]["stance_evidence"] is None  # no stance head, no made-up evidence


def test_predict_cli_on_seeds_and_a_thousand_articles(use_trained_store, tmp_path):
    jsonl = tmp_path / "articles.jsonl"
    with gzip.open(SHARDS / "orangesum_topic_03.jsonl.gz", "rt") as fh:
        recs = [json.loads(line) for line in fh]
    recs = [{k: r[k] for k in ("id", "title", "abstract", "text", "date")} for r in recs if r.get("text")][:1000]
    recs[5]["date"] = "hier"  # unreadable: predicted as undated, and said
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"")
    out = tmp_path / "pred.jsonl"
    p = subprocess.run([sys.executable, "-m", "training.cli", "predict", str(REPO / "seeds"), str(jsonl), str(bad), "-o", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=600, env={**os.environ, "MLFLOW_TRACKING_URI": use_trained_store["uri"]})
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 1001
    assert lines[0]["id"] == "000_e3005b3932ea3b15"
    assert set(lines[1]) >= {"id", "topic", "topic_score", "stance", "stance_score", "stance_evidence"}
    for row in lines:  # a list: the sentences behind a non-neutral stance, none for neutre
        assert isinstance(row["stance_evidence"], list)
        assert (row["stance"] == "neutre") == (row["stance_evidence"] == [])
    assert "skipped 1" in p.stderr and "empty file" in p.stderr
    assert "1 article(s) with a date that is not YYYY-MM-DD" in p.stderr and "'hier'" in p.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(use_trained_store):
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "training.cli", "serve", "--port", str(port)], cwd=REPO,
                            env={**os.environ, "MLFLOW_TRACKING_URI": use_trained_store["uri"]},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if httpx.get(url + "/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "the server died while starting"
            time.sleep(1)
        else:
            raise AssertionError("server did not start")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its gunicorn/uvicorn workers, by our own pid
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_scoring_server_answers_and_refuses_bad_requests(server):
    import httpx

    inv = server + "/invocations"
    seed = SEED.read_text(encoding="utf-8")
    r = httpx.post(inv, json={"dataframe_split": {"columns": ["text"], "data": [[seed]]}}, timeout=60)
    assert r.status_code == 200, r.text
    pred = r.json()["predictions"]
    assert len(pred) == 1 and {"topic", "topic_score", "stance", "stance_score", "stance_evidence"} <= set(pred[0])
    evidence = json.loads(pred[0]["stance_evidence"])  # over HTTP too: the sentences behind the stance, as JSON
    assert isinstance(evidence, list) and (evidence == []) == (pred[0]["stance"] == "neutre")
    from training.models.contract import prepare_text

    assert all(e["sentence"] in prepare_text(seed) for e in evidence)
    with gzip.open(SHARDS / "orangesum_topic_01.jsonl.gz", "rt") as fh:
        docs = [d for d in map(json.loads, fh) if d.get("text")][:32]
    # publication dates are optional, row by row
    records = [{"text": f"{d['title']}\n{d['text']}", **({"date": d["date"]} if i % 2 else {})} for i, d in enumerate(docs)]
    r = httpx.post(inv, json={"dataframe_records": records}, timeout=60)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 32

    bad = {
        "malformed JSON": dict(content=b'{"dataframe_split": ', headers={"Content-Type": "application/json"}),
        "missing text": dict(json={"dataframe_split": {"columns": ["body"], "data": [["x"]]}}),
        "text not a string": dict(json={"dataframe_records": [{"text": 42}]}),
        "empty text": dict(json={"dataframe_records": [{"text": "   "}]}),
        "1 MB text": dict(json={"dataframe_records": [{"text": "Titre\n" + "mot " * 262_144}]}),
        "date not ISO": dict(json={"dataframe_records": [{"text": "Titre\ncorps", "date": "29/11/2026"}]}),
    }
    for name, kw in bad.items():
        r = httpx.post(inv, timeout=60, **kw)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:300])
        body = r.text
        assert "Traceback" not in body and "message" in body or "error" in body.lower(), (name, body[:300])
    assert httpx.get(server + "/ping", timeout=5).status_code == 200  # still up


def test_a_stance_model_ranks_the_model_stratum(use_trained_store):
    """`vigie annotate sample --model`: the champion's stance probabilities order the active-learning stratum."""
    from training.annotate.active import score_with_model
    from training.annotate.corpus import load_articles
    from training.annotate.pool import build_pool

    arts = list(load_articles([SHARDS / "orangesum_topic_02.jsonl.gz"]).values())[:300]
    scores = score_with_model(CHAMPION, arts)
    assert len(scores) == len(arts) and all(abs(sum(p) - 1) < 1e-6 for p in scores.values())
    rows = build_pool(arts, random_size=0, model_scores=scores, model_size=20)
    model_rows = [r for r in rows if r["stratum"] == "model"]
    assert len(model_rows) == 20 and [r["rank"] for r in model_rows] == list(range(20))
    assert model_rows[0]["score"] >= model_rows[-1]["score"]
