"""`vigie runs cleanup`: a SIGKILLed training leaves a RUNNING run (nothing can close it); cleanup marks it
KILLED and leaves runs of live processes alone."""

import os
import signal
import subprocess
import sys

import mlflow

from tests.conftest import REPO, small_overrides, wait_for_running_run


def test_sigkilled_training_is_cleaned_up(small_build, mlflow_store, tmp_path):
    _, _, tmp = small_build
    log = tmp_path / "train.log"
    with open(log, "w") as fh:
        p = subprocess.Popen([sys.executable, "-m", "training.cli", "train", "configs/baseline.yaml", *small_overrides(tmp),
                              "experiment=sigkill"], cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
        try:
            wait_for_running_run("sigkill", p, log)
        finally:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    assert list(mlflow.search_runs(experiment_names=["sigkill"])["status"]) == ["RUNNING"]

    # a live run of this very process must survive the cleanup
    from training import tracking

    with tracking.run("sigkill", "alive", {}):
        out = subprocess.run([sys.executable, "-m", "training.cli", "runs", "cleanup"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "marked 1 stale" in out.stderr
        statuses = sorted(mlflow.search_runs(experiment_names=["sigkill"])["status"])
        assert statuses == ["KILLED", "RUNNING"]
    assert sorted(mlflow.search_runs(experiment_names=["sigkill"])["status"]) == ["FINISHED", "KILLED"]
