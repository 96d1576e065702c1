"""The team store, whole: `mlflow server` on PostgreSQL, with its artifacts proxied to an S3 bucket.

A PostgreSQL cluster in a temporary folder, an S3 endpoint (moto's server, an HTTP server of its own) and
`mlflow server --backend-store-uri postgresql+psycopg2://... --artifacts-destination s3://... --serve-artifacts`
are started on free loopback ports (never the system's cluster). Only the tracking server holds the bucket's
endpoint and credentials, as in the real deployment (docs/team-tracking.md): the client trains, registers and
serves with MLFLOW_TRACKING_URI=http://... alone (uploads go through the server; MLflow 3.17 downloads files from
URLs the server presigns). The run is the session's local-store run (`trained_store`,
the same config on the same build) again: the same params, metric values, artifacts, alias and served
predictions; its artifacts are objects in the bucket, none on the server's disk. Needs the PostgreSQL server
binaries (Debian package `postgresql`; `.ci/run` installs it). Every server is stopped by pid at the end.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.conftest import SEED, SHARDS, small_overrides

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "baseline.yaml"  # as `trained_store` names it: the runs' params are compared
PG_USER = "vigie"
BUCKET, PREFIX = "vigie-mlflow", "artifacts"
# moto accepts any credentials; only the tracking server is given them (and this test's own boto3 client)
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
# what must not reach the clients: with it, a client could write to the bucket itself instead of through the server
S3_CLIENT_VARS = (*S3_ENV, "AWS_PROFILE", "AWS_SESSION_TOKEN", "MLFLOW_S3_ENDPOINT_URL")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        on_path = shutil.which("initdb")
        if on_path:
            return Path(on_path).parent
        pytest.fail("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
                    "apt-get install -y postgresql (.ci/run does it)")
    return Path(found[-1]).parent


def _as_db_owner(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its commands as the `postgres` system user then."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def _stop(pid: int, sig: int, proc: subprocess.Popen | None) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait(timeout=30)


def _stop_group(proc: subprocess.Popen) -> None:
    """A server and the workers it forked: their process group, which is the server's pid."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _client_env() -> dict[str, str]:
    """This process's environment without MLflow settings and bucket access: what a started server inherits."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k not in S3_CLIENT_VARS}


class _Server:
    """A server this test starts, in its own process group (stopped by its pid with the workers it forks),
    logging to `log`, answering on 127.0.0.1:`port`."""

    def __init__(self, name: str, cmd: list[str], port: int, env: dict[str, str], cwd: Path, log: Path):
        self.name, self.url, self.log = name, f"http://127.0.0.1:{port}", log
        with open(log, "w") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                         start_new_session=True)

    def wait(self, path: str, timeout_s: float = 180) -> str:
        """Until GET `path` answers 200; returns the server's URL."""
        deadline = time.time() + timeout_s
        while True:
            try:
                urllib.request.urlopen(self.url + path, timeout=2).read()
                return self.url
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    pytest.fail(f"{self.name} did not start: {self.log.read_text()[-3000:]}")
                time.sleep(0.3)

    def stop(self) -> None:
        _stop_group(self.proc)


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster on 127.0.0.1:<free port>; yields the database URI."""
    import psycopg2

    bindir = _pg_bin()
    # not under pytest's tmp dir: that one is private to root, and the server runs as `postgres`
    root = Path(tempfile.mkdtemp(prefix="vigie-pg-"))
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    init = subprocess.run(_as_db_owner([str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust",
                                        "-E", "UTF8", "--no-locale"]), capture_output=True, text=True)
    assert init.returncode == 0, init.stdout + init.stderr
    port = _free_port()
    log = open(root / "postgres.log", "w")
    proc = subprocess.Popen(_as_db_owner([str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                                          "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={data}",
                                          "-c", "fsync=off"]),
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while True:
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=port, user=PG_USER, dbname="postgres", connect_timeout=2)
            break
        except psycopg2.OperationalError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"PostgreSQL did not start: {(root / 'postgres.log').read_text()[-2000:]}")
            time.sleep(0.3)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE mlflow")
    conn.close()
    pid = int((data / "postmaster.pid").read_text().split()[0])  # the postmaster itself (proc may be runuser)
    try:
        yield f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{port}/mlflow"  # SQLAlchemy 2.1 defaults to psycopg 3
    finally:
        _stop(pid, signal.SIGQUIT, None)  # immediate shutdown: the cluster is thrown away
        try:
            proc.wait(timeout=30)  # runuser, when root, ends with the postmaster
        except subprocess.TimeoutExpired:
            _stop(proc.pid, signal.SIGKILL, proc)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3 endpoint (moto's server, objects in its memory) holding an empty bucket `BUCKET`; yields its URL and a
    boto3 client for it."""
    import boto3

    tmp, port = tmp_path_factory.mktemp("s3"), _free_port()
    server = _Server("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port,
                     _client_env(), tmp, tmp / "moto.log")
    try:
        url = server.wait("/moto-api/", timeout_s=60)
        client = boto3.client("s3", endpoint_url=url, aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
                              region_name=S3_ENV["AWS_DEFAULT_REGION"])
        client.create_bucket(Bucket=BUCKET)
        yield {"url": url, "client": client}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mlflow_server(postgres, s3, tmp_path_factory):
    """`mlflow server` on PostgreSQL, artifacts proxied to s3://BUCKET/PREFIX: started, not waited for (`.wait`).
    Its working folder holds only its log: a local artifact store would show there (./mlartifacts)."""
    tmp, port = tmp_path_factory.mktemp("mlflow-server"), _free_port()
    env = {**_client_env(), **S3_ENV, "MLFLOW_S3_ENDPOINT_URL": s3["url"],
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no GenAI job runner: 7 idle worker processes less
    server = _Server("mlflow server", [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres,
                                       "--artifacts-destination", f"s3://{BUCKET}/{PREFIX}", "--serve-artifacts",
                                       "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                     port, env, tmp, tmp / "server.log")
    try:
        yield server
    finally:
        server.stop()


def _artifact_paths(client, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for f in client.list_artifacts(run_id, path):
        out += _artifact_paths(client, run_id, f.path) if f.is_dir else [f.path]
    return sorted(out)


def _bucket_keys(s3_client) -> set[str]:
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def _bucket_key(proxied_uri: str) -> str:
    """`mlflow-artifacts:/<path>` (what clients see) -> the key the server stores it under in the bucket."""
    assert proxied_uri.startswith("mlflow-artifacts:"), proxied_uri
    return f"{PREFIX}/{urlparse(proxied_uri).path.strip('/')}"


def _deterministic(metrics: dict[str, float]) -> dict[str, float]:
    """A run's metrics without the wall-clock ones (`predict_seconds`, `<task>_fit_seconds`, ...)."""
    return {k: v for k, v in metrics.items() if not k.endswith("_seconds")}


def _articles() -> list[dict]:
    """The seed and 15 corpus articles, in the served input: some dated, some with their source."""
    with gzip.open(SHARDS / "orangesum_topic_01.jsonl.gz", "rt") as fh:
        docs = [d for d in map(json.loads, fh) if d.get("text")][:15]
    return [{"text": SEED.read_text(encoding="utf-8")}] + [
        {"text": f"{d['title']}\n{d['text']}", **({"date": d["date"]} if i % 2 else {}),
         **({"source": "orangesum"} if i % 3 == 0 else {})} for i, d in enumerate(docs)]


def _serve(tracking_uri: str, tmp: Path) -> _Server:
    """`vigie serve --model models:/vigie@champion` against `tracking_uri`, without the bucket's credentials."""
    port = _free_port()
    return _Server("vigie serve", [sys.executable, "-m", "training.cli", "serve", "--model", "models:/vigie@champion",
                                   "--port", str(port), "--workers", "1"], port,
                   {**_client_env(), "MLFLOW_TRACKING_URI": tracking_uri}, REPO, tmp / "serve.log")


def test_train_register_and_serve_through_the_team_store(mlflow_server, s3, request, tmp_path, monkeypatch):
    import httpx
    import pandas as pd
    from mlflow import MlflowClient

    from training import tracking
    from training.config import load_config
    from training.registry import load_model, register_best
    from training.train import train

    # the local-store run; asked for here, not as an argument (pytest would set a session fixture up before the
    # module's servers), so that the session's first training, when it is this one, overlaps the server's start
    trained_store = request.getfixturevalue("trained_store")
    local = MlflowClient(trained_store["uri"])
    local_run = local.get_run(trained_store["run_id"])

    # what a developer does, with the same config: `vigie train` then `vigie register`, without bucket credentials
    for var in S3_CLIENT_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.wait("/health"))
    result = train(load_config(CONFIG, small_overrides(trained_store["tmp"]) + ["experiment=vigie-test"]))
    reg = register_best()
    remote = tracking.setup()
    run = remote.get_run(result["run_id"])
    server = _serve(mlflow_server.url, tmp_path)  # boots while the stores are compared
    try:
        # the same run as on the local store: config, metric values, artifacts, dataset
        assert run.info.status == "FINISHED"
        assert run.data.params == local_run.data.params
        assert set(run.data.metrics) == set(local_run.data.metrics)
        expected = _deterministic(local_run.data.metrics)
        assert "validation_macro_f1_mean" in expected
        assert _deterministic(run.data.metrics) == pytest.approx(expected, rel=1e-9, abs=1e-12, nan_ok=True)
        artifacts = _artifact_paths(remote, run.info.run_id)
        assert artifacts == _artifact_paths(local, local_run.info.run_id)
        assert "config.yaml" in artifacts
        assert any(p.startswith("figures/confusion_") for p in artifacts)
        assert any(p.startswith("reports/metrics_") for p in artifacts)
        assert run.data.tags["vigie.dataset_fingerprint"] == local_run.data.tags["vigie.dataset_fingerprint"]

        # registered and promoted the same way
        assert reg.promoted and trained_store["register"].promoted
        champion = remote.get_model_version_by_alias("vigie", "champion")
        assert champion.run_id == run.info.run_id
        assert str(champion.version) == str(trained_store["register"].version) == "1"  # the REST client gives str

        # the artifacts are objects in the bucket, through the server (mlflow-artifacts:/), none on its disk
        assert remote.get_experiment(run.info.experiment_id).artifact_location.startswith("mlflow-artifacts:")
        keys = _bucket_keys(s3["client"])
        run_root = _bucket_key(run.info.artifact_uri) + "/"
        assert {k.removeprefix(run_root) for k in keys if k.startswith(run_root)} == set(artifacts)
        model_root = _bucket_key(remote.get_logged_model(run.data.tags["vigie.model_id"]).artifact_location) + "/"
        model_files = {k.removeprefix(model_root) for k in keys if k.startswith(model_root)}
        local_dir = Path(urlparse(local.get_logged_model(local_run.data.tags["vigie.model_id"]).artifact_location).path)
        local_files = {p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file()}
        assert "MLmodel" in model_files
        # less the file MLflow writes into a local store's own folder when a `models:/` URI is loaded from it
        assert model_files == local_files - {"registered_model_meta"}
        assert [p.name for p in mlflow_server.log.parent.rglob("*")] == [mlflow_server.log.name]

        # the champion served from the team store answers as the local-store model does
        records = _articles()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store["uri"])
        frame = pd.DataFrame(records)
        want = load_model(f"models:/vigie/{trained_store['register'].version}").predict(frame).to_dict("records")
        served = httpx.post(server.wait("/ping") + "/invocations", json={"dataframe_records": records}, timeout=120)
        info = httpx.get(server.url + "/version", timeout=10).json()
    finally:
        server.stop()
    assert served.status_code == 200, served.text[:1000]
    assert info["model_uri"] == "models:/vigie@champion" and info["model_version"] == "1"
    got = served.json()["predictions"]
    assert len(got) == len(want) == len(records)
    for row, local_row in zip(got, want):  # every column: labels and evidence equal, scores and probabilities close
        numbers = {k for k, v in local_row.items() if isinstance(v, float)}
        assert row.keys() == local_row.keys()
        assert {k: row[k] for k in row.keys() - numbers} == {k: local_row[k] for k in local_row.keys() - numbers}
        assert {k: row[k] for k in numbers} == pytest.approx({k: local_row[k] for k in numbers}, rel=1e-9, abs=1e-12)
