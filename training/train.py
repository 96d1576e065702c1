"""`vigie train`: dataset -> fitted model -> evaluation -> one MLflow run with everything a reviewer needs.

The config's `model.family` names a family in the table of `models/families.py`; this module only talks to it
through the `Family` protocol (`models/family.py`): check, fit, and the scorer fit returns. Everything else —
loading the dataset, scoring the evaluation splits with that scorer, metrics and figures, what is logged and how —
is shared, so runs of every family line up in the MLflow UI and compete under the same registry gate.

Under `torchrun` / `accelerate launch` (`distributed.py`), the main process builds a missing dataset while the others
wait, and it alone opens the run and logs; the others train alongside it and log nothing.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from training import distributed, tracking
from training.config import Config, flatten
from training.data.dataset import (
    TaskData,
    dated_sources,
    label_names,
    load_built,
    multitask_rows,
    read_boilerplate,
    task_data,
)
from training.evaluate import (
    evaluate_task,
    metric_labels,
    plot_calibration,
    plot_confusion,
    plot_precision_recall,
    selection_metric,
    worst_examples,
    write_report,
)
from training.models import families
from training.models.contract import INPUT_COLUMNS, INPUT_EXAMPLE, output_columns
from training.models.family import FitContext, Scorer
from training.models.pyfunc import VigieModel

SPLIT_CONTEXT = {"train": "training", "validation": "validation", "test": "testing"}  # mlflow.data input contexts


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_name(cfg: Config, stats: dict) -> str:
    if cfg.run_name:
        return cfg.run_name
    desc = families.get(cfg.model.family).describe(cfg.model)
    return f"{desc}-{cfg.data.name}-{stats['fingerprint'][:8]}-{time.strftime('%Y%m%d-%H%M%S')}"


def score_splits(scorer: Scorer, dsd, tasks: list[str], splits: list[str], max_rows: int | None, dated: bool = False
                 ) -> dict[str, dict[str, tuple[TaskData, np.ndarray]]]:
    """task -> split -> (its labelled rows, the scorer's probabilities on them). Each split is scored once, on
    the union of the tasks' rows (`multitask_rows`). dated=False: from the content alone, as the model is served
    to any source whose dates it did not learn (the headline figures); True: with the rows' dates (every row
    of the build is from a source whose dates the model learned)."""
    out: dict[str, dict] = {t: {} for t in tasks}
    for split in splits:
        rows, _ = multitask_rows(dsd[split], tasks, max_rows, mask_outside=True)
        if not len(rows):
            continue
        union = dsd[split].select(rows)
        got = scorer.predict_proba(list(union["text"]), [d or None for d in union["date"]] if dated else None)
        pos = {i: k for k, i in enumerate(union["id"])}
        for t in tasks:
            d = task_data(dsd[split], t, max_rows)
            if len(d.y):
                out[t][split] = (d, got[t][1][[pos[i] for i in d.ids]])
    return out


def dated_metrics(scored: dict[str, dict[str, tuple[TaskData, np.ndarray]]], labels: dict[str, list[str]]
                  ) -> dict[str, float]:
    """`{split}_{task}_macro_f1_dated` and `_accuracy_dated`: the headline figures with the rows' dates read."""
    out = {}
    for task, by_split in scored.items():
        for split, (data, proba) in by_split.items():
            m, _ = evaluate_task(split, task, data.y, proba, labels[task], intervals=False)
            for name in ("macro_f1", "accuracy"):
                out[f"{split}_{task}_{name}_dated"] = m[f"{split}_{task}_{name}"]
    return out


def evaluate_and_log(task: str, labels: list[str], scored: dict[str, tuple[TaskData, np.ndarray]], out: Path,
                     cfg: Config) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for split, (data, proba) in scored.items():
        m, report = evaluate_task(split, task, data.y, proba, labels, cfg.evaluate.calibration_bins)
        metrics.update(m)
        write_report(report, out / "reports" / f"metrics_{split}_{task}.json")
        plot_confusion(report, out / "figures" / f"confusion_{split}_{task}.png")
        plot_calibration(report, out / "figures" / f"calibration_{split}_{task}.png")
        plot_precision_recall(report, out / "figures" / f"precision_recall_{split}_{task}.png")
        worst_examples(data.ids, data.texts, data.y, proba, labels, cfg.evaluate.worst_examples).to_csv(
            out / "reports" / f"worst_{split}_{task}.csv", index=False)
    return metrics


def _fit_context(family, cfg: Config, dsd, labels: dict[str, list[str]], data_path: Path, model_dir: Path,
                 log_metrics, trial_callback) -> FitContext:
    return FitContext(cfg=cfg, dsd=dsd, labels=labels, tasks=family.tasks(cfg.model), model_dir=model_dir,
                      data_path=data_path, boilerplate=read_boilerplate(data_path), log_metrics=log_metrics,
                      trial_callback=trial_callback, dated_sources=dated_sources(dsd["train"]))


def _fit_alongside(family, cfg: Config, dsd, labels: dict[str, list[str]], data_path: Path) -> dict:
    """A process of a distributed launch other than the main one: it trains its share in step with the main
    process and logs nothing (no run, params, curves or model: the main process holds the one run)."""
    with tempfile.TemporaryDirectory(prefix="vigie-rank-") as tmp:
        family.fit(_fit_context(family, cfg, dsd, labels, data_path, Path(tmp), lambda *a, **k: None, None))
    return {"run_id": None, "metrics": {}}


