"""The baseline estimators on their own: per-class bias for macro-F1, fitting in parallel, serving serially,
publication-date features."""

import numpy as np
import pytest

from training.models.baseline_family import BaselineTaskConfig
from training.models.baseline import (ClassBias, PublicationMonth, features, fit_class_bias, fit_task, macro_f1,
                                      predict_proba_full, top_features)


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


def test_publication_month_steps_over_the_training_range():
    enc = PublicationMonth(weight=0.5, trim=0).fit(["2018-02-10", "2018-05-01", "2018-03-31", None])
    assert list(enc.get_feature_names_out()) == ["date>=2018-03", "date>=2018-04", "date>=2018-05", "date=unknown"]
    got = enc.transform(["2018-02-28", "2018-04-02", "2017-01-01", "2031-12-01", None, "not a date", "2018-13-01"]).toarray()
    assert got.tolist() == [
        [0, 0, 0, 0],          # first month of the range
        [0.5, 0.5, 0, 0],      # April: past the March and April steps
        [0, 0, 0, 0],          # before the range: reads as its first month
        [0.5, 0.5, 0.5, 0],    # after the range: its last month (the newest sections)
        [0, 0, 0, 0.5],        # undated: its own state (learned from rows whose date was blanked), not the newest month
        [0, 0, 0, 0.5],        # unreadable: same as undated
        [0, 0, 0, 0.5],        # month 13 is unreadable
    ]
    with pytest.raises(ValueError, match="no training row has a readable date"):
        PublicationMonth().fit([None, "", "soon"])
    # one straggler among 300 articles a decade earlier does not stretch the range back to it
    enc = PublicationMonth(trim=0.01).fit(["2008-01-05"] + ["2018-02-01", "2018-03-01", "2018-04-01"] * 100)
    assert list(enc.get_feature_names_out()) == ["date>=2018-03", "date>=2018-04", "date=unknown"]
    assert enc.transform(["2008-01-05"]).toarray().tolist() == [[0, 0, 0]]


def test_date_weight_lets_the_model_read_when_a_section_existed():
    # the same words before and after a reorganisation; the sections used changed on 2018-01: only the date tells
    def articles(seed):
        texts, y = _texts({"sport": 80, "eco": 80}, seed)
        rng = np.random.default_rng(seed)
        era = rng.random(len(y)) < 0.5
        dates = [f"{2017 + e}-{rng.integers(3, 13):02d}-15" for e in era]
        texts = [t.replace("Titre sport", "Titre").replace("Titre eco", "Titre") for t in texts]
        return texts, np.where(era, y, 2), dates  # before 2018 every article went to one catch-all section

    texts, y, dates = articles(0)
    cfg = BaselineTaskConfig(C=1.0, class_weight=None, title_weight=0)
    text_only = fit_task(cfg, texts, y, dates=dates)
    dated = fit_task(cfg.model_copy(update={"date_weight": 1.0}), texts, y, dates=dates)
    texts, y, dates = articles(1)  # held-out articles
    acc = {name: (predict_proba_full(p, texts, 3, dates).argmax(1) == y).mean() for name, p in
           {"text_only": text_only, "dated": dated}.items()}
    assert acc["dated"] > 0.95 and acc["text_only"] < 0.8
    assert "date__date>=2018-01" in set(top_features(dated, ["sport", "eco", "old"], 40)["feature"])


# --- stance: evidence sentences -------------------------------------------------------------------------------


def _evidence_corpus(n_neutral=60, n_anti=12):
    rng = np.random.default_rng(0)
    filler = ["Le conseil municipal a voté le budget.", "La météo sera clémente demain.", "Le match a fini sur un nul.",
              "Les ventes de voitures progressent.", "Un festival ouvre ses portes samedi."]
    texts, evidence, y = [], [], []
    for i in range(n_neutral):
        body = " ".join(rng.choice(filler, 3))
        texts.append(f"Titre neutre {i}\nUn chapeau sans histoire.\n{body}")
        evidence.append([])
        y.append(1)
    for i in range(n_anti):
        quote = f"Le ministre dénonce l'ingérence occidentale et l'arrogance de Washington numéro {i}."
        texts.append(f"Titre {i}\nUn chapeau.\n{rng.choice(filler)} {quote}")
        evidence.append([quote])
        y.append(0)
    return texts, evidence, np.array(y)


def test_evidence_sentences_score_the_quoted_kind_of_sentence_and_cross_fit_the_training_rows():
    from training.models.baseline import EvidenceSentences, frame

    texts, evidence, y = _evidence_corpus()
    X = frame(texts, None, evidence)
    est = EvidenceSentences(neutral=1, folds=3, random_state=0)
    crossed = est.fit_transform(X, y).toarray()
    insample = est.transform(X).toarray()
    assert crossed.shape == (len(y), 3) and not np.allclose(crossed, insample)  # training rows are cross-fitted
    # the anti articles' highest sentence score is well above the neutral ones', out of fold too
    assert crossed[y == 0, 1].min() > crossed[y == 1, 1].max()
    new = "Un titre\nUn chapeau.\nLa météo sera clémente demain. Le président dénonce l'ingérence occidentale de Washington."
    top = est.top_sentences([new], stance=0, k=2)[0]
    assert top[0]["sentence"] == "Le président dénonce l'ingérence occidentale de Washington."
    assert top[0]["score"] > top[1]["score"] and len(top) == 2
    assert est.top_sentences([new], stance=2) == [[]]  # a stance the model never saw: nothing made up


def test_class_bias_can_target_one_class_f1():
    from training.models.baseline import class_f1, fit_class_bias

    rng = np.random.default_rng(1)
    y = np.array([0] * 20 + [1] * 480)
    scores = np.column_stack([np.where(y == 0, rng.normal(0.0, 1, 500), rng.normal(-1.5, 1, 500)), np.zeros(500)])
    before = class_f1(y, scores.argmax(1), 0)
    bias = fit_class_bias(scores, y, target=0)
    assert class_f1(y, (scores + bias).argmax(1), 0) > before
