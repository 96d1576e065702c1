"""Fit the baseline pipelines of a config on a DatasetDict and save them as a servable model folder."""

from __future__ import annotations

import json
import sys
import time
from importlib.metadata import version
from pathlib import Path

import joblib

from training.config import Config
from training.data.cleaning import BoilerplateModel
from training.models import FitResult
from training.models.baseline import calibrate_task, features, fit_task, proba_full, top_features
from training.models.pyfunc import write_meta


def pip_requirements() -> list[str]:
    return [f"{p}=={version(p)}" for p in ("mlflow", "scikit-learn", "scipy", "numpy", "pandas", "joblib", "pyarrow")]


def fit_and_predict(cfg: Config, dsd, labels: dict[str, list[str]], tasks: list[str], model_dir: Path, data_path: Path, trial_callback=None) -> FitResult:
    from training.train import task_data

    proba: dict[str, dict] = {}
    feats: dict = {}
    extra: dict[str, float] = {}
    trained: list[str] = []
    for task in tasks:
        tcfg = getattr(cfg.model, task)
        train = task_data(dsd["train"], task, cfg.train.max_train_rows)
        if len(set(train.y.tolist())) < 2:
            print(f"[{task}] skipped: fewer than 2 classes among {len(train.y)} labelled training rows", file=sys.stderr)
            continue
        t0 = time.time()
        print(f"[{task}] fitting {tcfg.classifier} on {len(train.y)} rows ...", file=sys.stderr, flush=True)
        pipe = fit_task(tcfg, train.texts, train.y, seed=cfg.train.seed, n_jobs=cfg.train.num_threads or -1,
                        dates=train.dates)
        val = task_data(dsd["validation"], task, cfg.train.max_eval_rows)
        X_val = features(pipe, val.texts, val.dates)
        calibrate_task(pipe, X_val, val.y)
        extra[f"{task}_fit_seconds"] = time.time() - t0
        proba[task] = {}
        if len(val.y):
            proba[task]["validation"] = proba_full(pipe, X_val, len(labels[task]))
        for split in (s for s in cfg.evaluate.splits if s != "validation"):  # validation: scored above
            d = task_data(dsd[split], task, cfg.train.max_eval_rows)
            if len(d.y):
                proba[task][split] = proba_full(pipe, features(pipe, d.texts, d.dates), len(labels[task]))
        feats[task] = top_features(pipe, labels[task], cfg.evaluate.top_features)
        # zlib level 1: as small as level 3 within 3 % here, in two thirds of the time (benchmarks.md)
        joblib.dump(pipe, model_dir / f"{task}.joblib", compress=1)
        trained.append(task)
        print(f"[{task}] done in {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    boiler = json.loads((data_path / "boilerplate.json").read_text()) if (data_path / "boilerplate.json").exists() else None
    if boiler is not None and not BoilerplateModel.from_json(boiler).lines:
        boiler = None
    write_meta(model_dir, "baseline", labels, trained, boiler)
    return FitResult(tasks=trained, proba=proba, pip_requirements=pip_requirements(), top_features=feats, extra_metrics=extra)
