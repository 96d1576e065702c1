"""A distributed launch (`torchrun --nproc_per_node=2`, gloo on CPU, the tiny CamemBERT) logs like one process: one
run, one model, per-evaluation curves, its effective batch; and, stopped after a checkpoint, it resumes from it.

Run as a module (`torchrun -m tests.test_distributed train CONFIG ...`), this file is `vigie train` with a callback
that holds every process still after their first checkpoint: the test then stops the launch with SIGTERM (what a
scheduler's preemption sends), at a known step."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import test_camembert
from tests.conftest import REPO, SHARDS, small_overrides

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SHARDS.exists(), reason="needs the OrangeSum corpus in ../shared")]

tiny = test_camembert.tiny  # the module-scoped tiny CamemBERT fixture

HOLD_ENV = "VIGIE_TEST_HOLD_AFTER_CHECKPOINT"  # the file the held launch writes its checkpoint's step into
WORLD, BATCH, ACCUMULATION = 2, 4, 2


def torchrun(module: str, args: list[str], log: Path, **env: str) -> subprocess.Popen:
    """`torchrun --standalone` (a free rendezvous port: other launches may share the machine), output to `log`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}", "-m", module,
           "train", "configs/camembert-tiny.yaml", *args]
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})


def steps_per_epoch(rows: int) -> int:
    """Optimizer steps per epoch when WORLD processes share the rows (each gets its padded share)."""
    batches = math.ceil(math.ceil(rows / WORLD) / BATCH)
    return math.ceil(batches / ACCUMULATION)


def test_torchrun_logs_one_run_and_resumes(tiny, mlflow_store, tmp_path):
    from mlflow import MlflowClient

    # one shard: the launch builds the dataset (in seconds), its main process first
    one_shard = f"data.sources=[{{path: {SHARDS / 'orangesum_topic_00.jsonl.gz'}, name: orangesum}}, {{path: {REPO / 'seeds'}, name: seeds}}]"
    args = [*small_overrides(tmp_path, n=200), one_shard, "experiment=distributed", f"model.pretrained={tiny}",
            "model.max_length=32", "model.head_tokens=12", "train.max_train_rows=100", "train.max_eval_rows=50",
            f"train.batch_size={BATCH}", f"train.gradient_accumulation={ACCUMULATION}", "train.eval_steps=2",
            "train.early_stopping_patience=null", "train.epochs=1", "train.num_threads=1", f"train.output_dir={tmp_path / 'checkpoints'}",
            "evaluate.splits=[validation]"]
    held, log1 = tmp_path / "held", tmp_path / "launch1.log"
    t0 = time.time()
    p = torchrun("tests.test_distributed", args, log1, **{HOLD_ENV: str(held)})
    try:
        while not held.exists():
            assert p.poll() is None, f"the launch ended before its first checkpoint:\n{log1.read_text()[-3000:]}"
            assert time.time() - t0 < 600, "no checkpoint after 10 minutes"
            time.sleep(0.2)
        p.send_signal(signal.SIGTERM)  # torchrun passes it on to every process
        p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    first = int(held.read_text())
    out1 = log1.read_text()
    assert out1.count("building dataset") == 1, out1[-3000:]  # the main process built it, the other one waited

    client = MlflowClient()

    def all_runs():
        ids = [e.experiment_id for e in client.search_experiments()]
        return ids, client.search_runs(ids, order_by=["attributes.start_time ASC"])

    _, runs = all_runs()
    assert [r.info.status for r in runs] == ["KILLED"], out1[-3000:]  # one run for the launch: the main process's
    [ckpt] = (tmp_path / "checkpoints").glob(f"*/checkpoint-{first}")
    assert (ckpt / "trainer_state.json").exists()
    assert {f"rng_state_{r}.pth" for r in range(WORLD)} <= {f.name for f in ckpt.iterdir()}  # written by both

    log2 = tmp_path / "launch2.log"
    p = torchrun("training.cli", [*args, "train.resume=true"], log2)
    try:
        rc = p.wait(timeout=600)
    finally:
        if p.poll() is None:
            p.kill()
    out2 = log2.read_text()
    assert rc == 0, out2[-3000:]
    assert "building dataset" not in out2
    exp_ids, runs = all_runs()
    assert [r.info.status for r in runs] == ["KILLED", "FINISHED"], out2[-3000:]
    run = runs[1]
    m = run.data.metrics
    assert m["train_world_size"] == WORLD
    assert m["train_effective_batch_size"] == BATCH * ACCUMULATION * WORLD
    assert m["train_resumed_from_step"] == first > 0
    # each optimizer step took BATCH x ACCUMULATION rows from each of the WORLD processes (one process: twice the steps)
    assert m["train_global_step"] == steps_per_epoch(int(m["train_rows"])) > first
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    assert losses and min(h.step for h in losses) > first  # continued from the checkpoint, not from the start
    evals = {h.step for h in client.get_metric_history(run.info.run_id, "validation_macro_f1_mean")}
    curve = {s for s in evals if s <= m["train_global_step"]}  # the evaluations during training (then the headline)
    assert len(curve) >= 2 and min(curve) > first and max(evals) == m["train_global_step"] + 1
    assert "train.batch_size" in run.data.params and "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    models = client.search_logged_models(exp_ids)
    assert [lm.source_run_id for lm in models] == [run.info.run_id]
    assert not list((tmp_path / "checkpoints").glob("*/checkpoint-*"))  # removed once the model was saved


if __name__ == "__main__":
    from transformers import TrainerCallback

    from training import distributed
    from training.cli import main
    from training.models import camembert_family

    class HoldAfterFirstCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            distributed.barrier()  # every process has written its part of the checkpoint
            if distributed.is_main_process():
                Path(os.environ[HOLD_ENV]).write_text(str(state.global_step))
            time.sleep(600)  # until the test's SIGTERM

    camembert_family.extra_callbacks = lambda: [HoldAfterFirstCheckpoint()]
    sys.exit(main(sys.argv[1:]))
