"""Topic transfer: the publication date moves a prediction only for the sources whose dates the model learned.

For every other source, and without a date, the served prediction is the content-only one, and "date unknown" is
a state the model was trained on (training rows with their date blanked), not "the newest month".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from datasets import load_from_disk

from training import registry
from training.data.schema import source_key
from training.models.baseline import MonthPrior, PublicationMonth, blank_dates
from training.models.contract import dates_for_model

CHAMPION = "models:/vigie@champion"


def test_source_keys_fold_urls_hosts_and_case():
    assert source_key("https://www.Actu.Orange.fr/france/article.html?x=1") == "actu.orange.fr"
    assert source_key("actu.orange.fr") == "actu.orange.fr"
    assert source_key("http://user@lemonde.fr:8080/a") == "lemonde.fr"
    assert source_key("OrangeSum") == "orangesum"
    assert source_key("  ") is None and source_key(None) is None


def test_dates_reach_the_model_only_for_sources_it_learned_them_from():
    dates = ["2019-03-01", "2019-03-01", "2019-03-01", None, "2019-03-01"]
    sources = ["actu.orange.fr", "https://actu.orange.fr/monde/x.html", "lemonde.fr", "actu.orange.fr", None]
    assert dates_for_model(dates, sources, {"actu.orange.fr", "orangesum"}) == ["2019-03-01", "2019-03-01", None, None, None]
    assert dates_for_model(dates, sources, ()) == [None] * 5  # a model that learned no source's dates


def test_undated_is_its_own_trained_state_not_the_newest_month():
    month = PublicationMonth(weight=0.2).fit(pd.Series(["2017-01-15", "2018-06-01", "2020-07-01"] * 10))
    x = month.transform(pd.Series(["2020-07-01", None, "2016-01-01"])).toarray()
    names = list(month.get_feature_names_out())
    assert names[-1] == "date=unknown"
    assert x[1, -1] == pytest.approx(0.2) and not x[1, :-1].any()  # undated: the unknown column alone
    assert not np.array_equal(x[0], x[1])  # ... not the newest month
    assert x[0, -1] == 0 and x[2, -1] == 0
    blanked = blank_dates(["2020-01-01"] * 1000, 0.3, seed=0)
    assert 250 < sum(d is None for d in blanked) < 350
    assert blank_dates(["2020-01-01"] * 1000, 0.3, seed=0) == blanked  # seeded


def test_month_prior_moves_dated_rows_toward_the_sections_of_their_month_only():
    # section 0 exists only from 2018; section 1 all along (the `france` section of Orange, in small)
    dates = [f"{y}-{m:02d}-01" for y in (2016, 2017) for m in range(1, 13)] * 5 + [f"{y}-{m:02d}-01" for y in (2018, 2019) for m in range(1, 13)] * 10
    y = np.array([1] * 120 + [0] * 120 + [1] * 120)
    prior = MonthPrior(strength=1.0, window=2, alpha=5).fit(dates, y, n_classes=2)
    p = np.array([[0.5, 0.5]] * 4)
    got = prior.adjust(p, ["2017-03-10", "2019-03-10", None, "2030-01-01"])
    assert got[0, 1] > 0.8  # 2017: section 0 did not exist yet
    assert got[1, 0] > 0.5  # 2019: its share is back up (above its global share)
    np.testing.assert_array_equal(got[2], p[2])  # undated: the content answer, exactly
    np.testing.assert_allclose(got[3], got[1], atol=0.05)  # after the range: the last months
    np.testing.assert_allclose(got.sum(axis=1), 1)
    again = MonthPrior.from_json(prior.to_json()).adjust(p, ["2017-03-10", "2019-03-10", None, "2030-01-01"])
    np.testing.assert_allclose(again, got, atol=1e-5)
    assert MonthPrior(strength=0).fit(dates, y, 2).adjust(p, ["2017-03-10"] * 4) is p


@pytest.fixture(scope="module")
def champion(trained_store):
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", trained_store["uri"])
        mlflow.set_tracking_uri(trained_store["uri"])
        yield registry.load_model(CHAMPION)


@pytest.fixture(scope="module")
def test_articles(small_build):
    """OrangeSum test articles of the session's small build (scored, never trained or selected on)."""
    _, stats, _ = small_build
    split = load_from_disk(stats["output"])["test"]
    rows = [i for i, d in enumerate(split["date"]) if d][:40]
    assert len(rows) >= 5  # the small build holds 7
    return split.select(rows)


def _topic_probas(model, frame: pd.DataFrame) -> np.ndarray:
    out = model.predict(frame)
    return out[[c for c in out.columns if c.startswith("topic_proba_")]].to_numpy(dtype=float)


def test_served_date_moves_topic_only_with_the_training_source(champion, test_articles):
    texts, dates, urls = list(test_articles["text"]), list(test_articles["date"]), list(test_articles["url"])
    content = _topic_probas(champion, pd.DataFrame({"text": texts}))
    for other in ({"date": dates}, {"date": dates, "source": ["lemonde.fr"] * len(texts)},
                  {"date": dates, "source": [None] * len(texts)}):
        np.testing.assert_array_equal(_topic_probas(champion, pd.DataFrame({"text": texts, **other})), content)
    # the source the dates were learned from: by its page address, its host or the build's name for it
    for source in (urls, [source_key(u) for u in urls], ["orangesum"] * len(texts)):
        dated = _topic_probas(champion, pd.DataFrame({"text": texts, "date": dates, "source": source}))
        assert np.abs(dated - content).max() > 1e-6, source[0]


def test_training_logs_content_only_and_dated_figures(trained_store):
    m = trained_store["metrics"]
    for split in ("validation", "test"):
        assert f"{split}_topic_macro_f1" in m and f"{split}_topic_macro_f1_dated" in m
        assert f"{split}_topic_accuracy_dated" in m
    assert "validation_stance_macro_f1_dated" not in m  # the stance model reads no date
