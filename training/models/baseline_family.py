"""The baseline family: one TF-IDF + linear model scikit-learn Pipeline per task (`baseline.py`), its config, and
the servable folder (`pipelines.joblib`: every trained task's pipeline, + `meta.json`).

Heavy imports (scikit-learn, scipy) happen inside `fit` and `load`: reading a config never pays for them.
"""

from __future__ import annotations

import json
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from training.data.schema import NEUTRAL, TASKS, Strict, off_or_folds
from training.errors import ConfigError
from training.models.family import FitContext, FitResult, ModelConfig, Probabilities, write_meta

NAME = "baseline"
PIPELINES = "pipelines.joblib"  # {task: fitted Pipeline}, in one file
MONTH_PRIORS = "month_priors.json"  # {task: MonthPrior JSON}, for the tasks with `date_prior`


class BaselineTaskConfig(Strict):
    enabled: bool = True
    classifier: Literal["linear_svc", "logreg", "complement_nb"] = "linear_svc"
    C: float = Field(0.5, gt=0)
    alpha: float = Field(0.3, gt=0)  # ComplementNB smoothing
    solver: Literal["lbfgs", "saga"] = "lbfgs"  # LogisticRegression: lbfgs is fast; saga converges slowly here
    class_weight: Literal["balanced"] | None = "balanced"
    max_iter: int = Field(5000, ge=10)
    tol: float = Field(1e-4, gt=0)  # solver stopping tolerance (LinearSVC, LogisticRegression)
    word_ngram_range: tuple[int, int] = (1, 2)
    word_min_df: int = Field(2, ge=1)
    word_max_df: float = Field(1.0, gt=0, le=1)
    word_max_features: int | None = Field(None, ge=10)
    sublinear_tf: bool = True
    char_ngram_range: tuple[int, int] | None = None  # None: no character n-grams
    char_scope: Literal["all", "head"] = "all"  # head: character n-grams of the title and lead only (fast)
    char_min_df: int = Field(3, ge=1)
    char_max_features: int | None = Field(300_000, ge=10)
    title_weight: int = Field(1, ge=0, le=5)  # extra copies of the title in the text the features see
    # > 0: that many folds of out-of-fold decision scores on the training rows fit one additive bias per class
    # that maximises macro-F1 (the metric balanced class weights only approximate); 0: no bias
    class_bias_folds: int = Field(0, ge=0, le=20)
    # the decision rule the class biases are fitted for: macro-F1, or the F1 of one label (a rare class)
    bias_target: str = "macro_f1"
    # > 0: sentence-level scores learned from the annotators' evidence sentences, at this weight (stance)
    evidence_weight: float = Field(0.0, ge=0, le=10)
    evidence_C: float = Field(4.0, gt=0)
    # > 0: the publication month as features, at this weight (0: text only). The site's sections changed over
    # time (no `france` before 2018-01, most societe/sante, high-tech, media articles from 2020-06)
    date_weight: float = Field(0.0, ge=0, le=10)
    # the share of training rows whose date is blanked, so that "date unknown" is a state the model learned (an
    # undated article, or one from a source whose dates the model never saw: `meta.json` `dated_sources`)
    date_dropout: float = Field(0.3, ge=0, lt=1)
    # > 0: the publication month as a prior shift on the content model's probabilities, at this strength
    # (`baseline.MonthPrior`: the share of each section in the month's neighbourhood, `date_prior_window` months
    # either side). The content model is left as it is: what other sources and undated articles get
    date_prior: float = Field(0.0, ge=0, le=5)
    date_prior_window: int = Field(2, ge=0, le=24)

    @field_validator("word_ngram_range", "char_ngram_range")
    @classmethod
    def _ordered(cls, v):
        if v is not None and not (1 <= v[0] <= v[1] <= 10):
            raise ValueError("must be [low, high] with 1 <= low <= high <= 10")
        return v

    _folds = field_validator("class_bias_folds")(off_or_folds)


class BaselineModelConfig(ModelConfig):
    family: Literal["baseline"] = "baseline"
    topic: BaselineTaskConfig = BaselineTaskConfig()
    stance: BaselineTaskConfig = BaselineTaskConfig()
    # true: the tasks whose word analyzers agree (word_ngram_range, title_weight) count their word n-grams once,
    # with one vectorizer fitted on the union of their training rows; each keeps its own terms (word_min_df,
    # word_max_df, word_max_features) and idf, so its features are those of a vectorizer of its own. false: one
    # vectorizer per task (the same features, counted once per task)
    share_words: bool = True

    def word_groups(self, tasks: list[str]) -> list[list[str]]:
        """The tasks that share one word vectorizer, group by group."""
        groups: dict = {}
        for t in tasks:
            c = getattr(self, t)
            groups.setdefault((tuple(c.word_ngram_range), c.title_weight) if self.share_words else t, []).append(t)
        return list(groups.values())


