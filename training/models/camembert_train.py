"""Fine-tune the CamemBERT family of a config with the transformers `Trainer` and save a servable model folder.

Same contract as `baseline_train.fit_and_predict`: the caller (`training/train.py`) holds the MLflow run, evaluates
the returned probabilities and logs the model folder with the shared pyfunc. What this module adds to the run:
per-evaluation curves (`validation_topic_macro_f1`, `validation_stance_macro_f1`, `validation_macro_f1_mean`,
`validation_loss`, `train_loss`, `train_learning_rate`, stepped by optimizer step) logged by our own callback
(the Trainer's MLflow integration is off: `report_to=[]`, and checkpoints are never logged as artifacts).

Checkpoints go to `train.output_dir/<run name or model-data-fingerprint>-<config hash>`; `train.resume=true` picks up
the last complete one there (without it, a rerun clears them and starts over). They are removed once the trained
model is saved: they exist to survive a crash, and the model itself travels with the MLflow run.

The probabilities returned for evaluation come from the saved folder through `load_scorer` — the very code that
serves the logged model (ONNX int8 included), so the metrics describe what is served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

from training.config import Config
from training.data.article import InputError
from training.models import FitResult
from training.models.camembert import (
    balanced_class_weights,
    build_model,
    encode,
    export_onnx_int8,
    load_pretrained,
    load_scorer,
    resolve_pretrained,
    save_model,
)
from training.models.pyfunc import write_meta

LABEL_NAMES = ["topic_labels", "stance_labels"]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pip_requirements(onnx: bool) -> list[str]:
    pkgs = ["torch", "transformers", "tokenizers", "safetensors", "mlflow", "numpy", "pandas"]
    if onnx:
        pkgs.append("onnxruntime")
    # "2.13.0+cpu" -> "2.13.0": the local build tag is not on PyPI; the serving host picks its own build
    return [f"{p}=={version(p).split('+')[0]}" for p in pkgs]


def extra_callbacks() -> list:
    """Extra TrainerCallbacks (none by default; tests patch this to interrupt a run after its first checkpoint)."""
    return []


# --- rows ------------------------------------------------------------------------------------------------------------


def select_rows(split, tasks: list[str], max_rows: int | None,
                mask_outside: bool) -> tuple[list[str], dict[str, np.ndarray]]:
    """The union of each task's first max_rows labelled rows (the rows `training.train.task_data` picks).
    mask_outside: a row keeps a task's label only if it is among that task's picked rows (evaluation: exactly
    the rows train.py evaluates); else every label the picked rows carry is kept (training)."""
    ys = {t: np.asarray(split[t]) for t in tasks}
    picked = {}
    for t, y in ys.items():
        keep = np.flatnonzero(y >= 0)
        picked[t] = keep[:max_rows] if max_rows is not None else keep
    rows = np.unique(np.concatenate([picked[t] for t in tasks])) if tasks else np.array([], dtype=int)
    labels = {}
    for t, y in ys.items():
        lab = y[rows].astype(np.int64)
        if mask_outside:
            lab[~np.isin(rows, picked[t])] = -1
        labels[t] = lab
    texts = list(split.select(rows)["text"]) if len(rows) else []
    return texts, labels


def _dataset(seqs: list[list[int]], labels: dict[str, np.ndarray]):
    import torch

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(seqs)

        def __getitem__(self, i):
            item = {"input_ids": seqs[i]}
            for t in ("topic", "stance"):
                item[f"{t}_labels"] = int(labels[t][i]) if t in labels else -1
            return item

    return Rows()


def _collator(pad_id: int):
    import torch

    from training.models.camembert import pad_batch

    def collate(items: list[dict]) -> dict:
        ids, mask = pad_batch([it["input_ids"] for it in items], pad_id)
        batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        for name in LABEL_NAMES:
            batch[name] = torch.tensor([it[name] for it in items], dtype=torch.long)
        return batch

    return collate


# --- settings ---------------------------------------------------------------------------------------------------------


def use_bf16(setting) -> bool:
    """bf16 autocast. True: wherever the device has native bf16 (a GPU that supports it, a CPU with AVX512-BF16 or
    AMX). auto: on such a GPU, and on a CPU only with AMX tiles: with AVX512-BF16 alone, autocast measured 1.5-2x
    slower than fp32 for camembert-base (training steps and inference; bench/bench_camembert_inference.py)."""
    import torch

    if setting is False:
        return False
    if torch.cuda.is_available():
        supported = fast = torch.cuda.is_bf16_supported()
    else:
        cpu = getattr(torch, "cpu", None)
        amx = bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)())
        supported = amx or bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)())
        fast = amx
    if setting is True and not supported:
        raise InputError("train.bf16=true: this machine has no native bf16 support; set train.bf16=auto or false")
    return supported if setting is True else fast


def checkpoint_dir(cfg: Config, data_path: Path) -> Path:
    """Stable across a crash and its `train.resume=true` rerun; different for another config or dataset (so a resume
    never picks up the checkpoints of another model, even under the same run name)."""
    stats_file = Path(data_path) / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    fp = stats.get("fingerprint", "nodata")[:8]
    keyed = {"model": cfg.model.model_dump(mode="json"),
             "train": cfg.train.model_dump(mode="json", exclude={"resume", "num_threads", "output_dir"}),
             "data": fp}
    h = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:8]
    base = cfg.run_name or f"{Path(cfg.model.pretrained).name}-{cfg.data.name}-{fp}"
    return Path(cfg.train.output_dir) / f"{base}-{h}"


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The highest checkpoint-N holding trainer_state.json (a checkpoint cut short by a kill has none)."""
    if not folder.is_dir():
        return None
    found = []
    for p in folder.iterdir():
        step = p.name.removeprefix("checkpoint-")
        if p.is_dir() and p.name.startswith("checkpoint-") and step.isdigit() and (p / "trainer_state.json").exists():
            found.append((int(step), p))
    return max(found)[1] if found else None


