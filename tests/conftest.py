"""Shared fixtures. Tests read the shared corpus from ../shared (never copied into the repo) and write only
under pytest's tmp_path; MLflow runs go to a temporary sqlite store."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ORANGESUM = SHARED / "data" / "orangesum"
SHARDS = ORANGESUM / "shards"
REPO_SAMPLE = ORANGESUM / "repo-sample"
SEED = REPO / "seeds" / "000_e3005b3932ea3b15.txt"
ADJUDICATED = REPO / "data" / "annotations" / "stance" / "adjudicated.jsonl"


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    """Run every test from the repository root (configs use repo-relative paths)."""
    monkeypatch.chdir(REPO)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    from training import tracking

    # the tables are created here, under the store's lock: a test that reads the store with plain mlflow while a
    # `vigie` subprocess starts would otherwise race MLflow's schema creation on a new database (the late comer
    # fails with CircularDependencyError or AttributeError, from inside SQLAlchemy)
    tracking.setup()
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


def small_overrides(tmp: Path, n: int = 400) -> list[str]:
    return [
        f"data.output_dir={tmp / 'processed'}",
        f"data.max_articles={n}",
        "data.name=orangesum-small",
        f"data.sources=[{{path: {SHARDS}, name: orangesum}}, {{path: {REPO / 'seeds'}, name: seeds}}]",
        "evaluate.worst_examples=5",
    ]


@pytest.fixture(scope="session")
def small_build(tmp_path_factory):
    """A small dataset (400 articles, half of them stance-annotated) built once for the session."""
    from training.config import load_config
    from training.data.build import build_dataset

    tmp = tmp_path_factory.mktemp("small")
    cfg = load_config(REPO / "configs" / "baseline.yaml", small_overrides(tmp))
    stats = build_dataset(cfg.data, progress=False)
    return cfg, stats, tmp


@pytest.fixture(scope="session")
def trained_store(small_build, tmp_path_factory):
    """A temporary MLflow store holding one baseline run trained on the small build, registered as champion."""
    import mlflow

    from training.config import load_config
    from training.registry import register_best
    from training.train import train

    cfg, _, tmp = small_build
    store = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    try:
        good = train(load_config(REPO / "configs" / "baseline.yaml", small_overrides(tmp) + ["experiment=vigie-test"]))
        reg = register_best(experiment="vigie-test")
        yield {"uri": uri, "run_id": good["run_id"], "metrics": good["metrics"], "register": reg, "tmp": tmp}
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture
def use_trained_store(trained_store, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store["uri"])
    mlflow.set_tracking_uri(trained_store["uri"])
    return trained_store


def wait_for_running_run(experiment: str, child: subprocess.Popen, log: Path, timeout: float = 120):
    """Until `experiment` has a RUNNING run of the `child` process; AssertionError, with the end of the child's
    log, when the child exits first or no run starts in `timeout` s."""
    import mlflow

    deadline = time.time() + timeout
    while time.time() < deadline:
        if child.poll() is not None:
            raise AssertionError(f"the training exited ({child.returncode}) before it was interrupted:\n{log.read_text()[-3000:]}")
        runs = mlflow.search_runs(experiment_names=[experiment])
        if len(runs) and (runs["status"] == "RUNNING").any():
            return runs
        time.sleep(0.5)
    raise AssertionError(f"the training started no run in {timeout:.0f} s:\n{log.read_text()[-3000:]}")
