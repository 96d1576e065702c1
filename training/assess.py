"""`vigie evaluate`: a labelled file -> the registered model's predictions on it -> the metrics, figures and reports
training makes (`train.evaluate_and_log`) -> one MLflow run, its metrics also the model's (MLflow 3 logged model).

The file: JSONL, CSV or Parquet with a `text` column (the raw article, title on the first line, or a `title`
column), optional `date`, `source` and `id`, and a `topic` and/or `stance` label column. A row without a label, or
with a label the model does not know, is left out of that task's metrics and counted (the unknown values are
named); a row the model refuses (an empty text, say) is left out of every task, counted with the model's reason.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from training import registry, tracking
from training.config import EvaluateConfig
from training.data.article import Skip
from training.data.dataset import TaskData
from training.data.schema import TASKS
from training.data.tables import is_table_file, iter_table_batches
from training.errors import InputError, InvalidInput
from training.train import evaluate_and_log

DEFAULT_EXPERIMENT = "vigie-evaluation"
INPUT_COLUMNS = ("text", "title", "date", "source")
NO_LABEL, UNKNOWN_LABEL = -1, -2
_ROW_PREFIX = re.compile(r"^row \d+: ")


def read_table(path: Path) -> pd.DataFrame:
    """A labelled evaluation file as a frame, or an InputError naming the file and what is wrong with it. Read whole
    or not at all: a bad line is an error here, not a skip (a row left out unseen would change the metrics)."""
    if not is_table_file(path):
        raise InputError(f"{path}: unknown table format (expected .jsonl, .csv or .parquet)")
    skips: list[Skip] = []
    records = [row.record for batch in iter_table_batches(path, skips.append) for row in batch]
    if skips:
        raise InputError(f"{skips[0]}" + (f" (and {len(skips) - 1} more)" if len(skips) > 1 else ""))
    if not records:
        raise InputError(f"{path}: no rows")
    df = pd.DataFrame.from_records(records)
    if not any(t in df.columns for t in TASKS):
        raise InputError(f"{path}: no label column: expected {' and/or '.join(repr(t) for t in TASKS)}")
    return df


def _missing(v) -> bool:
    return v is None or v is pd.NaT or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip())


def model_inputs(df: pd.DataFrame) -> pd.DataFrame:
    """The file's model input columns, missing values as None (the signature's optional columns take nulls)."""
    out = {}
    for c in (c for c in INPUT_COLUMNS if c in df.columns):
        if c == "text":
            out[c] = df[c].to_numpy()
            continue
        # Parquet dates arrive as date/datetime objects: the contract takes 'YYYY-MM-DD' strings
        out[c] = pd.Series([None if _missing(v) else v.isoformat()[:10] if isinstance(v, dt.date) else v
                            for v in df[c]], dtype=object)
    return pd.DataFrame(out)


def model_labels(model) -> dict[str, list[str]]:
    """task -> the model's labels, in the order of its `<task>_proba_<label>` output columns."""
    schema = model.metadata.get_output_schema()
    if schema is None:
        raise InputError("the model has no output signature: cannot tell its labels")
    names = schema.input_names()
    return {t: [n.removeprefix(f"{t}_proba_") for n in names if n.startswith(f"{t}_proba_")] for t in TASKS}


@dataclass
class TaskLabels:
    codes: np.ndarray  # per row: the label's index in the model's labels, NO_LABEL or UNKNOWN_LABEL
    unknown: Counter = field(default_factory=Counter)  # label value -> rows


def encode_labels(values, labels: list[str]) -> TaskLabels:
    index = {lab: j for j, lab in enumerate(labels)}
    codes, unknown = np.empty(len(values), dtype=np.int64), Counter()
    for i, v in enumerate(values):
        if _missing(v):
            codes[i] = NO_LABEL
            continue
        v = str(v).strip()
        codes[i] = index.get(v, UNKNOWN_LABEL)
        if codes[i] == UNKNOWN_LABEL:
            unknown[v] += 1
    return TaskLabels(codes, unknown)