# --- callbacks --------------------------------------------------------------------------------------------------------


def _callbacks(trial_callback):
    from transformers import TrainerCallback

    class MlflowCurves(TrainerCallback):
        """Training curves into the caller's active MLflow run (process zero only)."""

        def _log(self, state, metrics: dict) -> None:
            import mlflow

            if state.is_world_process_zero and metrics and mlflow.active_run() is not None:
                mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=int(state.global_step))

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            m = {}
            if "loss" in logs:
                m["train_loss"] = logs["loss"]
            if "learning_rate" in logs:
                m["train_learning_rate"] = logs["learning_rate"]
            if "grad_norm" in logs:
                m["train_grad_norm"] = logs["grad_norm"]
            self._log(state, m)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            metrics = metrics or {}
            m = {f"validation_{k.removeprefix('eval_')}": v for k, v in metrics.items()
                 if k.endswith(("_macro_f1", "macro_f1_mean", "_accuracy")) or k == "eval_loss"}
            m["train_epoch"] = state.epoch or 0.0
            self._log(state, m)
            if "eval_macro_f1_mean" in metrics:
                _say(f"step {state.global_step} (epoch {state.epoch:.2f}): validation_macro_f1_mean "
                     f"{metrics['eval_macro_f1_mean']:.4f}")

    class TrialReport(TrainerCallback):
        """Reports each evaluation to the sweep; `raised` tells fit_and_predict that the sweep stopped the trial."""

        raised = False

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if trial_callback is not None and metrics and "eval_macro_f1_mean" in metrics:
                try:
                    trial_callback(int(state.global_step), float(metrics["eval_macro_f1_mean"]))
                except BaseException:
                    self.raised = True
                    raise

    return [MlflowCurves(), TrialReport()]


def _compute_metrics(heads: list[str], labels: dict[str, list[str]]):
    from training.evaluate import evaluate_task
    from training.models.camembert import _softmax

    def compute(pred) -> dict[str, float]:
        logits = pred.predictions if isinstance(pred.predictions, (tuple, list)) else (pred.predictions,)
        label_ids = pred.label_ids if isinstance(pred.label_ids, (tuple, list)) else (pred.label_ids,)
        by_name = dict(zip(LABEL_NAMES, label_ids))
        out: dict[str, float] = {}
        f1s = []
        for task, lg in zip(heads, logits):
            y = np.asarray(by_name[f"{task}_labels"])
            keep = y >= 0
            if not keep.any():
                continue
            p = _softmax(np.asarray(lg, dtype=np.float64)[keep])
            m, _ = evaluate_task("validation", task, y[keep], p, labels[task])
            out[f"{task}_macro_f1"] = m[f"validation_{task}_macro_f1"]
            out[f"{task}_accuracy"] = m[f"validation_{task}_accuracy"]
            f1s.append(out[f"{task}_macro_f1"])
        out["macro_f1_mean"] = float(np.mean(f1s)) if f1s else 0.0
        return out

    return compute


def _boilerplate(data_path: Path) -> dict | None:
    """The boilerplate lines the data build removed from the training texts: the served model removes them from raw
    inputs too (as the baseline does), so that a raw scraped page reads like the texts the model was trained on."""
    from training.data.cleaning import BoilerplateModel

    f = Path(data_path) / "boilerplate.json"
    boiler = json.loads(f.read_text()) if f.exists() else None
    if boiler is not None and not BoilerplateModel.from_json(boiler).lines:
        boiler = None
    return boiler


# --- fit --------------------------------------------------------------------------------------------------------------


