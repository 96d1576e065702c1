"""TF-IDF + linear model baselines: one scikit-learn Pipeline per task, built from the config.

The pipeline takes a DataFrame with a `text` column (a ColumnTransformer selects it: a bare-list vectorizer
served through MLflow pyfunc would treat a batch as one document). Probabilities come from the classifier
itself (LogisticRegression, ComplementNB) or, for LinearSVC, from a softmax over its decision values with a
temperature fitted on held-out data (temperature scaling: one parameter, argmax unchanged).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import ComplementNB
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from training.config import BaselineTaskConfig

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
        d = self.estimator_.decision_function(X)
        return np.column_stack([-d, d]) if d.ndim == 1 else d

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


def build_pipeline(cfg: BaselineTaskConfig, seed: int = 0) -> Pipeline:
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
    features = ColumnTransformer(vectorizers, sparse_threshold=1.0)
    if cfg.classifier == "linear_svc":
        clf = TemperatureSoftmax(LinearSVC(C=cfg.C, class_weight=cfg.class_weight, max_iter=cfg.max_iter, random_state=seed))
    elif cfg.classifier == "logreg":
        clf = LogisticRegression(C=cfg.C, class_weight=cfg.class_weight, max_iter=cfg.max_iter, solver=cfg.solver, random_state=seed)
    else:
        clf = ComplementNB(alpha=cfg.alpha)
    return Pipeline([("features", features), ("clf", clf)])


def frame(texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"text": texts})


def fit_task(cfg: BaselineTaskConfig, texts: list[str], labels: np.ndarray, seed: int = 0) -> Pipeline:
    return build_pipeline(cfg, seed).fit(frame(texts), labels)


def calibrate_task(pipe: Pipeline, texts: list[str], labels: np.ndarray) -> None:
    clf = pipe.named_steps["clf"]
    if isinstance(clf, TemperatureSoftmax) and len(texts):
        clf.calibrate(pipe.named_steps["features"].transform(frame(texts)), labels)


def predict_proba_full(pipe: Pipeline, texts: list[str], n_classes: int) -> np.ndarray:
    """Probabilities over all n_classes label indices (classes unseen in training get 0)."""
    p = pipe.predict_proba(frame(texts))
    full = np.zeros((len(texts), n_classes), dtype=np.float64)
    full[:, pipe.classes_.astype(int)] = p
    return full


def top_features(pipe: Pipeline, label_names: list[str], k: int) -> pd.DataFrame:
    """The k heaviest features per class of a linear model (weights, not importances)."""
    clf = pipe.named_steps["clf"]
    est = getattr(clf, "estimator_", clf)
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
