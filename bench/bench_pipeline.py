"""Wall time of the data build and of the baseline training on the full corpus, as `make run` runs them.

    .venv/bin/python bench/bench_pipeline.py [--config configs/baseline.yaml] [--skip-train]

Runs each command in a fresh process (so imports count, as for a user), with a temporary MLflow store, and
prints one line per stage: seconds and the process's peak memory."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict) -> tuple[float, float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return dt, peak_mb, p.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/baseline.yaml")
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()
    vigie = [sys.executable, "-m", "training.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        dt, mb, _ = timed(vigie + ["data", "build", args.config, "--quiet"], env)
        stats = json.loads((REPO / "data" / "processed" / "orangesum" / "stats.json").read_text())
        rows = sum(s["rows"] for s in stats["splits"].values())
        print(f"data build   {dt:6.1f} s   peak RSS {mb:6.0f} MB   {rows} rows, {stats['dedup']['articles_in']} articles in")
        if not args.skip_train:
            dt, mb, out = timed(vigie + ["train", args.config], env)
            res = json.loads(out[out.index("{"):])
            m = res["metrics"]
            print(f"train        {dt:6.1f} s   peak RSS {mb:6.0f} MB   test_topic_macro_f1 {m['test_topic_macro_f1']:.4f}  "
                  f"test_topic_accuracy {m['test_topic_accuracy']:.4f}  validation_macro_f1_mean {m['validation_macro_f1_mean']:.4f}")


if __name__ == "__main__":
    main()
