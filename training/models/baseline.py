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

from training.data.schema import NEUTRAL
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


class EvidenceSentences(TransformerMixin, BaseEstimator):
    """Sentence-level stance scores as article features, learned from the evidence the annotators quoted.

    Training sentences: the evidence sentences of each non-neutral article (labelled with its stance) against
    the sentences of neutral articles (at most `max_neutral` of them, sampled). A TF-IDF + logistic regression
    scores every sentence of an article; its features are, per non-neutral class, the highest sentence
    probability in the title and lead (the guidelines' prominence rule), the highest anywhere, and the mean of
    the three highest. `top_sentences` gives the sentences behind the score: the served `stance_evidence`.

    Input: a frame with `text` (model input text: title on line 0, lead on line 1) and `evidence` (a list of
    sentences on training rows; empty at serving). The training rows' own features are cross-fitted
    (`fit_transform` scores each fold with a model that never saw its evidence, as scikit-learn's TargetEncoder
    does), so the classifier on top does not learn to trust scores that saw the answer."""

    def __init__(self, neutral: int = 1, C: float = 4.0, folds: int = 3, max_neutral: int = 30_000,
                 weight: float = 1.0, random_state: int = 0):
        self.neutral = neutral
        self.C = C
        self.folds = folds
        self.max_neutral = max_neutral
        self.weight = weight
        self.random_state = random_state

    def _training_sentences(self, texts: list[str], evidence: list, y: np.ndarray) -> tuple[list[str], np.ndarray]:
        from training.data.cleaning import sentences

        sents, labels = [], []
        neutral = [s for t, c in zip(texts, y) if c == self.neutral for _, s in sentences(t)]
        rng = np.random.default_rng(self.random_state)
        if len(neutral) > self.max_neutral:
            neutral = [neutral[i] for i in sorted(rng.choice(len(neutral), self.max_neutral, replace=False))]
        sents += neutral
        labels += [self.neutral] * len(neutral)
        for ev, c in zip(evidence, y):
            quoted = [e for e in ev if e] if c != self.neutral and isinstance(ev, (list, tuple, np.ndarray)) else []
            sents += quoted
            labels += [c] * len(quoted)
        return sents, np.asarray(labels)

    def _fit_model(self, texts, evidence, y):
        sents, labels = self._training_sentences(texts, evidence, y)
        if len(set(labels.tolist())) < 2:
            return None
        vec = TfidfVectorizer(preprocessor=FrenchPreprocessor(0), ngram_range=(1, 2), min_df=2, sublinear_tf=True,
                              dtype=np.float32)
        clf = LogisticRegression(C=self.C, class_weight="balanced", max_iter=2000)
        return Pipeline([("tfidf", vec), ("clf", clf)]).fit(sents, labels)

    def fit(self, X, y):
        y = np.asarray(y)
        self.stances_ = [int(c) for c in np.unique(y) if c != self.neutral]
        self.model_ = self._fit_model(_column(X["text"]), _column(X["evidence"]), y)
        return self

    def fit_transform(self, X, y=None, **fit_params):
        y = np.asarray(y)
        self.fit(X, y)
        texts, evidence = _column(X["text"]), _column(X["evidence"])
        out = np.zeros((len(texts), 3 * len(self.stances_)), dtype=np.float32)
        counts = np.bincount(y)
        folds = int(min(self.folds, counts[counts > 0].min())) if len(counts) else 0
        if folds < 2:
            return sp.csr_matrix(out)
        split = StratifiedKFold(folds, shuffle=True, random_state=self.random_state).split(texts, y)
        for tr, te in split:
            model = self._fit_model([texts[i] for i in tr], [evidence[i] for i in tr], y[tr])
            out[te] = self._features(model, [texts[i] for i in te])
        return sp.csr_matrix(out)

    def transform(self, X):
        return sp.csr_matrix(self._features(self.model_, _column(X["text"])))

    def _scored(self, model, texts: list[str]) -> list[tuple[list[tuple[int, str]], np.ndarray]]:
        """Per text: its sentences and their [n_sentences, n_stances] probabilities (stances in self.stances_)."""
        from training.data.cleaning import sentences

        split = [sentences(t) for t in texts]
        flat = [s for ss in split for _, s in ss]
        if model is None or not flat:
            return [(ss, np.zeros((len(ss), len(self.stances_)))) for ss in split]
        cols = [list(model.classes_).index(c) if c in model.classes_ else None for c in self.stances_]
        p = model.predict_proba(flat)
        probs = np.column_stack([p[:, c] if c is not None else np.zeros(len(flat)) for c in cols])
        out, k = [], 0
        for ss in split:
            out.append((ss, probs[k : k + len(ss)]))
            k += len(ss)
        return out

    def _features(self, model, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 3 * len(self.stances_)), dtype=np.float32)
        for i, (ss, probs) in enumerate(self._scored(model, texts)):
            if not len(ss):
                continue
            head = np.array([line <= 1 for line, _ in ss])
            for j in range(len(self.stances_)):
                col = probs[:, j]
                top = np.sort(col)[::-1][:3]
                out[i, 3 * j : 3 * j + 3] = (col[head].max() if head.any() else 0.0, col.max(), top.mean())
        return out * np.float32(self.weight)

    def top_sentences(self, texts: list[str], stance: int, k: int = 3, min_score: float = 0.0) -> list[list[dict]]:
        """Per text, the k sentences with the highest probability of `stance` (a class position), with it."""
        if stance not in self.stances_:
            return [[] for _ in texts]
        j = self.stances_.index(stance)
        out = []
        for ss, probs in self._scored(self.model_, texts):
            order = np.argsort(-probs[:, j], kind="stable")[:k] if len(ss) else []
            out.append([{"sentence": ss[i][1], "score": round(float(probs[i, j]), 4)} for i in order
                        if probs[i, j] >= min_score])
        return out

    def get_feature_names_out(self, input_features=None):
        return np.array([f"evidence_{c}_{f}" for c in self.stances_ for f in ("head_max", "max", "top3")], dtype=object)


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


