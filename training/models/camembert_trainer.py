"""Trainer set-up of the CamemBERT family: tokenised `datasets`, `DataCollatorWithPadding`, `TrainingArguments`,
the validation metrics the Trainer keeps the best checkpoint by, and two callbacks: per-step curves into the run
(through the `log_metrics` the orchestration passes in) and sweep pruning reports. The Trainer's own MLflow
integration is off (`report_to=[]`): curves are named like every other vigie metric, and checkpoints are never
logged as artifacts."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from training import distributed
from training.errors import InputError
from training.models.camembert import encode

LABEL_COLUMNS = {"topic": "topic_labels", "stance": "stance_labels"}  # the model's forward() arguments


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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



def tokenized(split, rows: np.ndarray, labels: dict[str, np.ndarray], tokenizer, mcfg):
    """The rows of a DatasetDict split as a `datasets.Dataset` of token ids, attention masks and one label
    column per task (-1 where a row has no label for it, and for tasks without a head)."""
    ds = split.select(rows).select_columns(["text"])

    def tokenize(batch: dict) -> dict:
        ids = encode(tokenizer, batch["text"], mcfg.max_length, mcfg.truncation, mcfg.head_tokens)
        return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}

    # in memory: a cache file would land inside the built dataset's folder
    ds = ds.map(tokenize, batched=True, remove_columns=["text"], keep_in_memory=True)
    for task, column in LABEL_COLUMNS.items():
        ds = ds.add_column(column, labels[task].tolist() if task in labels else [-1] * len(ds))
    return ds


def compute_metrics(heads: list[str], labels: dict[str, list[str]]) -> Callable:
    """The Trainer's evaluation: macro-F1 and accuracy per head on its labelled rows, and their mean
    (`macro_f1_mean`: the metric the best checkpoint is chosen by, as the registry chooses runs)."""
    from scipy.special import softmax

    from training.evaluate import evaluate_task

    def compute(pred) -> dict[str, float]:
        logits = pred.predictions if isinstance(pred.predictions, (tuple, list)) else (pred.predictions,)
        label_ids = pred.label_ids if isinstance(pred.label_ids, (tuple, list)) else (pred.label_ids,)
        by_column = dict(zip(LABEL_COLUMNS.values(), label_ids))
        out: dict[str, float] = {}
        for task, lg in zip(heads, logits):
            y = np.asarray(by_column[LABEL_COLUMNS[task]])
            keep = y >= 0
            if not keep.any():
                continue
            m, _ = evaluate_task("validation", task, y[keep], softmax(np.asarray(lg, dtype=np.float64)[keep], axis=1),
                                 labels[task], intervals=False)
            out[f"{task}_macro_f1"] = m[f"validation_{task}_macro_f1"]
            out[f"{task}_accuracy"] = m[f"validation_{task}_accuracy"]
        f1s = [v for k, v in out.items() if k.endswith("_macro_f1")]
        out["macro_f1_mean"] = float(np.mean(f1s)) if f1s else 0.0
        return out

    return compute


def callbacks(log_metrics: Callable[..., None], trial_callback: Callable[[int, float], None] | None) -> list:
    """[curves, trial report]. `trial_report.raised` tells the caller that the sweep stopped the trial."""
    from transformers import TrainerCallback

    class Curves(TrainerCallback):
        """Training curves, stepped by optimizer step, from process zero only."""

        def _log(self, state, metrics: dict) -> None:
            if state.is_world_process_zero and metrics:
                log_metrics({k: float(v) for k, v in metrics.items()}, step=int(state.global_step))

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            self._log(state, {f"train_{k}": logs[k] for k in ("loss", "learning_rate", "grad_norm") if k in logs})

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
        """Reports each evaluation to the sweep (which may stop the trial by raising)."""

        raised = False

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if trial_callback is not None and metrics and "eval_macro_f1_mean" in metrics:
                try:
                    trial_callback(int(state.global_step), float(metrics["eval_macro_f1_mean"]))
                except BaseException:
                    self.raised = True
                    raise

    return [Curves(), TrialReport()]


def effective_batch_size(tcfg) -> int:
    """Rows per optimizer step: the per-device batch x gradient accumulation x the processes training together."""
    return tcfg.batch_size * tcfg.gradient_accumulation * distributed.world_size()


def steps_per_epoch(n_rows: int, tcfg) -> int:
    return max(1, math.ceil(n_rows / effective_batch_size(tcfg)))


def training_arguments(tcfg, output_dir: Path, n_rows: int, bf16: bool):
    import torch
    from transformers import TrainingArguments

    strategy = "steps" if tcfg.eval_steps else "epoch"
    return TrainingArguments(
        output_dir=str(output_dir),
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
        logging_steps=max(1, min(50, steps_per_epoch(n_rows, tcfg) // 5)),
        report_to=[],
        seed=tcfg.seed,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        label_names=list(LABEL_COLUMNS.values()),
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )


def build_trainer(model, tokenizer, args, train_ds, eval_ds, heads: list[str], labels: dict[str, list[str]],
                  callbacks: list, early_stopping_patience: int | None):
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer

    if early_stopping_patience:
        callbacks = [*callbacks, EarlyStoppingCallback(early_stopping_patience=early_stopping_patience)]
    return Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                   data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=compute_metrics(heads, labels),
                   callbacks=callbacks)
