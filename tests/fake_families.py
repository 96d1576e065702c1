"""Model families that exist only for the tests, registered in `families.FAMILIES` with monkeypatch:

- `PRIOR`: a whole family in a few lines (config class, fit, load): it predicts each task's training label
  frequencies for every article. Adding it takes this module and one table entry, nothing else.
- `SCRIPTED`: the real baseline family, with a hook run before its fit (a sweep test reports intermediate
  values or interrupts a trial there, as an epoch-wise trainer would).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from training.data.dataset import task_data
from training.data.schema import TASKS
from training.models.baseline_family import BaselineFamily, BaselineModelConfig
from training.models.family import FitContext, FitResult, ModelConfig, write_meta


class PriorConfig(ModelConfig):
    family: Literal["prior"] = "prior"
    smoothing: float = Field(1.0, ge=0)


class PriorScorer:
    def __init__(self, priors: dict[str, list[float]], labels: dict[str, list[str]]):
        self.priors, self.labels = priors, labels

    def predict_proba(self, texts, dates=None):
        return {t: (self.labels[t], np.tile(np.asarray(p), (len(texts), 1))) for t, p in self.priors.items()}


class PriorFamily:
    name = "prior"
    config_class = PriorConfig
    checked = 0

    def check(self, model_cfg):
        type(self).checked += 1

    def tasks(self, model_cfg):
        return list(TASKS)

    def describe(self, model_cfg):
        return "prior"

    def fit(self, ctx: FitContext) -> FitResult:
        priors = {}
        for t in ctx.tasks:
            y = task_data(ctx.dsd["train"], t).y
            counts = np.bincount(y, minlength=len(ctx.labels[t])) + ctx.cfg.model.smoothing
            priors[t] = (counts / counts.sum()).tolist()
        (Path(ctx.model_dir) / "priors.json").write_text(json.dumps(priors))
        meta = write_meta(ctx.model_dir, self.name, ctx.labels, list(priors), ctx.boilerplate)
        return FitResult(scorer=self.load(ctx.model_dir, meta), tasks=list(priors), pip_requirements=[])

    def load(self, model_dir, meta):
        return PriorScorer(json.loads((Path(model_dir) / "priors.json").read_text()), meta["labels"])


PRIOR = PriorFamily()


class ScriptedConfig(BaselineModelConfig):
    family: Literal["scripted"] = "scripted"


class ScriptedBaseline(BaselineFamily):
    name = "scripted"
    config_class = ScriptedConfig
    before_fit = None  # a callable(ctx), set by the test

    def fit(self, ctx: FitContext) -> FitResult:
        if self.before_fit is not None:
            self.before_fit(ctx)
        return super().fit(ctx)


SCRIPTED = ScriptedBaseline()
