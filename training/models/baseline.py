"""TF-IDF + linear model baselines: one scikit-learn Pipeline per task, built from the config.

The pipeline takes a DataFrame with a `text` column (a ColumnTransformer selects it: a bare-list vectorizer
served through MLflow pyfunc would treat a batch as one document). Probabilities come from the classifier
itself (LogisticRegression, ComplementNB) or, for LinearSVC, from a softmax over its decision values with a
temperature fitted on held-out data (temperature scaling: one parameter, argmax unchanged). `ClassBias` can shift
each class's decision threshold to where out-of-fold macro-F1 is best (`class_bias_folds`). `PublicationMonth` adds
the article's date (`date_weight`), an optional column of the input frame.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
from joblib import Parallel, delayed
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.naive_bayes import ComplementNB
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from training.models.contract import iso_date

if TYPE_CHECKING:
    from training.models.baseline_family import BaselineTaskConfig

_ELISION = re.compile(r"\b([cdjlmnst]|qu|jusqu|lorsqu|puisqu|quoiqu)'", re.IGNORECASE)


class FrenchPreprocessor:
    """Lowercase, typographic apostrophes unified, elisions split (l'Occident -> l occident), and the title
    (first line) repeated `title_weight` extra times so that its words count more."""

    def __init__(self, title_weight: int = 0):
        self.title_weight = title_weight

    def __call__(self, text: str) -> str:
        text = text.replace("\u2019", "'").replace("\u2018", "'")
        if self.title_weight:
            title = text.split("\n", 1)[0]
            text = (title + "\n") * self.title_weight + text
        return _ELISION.sub(r"\1 ", text.lower())


class HeadPreprocessor(FrenchPreprocessor):
    """The first `lines` lines (title and lead), prepared like the full text."""

    def __init__(self, lines: int = 2):
        super().__init__(0)
        self.lines = lines

    def __call__(self, text: str) -> str:
        return super().__call__("\n".join(text.split("\n", self.lines)[: self.lines]))


def month_index(date) -> int | None:
    """A date as the served contract reads it ('YYYY-MM-DD') -> months since year 0; None when missing or
    unreadable. One reader for training and serving, so both see the same month."""
    iso = iso_date(date)
    return None if iso is None else int(iso[:4]) * 12 + int(iso[5:7]) - 1


def _column(X) -> list:
    return X.tolist() if hasattr(X, "tolist") else list(X)


class PublicationMonth(TransformerMixin, BaseEstimator):
    """The publication month as cumulative features: one column per month boundary of the training range, set to
    `weight` when the article is from that month or later. A linear model then reads a step at each change of the
    site's sections, and its L2 penalty keeps neighbouring months alike (a one-hot month let the answer for one
    text jump between sections from one month to the next). A date before or after the training range reads as
    its first or last month (after it: the newest sections); an undated or unreadable date as the last month:
    a served article without a date is taken as current. The range starts at the `trim` quantile of the training
    dates: a handful of stragglers years before the rest teach nothing, and their near-constant steps slowed
    the SVM solver by a third."""

    def __init__(self, weight: float = 0.1, trim: float = 0.005):
        self.weight = weight
        self.trim = trim

    def fit(self, X, y=None):
        months = [m for m in map(month_index, _column(X)) if m is not None]
        if not months:
            raise ValueError("date features: no training row has a readable date (YYYY-MM-DD)")
        self.first_, self.last_ = int(np.quantile(months, self.trim, method="lower")), max(months)
        return self

    def transform(self, X):
        months = np.array([self.last_ if m is None else m for m in map(month_index, _column(X))], dtype=np.int64)
        steps = np.arange(self.first_ + 1, self.last_ + 1)  # months before first_ read as first_: below every step
        return sp.csr_matrix((months[:, None] >= steps[None, :]).astype(np.float32) * np.float32(self.weight))

    def get_feature_names_out(self, input_features=None):
        return np.array([f"date>={m // 12}-{m % 12 + 1:02d}" for m in range(self.first_ + 1, self.last_ + 1)], dtype=object)


def _margins(estimator, X) -> np.ndarray:
    """Decision scores as an [n, k] matrix; a binary model's single margin d becomes [0, d]. A model without
    margins (ComplementNB) gives its log-probabilities."""
    if not hasattr(estimator, "decision_function"):
        return estimator.predict_log_proba(X)
    d = estimator.decision_function(X)
    return np.column_stack([np.zeros_like(d), d]) if d.ndim == 1 else d


class TemperatureSoftmax(BaseEstimator, ClassifierMixin):
    """A margin classifier with probabilities: softmax(decision_function / T), T fitted by `calibrate`."""

    def __init__(self, estimator=None):
        self.estimator = estimator

    def fit(self, X, y):
        self.estimator_ = clone(self.estimator).fit(X, y)
        self.classes_ = self.estimator_.classes_
        self.temperature_ = 1.0
        return self

    def _scores(self, X) -> np.ndarray:
        return _margins(self.estimator_, X)

    def calibrate(self, X, y) -> TemperatureSoftmax:
        s = self._scores(X)
        idx = np.searchsorted(self.classes_, y)
        known = np.isin(y, self.classes_)
        if known.sum() < 2:
            return self

        def nll(log_t: float) -> float:
            return -log_softmax(s[known] / np.exp(log_t), axis=1)[np.arange(known.sum()), idx[known]].mean()

        self.temperature_ = float(np.exp(minimize_scalar(nll, bounds=(-5, 3), method="bounded").x))
        return self

    def decision_function(self, X):
        return self.estimator_.decision_function(X)

    def predict(self, X):
        return self.classes_[self._scores(X).argmax(axis=1)]

    def predict_proba(self, X):
        return softmax(self._scores(X) / self.temperature_, axis=1)


def macro_f1(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    """Macro-F1 over k classes from integer class positions (a confusion matrix by bincount: fast in a loop)."""
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1)
    return float(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0).mean())


def fit_class_bias(scores: np.ndarray, y: np.ndarray, steps: int = 21, max_rounds: int = 5) -> np.ndarray:
    """One additive bias per class maximising macro-F1 of argmax(scores + bias): coordinate ascent over a grid
    of +-1 standard deviation of the scores, class by class, until a round changes nothing."""
    k = scores.shape[1]
    grid = np.linspace(-1.0, 1.0, steps) * (scores.std() or 1.0)
    bias = np.zeros(k)
    best = macro_f1(y, scores.argmax(1), k)
    for _ in range(max_rounds):
        changed = False
        for j in range(k):
            for g in grid:
                trial = bias.copy()
                trial[j] = g
                f = macro_f1(y, (scores + trial).argmax(1), k)
                if f > best + 1e-12:
                    best, bias, changed = f, trial, True
        if not changed:
            break
    return bias


def _fit_and_score(estimator, X, y, train_idx, test_idx):
    est = estimator.fit(X[train_idx], y[train_idx])
    return est, (_margins(est, X[test_idx]) if test_idx is not None else None)


class ClassBias(BaseEstimator, ClassifierMixin):
    """A margin classifier plus one additive bias per class, fitted to maximise macro-F1 on the out-of-fold
    decision scores of the training rows (`folds` stratified folds; fewer when a class has fewer rows).
    Balanced class weights equalise each class's share of the loss, not its F1; the bias moves each class's
    threshold to where its precision/recall trade-off is best. The fold fits and the final fit run in parallel."""

    def __init__(self, estimator=None, folds: int = 3, n_jobs: int | None = None, random_state: int = 0):
        self.estimator = estimator
        self.folds = folds
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X, y):
        y = np.asarray(y)
        self.classes_, y_idx, counts = np.unique(y, return_inverse=True, return_counts=True)
        self.folds_used_ = int(min(self.folds, counts.min()))
        if self.folds_used_ < 2:  # a class with one row: no out-of-fold score for it, so no bias
            self.folds_used_ = 0
        everything = np.arange(len(y))
        jobs = [(everything, None)]
        if self.folds_used_:
            split = StratifiedKFold(self.folds_used_, shuffle=True, random_state=self.random_state).split(everything, y)
            jobs += list(split)
        fitted = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_and_score)(clone(self.estimator), X, y, tr, te) for tr, te in jobs)
        self.estimator_ = fitted[0][0]
        self.bias_ = np.zeros(len(self.classes_))
        if self.folds_used_:
            oof = np.zeros((len(y), len(self.classes_)))
            for (_, te), (_, scores) in zip(jobs[1:], fitted[1:]):
                oof[te] = scores
            self.bias_ = fit_class_bias(oof, y_idx)
        return self

    def decision_function(self, X):
        return _margins(self.estimator_, X) + self.bias_

    def predict(self, X):
        return self.classes_[self.decision_function(X).argmax(axis=1)]

    def predict_proba(self, X):
        """softmax of the shifted margins: for multinomial logistic regression (or log-probabilities), the model's
        own probabilities with the bias added to the logits."""
        return softmax(self.decision_function(X), axis=1)


def build_pipeline(cfg: BaselineTaskConfig, seed: int = 0, n_jobs: int | None = None) -> Pipeline:
    """n_jobs: processes for fitting (the vectorisers side by side, the class-bias folds); `fit_task` sets them
    back to one before the pipeline is saved, so that serving never spawns workers."""
    vectorizers = [(
        "word",
        TfidfVectorizer(preprocessor=FrenchPreprocessor(cfg.title_weight), ngram_range=tuple(cfg.word_ngram_range),
                        min_df=cfg.word_min_df, max_df=cfg.word_max_df, max_features=cfg.word_max_features,
                        sublinear_tf=cfg.sublinear_tf, strip_accents=None, dtype=np.float32),
        "text",
    )]
    if cfg.char_ngram_range:
        vectorizers.append((
            "char",
            TfidfVectorizer(preprocessor=HeadPreprocessor() if cfg.char_scope == "head" else FrenchPreprocessor(cfg.title_weight),
                            analyzer="char_wb",
                            ngram_range=tuple(cfg.char_ngram_range), min_df=cfg.char_min_df,
                            max_features=cfg.char_max_features, sublinear_tf=True, dtype=np.float32),
            "text",
        ))
    if cfg.date_weight:
        vectorizers.append(("date", PublicationMonth(cfg.date_weight), "date"))
    columns = ColumnTransformer(vectorizers, sparse_threshold=1.0, n_jobs=n_jobs if len(vectorizers) > 1 else None)
    if cfg.classifier == "linear_svc":
        clf = LinearSVC(C=cfg.C, class_weight=cfg.class_weight, max_iter=cfg.max_iter, tol=cfg.tol, random_state=seed)
    elif cfg.classifier == "logreg":
        clf = LogisticRegression(C=cfg.C, class_weight=cfg.class_weight, max_iter=cfg.max_iter, tol=cfg.tol,
                                 solver=cfg.solver, random_state=seed)
    else:
        clf = ComplementNB(alpha=cfg.alpha)
    if cfg.class_bias_folds:
        clf = ClassBias(clf, cfg.class_bias_folds, n_jobs=n_jobs, random_state=seed)
    if cfg.classifier == "linear_svc":
        clf = TemperatureSoftmax(clf)
    return Pipeline([("features", columns), ("clf", clf)])


def frame(texts: list[str], dates: list[str | None] | None = None) -> pd.DataFrame:
    """The pipelines' input: `text`, and `date` ('YYYY-MM-DD' or None) for the models that use it."""
    return pd.DataFrame({"text": texts, "date": dates if dates is not None else [None] * len(texts)})