def pip_requirements() -> list[str]:
    return [f"{p}=={version(p)}" for p in ("mlflow", "scikit-learn", "scipy", "numpy", "pandas", "joblib", "pyarrow")]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class BaselineScorer:
    """The fitted pipelines of a model folder: texts (+ dates) -> {task: (labels, probabilities)}, and the
    sentences behind a stance decision when the stance pipeline learned from the annotators' evidence. Tasks
    whose pipelines start with the same fitted word counter get their word counts from one pass over the texts."""

    def __init__(self, pipelines: dict, labels: dict[str, list[str]], month_priors: dict | None = None):
        self.pipelines = pipelines
        self.labels = labels
        self.month_priors = month_priors or {}  # task -> MonthPrior

    def predict_proba(self, texts: list[str], dates: list[str | None] | None = None) -> Probabilities:
        from training.models.baseline import proba_tasks

        probas = proba_tasks(self.pipelines, {t: len(self.labels[t]) for t in self.pipelines}, texts, dates)
        if dates is not None:
            probas.update({t: prior.adjust(probas[t], dates) for t, prior in self.month_priors.items()})
        return {t: (self.labels[t], p) for t, p in probas.items()}

    def evidence(self, texts: list[str], probas: Probabilities, k: int = 3) -> list[list[dict]] | None:
        """Per text: for a non-neutral stance decision, the (at most k) sentences with the highest probability
        of that stance, with it; [] for a neutral decision. None when the model has no evidence scorer."""
        pipe = self.pipelines.get("stance")
        scorer = pipe.named_steps["features"].named_transformers_.get("evidence") if pipe is not None else None
        if scorer is None or scorer == "drop" or "stance" not in probas:
            return None
        labels, p = probas["stance"]
        decided = p.argmax(axis=1)
        out: list[list[dict]] = [[] for _ in texts]
        for c in set(decided.tolist()) - {labels.index(NEUTRAL)}:
            rows = [i for i, d in enumerate(decided) if d == c]
            for i, sents in zip(rows, scorer.top_sentences([texts[i] for i in rows], c, k)):
                out[i] = sents
        return out


