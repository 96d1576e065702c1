"""The built DatasetDict as the training code reads it: loaded (and built first when missing or stale), label
names, and the labelled rows of a task — the one row choice every model family and the evaluation share."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data.schema import TASKS, source_key
from training.errors import InputError


def load_built(cfg_data, progress: bool = True):
    """(DatasetDict, stats, folder) for a DataConfig, built now when missing or stale: built from another data
    config, or from other inputs (`build.stale_inputs`: new stance labels, changed sources). A stale build whose
    sources are gone cannot be rebuilt: InputError, naming them. A current build whose sources are gone is used
    as it is, with a warning."""
    from datasets import load_from_disk

    from training.data.build import build_dataset, stale_inputs

    path = Path(cfg_data.output_dir) / cfg_data.name
    if not (path / "config.json").exists() or not (path / "stats.json").exists():
        reasons = ["no build yet"]
    else:
        staleness = stale_inputs(cfg_data, path)
        reasons = staleness.reasons
        if staleness.missing and reasons:
            raise InputError(f"dataset {path} is stale ({'; '.join(reasons)}) and cannot be rebuilt: data.sources "
                             f"{', '.join(staleness.missing)} not found (fetch them again, e.g. `vigie data fetch "
                             "orangesum`, or point data.sources at them)")
        if staleness.missing:
            why = ("its labels and data config are current" if staleness.labels_checked else "its data config is "
                   "current; its labels could not be checked: it was built before inputs.json was written")
            print(f"warning: data.sources {', '.join(staleness.missing)} not found: using dataset {path} as built "
                  f"({why})", file=sys.stderr, flush=True)
    if reasons:
        print(f"building dataset {path}: {'; '.join(reasons)} ...", file=sys.stderr, flush=True)
        build_dataset(cfg_data, progress=progress)
    dsd = load_from_disk(str(path))
    stats = json.loads((path / "stats.json").read_text())
    return dsd, stats, path


def read_boilerplate(data_path: Path) -> dict | None:
    """The boilerplate the build learned (BoilerplateModel JSON), or None when it learned no line: the served
    model drops those lines from raw inputs, so that a raw scraped page reads like the training texts."""
    f = Path(data_path) / "boilerplate.json"
    if not f.exists():
        return None
    boiler = json.loads(f.read_text())
    return boiler if any(boiler.get("lines", {}).values()) else None


def dated_sources(split, min_rows: int = 20) -> list[str]:
    """The sources whose dates rows of `split` carry: each build source name and each url host with at least
    `min_rows` dated rows (`schema.source_key`). A model that reads dates may use them only for these: what a month
    means (which sections existed) is one publisher's history."""
    from collections import Counter

    counts: Counter = Counter()
    for source, url, date in zip(split["source"], split["url"], split["date"]):
        if date:
            counts.update(k for k in {source_key(source), source_key(url)} if k)
    return sorted(k for k, c in counts.items() if c >= min_rows)


def label_names(dsd) -> dict[str, list[str]]:
    return {t: list(dsd["train"].features[t].names) for t in TASKS}


def labelled_rows(split, task: str, max_rows: int | None = None) -> np.ndarray:
    """Row positions labelled for `task` (label >= 0), the first `max_rows` of them when given."""
    keep = np.flatnonzero(np.asarray(split[task]) >= 0)
    return keep[:max_rows] if max_rows is not None else keep


@dataclass
class TaskData:
    ids: list[str]
    texts: list[str]
    y: np.ndarray
    dates: list[str | None]
    evidence: list[list[str]]  # the annotators' sentences behind a stance label ([] elsewhere)


def task_data(split, task: str, max_rows: int | None = None) -> TaskData:
    keep = labelled_rows(split, task, max_rows)
    sub = split.select(keep)
    evidence = list(sub["stance_evidence"]) if "stance_evidence" in sub.column_names else [[] for _ in keep]
    return TaskData(list(sub["id"]), list(sub["text"]), np.asarray(sub[task], dtype=np.int64),
                    [d or None for d in sub["date"]], evidence)


def multitask_rows(split, tasks: list[str], max_rows: int | None, mask_outside: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The union of each task's `labelled_rows`, and every task's labels on it. mask_outside: a row keeps a
    task's label only if it is among that task's rows (evaluation: exactly the rows `task_data` picks); else
    every label the picked rows carry is kept (training a multi-head model)."""
    picked = {t: labelled_rows(split, t, max_rows) for t in tasks}
    rows = np.unique(np.concatenate(list(picked.values()))) if tasks else np.array([], dtype=np.int64)
    labels = {}
    for t in tasks:
        y = np.asarray(split[t])[rows].astype(np.int64)
        if mask_outside:
            y[~np.isin(rows, picked[t])] = -1
        labels[t] = y
    return rows, labels