def score_rows(model, inputs: pd.DataFrame, batch_size: int) -> tuple[pd.DataFrame, dict[int, str]]:
    """The model's predictions for the rows it accepts (indexed by row position), and its reason for each other."""
    parts, refused = [], {}
    for start in range(0, len(inputs), batch_size):
        batch = inputs.iloc[start : start + batch_size]
        try:
            parts.append(registry.predict(model, batch.reset_index(drop=True)).set_axis(batch.index))
            continue
        except InvalidInput:
            pass
        # one refused row fails its whole batch: the batch's rows one by one tell which
        for i in batch.index:
            try:
                parts.append(registry.predict(model, inputs.loc[[i]].reset_index(drop=True)).set_axis([i]))
            except InvalidInput as e:
                refused[i] = _ROW_PREFIX.sub("", str(e).splitlines()[0])
    return (pd.concat(parts) if parts else pd.DataFrame()), refused


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def evaluate_file(path: str | Path, model_uri: str = "models:/vigie@champion", experiment: str = DEFAULT_EXPERIMENT,
                  split: str = "evaluation", batch_size: int = 256) -> dict:
    """Score a labelled file with a registered model and log the evaluation run. Returns {run_id, metrics, summary}."""
    path = Path(path)
    table = read_table(path)
    tasks = [t for t in TASKS if t in table.columns]
    tracking.check_reachable()
    model = registry.load_model(model_uri)
    labels = model_labels(model)
    encoded = {t: encode_labels(table[t].tolist(), labels[t]) for t in tasks}
    if not any((e.codes >= 0).any() for e in encoded.values()):
        raise InputError(f"{path}: no row has a {' or '.join(tasks)} label the model knows "
                         f"(its labels: {'; '.join(f'{t}: ' + ', '.join(labels[t]) for t in tasks)})")
    inputs = model_inputs(table)
    pred, refused = score_rows(model, inputs, batch_size)
    if not len(pred):
        raise InputError(f"{path}: the model refused every row (row 1: {refused[0]})")

    ids = table["id"].tolist()
    titles = inputs["title"] if "title" in inputs.columns else [None] * len(inputs)
    texts = [f"{ti}\n{te}" if ti else str(te) for ti, te in zip(titles, inputs["text"])]
    dates = inputs["date"].tolist() if "date" in inputs.columns else [None] * len(inputs)
    summary: dict = {"file": str(path.resolve()), "model_uri": model_uri, "rows": len(table), "refused": len(refused),
                     "refused_reasons": dict(Counter(refused.values())), "tasks": {}}
    scored: dict[str, tuple[TaskData, np.ndarray]] = {}
    for task in tasks:
        codes = encoded[task].codes
        known = np.flatnonzero(codes >= 0)
        keep = [int(i) for i in known if i not in refused]
        served = bool(pred[task].notna().any())
        summary["tasks"][task] = {
            "evaluated": len(keep) if served else 0, "unlabelled": int((codes == NO_LABEL).sum()),
            "unknown_label": int((codes == UNKNOWN_LABEL).sum()), "unknown_values": dict(encoded[task].unknown.most_common()),
            "refused": len(known) - len(keep), "model_has_head": served}
        if served and keep:
            proba = pred.loc[keep, [f"{task}_proba_{lab}" for lab in labels[task]]].to_numpy(dtype=float)
            data = TaskData([ids[i] for i in keep], [texts[i] for i in keep], codes[keep], [dates[i] for i in keep],
                            [[] for _ in keep])
            scored[task] = (data, proba)
    if not scored:
        raise InputError(f"{path}: no labelled row left to evaluate (the model serves "
                         f"{', '.join(t for t in tasks if summary['tasks'][t]['model_has_head']) or 'none'} of {', '.join(tasks)})")

    version = registry.registered_version(model_uri)
    model_id = tracking.logged_model_id(model_uri)
    tags = {"vigie.evaluated_model_uri": model_uri, "vigie.evaluated_model_id": model_id or "",
            "vigie.evaluation_file": str(path.resolve()), "vigie.evaluation_split": split,
            "vigie.git_commit": tracking.git_commit()}
    if version is not None:
        tags |= {"vigie.evaluated_model_name": version.name, "vigie.evaluated_model_version": str(version.version)}
    name = f"evaluate-{path.stem}-{f'v{version.version}' if version else (model_id or 'model')[:12]}-{time.strftime('%Y%m%d-%H%M%S')}"
    settings = SimpleNamespace(evaluate=EvaluateConfig())  # evaluate_and_log reads only cfg.evaluate
    with tracking.run(experiment, name, tags, description=f"{model_uri} on {path.name}") as active, \
            tempfile.TemporaryDirectory(prefix="vigie-evaluate-") as tmp:
        out = Path(tmp)
        for d in ("reports", "figures"):
            (out / d).mkdir()
        dataset = tracking.log_dataset_split(table, path.name, str(path.resolve()), tasks[0], "evaluation")
        metrics: dict[str, float] = {f"{split}_rows": float(len(table)), f"{split}_refused": float(len(refused))}
        reports = {}
        for task, got in scored.items():
            metrics.update(evaluate_and_log(task, labels[task], {split: got}, out, settings))
            reports[task] = json.loads((out / "reports" / f"metrics_{split}_{task}.json").read_text())
        for task, s in summary["tasks"].items():
            metrics[f"{split}_{task}_unlabelled"] = float(s["unlabelled"])
            metrics[f"{split}_{task}_unknown_label"] = float(s["unknown_label"])
        tracking.log_metrics(metrics, model_id=model_id, dataset=dataset)
        (out / "reports" / f"summary_{split}.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
        tracking.log_artifacts(out / "reports", "reports")
        tracking.log_artifacts(out / "figures", "figures")
        run_id = active.info.run_id
    print_results(summary, reports)
    _say(f"run {run_id} ({name}) in experiment '{experiment}', store {tracking.tracking_uri()}"
         + (f"; metrics linked to logged model {model_id}" if model_id else ""))
    return {"run_id": run_id, "metrics": metrics, "summary": summary, "model_id": model_id}


def print_results(summary: dict, reports: dict[str, dict]) -> None:
    """Per task: the per-class table and macro-F1 on stdout; what was left out, and why, on stderr."""
    from rich.console import Console
    from rich.table import Table

    out = Console()
    if summary["refused"]:
        reasons = ", ".join(f"{r} ({n})" for r, n in summary["refused_reasons"].items())
        _say(f"{summary['refused']} row(s) refused by the model, left out: {reasons}")
    for task, s in summary["tasks"].items():
        if s["unknown_label"]:
            values = ", ".join(f"{v!r} ({n})" for v, n in s["unknown_values"].items())
            _say(f"{task}: {s['unknown_label']} row(s) with a label the model does not know, left out: {values}")
        if s["unlabelled"]:
            _say(f"{task}: {s['unlabelled']} row(s) without a label")
        if not s["model_has_head"]:
            _say(f"{task}: the model has no {task} head; its labels are not evaluated")
        report = reports.get(task)
        if report is None:
            continue
        table = Table(title=f"{task}: macro-F1 {report['macro_f1']:.4f}, accuracy {report['accuracy']:.4f}, "
                            f"{report['n']} rows")
        for col in ("label", "precision", "recall", "F1", "support"):
            table.add_column(col, justify="left" if col == "label" else "right")
        for lab, row in report["per_class"].items():
            table.add_row(lab, *(f"{row[k]:.3f}" for k in ("precision", "recall", "f1")), str(row["support"]))
        table.add_row("macro", "", "", f"{report['macro_f1']:.3f}", str(report["n"]), style="bold")
        out.print(table)
