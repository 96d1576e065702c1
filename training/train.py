"""`vigie train`: dataset -> fitted models -> evaluation -> one MLflow run with everything a reviewer needs.

The model family named in the config decides how models are fitted (`models/baseline.py`,
`models/camembert.py`); everything else — dataset loading, evaluation, what is logged and how — is shared,
so runs of every family line up in the MLflow UI and compete under the same registry gate.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from training import tracking
from training.config import Config, flatten
from training.evaluate import evaluate_task, plot_calibration, plot_confusion, worst_examples, write_report
from training.models.contract import INPUT_EXAMPLE, signature

TASKS = ("topic", "stance")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- dataset -----------------------------------------------------------------------------------------------


def load_dataset(cfg: Config):
    """The built DatasetDict for cfg.data, built now if missing or built from another data config."""
    from datasets import load_from_disk

    from training.data.build import build_dataset

    path = Path(cfg.data.output_dir) / cfg.data.name
    stored = path / "config.json"
    current = cfg.data.model_dump()
    if not stored.exists() or json.loads(stored.read_text()) != json.loads(json.dumps(current)):
        _say(f"building dataset {path} (missing or built from another data config) ...")
        build_dataset(cfg.data, progress=True)
    dsd = load_from_disk(str(path))
    stats = json.loads((path / "stats.json").read_text())
    return dsd, stats, path


@dataclass
class TaskData:
    ids: list[str]
    texts: list[str]
    y: np.ndarray
    dates: list[str | None]


def task_data(split, task: str, max_rows: int | None = None) -> TaskData:
    y = np.asarray(split[task])
    keep = np.flatnonzero(y >= 0)
    if max_rows is not None and len(keep) > max_rows:
        keep = keep[:max_rows]
    sub = split.select(keep)
    return TaskData(list(sub["id"]), list(sub["text"]), y[keep], [d or None for d in sub["date"]])


def label_names(dsd, task: str) -> list[str]:
    return list(dsd["train"].features[task].names)


# --- run ---------------------------------------------------------------------------------------------------


def run_name(cfg: Config, stats: dict) -> str:
    if cfg.run_name:
        return cfg.run_name
    m = cfg.model
    if m.family == "baseline":
        kinds = "+".join(sorted({getattr(m, t).classifier for t in TASKS if getattr(m, t).enabled}))
        desc = f"baseline-{kinds}"
    else:
        desc = f"camembert-{Path(m.pretrained).name}"
    return f"{desc}-{cfg.data.name}-{stats['fingerprint'][:8]}-{time.strftime('%Y%m%d-%H%M%S')}"


def evaluate_and_log(task: str, labels: list[str], splits: dict[str, TaskData], proba: dict[str, np.ndarray], out: Path, cfg: Config) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for split, data in splits.items():
        if split not in proba or len(data.y) == 0:
            continue
        m, report = evaluate_task(split, task, data.y, proba[split], labels, cfg.evaluate.calibration_bins)
        metrics.update(m)
        write_report(report, out / "reports" / f"metrics_{split}_{task}.json")
        plot_confusion(report, out / "figures" / f"confusion_{split}_{task}.png")
        plot_calibration(report, out / "figures" / f"calibration_{split}_{task}.png")
        worst_examples(data.ids, data.texts, data.y, proba[split], labels, cfg.evaluate.worst_examples).to_csv(
            out / "reports" / f"worst_{split}_{task}.csv", index=False)
    return metrics


def selection_metric(metrics: dict[str, float], tasks: list[str]) -> float | None:
    vals = [metrics[f"validation_{t}_macro_f1"] for t in tasks if f"validation_{t}_macro_f1" in metrics]
    return float(np.mean(vals)) if vals else None


def train(cfg: Config, *, nested: bool = False, trial_callback=None) -> dict:
    """Train, evaluate and log one run. Returns {run_id, metrics}."""
    tracking.check_reachable()
    if cfg.model.family == "camembert":  # unreachable weights fail here, before any data or run is made
        from training.models.camembert import resolve_pretrained

        resolve_pretrained(cfg.model.pretrained)
    dsd, stats, data_path = load_dataset(cfg)
    labels = {t: label_names(dsd, t) for t in TASKS}
    family = cfg.model.family
    tasks = [t for t in TASKS if family != "baseline" or getattr(cfg.model, t).enabled]
    tags = {
        "vigie.family": family,
        "vigie.tasks": ",".join(tasks),
        "vigie.dataset": cfg.data.name,
        "vigie.dataset_fingerprint": stats["fingerprint"],
        "vigie.config_path": cfg.config_path or "",
        "vigie.git_commit": tracking.git_commit(),
    }
    name = run_name(cfg, stats)
    with tracking.run(cfg.experiment, name, tags, description=cfg.description or f"{family} on {cfg.data.name}", nested=nested) as active, \
            tempfile.TemporaryDirectory(prefix="vigie-run-") as tmp:
        run_id = active.info.run_id
        _say(f"run {run_id} ({name}) in experiment '{cfg.experiment}', store {tracking.tracking_uri()}")
        out = Path(tmp)
        for d in ("reports", "figures", "model"):
            (out / d).mkdir()
        resolved = cfg.model_dump(mode="json")
        (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))
        tracking.log_params(flatten(resolved))
        for split in ("train", "validation", "test"):
            df = dsd[split].select_columns(["id", "topic", "stance"]).to_pandas()
            tracking.log_dataset_split(df, f"{cfg.data.name}-{split}", str(data_path.resolve() / split), "topic",
                                       "training" if split == "train" else ("validation" if split == "validation" else "testing"))

        if family == "baseline":
            from training.models.baseline_train import fit_and_predict
        else:
            from training.models.camembert_train import fit_and_predict
        result = fit_and_predict(cfg, dsd, labels, tasks, out / "model", data_path, trial_callback=trial_callback)

        metrics: dict[str, float] = {}
        eval_splits = ["validation", *(s for s in cfg.evaluate.splits if s != "validation")]
        for task in result.tasks:
            splits = {s: task_data(dsd[s], task, cfg.train.max_eval_rows) for s in eval_splits}
            metrics.update(evaluate_and_log(task, labels[task], splits, result.proba[task], out, cfg))
            if result.top_features.get(task) is not None:
                result.top_features[task].to_csv(out / "reports" / f"top_features_{task}.csv", index=False)
        mean = selection_metric(metrics, result.tasks)
        if mean is not None:
            metrics["validation_macro_f1_mean"] = mean
        metrics.update(result.extra_metrics)
        tracking.log_metrics(metrics)
        (out / "reports" / "dataset_stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False))
        tracking.log_artifact(out / "config.yaml")
        tracking.log_artifacts(out / "reports", "reports")
        tracking.log_artifacts(out / "figures", "figures")
        _say("logging the model ...")
        info = tracking.log_pyfunc_model(out / "model", signature(labels), INPUT_EXAMPLE, result.pip_requirements,
                                         code_paths=[str(Path(__file__).resolve().parent)])
        tracking.set_tags({"vigie.model_id": info.model_id, "vigie.model_uri": info.model_uri})
        _say(f"run {run_id} finished")
        headline = {k: round(v, 4) for k, v in sorted(metrics.items())
                    if k.endswith(("_macro_f1", "_accuracy", "macro_f1_mean")) and not k.startswith("train_")}
        print(json.dumps({"run_id": run_id, "run_name": name, "metrics": headline}, indent=2))
        return {"run_id": run_id, "metrics": metrics}
