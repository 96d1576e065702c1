"""Metrics that do not move with which classes happen to be present, and figures for the rare ones."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import bootstrap
from sklearn.metrics import average_precision_score, f1_score

from training.evaluate import evaluate_task, plot_precision_recall

LABELS = ["anti_occident", "neutre", "pro_occident"]


def onehot(pred, k=3, p=0.9):
    out = np.full((len(pred), k), (1 - p) / (k - 1))
    out[np.arange(len(pred)), pred] = p
    return out


def test_macro_f1_is_over_every_label_of_the_task_even_absent_ones():
    """The bug of the old metric: averaged over the classes true or predicted, one wrong `pro_occident`
    prediction on a split without `pro_occident` moved macro-F1 from 0.78 to 0.52. Over every label it moves by
    one row's worth."""
    y = np.array([0] * 5 + [1] * 95)
    right = np.array([0] * 3 + [1] * 2 + [1] * 95)
    one_pro = right.copy()
    one_pro[10] = 2
    m_right, _ = evaluate_task("validation", "stance", y, onehot(right), LABELS)
    m_pro, _ = evaluate_task("validation", "stance", y, onehot(one_pro), LABELS)
    for m, pred in ((m_right, right), (m_pro, one_pro)):
        assert m["validation_stance_macro_f1"] == pytest.approx(
            f1_score(y, pred, labels=[0, 1, 2], average="macro", zero_division=0))
    assert m_right["validation_stance_macro_f1"] - m_pro["validation_stance_macro_f1"] < 0.01
    # every class is reported, with its count, also the one absent from the split
    assert m_right["validation_stance_support_pro_occident"] == 0
    assert m_right["validation_stance_f1_pro_occident"] == 0
    assert m_pro["validation_stance_predicted_pro_occident"] == 1


def test_a_rare_class_gets_average_precision_intervals_and_a_curve(tmp_path):
    rng = np.random.default_rng(0)
    y = np.array([0] * 8 + [1] * 192)
    score = np.where(y == 0, rng.uniform(0.3, 1.0, len(y)), rng.uniform(0.0, 0.6, len(y)))
    proba = np.column_stack([score, 1 - score, np.zeros(len(y))])
    m, report = evaluate_task("validation", "stance", y, proba, LABELS)
    assert m["validation_stance_ap_anti_occident"] == pytest.approx(average_precision_score(y == 0, score))
    low, high = m["validation_stance_f1_anti_occident_ci_low"], m["validation_stance_f1_anti_occident_ci_high"]
    assert 0 <= low <= m["validation_stance_f1_anti_occident"] <= high <= 1 and high - low > 0.05
    assert m["validation_stance_ap_anti_occident_ci_low"] <= m["validation_stance_ap_anti_occident"]
    assert "validation_stance_ap_neutre" not in m  # not rare: its F1 says enough
    assert plot_precision_recall(report, tmp_path / "pr.png") and (tmp_path / "pr.png").stat().st_size > 1000
    _, common = evaluate_task("validation", "stance", np.array([0, 1] * 50), onehot(np.array([0, 1] * 50)), LABELS)
    assert not plot_precision_recall(common, tmp_path / "none.png") and not (tmp_path / "none.png").exists()


def test_bootstrap_statistics_are_scikit_learns():
    """The numpy F1 and average precision behind the bootstrap intervals equal scikit-learn's, ties, a class never
    predicted and a class absent included."""
    from training.evaluate import binary_average_precision, binary_f1

    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 50, 400):
        for _ in range(30):
            truth = rng.random(n) < rng.choice([0.0, 0.05, 0.3, 1.0])
            predicted = rng.random(n) < rng.choice([0.0, 0.1, 0.5])
            score = np.round(rng.random(n), int(rng.choice([1, 2, 6])))  # coarse rounding: many tied scores
            assert binary_f1(truth, predicted) == pytest.approx(f1_score(truth, predicted, zero_division=0), abs=1e-12)
            if truth.any():
                assert binary_average_precision(truth, score) == pytest.approx(average_precision_score(truth, score), abs=1e-12)
            else:
                assert np.isnan(binary_average_precision(truth, score))


def test_a_class_of_two_rows_gets_a_finite_ap_interval_without_a_warning():
    """With 2 of 100 rows, ~13 % of the resamples hold none of the class and their AP is undefined: the interval
    is over the others (scipy alone gives NaN and a DegenerateDataWarning)."""
    import warnings

    from training.evaluate import BOOTSTRAP_RESAMPLES, binary_average_precision, bootstrap_interval

    rng = np.random.default_rng(1)
    y = np.array([0] * 2 + [1] * 98)
    score = np.where(y == 0, rng.uniform(0.4, 1.0, len(y)), rng.uniform(0.0, 0.8, len(y)))
    pred = (score <= 0.7).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ci = bootstrap_interval(y, pred, score, 0)
    low, high = ci["ap"]
    assert 0 <= low < high <= 1
    # the same resamples (same seed) by hand: the percentiles of the defined APs
    res = bootstrap((y, score), lambda yy, ss: binary_average_precision(yy == 0, ss), paired=True, vectorized=False,
                    n_resamples=BOOTSTRAP_RESAMPLES, method="percentile", rng=np.random.default_rng(0))
    dist = res.bootstrap_distribution
    assert np.isnan(dist).mean() > 0.05
    assert (low, high) == pytest.approx(tuple(np.percentile(dist[~np.isnan(dist)], [2.5, 97.5])))
    assert all(np.isfinite(ci["f1"]))