def train(cfg: Config, *, nested: bool = False, trial_callback=None) -> dict:
    """Train, evaluate and log one run. Returns {run_id, metrics}."""
    family = families.get(cfg.model.family)
    if distributed.is_main_process():  # the one process that talks to the store (the others never do)
        tracking.check_reachable()
    family.check(cfg.model)  # e.g. unreachable weights fail here, before any data or run is made
    with distributed.main_process_first():  # one process builds a missing or stale dataset, the others load it
        dsd, stats, data_path = load_built(cfg.data)
    labels = label_names(dsd)
    for task_labels in labels.values():
        metric_labels(task_labels)  # two labels that would share a metric name fail here, before any fit
    if not distributed.is_main_process():
        return _fit_alongside(family, cfg, dsd, labels, data_path)
    tags = {
        "vigie.family": family.name,
        "vigie.tasks": ",".join(family.tasks(cfg.model)),
        "vigie.dataset": cfg.data.name,
        "vigie.dataset_fingerprint": stats["fingerprint"],
        "vigie.dataset_path": str(data_path.resolve()),
        "vigie.config_path": cfg.config_path or "",
        "vigie.git_commit": tracking.git_commit(),
    }
    name = run_name(cfg, stats)
    description = cfg.description or f"{family.name} on {cfg.data.name}"
    with tracking.run(cfg.experiment, name, tags, description=description, nested=nested) as active, \
            tempfile.TemporaryDirectory(prefix="vigie-run-") as tmp:
        run_id = active.info.run_id
        _say(f"run {run_id} ({name}) in experiment '{cfg.experiment}', store {tracking.tracking_uri()}")
        out = Path(tmp)
        for d in ("reports", "figures", "model"):
            (out / d).mkdir()
        resolved = cfg.model_dump(mode="json")
        (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))
        tracking.log_params(flatten(resolved))
        for split, context in SPLIT_CONTEXT.items():
            df = dsd[split].select_columns(["id", "topic", "stance"]).to_pandas()
            tracking.log_dataset_split(df, f"{cfg.data.name}-{split}", str(data_path.resolve() / split), "topic", context)

        ctx = _fit_context(family, cfg, dsd, labels, data_path, out / "model", tracking.log_metrics, trial_callback)
        result = family.fit(ctx)
        tracking.set_tags({"vigie.tasks": ",".join(result.tasks)})  # the heads it trained: what the model serves

        t0 = time.time()
        eval_splits = list(dict.fromkeys(["validation", *cfg.evaluate.splits]))
        scored = score_splits(result.scorer, dsd, result.tasks, eval_splits, cfg.train.max_eval_rows) if result.tasks else {}
        metrics: dict[str, float] = {"predict_seconds": time.time() - t0}
        for task in result.tasks:
            metrics.update(evaluate_and_log(task, labels[task], scored[task], out, cfg))
        if result.dated_tasks:  # the same splits with their dates: the figures for the sources the dates came from
            metrics.update(dated_metrics(score_splits(result.scorer, dsd, result.dated_tasks, eval_splits,
                                                      cfg.train.max_eval_rows, dated=True), labels))
        cross_val = getattr(family, "cross_val_proba", None)  # optional: families cheap enough to refit per fold
        if cfg.evaluate.oof_folds and cross_val is not None:
            for task in (t for t in cfg.evaluate.oof_tasks if t in result.tasks):
                _say(f"[{task}] out-of-fold predictions over the train labels ({cfg.evaluate.oof_folds} folds) ...")
                got = cross_val(ctx, task, cfg.evaluate.oof_folds)
                if got is not None:
                    metrics.update(evaluate_and_log(task, labels[task], {"oof": got}, out, cfg))
        mean = selection_metric(metrics, result.tasks)
        if mean is not None:
            metrics["validation_macro_f1_mean"] = mean
        metrics.update(result.extra_metrics)
        # one step after the family's last curve point: MLflow's latest value of a metric is the one at the
        # highest step, so the run's headline (and the registry gate that reads it) is the evaluated model's
        tracking.log_metrics(metrics, step=result.last_step + 1 if result.last_step else None)
        for report, table in result.reports.items():
            table.to_csv(out / "reports" / f"{report}.csv", index=False)
        (out / "reports" / "dataset_stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False))
        tracking.log_artifact(out / "config.yaml")
        tracking.log_artifacts(out / "reports", "reports")
        tracking.log_artifacts(out / "figures", "figures")
        _say("logging the model ...")
        info = tracking.log_pyfunc_model(VigieModel(), out / "model", INPUT_COLUMNS, output_columns(labels), INPUT_EXAMPLE,
                                         result.pip_requirements, code_paths=[str(Path(__file__).resolve().parent)])
        tracking.set_tags({"vigie.model_id": info.model_id, "vigie.model_uri": info.model_uri})
        _say(f"run {run_id} finished")
        headline = {k: round(v, 4) for k, v in sorted(metrics.items())
                    if k.endswith(("_macro_f1", "_accuracy", "macro_f1_mean", "_macro_f1_dated")) and not k.startswith("train_")}
        print(json.dumps({"run_id": run_id, "run_name": name, "metrics": headline}, indent=2))
        return {"run_id": run_id, "metrics": metrics}