def fit_and_predict(cfg: Config, dsd, labels: dict[str, list[str]], tasks: list[str], model_dir: Path, data_path: Path,
                    trial_callback=None) -> FitResult:
    # first of all, before torch and the Trainer take seconds to import: are the pretrained weights here at all?
    resolve_pretrained(cfg.model.pretrained)

    import torch
    import transformers
    from transformers import EarlyStoppingCallback, Trainer, TrainingArguments

    from training.evaluate import evaluate_task
    from training.train import selection_metric, task_data

    mcfg, tcfg = cfg.model, cfg.train
    model_dir = Path(model_dir)
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    transformers.set_seed(tcfg.seed)
    t_start = time.time()

    tokenizer, encoder = load_pretrained(mcfg.pretrained)

    train_texts, train_y = select_rows(dsd["train"], tasks, tcfg.max_train_rows, mask_outside=False)
    heads = []
    for t in tasks:
        classes = sorted(set(train_y[t][train_y[t] >= 0].tolist()))
        if len(classes) < 2:
            _say(f"[{t}] no head: fewer than 2 classes among {int((train_y[t] >= 0).sum())} labelled training rows")
        else:
            heads.append(t)
    if not heads:
        raise InputError("no task has at least 2 classes in the training rows: nothing to train")
    train_y = {t: train_y[t] for t in heads}
    val_texts, val_y = select_rows(dsd["validation"], heads, tcfg.max_eval_rows, mask_outside=True)
    class_weights = {t: balanced_class_weights(train_y[t], len(labels[t])) if mcfg.class_weight == "balanced" else None
                     for t in heads}

    _say(f"tokenising {len(train_texts)} training and {len(val_texts)} validation texts "
         f"(max_length {mcfg.max_length}, {mcfg.truncation}) ...")
    train_seqs = encode(tokenizer, train_texts, mcfg.max_length, mcfg.truncation, mcfg.head_tokens)
    val_seqs = encode(tokenizer, val_texts, mcfg.max_length, mcfg.truncation, mcfg.head_tokens)

    model = build_model(encoder, {t: len(labels[t]) for t in heads}, dropout=mcfg.dropout,
                        task_weights=mcfg.task_weights, class_weights=class_weights)

    ckpt = checkpoint_dir(cfg, data_path)
    resume_from = None
    last = last_complete_checkpoint(ckpt)
    if tcfg.resume:
        if last is None:
            _say(f"train.resume=true but no complete checkpoint in {ckpt}: training from the start")
        else:
            resume_from = last
            _say(f"resuming from {last}")
    elif ckpt.exists() and any(p.name.startswith("checkpoint-") for p in ckpt.iterdir()):
        _say(f"removing the checkpoints of an earlier run in {ckpt} (train.resume=true would continue it)")
        for p in ckpt.iterdir():
            if p.is_dir() and p.name.startswith("checkpoint-"):
                shutil.rmtree(p)

    bf16 = use_bf16(tcfg.bf16)
    cuda = torch.cuda.is_available()
    dist = torch.distributed
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    steps_per_epoch = max(1, math.ceil(len(train_seqs) / (tcfg.batch_size * tcfg.gradient_accumulation * world)))
    strategy = "steps" if tcfg.eval_steps else "epoch"
    args = TrainingArguments(
        output_dir=str(ckpt),
        per_device_train_batch_size=tcfg.batch_size,
        per_device_eval_batch_size=tcfg.eval_batch_size,
        gradient_accumulation_steps=tcfg.gradient_accumulation,
        num_train_epochs=tcfg.epochs,
        learning_rate=tcfg.learning_rate,
        lr_scheduler_type=tcfg.lr_scheduler,
        warmup_steps=float(tcfg.warmup_ratio),  # transformers 5: a float in [0, 1) is a ratio of the total steps
        weight_decay=tcfg.weight_decay,
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=tcfg.eval_steps,
        save_steps=tcfg.eval_steps or 500,
        save_total_limit=tcfg.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1_mean",
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=max(1, min(50, steps_per_epoch // 5)),
        report_to=[],
        seed=tcfg.seed,
        bf16=bf16,
        use_cpu=not cuda,
        label_names=list(LABEL_NAMES),
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )
    callbacks = _callbacks(trial_callback)
    trial_report = callbacks[1]
    if tcfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=tcfg.early_stopping_patience))
    trainer = Trainer(
        model=model, args=args, train_dataset=_dataset(train_seqs, train_y), eval_dataset=_dataset(val_seqs, val_y),
        data_collator=_collator(tokenizer.pad_token_id), compute_metrics=_compute_metrics(heads, labels),
        callbacks=callbacks + extra_callbacks(),
    )
    _say(f"training {'+'.join(heads)} heads on {len(train_seqs)} rows, "
         f"{tcfg.epochs:g} epochs x {steps_per_epoch} steps, "
         f"{'bf16 autocast' if bf16 else 'fp32'} on {'cuda' if cuda else f'cpu ({torch.get_num_threads()} threads)'}; "
         f"checkpoints in {ckpt}")
    t0 = time.time()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; stdout carries the run summary
            out = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except BaseException:
        if trial_report.raised:  # a pruned sweep trial is not resumed: do not leave its checkpoints behind
            shutil.rmtree(ckpt, ignore_errors=True)
        raise  # a crash or Ctrl-C keeps them for train.resume=true
    train_seconds = time.time() - t0
    state = trainer.state
    model = trainer.model
    if not trainer.is_world_process_zero():  # the other ranks of a distributed run are done once training is
        return FitResult(tasks=[], proba={}, pip_requirements=[])

    # the servable folder: encoder + tokenizer, heads, meta (and the int8 ONNX graph when asked for)
    model.eval()
    save_model(model, tokenizer, model_dir)
    meta_extra = {"max_length": mcfg.max_length, "truncation": mcfg.truncation, "head_tokens": mcfg.head_tokens,
                  "inference": mcfg.inference, "pretrained": mcfg.pretrained,
                  "transformers": version("transformers"), "torch": version("torch")}
    onnx = mcfg.inference == "onnx_int8"
    if onnx:
        t1 = time.time()
        export_onnx_int8(model, model_dir)
        _say(f"exported and quantised to ONNX int8 in {time.time() - t1:.1f} s")
    write_meta(model_dir, "camembert", labels, heads=heads, boilerplate=_boilerplate(data_path), extra=meta_extra)
    meta = json.loads((model_dir / "meta.json").read_text())

    # probabilities from the saved folder, through the serving code
    t1 = time.time()
    scorer = load_scorer(model_dir, meta)
    proba: dict[str, dict[str, np.ndarray]] = {t: {} for t in heads}
    extra: dict[str, float] = {}
    for split in dict.fromkeys(("validation", *cfg.evaluate.splits)):
        per_task = {t: task_data(dsd[split], t, tcfg.max_eval_rows) for t in heads}
        ids = list(dict.fromkeys(i for d in per_task.values() for i in d.ids))
        if not ids:
            continue
        text_of = {i: tx for d in per_task.values() for i, tx in zip(d.ids, d.texts)}
        texts = [text_of[i] for i in ids]
        pos = {i: k for k, i in enumerate(ids)}
        got = scorer.predict_proba(texts)
        for t, d in per_task.items():
            if len(d.y):
                proba[t][split] = got[t][1][[pos[i] for i in d.ids]]
        if onnx and split == "validation":  # how far int8 moved the decisions from the fp32 model
            want = load_scorer(model_dir, meta, backend="pytorch").predict_proba(texts)
            for t in heads:
                extra[f"onnx_int8_argmax_agreement_{t}"] = float((want[t][1].argmax(1) == got[t][1].argmax(1)).mean())
    predict_seconds = time.time() - t1

    extra.update({
        "train_seconds": train_seconds,
        "predict_seconds": predict_seconds,
        "fit_seconds": time.time() - t_start,
        "train_global_step": float(state.global_step),
        "train_epochs_done": float(state.epoch or 0.0),
        "train_rows": float(len(train_seqs)),
        "train_final_loss": float(out.training_loss),
        "train_resumed_from_step": float(int(resume_from.name.split("-")[-1]) if resume_from else 0),
    })
    if getattr(state, "best_global_step", None):
        extra["train_best_step"] = float(state.best_global_step)

    # The curves put validation_*_macro_f1 at steps > 0; train.py logs the final values at step 0, which MLflow
    # does not treat as the latest. Log the final model's values once more, after the last step, so that the run's
    # headline (and the registry gate that reads it) is the evaluated model, not the last epoch.
    import mlflow

    if mlflow.active_run() is not None:
        final = {}
        for t in heads:
            d = task_data(dsd["validation"], t, tcfg.max_eval_rows)
            if len(d.y):
                m, _ = evaluate_task("validation", t, d.y, proba[t]["validation"], labels[t])
                final[f"validation_{t}_macro_f1"] = m[f"validation_{t}_macro_f1"]
        mean = selection_metric(final, heads)
        if mean is not None:
            final["validation_macro_f1_mean"] = mean
        if final:
            mlflow.log_metrics(final, step=int(state.global_step) + 1)

    # the checkpoints were there to survive a crash; the trained model is saved (and logged by the caller) now.
    # Keeping them would pile up ~1.3 GB per camembert-base checkpoint for every run and sweep trial.
    shutil.rmtree(ckpt, ignore_errors=True)
    _say(f"trained in {train_seconds:.0f} s ({state.global_step} steps); checkpoints in {ckpt} removed")
    return FitResult(tasks=heads, proba=proba, pip_requirements=pip_requirements(onnx), extra_metrics=extra)
