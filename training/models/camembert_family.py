"""The CamemBERT family: its config, and `fit` = fine-tune one pretrained encoder with a head per task
(`camembert.py`) with the transformers Trainer (`camembert_trainer.py`), checkpointed for resume
(`checkpoints.py`), saved as a servable folder and scored through the serving code (`camembert.CamembertScorer`,
ONNX int8 included), so that the run's metrics describe what is served.

Servable folder: `encoder/` (transformers encoder + tokenizer), `heads.safetensors`, `meta.json`, and
`model.int8.onnx` when `model.inference=onnx_int8`. Importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

import contextlib
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Literal

from pydantic import Field

from training import distributed
from training.data.schema import TASKS
from training.errors import InputError
from training.models import checkpoints
from training.models.family import FitContext, FitResult, ModelConfig, write_meta

NAME = "camembert"


class CamembertModelConfig(ModelConfig):
    family: Literal["camembert"]
    pretrained: str = "almanach/camembert-base"  # hub name or local directory
    max_length: int = Field(256, ge=8, le=512)
    truncation: Literal["head", "head_tail"] = "head"
    head_tokens: int = Field(128, ge=1)  # head_tail: tokens kept from the start, the rest from the end
    dropout: float = Field(0.1, ge=0, lt=1)
    task_weights: dict[Literal["topic", "stance"], float] = Field(default_factory=lambda: {"topic": 1.0, "stance": 1.0})
    class_weight: Literal["balanced"] | None = "balanced"
    inference: Literal["pytorch", "onnx_int8"] = "pytorch"


def pip_requirements(onnx: bool) -> list[str]:
    pkgs = ["torch", "transformers", "tokenizers", "safetensors", "mlflow", "numpy", "pandas", "scipy"]
    if onnx:
        pkgs.append("onnxruntime")
    # "2.13.0+cpu" -> "2.13.0": the local build tag is not on PyPI; the serving host picks its own build
    return [f"{p}=={version(p).split('+')[0]}" for p in pkgs]


def checkpoint_dir(cfg, data_path: Path) -> Path:
    return checkpoints.checkpoint_dir(cfg, data_path, cfg.model.pretrained)


def extra_callbacks() -> list:
    """Extra TrainerCallbacks (none by default; tests patch this to interrupt a run after its first checkpoint)."""
    return []


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class CamembertFamily:
    name = NAME
    config_class = CamembertModelConfig

    def check(self, model_cfg: CamembertModelConfig) -> None:
        """Unreachable weights fail here, before any data is built or run opened (and before torch is imported)."""
        from training.models.camembert import resolve_pretrained

        resolve_pretrained(model_cfg.pretrained)

    def tasks(self, model_cfg: CamembertModelConfig) -> list[str]:
        return list(TASKS)

    def describe(self, model_cfg: CamembertModelConfig) -> str:
        return f"{NAME}-{Path(model_cfg.pretrained).name}"

    def fit(self, ctx: FitContext) -> FitResult:
        import torch
        import transformers

        from training.data.dataset import multitask_rows
        from training.models import camembert_trainer as ct
        from training.models.camembert import balanced_class_weights, build_model, load_pretrained

        mcfg, tcfg, dsd = ctx.cfg.model, ctx.cfg.train, ctx.dsd
        if tcfg.num_threads:
            torch.set_num_threads(tcfg.num_threads)
        transformers.set_seed(tcfg.seed)
        t_start = time.time()
        tokenizer, encoder = load_pretrained(mcfg.pretrained)

        train_rows, train_y = multitask_rows(dsd["train"], ctx.tasks, tcfg.max_train_rows, mask_outside=False)
        heads = []
        for t in ctx.tasks:
            if len(set(train_y[t][train_y[t] >= 0].tolist())) < 2:
                _say(f"[{t}] no head: fewer than 2 classes among {int((train_y[t] >= 0).sum())} labelled training rows")
            else:
                heads.append(t)
        if not heads:
            raise InputError("no task has at least 2 classes in the training rows: nothing to train")
        train_y = {t: train_y[t] for t in heads}
        val_rows, val_y = multitask_rows(dsd["validation"], heads, tcfg.max_eval_rows, mask_outside=True)
        class_weights = {t: balanced_class_weights(train_y[t], len(ctx.labels[t])) if mcfg.class_weight == "balanced"
                         else None for t in heads}
        _say(f"tokenising {len(train_rows)} training and {len(val_rows)} validation texts "
             f"(max_length {mcfg.max_length}, {mcfg.truncation}) ...")
        train_ds = ct.tokenized(dsd["train"], train_rows, train_y, tokenizer, mcfg)
        val_ds = ct.tokenized(dsd["validation"], val_rows, val_y, tokenizer, mcfg)
        model = build_model(encoder, {t: len(ctx.labels[t]) for t in heads}, dropout=mcfg.dropout,
                            task_weights=mcfg.task_weights, class_weights=class_weights)

        ckpt = checkpoint_dir(ctx.cfg, ctx.data_path)
        # decided once, by the main process, for every process: they share the folder (and must resume together)
        resume_from = distributed.from_main(lambda: checkpoints.resume_point(ckpt, tcfg.resume))
        bf16 = ct.use_bf16(tcfg.bf16)
        args = ct.training_arguments(tcfg, ckpt, len(train_ds), bf16)
        curves, trial_report = ct.callbacks(ctx.log_metrics, ctx.trial_callback)
        trainer = ct.build_trainer(model, tokenizer, args, train_ds, val_ds, heads, ctx.labels,
                                   [curves, trial_report, *extra_callbacks()], tcfg.early_stopping_patience)
        device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
        world, batch = distributed.world_size(), ct.effective_batch_size(tcfg)
        ctx.log_metrics({"train_world_size": world, "train_effective_batch_size": batch})
        _say(f"training {'+'.join(heads)} heads on {len(train_ds)} rows, {tcfg.epochs:g} epochs x "
             f"{ct.steps_per_epoch(len(train_ds), tcfg)} steps of {batch} rows ({world} x {device}), "
             f"{'bf16 autocast' if bf16 else 'fp32'}; checkpoints in {ckpt}")
        t0 = time.time()
        try:
            with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; stdout carries the run summary
                out = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        except BaseException:
            if trial_report.raised:  # a pruned sweep trial is not resumed: do not leave its checkpoints behind
                checkpoints.remove(ckpt)
            raise  # a crash or Ctrl-C keeps them for train.resume=true
        train_seconds = time.time() - t0
        state = trainer.state
        distributed.barrier()  # every process has loaded the best checkpoint before the main one removes them
        if not distributed.is_main_process():  # the other processes are done once training is
            return FitResult(scorer=None, tasks=[], pip_requirements=[])

        scorer, extra = self._save(trainer.model, tokenizer, ctx, heads, val_texts=list(dsd["validation"].select(val_rows)["text"]))
        extra.update({
            "train_seconds": train_seconds,
            "fit_seconds": time.time() - t_start,
            "train_global_step": float(state.global_step),
            "train_epochs_done": float(state.epoch or 0.0),
            "train_rows": float(len(train_ds)),
            "train_final_loss": float(out.training_loss),
            "train_resumed_from_step": float(checkpoints.step_of(resume_from)),
        })
        if getattr(state, "best_global_step", None):
            extra["train_best_step"] = float(state.best_global_step)
        checkpoints.remove(ckpt)
        _say(f"trained in {train_seconds:.0f} s ({state.global_step} steps); checkpoints in {ckpt} removed")
        return FitResult(scorer=scorer, tasks=heads, pip_requirements=pip_requirements(mcfg.inference == "onnx_int8"),
                         last_step=int(state.global_step), extra_metrics=extra)

    def _save(self, model, tokenizer, ctx: FitContext, heads: list[str], val_texts: list[str]):
        """The servable folder (encoder + tokenizer, heads, meta, and the int8 ONNX graph when asked for), and
        the scorer loaded back from it. With ONNX: how far int8 moved the validation decisions from fp32."""
        from training.models.camembert import export_onnx_int8, load_scorer, save_model

        mcfg = ctx.cfg.model
        model.eval()
        save_model(model, tokenizer, ctx.model_dir)
        extra: dict[str, float] = {}
        onnx = mcfg.inference == "onnx_int8"
        if onnx:
            t1 = time.time()
            export_onnx_int8(model, ctx.model_dir)
            _say(f"exported and quantised to ONNX int8 in {time.time() - t1:.1f} s")
        meta = write_meta(ctx.model_dir, NAME, ctx.labels, heads, ctx.boilerplate, extra={
            "max_length": mcfg.max_length, "truncation": mcfg.truncation, "head_tokens": mcfg.head_tokens,
            "inference": mcfg.inference, "pretrained": mcfg.pretrained,
            "transformers": version("transformers"), "torch": version("torch")})
        scorer = load_scorer(ctx.model_dir, meta)
        if onnx and val_texts:
            got = scorer.predict_proba(val_texts)
            want = load_scorer(ctx.model_dir, meta, backend="pytorch").predict_proba(val_texts)
            for t in heads:
                extra[f"onnx_int8_argmax_agreement_{t}"] = float((want[t][1].argmax(1) == got[t][1].argmax(1)).mean())
        return scorer, extra

    def load(self, model_dir: Path, meta: dict):
        from training.models.camembert import load_scorer

        return load_scorer(Path(model_dir), meta)


FAMILY = CamembertFamily()
