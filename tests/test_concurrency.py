"""Two trainings at once on one sqlite store both finish and are both recorded; two `vigie register` at once
leave exactly one consistent champion."""

import os
import subprocess
import sys

import mlflow
from mlflow import MlflowClient

from tests.conftest import REPO, small_overrides


def test_two_trainings_and_two_registers_at_once(small_build, tmp_path):
    _, _, tmp = small_build
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    cmd = [sys.executable, "-m", "training.cli", "train", "configs/baseline.yaml", *small_overrides(tmp), "experiment=concurrent"]
    procs = [subprocess.Popen(cmd + [f"model.topic.C={c}"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in (0.3, 1.0)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["concurrent"])
    assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}

    reg = [subprocess.Popen([sys.executable, "-m", "training.cli", "register", "--experiment", "concurrent"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in reg]
    for p, (_, err) in zip(reg, outs):
        assert p.returncode == 0, err[-2000:]
    client = MlflowClient(tracking_uri=uri)
    champ = client.get_model_version_by_alias("vigie", "champion")
    best = runs.sort_values("metrics.validation_macro_f1_mean", ascending=False).iloc[0]
    assert champ.run_id == best["run_id"]
    versions = client.search_model_versions("name='vigie'")
    assert {v.run_id for v in versions} == {best["run_id"]}
    assert champ.status == "READY"
    assert mlflow.pyfunc.load_model("models:/vigie@champion") is not None
