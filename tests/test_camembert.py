"""CamemBERT family: tiny model, tokenisation, masked multi-task loss, training tracked in MLflow, resume, ONNX int8,
offline failure of a hub name. Everything runs on a tiny random CamemBERT built from the corpus (no model hub)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, SEED, SHARDS, small_overrides

pytestmark = pytest.mark.skipif(not SHARDS.exists(), reason="needs the OrangeSum corpus in ../shared")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from training.models.tiny import build_tiny_camembert

    return build_tiny_camembert(tmp_path_factory.mktemp("tiny") / "camembert-tiny", corpus=[str(SHARDS)],
                                vocab_size=2000, max_texts=500, layers=2, hidden=64)


def data_path(small_build) -> Path:
    cfg, _, _ = small_build
    return Path(cfg.data.output_dir) / cfg.data.name


def tiny_config(tiny: Path, small_build, tmp_path: Path, *overrides: str):
    """camembert-tiny.yaml on the session's small build (train.train reuses it), sized for seconds."""
    from training.config import load_config

    _, _, build_tmp = small_build
    return load_config(REPO / "configs" / "camembert-tiny.yaml", [
        *small_overrides(build_tmp), f"model.pretrained={tiny}",
        "model.max_length=64", "model.head_tokens=24", "train.max_train_rows=200", "train.max_eval_rows=100",
        "train.batch_size=16", "train.learning_rate=0.001", "train.num_threads=1", "train.epochs=2",
        f"train.output_dir={tmp_path / 'checkpoints'}", *overrides,
    ])


# --- tokenizer and tokenisation -------------------------------------------------------------------------------------


def test_tiny_model_loads_like_a_hub_model(tiny):
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    cfg = AutoConfig.from_pretrained(tiny)
    assert type(tok).__name__ == "CamembertTokenizer"
    specials = (tok.bos_token, tok.pad_token, tok.eos_token, tok.unk_token, tok.mask_token)
    assert specials == ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id) == (cfg.bos_token_id, cfg.pad_token_id,
                                                                      cfg.eos_token_id)
    assert len(tok) == cfg.vocab_size == 2000
    assert cfg.model_type == "camembert" and cfg.max_position_embeddings == 514
    ids = tok("Emmanuel Macron a rencontré Vladimir Poutine à Moscou.")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert max(ids) < cfg.vocab_size and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "Emmanuel Macron a rencontré Vladimir Poutine à Moscou."
    AutoModel.from_pretrained(tiny)  # the weights load through the ordinary path


def test_head_tail_truncation_keeps_start_and_end(tiny):
    from transformers import AutoTokenizer

    from training.models.camembert import encode

    tok = AutoTokenizer.from_pretrained(tiny)
    text = "Début de l'article. " + " ".join(f"mot{i}" for i in range(300)) + " Conclusion finale de l'article."
    full = tok(text, add_special_tokens=False)["input_ids"]
    assert len(full) > 100
    [ht] = encode(tok, [text], max_length=32, truncation="head_tail", head_tokens=10)
    assert len(ht) == 32
    assert ht[0] == tok.bos_token_id and ht[-1] == tok.eos_token_id
    assert ht[1:11] == full[:10]  # the head
    assert ht[11:-1] == full[-20:]  # the tail: the rest of the budget (32 - 2 special - 10)
    assert "Conclusion" in tok.decode(ht) and "Début" in tok.decode(ht)
    [head] = encode(tok, [text], max_length=32, truncation="head", head_tokens=10)
    assert head[1:-1] == full[:30] and "Conclusion" not in tok.decode(head)
    short = "Un texte court."
    assert encode(tok, [short], 32, "head_tail", 10) == encode(tok, [short], 32, "head", 10)
    assert encode(tok, [short], 32, "head", 10) == [tok(short)["input_ids"]]


# --- the loss ---------------------------------------------------------------------------------------------------------


