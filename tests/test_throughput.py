"""The fast serving path of the baselines gives the library's answers: FastCountVectorizer's counts are
CountVectorizer's, the shared word counts give each task the TfidfVectorizer features it had on its own, a model's
probabilities and evidence are the same through the fast path and through scikit-learn's own transform, and the
word counts are computed once a request for both tasks."""

from __future__ import annotations

import copy
import gzip
import itertools
import json
import re

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer

from tests.conftest import SHARDS
from training.models.baseline import (
    EvidenceSentences,
    FastCountVectorizer,
    FastTfidfTransformer,
    FrenchPreprocessor,
    HeadPreprocessor,
    KeyTable,
    WordColumns,
    WordTfidf,
    _frame_columns,
    _word_tokens,
    fit_task,
    frame,
    shared_words,
)
from training.models.contract import code_points
from training.models.baseline_family import BaselineModelConfig, BaselineScorer

ODD = ("Titre\nL’Occident qu'il ΣΑΣ ﬁn x² ½ ١٢٣ snake_case __ a_ _b 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 e\u0301t\u00e9 \x00nul\n"
       "İstanbul ǅemal ß ﬀ Ⅻ 〇二 a-b c.d e'f  \t\u00a0\u2003 fin")


def shard_articles(n: int, shard: str = "orangesum_topic_03.jsonl.gz") -> list[str]:
    out = []
    with gzip.open(SHARDS / shard, "rt") as fh:
        for line in fh:
            d = json.loads(line)
            if d.get("split") == "train" and d.get("text"):
                out.append(f"{d['title']}\n{d.get('abstract') or ''}\n{d['text']}")
                if len(out) == n:
                    break
    return out


@pytest.fixture(scope="module")
def corpus():
    docs = shard_articles(900)
    return docs[:600], docs[600:] + [ODD, ODD.upper(), "", "a", "  \n "]


LONE_SURROGATE = "Titre\nun \ud800 seul et \udfff ici"  # a str may hold one; a pandas (Arrow) column may not


def same_matrix(a, b) -> bool:
    a, b = sp.csr_matrix(a), sp.csr_matrix(b)
    return (a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.indptr, b.indptr)
            and np.array_equal(a.indices, b.indices) and np.array_equal(a.data, b.data))


@pytest.mark.parametrize("kind", ["word_1_2", "word_1_1", "word_2_2", "char_head", "char_all_1_3"])
def test_fast_counts_are_count_vectorizers_counts(corpus, kind):
    train, test = corpus
    settings = {
        # the fast word analyzer skips the elision split: the reference keeps it, so this checks that too
        "word_1_2": ({"preprocessor": FrenchPreprocessor(1, split_elisions=False), "ngram_range": (1, 2), "min_df": 2},
                     {"preprocessor": FrenchPreprocessor(1), "ngram_range": (1, 2), "min_df": 2}),
        "word_1_1": ({"preprocessor": FrenchPreprocessor(0, split_elisions=False), "ngram_range": (1, 1)}, None),
        "word_2_2": ({"preprocessor": FrenchPreprocessor(0, split_elisions=False), "ngram_range": (2, 2), "max_df": 0.5,
                      "max_features": 5000}, None),
        "char_head": ({"preprocessor": HeadPreprocessor(), "analyzer": "char_wb", "ngram_range": (2, 5), "min_df": 3,
                       "max_features": 30000}, None),
        "char_all_1_3": ({"preprocessor": FrenchPreprocessor(1), "analyzer": "char_wb", "ngram_range": (1, 3)}, None),
    }
    fast_kw, ref_kw = settings[kind]
    fast = FastCountVectorizer(dtype=np.float32, **fast_kw).fit(train + [ODD])
    ref = CountVectorizer(dtype=np.float32, **(ref_kw or fast_kw)).fit(train + [ODD])
    assert fast.lookup_ is not None  # the fast path is the one under test
    assert fast.vocabulary_ == ref.vocabulary_
    test = test + [LONE_SURROGATE]
    expected = ref.transform(test)
    for size in (1, 7, len(test)):
        got = sp.vstack([fast.transform(test[i:i + size]) for i in range(0, len(test), size)])
        assert same_matrix(got, expected), size
    assert fast.transform([]).shape == (0, len(fast.vocabulary_))


