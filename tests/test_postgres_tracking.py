"""The team setup for real: `mlflow server` with a PostgreSQL backend store and proxied artifacts.

A PostgreSQL cluster is created in a temporary folder and started on a free loopback port (never the
system's cluster), an MLflow tracking server is started against it, and a tiny baseline is trained and
registered through MLFLOW_TRACKING_URI=http://... exactly as on the local SQLite store: the same metric
names, the same artifacts, the same @champion alias. Needs the PostgreSQL server binaries (Debian package
`postgresql`; `.ci/run` installs it). Both servers are stopped by pid at the end.
"""

from __future__ import annotations

import glob
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

import pytest

from tests.conftest import small_overrides

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/baseline.yaml"
PG_USER = "vigie"

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
def mlflow_server(postgres, tmp_path_factory):
    """`mlflow server` on 127.0.0.1:<free port>: PostgreSQL backend store, artifacts proxied to a folder."""
    tmp = tmp_path_factory.mktemp("mlflow-server")
    artifacts = tmp / "artifacts"
    port = _free_port()
    log = open(tmp / "server.log", "w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no GenAI job runner: 7 idle worker processes less
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres,
                             "--artifacts-destination", str(artifacts), "--serve-artifacts",
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180  # the first start creates the schema
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                _stop_group(proc)
                pytest.fail(f"mlflow server did not start: {(tmp / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
    try:
        yield {"url": url, "artifacts": artifacts}
    finally:
        _stop_group(proc)
        log.close()


def _stop_group(proc: subprocess.Popen) -> None:
    """The server and the workers it forked: their process group, which is the server's pid."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _train_and_register(tracking_uri: str, overrides: list[str], monkeypatch) -> dict:
    """What a developer does: `vigie train` then `vigie register`, against the given store."""
    from training import tracking
    from training.config import load_config
    from training.registry import register_best
    from training.train import train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    result = train(load_config(CONFIG, overrides))
    reg = register_best()
    client = tracking.setup()
    run = client.get_run(result["run_id"])

    def listing(path=None):
        out = []
        for f in client.list_artifacts(run.info.run_id, path):
            out += listing(f.path) if f.is_dir else [f.path]
        return out

    champion = client.get_model_version_by_alias("vigie", "champion")
    return {"run": run, "register": reg, "artifacts": sorted(listing()), "champion": champion,
            "experiment": client.get_experiment(run.info.experiment_id)}


def test_train_and_register_through_a_postgres_backed_server(mlflow_server, small_build, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    overrides = small_overrides(small_build[2])  # the session's small build (conftest.py)

    local = _train_and_register(f"sqlite:///{tmp_path / 'mlflow.db'}", overrides, monkeypatch)
    remote = _train_and_register(mlflow_server["url"], overrides, monkeypatch)

    # same run content as with the local store
    assert remote["run"].info.status == "FINISHED"
    assert set(remote["run"].data.metrics) == set(local["run"].data.metrics)
    assert remote["artifacts"] == local["artifacts"]
    assert "config.yaml" in remote["artifacts"]
    assert any(p.startswith("figures/confusion_") for p in remote["artifacts"])
    assert any(p.startswith("reports/metrics_") for p in remote["artifacts"])
    assert remote["run"].data.tags["vigie.dataset_fingerprint"] == local["run"].data.tags["vigie.dataset_fingerprint"]

    # registered and promoted the same way
    assert remote["register"].promoted and local["register"].promoted
    assert remote["champion"].run_id == remote["run"].info.run_id
    assert str(remote["champion"].version) == str(local["champion"].version) == "1"  # the REST client gives str

    # artifacts went through the server (mlflow-artifacts:/) into its artifacts destination
    assert remote["experiment"].artifact_location.startswith("mlflow-artifacts:")
    stored = {p.name for p in mlflow_server["artifacts"].rglob("*") if p.is_file()}
    assert "config.yaml" in stored and "MLmodel" in stored

    # the champion loads from the server and predicts
    from training.registry import load_model
    from training.models.contract import INPUT_EXAMPLE

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server["url"])
    pred = load_model("models:/vigie@champion").predict(INPUT_EXAMPLE)
    assert {"topic", "topic_score", "stance", "stance_score"} <= set(pred.columns)
