"""The baseline estimators on their own: per-class bias for macro-F1, fitting in parallel, serving serially."""

import numpy as np
import pytest

from training.config import BaselineTaskConfig
from training.models.baseline import (ClassBias, features, fit_class_bias, fit_task, macro_f1, predict_proba_full,
                                      top_features)


def test_macro_f1_matches_scikit_learn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 5, 500), rng.integers(0, 5, 500)
    p[p == 4] = 3  # a class never predicted counts as F1 0
    assert macro_f1(y, p, 5) == pytest.approx(f1_score(y, p, average="macro"))


def test_class_bias_recovers_an_under_scored_class():
    # class 2 is rare and its score is pushed down: argmax misses most of it; a bias on it brings it back
    rng = np.random.default_rng(1)
    y = rng.choice(3, size=3000, p=[0.6, 0.3, 0.1])
    scores = rng.normal(0, 1, (3000, 3))
    scores[np.arange(3000), y] += 2.0
    scores[:, 2] -= 1.5
    bias = fit_class_bias(scores, y)
    assert macro_f1(y, (scores + bias).argmax(1), 3) > macro_f1(y, scores.argmax(1), 3) + 0.05
    assert bias[2] - bias[:2].mean() > 0.5


def _texts(n_per_class: dict[str, int], seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    words = {"sport": "match but équipe victoire", "eco": "bourse marché euro croissance",
             "auto": "voiture moteur électrique route"}
    common = "le la les de un une pour avec dans sur".split()
    texts, labels = [], []
    for c, (label, n) in enumerate(n_per_class.items()):
        for _ in range(n):
            w = list(rng.choice(words[label].split(), 3)) + list(rng.choice(common, 8))
            texts.append(f"Titre {label if rng.random() < 0.3 else ''}\n{' '.join(w)}")
            labels.append(c)
    return texts, np.array(labels)


def test_fit_task_with_class_bias_serves_serially():
    texts, y = _texts({"sport": 60, "eco": 40, "auto": 12})
    cfg = BaselineTaskConfig(C=0.5, class_bias_folds=3, char_ngram_range=(2, 4), char_scope="head", char_min_df=1)
    pipe = fit_task(cfg, texts, y, n_jobs=2)
    bias_model = pipe.named_steps["clf"].estimator_
    assert isinstance(bias_model, ClassBias) and bias_model.folds_used_ == 3 and bias_model.bias_.shape == (3,)
    # fitted with 2 processes, saved with none: serving one article must not spawn workers
    assert all(v is None for k, v in pipe.get_params().items() if k.endswith("n_jobs"))
    assert pipe.named_steps["features"].n_jobs is None
    proba = predict_proba_full(pipe, texts[:5], 3)
    assert proba.shape == (5, 3) and np.allclose(proba.sum(1), 1)
    feats = top_features(pipe, ["sport", "eco", "auto"], 3)  # reaches the linear model through both wrappers
    assert len(feats) == 9 and set(feats["label"]) == {"sport", "eco", "auto"}


def test_class_bias_uses_fewer_folds_for_a_rare_class_and_none_for_a_singleton():
    texts, y = _texts({"sport": 30, "eco": 30, "auto": 2})
    pipe = fit_task(BaselineTaskConfig(class_bias_folds=5), texts, y)
    assert pipe.named_steps["clf"].estimator_.folds_used_ == 2
    texts, y = _texts({"sport": 30, "eco": 30, "auto": 1})
    pipe = fit_task(BaselineTaskConfig(class_bias_folds=5), texts, y)
    bias_model = pipe.named_steps["clf"].estimator_
    assert bias_model.folds_used_ == 0 and not bias_model.bias_.any()


def test_class_bias_on_binary_logistic_regression_keeps_its_probabilities():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(int)
    model = ClassBias(LogisticRegression(), folds=3).fit(X, y)
    model.bias_[:] = 0  # with no bias, the wrapper's probabilities are the model's own
    assert np.allclose(model.predict_proba(X), model.estimator_.predict_proba(X))


def test_class_bias_on_complement_nb_shifts_its_log_probabilities():
    texts, y = _texts({"sport": 40, "eco": 40, "auto": 10})
    pipe = fit_task(BaselineTaskConfig(classifier="complement_nb", class_bias_folds=3), texts, y)
    model = pipe.named_steps["clf"]
    X = features(pipe, texts)
    want = model.estimator_.predict_proba(X) * np.exp(model.bias_)
    assert np.allclose(model.predict_proba(X), want / want.sum(1, keepdims=True))