def test_word_tokens_are_the_default_patterns_matches_over_every_code_point():
    # every code point, shuffled, cut by random spaces and punctuation: the runs must be re.findall's matches
    rng = np.random.default_rng(0)
    points = rng.permutation(0x110000)
    pieces = [chr(c) for c in points]
    for i in rng.choice(len(pieces), 200_000, replace=False):
        pieces[i] = rng.choice([" ", ".", "'", "\n"])
    text = "".join(pieces)
    chars, _ = code_points([text])
    start, end, _ = _word_tokens(chars)
    assert [text[a:b] for a, b in zip(start.tolist(), end.tolist())] == re.findall(r"(?u)\b\w\w+\b", text)


def test_key_table_finds_every_key_and_nothing_else():
    rng = np.random.default_rng(1)
    cases = [np.zeros(0, np.int64), np.array([7]), np.unique(rng.integers(-2**62, 2**62, 50_000)),
             np.arange(2000, dtype=np.int64) << 40]  # the last: keys crowding the same slots
    for keys in cases:
        table = KeyTable(keys, np.arange(len(keys)) * 3)
        queries = np.concatenate([keys, rng.integers(-2**62, 2**62, 5000), keys[::-7] + 1])
        expected = dict(zip(keys.tolist(), (np.arange(len(keys)) * 3).tolist()))
        assert table.get(queries).tolist() == [expected.get(k, -1) for k in queries.tolist()]
    with pytest.raises(ValueError):
        KeyTable(np.array([1, 1]), np.array([0, 1]))


def test_word_tfidf_on_shared_counts_is_the_tasks_own_tfidf_vectorizer(corpus):
    train, test = corpus
    task_rows = train[::3]  # the task's training rows: a part of the rows the shared vocabulary saw
    words = shared_words(train, (1, 2), 1, 2)
    for kw in ({"min_df": 2}, {"min_df": 3, "max_df": 0.4, "max_features": 2000}):
        own = TfidfVectorizer(preprocessor=FrenchPreprocessor(1), ngram_range=(1, 2), sublinear_tf=True,
                              dtype=np.float32, **kw)
        fitted = own.fit_transform(task_rows)
        tfidf = WordTfidf(words=words, sublinear_tf=True, **kw)
        ours = tfidf.fit_transform(words.transform(frame(task_rows))["words"])
        assert list(tfidf.get_feature_names_out()) == list(own.get_feature_names_out())
        assert np.allclose(ours.toarray(), fitted.toarray(), rtol=1e-6, atol=1e-7)  # fit: summed in another order
        assert np.array_equal(tfidf.tfidf_.idf_, own.idf_)
        assert same_matrix(tfidf.transform(words.transform(frame(test))["words"]), own.transform(test))


def test_evidence_features_are_the_per_article_definition(corpus):
    train, test = corpus
    rng = np.random.default_rng(0)
    y = rng.choice([0, 1, 2], size=len(train), p=[0.1, 0.85, 0.05])
    evidence = [[s for s in t.split("\n")[2].split(". ")[:2]] if c != 1 else [] for t, c in zip(train, y)]
    est = EvidenceSentences(neutral=1, folds=2).fit(frame(train, None, evidence), y)
    texts = test + ["", "Un titre seul", "Titre\nChapeau.\nUne. Deux. Trois. Quatre."]
    expected = np.zeros((len(texts), 6), dtype=np.float32)
    for i, (ss, probs) in enumerate(est._scored(est.model_, texts)):
        head = np.array([line <= 1 for line, _ in ss], dtype=bool)
        for j in range(2):
            if len(ss):
                col = probs[:, j]
                expected[i, 3 * j:3 * j + 3] = (col[head].max() if head.any() else 0.0, col.max(),
                                                np.sort(col)[::-1][:3].mean())
    assert np.array_equal(est.transform(frame(texts)).toarray(), expected * np.float32(est.weight))