def test_stance_loss_is_masked_for_unlabelled_rows():
    import torch
    import torch.nn.functional as F

    from training.models.camembert import multitask_loss

    torch.manual_seed(0)
    topic = torch.randn(6, 4, requires_grad=True)
    stance = torch.randn(6, 3, requires_grad=True)
    y_topic = torch.tensor([0, 1, 2, 3, 1, 0])
    y_stance = torch.tensor([-1, 2, -1, -1, 0, -1])
    weights = {"topic": 1.0, "stance": 0.5}

    loss = multitask_loss({"topic": topic, "stance": stance}, {"topic": y_topic, "stance": y_stance}, weights)
    keep = y_stance >= 0
    expected = F.cross_entropy(topic, y_topic) + 0.5 * F.cross_entropy(stance[keep], y_stance[keep])
    assert torch.allclose(loss, expected)

    loss.backward()
    assert torch.all(stance.grad[~keep] == 0)  # unlabelled rows: no gradient into the stance head
    assert torch.all(stance.grad[keep].abs().sum(1) > 0)
    assert torch.all(topic.grad.abs().sum(1) > 0)  # every row still trains the topic head

    # whatever the stance logits of unlabelled rows, the loss does not move
    moved = stance.detach().clone()
    moved[~keep] += 100.0
    again = multitask_loss({"topic": topic, "stance": moved}, {"topic": y_topic, "stance": y_stance}, weights)
    assert torch.allclose(again, loss)

    # a batch without any stance label: the topic loss alone, finite, the stance head still in the graph
    none = torch.full((6,), -1)
    only = multitask_loss({"topic": topic, "stance": stance}, {"topic": y_topic, "stance": none}, weights)
    assert torch.isfinite(only) and torch.allclose(only, F.cross_entropy(topic, y_topic))

    # class weights: the usual weighted mean over the labelled rows
    cw = {"stance": torch.tensor([1.0, 2.0, 5.0])}
    wl = multitask_loss({"stance": stance}, {"stance": y_stance}, {"stance": 1.0}, cw)
    assert torch.allclose(wl, F.cross_entropy(stance[keep], y_stance[keep], weight=cw["stance"]))


def test_balanced_class_weights():
    from training.models.camembert import balanced_class_weights

    w = balanced_class_weights(np.array([0, 0, 0, 1, -1, -1]), 3)
    assert w == pytest.approx([4 / 6, 2.0, 1.0])  # n / (k * count) over the present classes; absent class: 1


# --- offline failure --------------------------------------------------------------------------------------------------


