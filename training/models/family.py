"""What a model family is, for the code that trains, logs and serves it without knowing which one it is.

A family is one module (`baseline_family.py`, `camembert_family.py`) with its config class and a `FAMILY`
object, and one line in `families.py`. `train.py`, `pyfunc.py` and `config.py` talk to a family only through
the `Family` protocol below:

- `config_class`: the pydantic class of the config's `model:` section (its `family` field names the family);
- `check(model_cfg)`: fail fast, before any data is built or run opened (missing weights, say);
- `tasks(model_cfg)`: the tasks it is asked to train;
- `describe(model_cfg)`: a short name for run names ("baseline-linear_svc", "camembert-camembert-base");
- `fit(ctx) -> FitResult`: train on `ctx.dsd`, write a servable folder into `ctx.model_dir` (its own files and
  `meta.json`, written by `write_meta`), and return the scorer loaded from that folder — the code that serves
  the logged model, so the metrics describe what is served;
- `load(model_dir, meta) -> Scorer`: the scorer of a saved folder;
- optionally `cross_val_proba(ctx, task, folds) -> (TaskData, probabilities)`: out-of-fold predictions over a
  task's train labels, the whole model refitted per fold (`evaluate.oof_folds`), for families cheap enough.

A scorer's `predict_proba(texts, dates)` takes model input texts (already assembled by
`cleaning.model_text`) and publication dates, and returns `{task: (labels, [n, k] probabilities)}` for the
tasks it has a head for. A scorer may also have `evidence(texts, probabilities)`: per text, the sentences
behind its stance decision (served as `stance_evidence`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd

from training.data.schema import Strict

META = "meta.json"
Probabilities = dict[str, tuple[list[str], np.ndarray]]


class ModelConfig(Strict):
    """Base of every family's `model:` config section."""

    family: str


class Scorer(Protocol):
    def predict_proba(self, texts: list[str], dates: list[str | None] | None = None) -> Probabilities: ...


@dataclass
class FitContext:
    """What a family's `fit` gets from the orchestration (`train.py`)."""

    cfg: Any  # training.config.Config: the whole resolved config (model, train, evaluate sections)
    dsd: Any  # the built datasets.DatasetDict
    labels: dict[str, list[str]]  # task -> label names, from the dataset's ClassLabels
    tasks: list[str]  # the tasks `Family.tasks` named
    model_dir: Path  # the servable folder to write
    data_path: Path  # the built dataset's folder
    boilerplate: dict | None  # the build's learned boilerplate (BoilerplateModel JSON), carried into meta.json
    log_metrics: Callable[..., None]  # log_metrics(metrics, step=None): per-step curves into the run
    trial_callback: Callable[[int, float], None] | None = None  # sweep pruning: (step, selection metric)
    dated_sources: list[str] = field(default_factory=list)  # the sources whose dates the training rows carry


@dataclass
class FitResult:
    scorer: Scorer | None  # None on the non-main processes of a distributed run
    tasks: list[str]  # the tasks that got a trained head
    pip_requirements: list[str]
    last_step: int = 0  # the last step the family logged curves at (final metrics go after it)
    reports: dict[str, pd.DataFrame] = field(default_factory=dict)  # name -> table, logged as reports/<name>.csv
    extra_metrics: dict[str, float] = field(default_factory=dict)
    dated_tasks: list[str] = field(default_factory=list)  # the tasks whose scores read publication dates


class Family(Protocol):
    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]]

    def check(self, model_cfg: ModelConfig) -> None: ...

    def tasks(self, model_cfg: ModelConfig) -> list[str]: ...

    def describe(self, model_cfg: ModelConfig) -> str: ...

    def fit(self, ctx: FitContext) -> FitResult: ...

    def load(self, model_dir: Path, meta: dict) -> Scorer: ...


def write_meta(model_dir: Path, family: str, labels: dict[str, list[str]], heads: list[str], boilerplate: dict | None,
               extra: dict | None = None, dated_sources: list[str] | None = None) -> dict:
    """meta.json of a servable folder: the family (which `load` reads it), label names per task, the trained
    heads, the boilerplate the served model drops, the sources whose dates the scorer may read (`dated_sources`:
    for any other source the served date is dropped), and the family's own settings."""
    meta = {"family": family, "labels": labels, "heads": heads, "boilerplate": boilerplate,
            "dated_sources": dated_sources or [], **(extra or {})}
    (Path(model_dir) / META).write_text(json.dumps(meta, ensure_ascii=False, indent=2))
    return meta


def read_meta(model_dir: Path) -> dict:
    return json.loads((Path(model_dir) / META).read_text())