@pytest.fixture(scope="module")
def small_model(small_build):
    """Both tasks of configs/baseline.yaml fitted on the small build's train rows, sharing one word counter, as
    BaselineFamily.fit does; and texts to score (train and validation rows)."""
    from datasets import load_from_disk

    from training.data.dataset import task_data

    cfg, stats, _ = small_build
    dsd = load_from_disk(stats["output"])
    labels = {t: list(dsd["train"].features[t].names) for t in ("topic", "stance")}
    data = {t: task_data(dsd["train"], t) for t in ("topic", "stance")}
    rows = dict(zip(data["topic"].ids, data["topic"].texts)) | dict(zip(data["stance"].ids, data["stance"].texts))
    words = shared_words(list(rows.values()), (1, 2), 1, 2)
    pipes = {t: fit_task(getattr(cfg.model, t), d.texts, d.y, dates=d.dates, evidence=d.evidence, classes=labels[t],
                         words=words, n_jobs=1) for t, d in data.items()}
    texts = list(dsd["train"]["text"]) + list(dsd["validation"]["text"])
    dates = [d or None for d in list(dsd["train"]["date"]) + list(dsd["validation"]["date"])]
    return pipes, labels, texts, dates


def library_path(pipes: dict) -> dict:
    """A copy of the pipelines whose vectorizers all count with scikit-learn's own CountVectorizer.transform and
    weigh with TfidfTransformer.transform."""
    pipes = copy.deepcopy(pipes)
    seen, weights = [], []
    for pipe in pipes.values():
        columns = pipe.named_steps["features"].named_transformers_
        for vec in (pipe[0].estimator.vectorizer_, columns["char"]["counts"] if "char" in columns else None,
                    columns["evidence"].model_["counts"] if "evidence" in columns else None):
            if vec is not None:
                vec.lookup_ = None
                seen.append(vec)
        for tfidf in (columns["word"].tfidf_, columns["char"]["tfidf"] if "char" in columns else None,
                      columns["evidence"].model_["tfidf"] if "evidence" in columns else None):
            if tfidf is not None:
                assert type(tfidf) is FastTfidfTransformer
                tfidf.__class__ = TfidfTransformer
                weights.append(tfidf)
    assert len(seen) >= 4 and len(weights) >= 4
    return pipes


@pytest.mark.parametrize("sublinear, norm, dtype", itertools.product([True, False], ["l2", "l1", None],
                                                                     [np.float32, np.float64]))
def test_fast_tfidf_is_the_librarys_transform(sublinear, norm, dtype):
    rng = np.random.default_rng(0)
    train = sp.random(60, 40, density=0.2, format="csr", random_state=1, data_rvs=lambda n: rng.integers(1, 6, n))
    X = sp.random(25, 40, density=0.3, format="csr", random_state=2, dtype=dtype,
                  data_rvs=lambda n: rng.integers(1, 9, n).astype(dtype))
    X[3] = 0  # an empty row (no stored zeros: counts store none)
    X = sp.csr_matrix(X)
    X.eliminate_zeros()
    fast = FastTfidfTransformer(sublinear_tf=sublinear, norm=norm).fit(train)
    slow = TfidfTransformer(sublinear_tf=sublinear, norm=norm).fit(train)
    before = X.copy()
    got, expected = fast.transform(X), slow.transform(X)
    assert type(got) is type(expected) and got.dtype == expected.dtype and got.format == "csr"
    assert np.array_equal(got.indptr, expected.indptr) and np.array_equal(got.indices, expected.indices)
    assert np.array_equal(got.data, expected.data)
    assert (X != before).nnz == 0  # copy=True: the input is left as it was
    with pytest.raises(ValueError):  # what the fast path does not take goes to the library, messages included
        fast.transform(sp.csr_matrix(np.ones((2, 3))))


def test_fast_path_predictions_are_the_library_paths_on_real_articles(small_model):
    pipes, labels, texts, dates = small_model
    assert len(texts) >= 300
    fast, slow = BaselineScorer(pipes, labels), BaselineScorer(library_path(pipes), labels)
    for batch in (texts[:1], texts[:32], texts):
        got, expected = fast.predict_proba(batch, dates[:len(batch)]), slow.predict_proba(batch, dates[:len(batch)])
        assert set(got) == {"topic", "stance"}
        for task in got:
            assert np.array_equal(got[task][1], expected[task][1]), task
        assert fast.evidence(batch, got) == slow.evidence(batch, expected)