class BaselineFamily:
    name = NAME
    config_class = BaselineModelConfig

    def check(self, model_cfg: BaselineModelConfig) -> None:
        pass  # nothing to fetch: everything a baseline needs is the dataset

    def tasks(self, model_cfg: BaselineModelConfig) -> list[str]:
        return [t for t in TASKS if getattr(model_cfg, t).enabled]

    def describe(self, model_cfg: BaselineModelConfig) -> str:
        kinds = "+".join(sorted({getattr(model_cfg, t).classifier for t in self.tasks(model_cfg)}))
        return f"{NAME}-{kinds}"

    def fit(self, ctx: FitContext) -> FitResult:
        import joblib

        from training.data.dataset import task_data
        from training.models.baseline import MonthPrior, calibrate_task, features, fit_task, shared_words, top_features

        cfg = ctx.cfg
        pipelines, reports, extra = {}, {}, {}
        data = {}
        for task in ctx.tasks:
            train = task_data(ctx.dsd["train"], task, cfg.train.max_train_rows)
            if len(set(train.y.tolist())) < 2:
                _say(f"[{task}] skipped: fewer than 2 classes among {len(train.y)} labelled training rows")
                continue
            data[task] = train
        words = {}
        for group in cfg.model.word_groups(list(data)):
            t0 = time.time()
            rows = {}  # the union of the group's training rows, each article once (by id)
            for task in group:
                rows.update(zip(data[task].ids, data[task].texts))
            tcfg = getattr(cfg.model, group[0])
            shared = shared_words(list(rows.values()), tcfg.word_ngram_range, tcfg.title_weight,
                                  min(getattr(cfg.model, t).word_min_df for t in group))
            words.update(dict.fromkeys(group, shared))
            extra[f"words_{'_'.join(group)}_fit_seconds"] = time.time() - t0
            _say(f"[{'+'.join(group)}] word vocabulary: {len(shared.vectorizer_.vocabulary_)} n-grams of {len(rows)} "
                 f"articles in {time.time() - t0:.1f} s")
        for task, train in data.items():
            tcfg = getattr(cfg.model, task)
            t0 = time.time()
            _say(f"[{task}] fitting {tcfg.classifier} on {len(train.y)} rows ...")
            try:
                pipe = fit_task(tcfg, train.texts, train.y, seed=cfg.train.seed, n_jobs=cfg.train.num_threads or -1,
                                dates=train.dates, evidence=train.evidence, classes=ctx.labels[task], words=words[task])
            except ValueError as e:
                if "bias_target" in str(e) or "evidence features" in str(e):
                    raise ConfigError(f"model.{task}: {e}") from None
                raise
            val = task_data(ctx.dsd["validation"], task, cfg.train.max_eval_rows)
            calibrate_task(pipe, features(pipe, val.texts, val.dates), val.y)
            extra[f"{task}_fit_seconds"] = time.time() - t0
            reports[f"top_features_{task}"] = top_features(pipe, ctx.labels[task], cfg.evaluate.top_features)
            pipelines[task] = pipe
            _say(f"[{task}] done in {time.time() - t0:.1f} s")
        # one file: the tasks' pipelines keep sharing their word counter once loaded (pickle keeps shared objects
        # shared). zlib level 1: as small as level 3 within 3 % here, in two thirds of the time (benchmarks.md)
        joblib.dump(pipelines, Path(ctx.model_dir) / PIPELINES, compress=1)
        priors = {t: MonthPrior(tcfg.date_prior, tcfg.date_prior_window).fit(data[t].dates, data[t].y, len(ctx.labels[t]))
                  for t in pipelines if (tcfg := getattr(cfg.model, t)).date_prior}
        if priors:
            (Path(ctx.model_dir) / MONTH_PRIORS).write_text(json.dumps({t: p.to_json() for t, p in priors.items()}))
        dated = [t for t in pipelines if getattr(cfg.model, t).date_weight or t in priors]
        write_meta(ctx.model_dir, NAME, ctx.labels, list(pipelines), ctx.boilerplate,
                   dated_sources=ctx.dated_sources if dated else None)
        return FitResult(scorer=BaselineScorer(pipelines, ctx.labels, priors), tasks=list(pipelines),
                         pip_requirements=pip_requirements(), reports=reports, extra_metrics=extra, dated_tasks=dated)

    def cross_val_proba(self, ctx: FitContext, task: str, folds: int):
        """Out-of-fold probabilities over the task's train labels: the task's whole pipeline (features, class
        biases, evidence scorer) refitted on each fold's other rows, so the decision rule is chosen inside the
        fold. (TaskData, [n, k] probabilities)."""
        from joblib import Parallel, delayed
        from sklearn.model_selection import StratifiedKFold

        from training.data.dataset import task_data
        from training.models.baseline import features, fit_task, proba_full, shared_words

        cfg, tcfg = ctx.cfg, getattr(ctx.cfg.model, task)
        d = task_data(ctx.dsd["train"], task, cfg.train.max_train_rows)
        counts = np.bincount(d.y)
        folds = int(min(folds, counts[counts > 0].min()))
        if folds < 2:
            return None
        k = len(ctx.labels[task])
        # one word counter for every fold: each fold's WordTfidf keeps only the terms of its own training rows
        words = shared_words(d.texts, tcfg.word_ngram_range, tcfg.title_weight, tcfg.word_min_df)

        def one(tr, te):
            pick = lambda xs, idx: [xs[i] for i in idx]  # noqa: E731
            pipe = fit_task(tcfg, pick(d.texts, tr), d.y[tr], seed=cfg.train.seed, n_jobs=1, dates=pick(d.dates, tr),
                            evidence=pick(d.evidence, tr), classes=ctx.labels[task], words=words)
            return te, proba_full(pipe, features(pipe, pick(d.texts, te), pick(d.dates, te)), k)

        splits = StratifiedKFold(folds, shuffle=True, random_state=cfg.train.seed).split(d.texts, d.y)
        out = np.zeros((len(d.y), k))
        for te, p in Parallel(n_jobs=cfg.train.num_threads or -1)(delayed(one)(tr, te) for tr, te in splits):
            out[te] = p
        return d, out

    def load(self, model_dir: Path, meta: dict) -> BaselineScorer:
        import joblib

        from training.models.baseline import MonthPrior

        priors_file = Path(model_dir) / MONTH_PRIORS
        priors = ({t: MonthPrior.from_json(d) for t, d in json.loads(priors_file.read_text()).items()}
                  if priors_file.exists() else {})
        if (Path(model_dir) / PIPELINES).exists():
            return BaselineScorer(joblib.load(Path(model_dir) / PIPELINES), meta["labels"], priors)
        # a folder saved before the tasks shared their word counts: one file per task
        return BaselineScorer({t: joblib.load(Path(model_dir) / f"{t}.joblib") for t in meta["heads"]}, meta["labels"])


FAMILY = BaselineFamily()
