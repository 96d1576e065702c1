"""Registry gate, the pyfunc contract, batch prediction and the real scoring server."""

import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

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
    assert p.returncode == 3, p.stderr  # some inputs skipped (the empty file)
    assert "Traceback" not in p.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 1001
    assert lines[0]["id"] == "000_e3005b3932ea3b15" and lines[0]["path"].endswith(".txt")
    assert set(lines[1]) >= {"id", "topic", "topic_score", "stance", "stance_score", "stance_evidence", "input_words",
                             "topic_proba_monde", "model_uri", "model_version"}
    version = str(MlflowClient(use_trained_store["uri"]).get_model_version_by_alias("vigie", "champion").version)
    assert {(r["model_uri"], r["model_version"]) for r in lines} == {(CHAMPION, version)}
    assert [r["id"] for r in lines[1:]] == [str(r["id"]) for r in recs]  # the corpus ids, in file order
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
        body = r.json()  # JSON with a message, never a stack trace
        assert body["message"] and "stack_trace" not in body and "Traceback" not in r.text, (name, r.text[:300])
    assert httpx.get(server + "/ping", timeout=5).status_code == 200  # still up


def test_the_server_guard_answers_4xx_to_what_the_scoring_app_cannot_take(server):
    import httpx

    inv = server + "/invocations"
    ok = json.dumps({"dataframe_records": [{"text": "Titre\nLe gouvernement a présenté sa réforme des retraites."}]})
    cases = {  # name: (request, expected status)
        "no Content-Type": (dict(content=ok.encode()), 415),  # the scoring app alone answers 500
        "text/plain": (dict(content=ok.encode(), headers={"Content-Type": "text/plain"}), 415),
        "latin-1 JSON": (dict(content=ok.encode(), headers={"Content-Type": "application/json; charset=latin-1"}), 415),
        "Content-Length not a number": (dict(content=ok.encode(), headers={"Content-Type": "application/json",
                                                                            "Content-Length": "abc"}), 400),
        "17 MB body": (dict(content=b"x" * (17 * 2**20), headers={"Content-Type": "application/json"}), 413),
        "17 MB chunked": (dict(content=iter([b"x" * 2**20] * 17), headers={"Content-Type": "application/json"}), 413),
        "furniture only": (dict(json={"dataframe_records": [{"text": "Titre\nLe gouvernement a parlé."},
                                                            {"text": "ad\nLEAVE A REPLY\n- Advertisement -"}]}), 400),
        "CSV without text": (dict(content=b"a,b\n1,2\n", headers={"Content-Type": "text/csv"}), 400),
        "Parquet garbage": (dict(content=b"PAR1 not really", headers={"Content-Type": "application/vnd.apache.parquet"}), 400),
        "not UTF-8": (dict(content=b'{"dataframe_records": [{"text": "\xff\xfe"}]}', headers={"Content-Type": "application/json"}), 400),
        "a JSON list": (dict(json=[1, 2, 3]), 400),
    }
    for name, (kw, status) in cases.items():
        if name == "Content-Length not a number":  # httpx refuses to send a bad header itself: a raw socket does
            host, port = server.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: abc\r\nConnection: close\r\n\r\n")
                reply = sock.recv(65536).decode("latin-1")
            assert reply.split()[1].startswith("4"), (name, reply[:300])  # the HTTP parser's own 400, or ours
            continue
        r = httpx.post(inv, timeout=60, **kw)
        assert r.status_code == status, (name, r.status_code, r.text[:300])
        body = r.json()
        assert body["message"] and "stack_trace" not in body, (name, body)
        if name == "furniture only":
            assert body["message"].startswith("row 1:") and "no words" in body["message"], body  # no made-up answer
    version = httpx.get(server + "/version", timeout=10)
    assert version.headers["content-type"] == "application/json"
    assert version.json()["model_uri"] == CHAMPION and version.json()["model_version"] is not None
    assert httpx.get(server + "/ping", timeout=5).status_code == 200