def test_column_features_are_the_column_transformers_matrix(small_model):
    """The served path stacks each block's features itself (`column_features`): the matrix ColumnTransformer's own
    transform gives, entry for entry and dtype, for one article, a batch and every row, and the probabilities of
    the whole pipeline's predict_proba."""
    from training.models.baseline import column_features

    pipes, _, texts, dates = small_model
    for batch in (texts[:1], texts[:32], texts):
        X = frame(batch, dates[:len(batch)])
        for task, pipe in pipes.items():
            columns = pipe.named_steps["features"]
            # the served path reads the columns as lists (`Columns`); the library reads the DataFrame
            got = column_features(columns, pipe[0].transform(_frame_columns(batch, dates[:len(batch)], None)))
            expected = columns.transform(pipe[0].transform(X))
            assert got.format == "csr" and got.dtype == expected.dtype and got.shape == expected.shape, task
            assert (got != expected).nnz == 0, task
            assert np.array_equal(pipe.named_steps["clf"].predict_proba(got), pipe.predict_proba(X)), task


def test_the_word_counts_are_computed_once_a_request_for_both_tasks(small_model, monkeypatch, tmp_path):
    pipes, labels, texts, dates = small_model
    joblib.dump(pipes, tmp_path / "pipelines.joblib")  # the family's one file
    loaded = joblib.load(tmp_path / "pipelines.joblib")
    assert loaded["topic"][0] is loaded["stance"][0]  # still one counter after a save and a load
    calls = []
    original = WordColumns.transform
    monkeypatch.setattr(WordColumns, "transform", lambda self, X: calls.append(id(self)) or original(self, X))
    counted = []
    fast_transform = FastCountVectorizer.transform
    monkeypatch.setattr(FastCountVectorizer, "transform",
                        lambda self, docs: counted.append((id(self), len(docs))) or fast_transform(self, docs))
    scorer = BaselineScorer(loaded, labels)
    scorer.predict_proba(texts[:32], dates[:32])
    shared = loaded["topic"][0].estimator
    assert calls == [id(shared)]
    assert [n for i, n in counted if i == id(shared.vectorizer_)] == [32]  # one pass over the 32 texts


def test_tasks_share_a_word_counter_only_when_their_analyzers_agree():
    cfg = BaselineModelConfig()
    assert cfg.word_groups(["topic", "stance"]) == [["topic", "stance"]]
    assert BaselineModelConfig(stance={"title_weight": 2}).word_groups(["topic", "stance"]) == [["topic"], ["stance"]]
    assert BaselineModelConfig(share_words=False).word_groups(["topic", "stance"]) == [["topic"], ["stance"]]
    assert BaselineModelConfig(stance={"word_min_df": 5}).word_groups(["topic", "stance"]) == [["topic", "stance"]]


def test_elision_split_changes_no_word_token(corpus):
    train, _ = corpus
    tokenize = re.compile(r"(?u)\b\w\w+\b").findall
    for doc in itertools.chain(train[:200], [ODD]):
        assert tokenize(FrenchPreprocessor(1)(doc)) == tokenize(FrenchPreprocessor(1, split_elisions=False)(doc))


@pytest.mark.parametrize("classes", [2, 4])
def test_linear_margins_are_the_librarys_decision_function(classes):
    """`_margins` computes a linear model's decision values itself (without the per-call checks): the library's,
    value for value, for LinearSVC and LogisticRegression, binary ([0, d]) and multi-class, float32 counts."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    from training.models.baseline import _margins

    rng = np.random.default_rng(0)
    X = sp.random(80, 30, density=0.3, format="csr", random_state=3, dtype=np.float32)
    y = rng.integers(0, classes, 80)
    for est in (LinearSVC().fit(X, y), LogisticRegression(max_iter=500).fit(X, y)):
        d = est.decision_function(X[:7])
        expected = np.column_stack([np.zeros_like(d), d]) if d.ndim == 1 else d
        est.decision_function = None  # computed by `_margins` itself, not by the library's method
        got = _margins(est, X[:7])
        assert got.dtype == expected.dtype and np.array_equal(got, expected), type(est).__name__
