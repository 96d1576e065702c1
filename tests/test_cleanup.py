"""`vigie runs cleanup`: a SIGKILLed training leaves a RUNNING run (nothing can close it); cleanup marks it
KILLED and leaves runs of live processes alone."""

import os
import signal
import subprocess
import sys
import time

import mlflow

from tests.conftest import REPO, small_overrides


def test_sigkilled_training_is_cleaned_up(small_build, mlflow_store):
    _, _, tmp = small_build
    p = subprocess.Popen([sys.executable, "-m", "training.cli", "train", "configs/baseline.yaml", *small_overrides(tmp), "experiment=sigkill"],
                         cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            runs = mlflow.search_runs(experiment_names=["sigkill"])
            if len(runs):
                break
        except Exception:
            pass
        time.sleep(0.3)
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