def class_f1(y: np.ndarray, pred: np.ndarray, j: int) -> float:
    tp = np.sum((y == j) & (pred == j))
    denom = np.sum(y == j) + np.sum(pred == j)
    return float(2 * tp / denom) if denom else 0.0


def fit_class_bias(scores: np.ndarray, y: np.ndarray, steps: int = 21, max_rounds: int = 5,
                   target: int | None = None) -> np.ndarray:
    """One additive bias per class maximising macro-F1 of argmax(scores + bias) (or, with `target`, the F1 of
    that class position): coordinate ascent over a grid of +-1 standard deviation of the scores, class by
    class, until a round changes nothing."""
    k = scores.shape[1]
    grid = np.linspace(-1.0, 1.0, steps) * (scores.std() or 1.0)
    bias = np.zeros(k)

    def objective(pred: np.ndarray) -> float:
        return macro_f1(y, pred, k) if target is None else class_f1(y, pred, target)

    best = objective(scores.argmax(1))
    for _ in range(max_rounds):
        changed = False
        for j in range(k):
            for g in grid:
                trial = bias.copy()
                trial[j] = g
                f = objective((scores + trial).argmax(1))
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

    def __init__(self, estimator=None, folds: int = 3, n_jobs: int | None = None, random_state: int = 0,
                 target=None):
        self.estimator = estimator
        self.folds = folds
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.target = target  # None: macro-F1; a class label: that class's F1

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
            target = None
            if self.target is not None and self.target in self.classes_:
                target = int(np.flatnonzero(self.classes_ == self.target)[0])
            self.bias_ = fit_class_bias(oof, y_idx, target=target)
        return self

    def decision_function(self, X):
        return _margins(self.estimator_, X) + self.bias_

    def predict(self, X):
        return self.classes_[self.decision_function(X).argmax(axis=1)]

    def predict_proba(self, X):
        """softmax of the shifted margins: for multinomial logistic regression (or log-probabilities), the model's
        own probabilities with the bias added to the logits."""
        return softmax(self.decision_function(X), axis=1)


def build_pipeline(cfg: BaselineTaskConfig, seed: int = 0, n_jobs: int | None = None,
                   classes: list[str] | None = None) -> Pipeline:
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
    if cfg.evidence_weight:
        if not classes or NEUTRAL not in classes:
            raise ValueError(f"evidence features need the task's labels to hold {NEUTRAL!r} (got {classes})")
        neutral = classes.index(NEUTRAL)
        vectorizers.append(("evidence", EvidenceSentences(neutral=neutral, C=cfg.evidence_C, weight=cfg.evidence_weight,
                                                          random_state=seed), ["text", "evidence"]))
    columns = ColumnTransformer(vectorizers, sparse_threshold=1.0, n_jobs=n_jobs if len(vectorizers) > 1 else None)
    if cfg.classifier == "linear_svc":
        clf = LinearSVC(C=cfg.C, class_weight=cfg.class_weight, max_iter=cfg.max_iter, tol=cfg.tol, random_state=seed)
    elif cfg.classifier == "logreg":
        clf = LogisticRegression(C=cfg.C, class_weight=cfg.class_weight, max_iter=cfg.max_iter, tol=cfg.tol,
                                 solver=cfg.solver, random_state=seed)
    else:
        clf = ComplementNB(alpha=cfg.alpha)
    if cfg.class_bias_folds:
        target = None
        if cfg.bias_target != "macro_f1":
            if not classes or cfg.bias_target not in classes:
                raise ValueError(f"bias_target {cfg.bias_target!r} is not a label of the task ({classes})")
            target = classes.index(cfg.bias_target)
        clf = ClassBias(clf, cfg.class_bias_folds, n_jobs=n_jobs, random_state=seed, target=target)
    if cfg.classifier == "linear_svc":
        clf = TemperatureSoftmax(clf)
    return Pipeline([("features", columns), ("clf", clf)])


def frame(texts: list[str], dates: list[str | None] | None = None, evidence: list[list[str]] | None = None) -> pd.DataFrame:
    """The pipelines' input: `text`, `date` ('YYYY-MM-DD' or None) for the models that use it, and `evidence`
    (the annotators' sentences, training rows only: empty lists when predicting)."""
    n = len(texts)
    return pd.DataFrame({"text": texts, "date": dates if dates is not None else [None] * n,
                         "evidence": evidence if evidence is not None else [[] for _ in range(n)]})


def fit_task(cfg: BaselineTaskConfig, texts: list[str], labels: np.ndarray, seed: int = 0,
             n_jobs: int | None = None, dates: list[str | None] | None = None,
             evidence: list[list[str]] | None = None, classes: list[str] | None = None) -> Pipeline:
    """classes: the task's label names (class positions index them), for a bias target or the evidence features."""
    pipe = build_pipeline(cfg, seed, n_jobs, classes).fit(frame(texts, dates, evidence), labels)
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