def fit_task(cfg: BaselineTaskConfig, texts: list[str], labels: np.ndarray, seed: int = 0,
             n_jobs: int | None = None, dates: list[str | None] | None = None) -> Pipeline:
    pipe = build_pipeline(cfg, seed, n_jobs).fit(frame(texts, dates), labels)
    return pipe.set_params(**{k: None for k in pipe.get_params() if k.endswith("n_jobs")})


def features(pipe: Pipeline, texts: list[str], dates: list[str | None] | None = None):
    """The fitted pipeline's feature matrix for these texts (to reuse one transform for several steps)."""
    return pipe.named_steps["features"].transform(frame(texts, dates))


def calibrate_task(pipe: Pipeline, X, labels: np.ndarray) -> None:
    """Fit the LinearSVC softmax temperature on held-out rows X (a `features` matrix)."""
    clf = pipe.named_steps["clf"]
    if isinstance(clf, TemperatureSoftmax) and X.shape[0]:
        clf.calibrate(X, labels)


def proba_full(pipe: Pipeline, X, n_classes: int) -> np.ndarray:
    """Probabilities over all n_classes label indices (classes unseen in training get 0) from a `features` matrix."""
    full = np.zeros((X.shape[0], n_classes), dtype=np.float64)
    full[:, pipe.classes_.astype(int)] = pipe.named_steps["clf"].predict_proba(X)
    return full