def test_a_fuzzer_driven_by_openapi_gets_no_5xx(server):
    """Schemathesis generates requests from the server's own /openapi.json, valid and invalid ones alike (>= 500
    to /invocations); not one answer may be a 5xx or carry a traceback."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(server + "/openapi.json")
    answers, failures, scored = [], [], []
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=260 if op.path == "/invocations" else 5, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(op.as_strategy(generation_mode=mode))
            def call(case):
                r = case.call(base_url=server, timeout=60)
                answers.append((op.path, r.status_code))
                if op.path == "/invocations" and (r.status_code == 200 or re.match(r"row \d+: ", _message(r))):
                    scored.append(r.status_code)  # past the schema, to the model: scored, or refused by its checks
                if r.status_code >= 500 or "Traceback" in r.text:
                    failures.append((op.path, r.status_code, r.text[:300], getattr(case, "body", None)))

            try:
                call()
            except Unsatisfiable:  # GET endpoints without parameters have no invalid request to make
                assert mode is GenerationMode.NEGATIVE
    assert sum(path == "/invocations" for path, _ in answers) >= 500
    assert not failures, failures[:5]
    # both kinds of answer, and requests that reached the model itself: a random text often has no letter at all
    # (the model's 400 "row 0: no words ..."), so a 200 from the fuzzer alone is luck, not a property
    assert {code for path, code in answers if path == "/invocations"} >= {400} and len(scored) >= 10
    assert 200 in {code for path, code in answers if path == "/invocations"} or _valid_request_scores(server)
    assert httpx_get(server + "/ping") == 200


def _message(r) -> str:
    try:
        doc = r.json()
    except ValueError:
        return ""
    return str(doc.get("message", "")) if isinstance(doc, dict) else ""


def _valid_request_scores(server: str) -> bool:
    import httpx

    body = {"dataframe_records": [{"text": "Le gouvernement annonce un plan\nLe ministre a présenté le texte."}]}
    return httpx.post(server + "/invocations", json=body, timeout=60).status_code == 200


def httpx_get(url: str) -> int:
    import httpx

    return httpx.get(url, timeout=10).status_code


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


def test_served_connections_get_tcp_nodelay():
    """With several workers uvicorn binds the listening socket itself, and some uvicorn releases bind it with proto 0;
    asyncio sets TCP_NODELAY only on the connections of a socket whose proto reads TCP, and without it every
    keep-alive answer waits ~40 ms for the client's delayed ACK. Whatever uvicorn does, the socket `vigie serve`
    hands its workers must give its connections TCP_NODELAY."""
    import asyncio

    from training.serve import _NoDelayConfig

    sock = _NoDelayConfig("training.serve:create_app", factory=True, host="127.0.0.1", port=0, workers=2).bind_socket()
    assert sock.proto == socket.IPPROTO_TCP

    async def accept_one() -> int:
        got: dict[str, int] = {}

        async def handle(reader, writer):
            got["nodelay"] = writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            writer.close()

        srv = await asyncio.start_server(handle, sock=sock)  # how uvicorn's workers serve the inherited socket
        async with srv:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            for _ in range(200):
                if "nodelay" in got:
                    break
                await asyncio.sleep(0.01)
            writer.close()
        return got["nodelay"]

    assert asyncio.run(accept_one()) != 0


def test_a_worker_scores_one_request_at_a_time_and_sends_waiting_clients_elsewhere():
    """The guard lets one scoring call run at a time in a worker (two at once share its GIL and cost more CPU for
    the same articles), and an answer sent while other requests wait in that worker says `Connection: close`, so
    that its client's next request comes on a new connection, which an idle worker can take. An answer sent with
    nobody waiting keeps its connection. Checked on the guard itself, around a scoring app that holds its first
    request until a second one is waiting."""
    import asyncio

    import httpx

    from training.serve import Guard

    state = {"running": 0, "most": 0, "calls": 0}
    release = asyncio.Event()

    async def scoring_app(scope, receive, send):
        state["running"] += 1
        state["most"] = max(state["most"], state["running"])
        state["calls"] += 1
        if state["calls"] == 1:
            await release.wait()
        await receive()
        state["running"] -= 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = Guard(scoring_app, {"vigie": "0", "model_uri": "m", "model_version": "1", "mlflow": "0"}, 1 << 20)

    async def scenario():
        transport = httpx.ASGITransport(app=guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://vigie") as client:
            post = lambda: client.post("/invocations", content=b"{}", headers={"content-type": "application/json"})  # noqa: E731
            first = asyncio.ensure_future(post())
            while state["calls"] < 1:
                await asyncio.sleep(0)
            second = asyncio.ensure_future(post())
            while guard._waiting < 1:  # the second request now waits for the first
                await asyncio.sleep(0)
            release.set()
            return await first, await second, await post()

    first, second, alone = asyncio.run(scenario())
    assert [r.status_code for r in (first, second, alone)] == [200, 200, 200]
    assert state["most"] == 1 and state["calls"] == 3
    assert first.headers.get("connection") == "close"
    assert "connection" not in second.headers and "connection" not in alone.headers
