"""The real training path on a small slice, asserted on what MLflow recorded."""

import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from training.config import load_config
from training.train import train

from tests.conftest import REPO, small_overrides, wait_for_running_run


def test_a_training_run_is_complete(use_trained_store):
    client = MlflowClient()
    run = client.get_run(use_trained_store["run_id"])
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for key in ("validation_topic_macro_f1", "validation_topic_accuracy", "test_topic_macro_f1", "test_topic_accuracy",
                "validation_stance_macro_f1", "validation_macro_f1_mean", "validation_topic_ece", "validation_topic_f1_monde"):
        assert key in m, key
    assert m["validation_macro_f1_mean"] == pytest.approx((m["validation_topic_macro_f1"] + m["validation_stance_macro_f1"]) / 2)
    assert not any(k.startswith("test_stance") for k in m), "the reserved test split carries no stance label"
    p, t = run.data.params, run.data.tags
    # the resolved config, flattened: values from baseline.yaml and from the test's overrides
    assert p["model.topic.C"] == str(load_config(REPO / "configs" / "baseline.yaml").model.topic.C)
    assert p["model.topic.class_bias_folds"] == "3" and p["data.name"] == "orangesum-small"
    assert t["vigie.family"] == "baseline" and len(t["vigie.dataset_fingerprint"]) == 64
    assert t["vigie.git_commit"] and t["vigie.config_path"].endswith("baseline.yaml")
    names = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert names == {"orangesum-small-train", "orangesum-small-validation", "orangesum-small-test"}
    assert all(d.dataset.digest for d in run.inputs.dataset_inputs)
    arts = {f.path for f in client.list_artifacts(run.info.run_id)} | {f.path for d in ("figures", "reports") for f in client.list_artifacts(run.info.run_id, d)}
    for a in ("config.yaml", "figures/confusion_validation_topic.png", "figures/calibration_test_topic.png",
              "reports/metrics_validation_stance.json", "reports/worst_test_topic.csv", "reports/top_features_topic.csv"):
        assert a in arts, a
    model = mlflow.pyfunc.load_model(t["vigie.model_uri"])
    assert model.metadata.signature is not None
    text = (Path(mlflow.artifacts.download_artifacts(artifact_uri=t["vigie.model_uri"])) / "requirements.txt").read_text()
    assert "scikit-learn==" in text and "torch" not in text


def test_a_failing_training_ends_failed(small_build, mlflow_store, monkeypatch):
    cfg, _, tmp = small_build

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr("training.models.baseline.fit_task", boom)
    with pytest.raises(RuntimeError):
        train(load_config(REPO / "configs" / "baseline.yaml", small_overrides(tmp) + ["experiment=fail"]))
    runs = mlflow.search_runs(experiment_names=["fail"])
    assert list(runs["status"]) == ["FAILED"]


@pytest.mark.parametrize("sig, status, code", [(signal.SIGINT, "KILLED", 130), (signal.SIGTERM, "KILLED", 130)])
def test_interrupted_training_is_killed_not_running(small_build, mlflow_store, tmp_path, sig, status, code):
    _, _, tmp = small_build
    log = tmp_path / "train.log"
    with open(log, "w") as out:  # a file, not a pipe: a child writing more than a pipe holds would block
        p = subprocess.Popen([sys.executable, "-m", "training.cli", "train", "configs/baseline.yaml", *small_overrides(tmp),
                              "experiment=sig"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for_running_run("sig", p, log)
            p.send_signal(sig)
            p.wait(timeout=120)
        finally:
            p.kill()
    err = log.read_text()
    # 130 from the CLI's own handler, or -SIGINT when the interpreter re-raises a KeyboardInterrupt that surfaced
    # while shutting down: a shell reads both as 130 (128 + SIGINT)
    assert p.returncode == code or (sig == signal.SIGINT and p.returncode == -signal.SIGINT), err
    runs = mlflow.search_runs(experiment_names=["sig"])
    assert list(runs["status"]) == [status]


def test_logging_a_dataset_split_prints_none_of_mlflows_hints(mlflow_store, tmp_path):
    """A local-path source and integer label columns: MLflow warns about both (an ambiguous source registry, a
    model-signature hint), neither of which means anything for a dataset record; the record is still logged."""
    import warnings

    import pandas as pd

    from training import tracking

    df = pd.DataFrame({"text": ["un", "deux"], "topic": [0, 1]})
    with tracking.run("hints", "r", {}) as active, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracking.log_dataset_split(df, "d-train", str(tmp_path / "train"), "topic", "training")
    shown = [str(w.message)[:80] for w in caught if not issubclass(w.category, DeprecationWarning)]  # what a user sees
    assert not shown, shown
    (inp,) = MlflowClient().get_run(active.info.run_id).inputs.dataset_inputs
    assert inp.dataset.name == "d-train"