def predict_proba_full(pipe: Pipeline, texts: list[str], n_classes: int, dates: list[str | None] | None = None) -> np.ndarray:
    return proba_full(pipe, features(pipe, texts, dates), n_classes)


def top_features(pipe: Pipeline, label_names: list[str], k: int) -> pd.DataFrame:
    """The k heaviest features per class of a linear model (weights, not importances)."""
    est = pipe.named_steps["clf"]
    while hasattr(est, "estimator_"):  # TemperatureSoftmax / ClassBias wrap the linear model
        est = est.estimator_
    coef = getattr(est, "coef_", None)
    if coef is None and hasattr(est, "feature_log_prob_"):
        coef = est.feature_log_prob_
    if coef is None or k == 0:
        return pd.DataFrame(columns=["label", "rank", "feature", "weight"])
    names = pipe.named_steps["features"].get_feature_names_out()
    coef = np.asarray(coef.todense()) if hasattr(coef, "todense") else np.asarray(coef)
    classes = pipe.classes_.astype(int)
    if coef.shape[0] == 1:  # binary: one row of weights for the second class
        coef = np.vstack([-coef[0], coef[0]])
    rows = []
    for r, c in enumerate(classes):
        for rank, j in enumerate(np.argsort(-coef[r])[:k]):
            rows.append({"label": label_names[c], "rank": rank + 1, "feature": names[j], "weight": float(coef[r, j])})
    return pd.DataFrame(rows)