def test_hub_name_fails_fast_offline(small_build, mlflow_store, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants
    from mlflow import MlflowClient

    import training.train  # noqa: F401 - imports (sklearn, matplotlib, datasets) are not what the clock is for
    from training.cli import main

    MlflowClient().search_experiments()  # nor is creating the store's tables
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    _, _, build_tmp = small_build
    t0 = time.time()
    rc = main(["train", "configs/camembert-base.yaml", *small_overrides(build_tmp),
               f"train.output_dir={tmp_path / 'ckpt'}"])
    elapsed = time.time() - t0
    err = capsys.readouterr().err
    assert rc == 2
    assert "model.pretrained=almanach/camembert-base" in err
    assert "cannot be downloaded" in err and "model.pretrained=/path/to/camembert-base" in err
    assert elapsed < 10, f"took {elapsed:.1f} s to fail"


def test_hub_name_fails_fast_without_network(tmp_path, monkeypatch):
    """Not marked offline but the hub does not answer: a short probe, not the hub client's minute of retries."""
    import huggingface_hub.constants
    import transformers  # noqa: F401 - timed below: the failure, not the import

    from training.errors import InputError
    from training.models.camembert import load_pretrained

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://10.255.255.1:9")  # non-routable
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    t0 = time.time()
    with pytest.raises(InputError, match="cannot be downloaded.*model.pretrained=/path/to/camembert-base"):
        load_pretrained("almanach/camembert-base")
    assert time.time() - t0 < 10
    with pytest.raises(InputError, match="no such model folder"):
        load_pretrained(str(tmp_path / "missing" / "camembert"))


# --- training end to end ----------------------------------------------------------------------------------------------


def test_train_logs_a_servable_model_onnx_int8(tiny, small_build, mlflow_store, tmp_path):
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    from training.models.camembert import load_scorer
    from training.train import train

    cfg = tiny_config(tiny, small_build, tmp_path, "model.inference=onnx_int8", "experiment=camembert-test")
    result = train(cfg)
    client = MlflowClient()
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for key in ("validation_topic_macro_f1", "validation_stance_macro_f1", "validation_macro_f1_mean",
                "test_topic_macro_f1", "train_seconds", "onnx_int8_argmax_agreement_topic"):
        assert key in m, key
    # the headline is the evaluated model's, even though the curves logged at later steps
    assert m["validation_macro_f1_mean"] == pytest.approx(result["metrics"]["validation_macro_f1_mean"])
    # per-epoch curves
    curve = client.get_metric_history(run.info.run_id, "validation_macro_f1_mean")
    assert len({h.step for h in curve if h.step > 0}) >= 2
    assert client.get_metric_history(run.info.run_id, "train_loss")
    assert client.get_metric_history(run.info.run_id, "validation_stance_macro_f1")
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert not any("checkpoint" in a for a in artifacts)

    # the logged model answers both tasks for a raw article, through ONNX Runtime
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    raw = SEED.read_text(encoding="utf-8")
    out = model.predict(pd.DataFrame({"text": [raw]}))
    assert out.loc[0, "topic"] in cfg.data.topics
    assert out.loc[0, "stance"] in ("anti_occident", "neutre", "pro_occident")
    probs = out.filter(like="topic_proba_").to_numpy(dtype=float)
    assert probs.shape == (1, len(cfg.data.topics)) and probs.sum() == pytest.approx(1.0, abs=1e-5)

    # int8 ONNX vs the PyTorch weights it came from: the same decision on >= 99% of a sample
    pm = model.unwrap_python_model()
    assert pm.scorer.backend == "onnx_int8"
    from datasets import load_from_disk

    texts = list(load_from_disk(str(data_path(small_build)))["train"]["text"])[:200]
    onnx = pm.scorer.predict_proba(texts)
    torch_scorer = load_scorer(pm.scorer.model_dir, pm.meta, backend="pytorch")
    ref = torch_scorer.predict_proba(texts)
    for task in ("topic", "stance"):
        assert np.abs(onnx[task][1] - ref[task][1]).max() < 0.02
        # the same decision wherever PyTorch's is not a near tie (a random tiny encoder's topic head can sit
        # within 0.001 of uniform, where any rounding picks another class)
        top2 = np.sort(ref[task][1], axis=1)[:, -2:]
        decided = top2[:, 1] - top2[:, 0] >= 0.04
        agree = float((onnx[task][1].argmax(1) == ref[task][1].argmax(1))[decided].mean()) if decided.any() else 1.0
        assert agree >= 0.99, f"{task}: int8 agrees with PyTorch on {agree:.1%} of {decided.sum()} clear decisions"


def test_resume_continues_from_the_last_checkpoint(tiny, small_build, mlflow_store, tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from transformers import TrainerCallback

    from training.models import camembert_family, checkpoints
    from training.train import train

    class StopAfterFirstCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            self.step = state.global_step
            raise KeyboardInterrupt

    stop = StopAfterFirstCheckpoint()
    monkeypatch.setattr(camembert_family, "extra_callbacks", lambda: [stop])
    cfg = tiny_config(tiny, small_build, tmp_path, "experiment=camembert-resume")
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    client = MlflowClient()
    exp = client.get_experiment_by_name("camembert-resume")
    [killed] = client.search_runs([exp.experiment_id])
    assert killed.info.status == "KILLED"
    first = stop.step
    ckpt = checkpoints.last_complete_checkpoint(camembert_family.checkpoint_dir(cfg, data_path(small_build)))
    assert ckpt is not None and ckpt.name == f"checkpoint-{first}"

    monkeypatch.setattr(camembert_family, "extra_callbacks", lambda: [])
    resumed = tiny_config(tiny, small_build, tmp_path, "experiment=camembert-resume", "train.resume=true")
    result = train(resumed)
    m = result["metrics"]
    assert m["train_resumed_from_step"] == first
    assert m["train_global_step"] == 2 * first  # two epochs of `first` steps: the second epoch only was run
    history = client.get_metric_history(result["run_id"], "train_loss")
    assert history and min(h.step for h in history) > first
    evals = client.get_metric_history(result["run_id"], "validation_macro_f1_mean")
    assert min(h.step for h in evals if h.step > 0) == 2 * first
    assert not ckpt.parent.exists()  # checkpoints are removed once the model is saved


def test_a_pruned_trial_leaves_no_checkpoints(tiny, small_build, mlflow_store, tmp_path):
    """The sweep's trial_callback sees every evaluation; when it stops the trial, the checkpoints go too."""
    from training.models import camembert_family
    from training.train import train

    class Pruned(Exception):
        pass

    seen = []

    def report(step: int, value: float) -> None:
        seen.append((step, value))
        if len(seen) == 2:
            raise Pruned

    cfg = tiny_config(tiny, small_build, tmp_path, "experiment=camembert-prune")
    with pytest.raises(Pruned):
        train(cfg, trial_callback=report)
    assert len(seen) == 2 and seen[0][0] < seen[1][0] and all(0 <= v <= 1 for _, v in seen)
    assert not camembert_family.checkpoint_dir(cfg, data_path(small_build)).exists()


def test_checkpoint_folder_is_stable_across_a_resume(tiny, small_build, tmp_path):
    from training.models import camembert_family, checkpoints

    path = data_path(small_build)
    folder = camembert_family.checkpoint_dir(tiny_config(tiny, small_build, tmp_path), path)
    other = camembert_family.checkpoint_dir(tiny_config(tiny, small_build, tmp_path, "train.learning_rate=0.002"), path)
    same = camembert_family.checkpoint_dir(
        tiny_config(tiny, small_build, tmp_path, "train.resume=true", "train.num_threads=2"), path)
    assert folder == same and folder != other
    (folder / "checkpoint-3").mkdir(parents=True)
    assert checkpoints.last_complete_checkpoint(folder) is None  # no trainer_state.json: cut short
    (folder / "checkpoint-3" / "trainer_state.json").write_text("{}")
    (folder / "checkpoint-12").mkdir()
    (folder / "checkpoint-12" / "trainer_state.json").write_text("{}")
    assert checkpoints.last_complete_checkpoint(folder).name == "checkpoint-12"


def test_sigkill_mid_epoch_then_resume_and_cleanup(tiny, small_build, mlflow_store, tmp_path):
    """The hard case: SIGKILL (nothing can close the run) after the first checkpoint, mid-epoch. The README's
    cleanup command marks the orphan KILLED, and `train.resume=true` finishes from the checkpoint."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import mlflow

    _, _, build_tmp = small_build
    ckpts = tmp_path / "checkpoints"
    args = [*small_overrides(build_tmp), f"model.pretrained={tiny}", "model.max_length=64", "model.head_tokens=24",
            "train.max_train_rows=400", "train.max_eval_rows=100", "train.batch_size=8", "train.eval_steps=5",
            "train.num_threads=1", "train.epochs=2", f"train.output_dir={ckpts}", "experiment=kill9"]
    cmd = [sys.executable, "-m", "training.cli", "train", "configs/camembert-tiny.yaml", *args]
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(ckpts.glob("*/checkpoint-*/trainer_state.json")):
        assert p.poll() is None, "the training ended before its first checkpoint"
        time.sleep(0.2)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    first = sorted(int(c.name.split("-")[-1]) for c in ckpts.glob("*/checkpoint-*"))[0]
    assert list(mlflow.search_runs(experiment_names=["kill9"])["status"]) == ["RUNNING"]
    out = subprocess.run([sys.executable, "-m", "training.cli", "runs", "cleanup"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    out = subprocess.run(cmd + ["train.resume=true"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = mlflow.search_runs(experiment_names=["kill9"])
    assert sorted(runs["status"]) == ["FINISHED", "KILLED"]
    finished = runs[runs["status"] == "FINISHED"].iloc[0]
    assert finished["metrics.train_resumed_from_step"] >= first


def test_predict_and_serve_work_unchanged_with_a_camembert_champion(tiny, small_build, mlflow_store, tmp_path):
    """`vigie register`, `vigie predict` and `vigie serve` take a CamemBERT run exactly as a baseline one."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx

    from training.registry import register_best
    from training.train import train

    train(tiny_config(tiny, small_build, tmp_path, "experiment=camembert-serve", "train.epochs=1"))
    assert register_best(experiment="camembert-serve").promoted
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store}
    p = subprocess.run([sys.executable, "-m", "training.cli", "predict", str(SEED)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.splitlines()[0])["stance"] in ("anti_occident", "neutre", "pro_occident")

    from tests.test_serving import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "training.cli", "serve", "--port", str(port)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                if httpx.get(url + "/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        r = httpx.post(url + "/invocations", json={"dataframe_records": [{"text": SEED.read_text(encoding="utf-8")}]}, timeout=120)
        assert r.status_code == 200, r.text[:500]
        pred = r.json()["predictions"][0]
        assert pred["topic"] in small_build[0].data.topics and pred["stance"] is not None
        assert httpx.post(url + "/invocations", json={"dataframe_records": [{"text": ""}]}, timeout=60).status_code == 400
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
