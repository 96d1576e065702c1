"""TF-IDF + linear model baselines: one scikit-learn Pipeline per task, built from the config.

The pipeline takes a DataFrame with a `text` column (a ColumnTransformer selects it: a bare-list vectorizer
served through MLflow pyfunc would treat a batch as one document). Probabilities come from the classifier
itself (LogisticRegression, ComplementNB) or, for LinearSVC, from a softmax over its decision values with a
temperature fitted on held-out data (temperature scaling: one parameter, argmax unchanged). `ClassBias` can shift
each class's decision threshold to where out-of-fold macro-F1 is best (`class_bias_folds`). `PublicationMonth` adds
the article's date (`date_weight`), an optional column of the input frame.

The word n-grams are counted once for all tasks: a task's pipeline starts with the model's shared, already
fitted `WordColumns` (`shared_words`, frozen), which adds each article's counts to the frame, and its `WordTfidf`
picks the task's own terms and idf out of them (the features a TfidfVectorizer of the task's own would give).
`proba_tasks` runs that shared step once and the rest of each pipeline after it. The counting itself is
`FastCountVectorizer`: scikit-learn's CountVectorizer with the n-gram lookup vectorised (the same matrix).
"""

from __future__ import annotations

import functools
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
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.naive_bayes import ComplementNB
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC
from sklearn.utils.extmath import safe_sparse_dot

from training.data.schema import NEUTRAL
from training.models.contract import char_table, code_points, iso_date

if TYPE_CHECKING:
    from training.models.baseline_family import BaselineTaskConfig

_ELISION = re.compile(r"\b([cdjlmnst]|qu|jusqu|lorsqu|puisqu|quoiqu)'", re.IGNORECASE)


class FrenchPreprocessor:
    """Lowercase, typographic apostrophes unified, elisions split (l'Occident -> l occident), and the title
    (first line) repeated `title_weight` extra times so that its words count more.

    split_elisions=False skips the apostrophe steps, for the word analyzer: its tokens are runs of two or more
    word characters, and an apostrophe is no word character, like the space that replaces it, so the elision
    split cannot change a word token (tests/test_throughput.py checks it on real articles), while its regex was
    most of the preprocessing time. Character n-grams do see the apostrophe and keep the split."""

    split_elisions = True  # a class default: preprocessors pickled before the parameter existed split them

    def __init__(self, title_weight: int = 0, split_elisions: bool = True):
        self.title_weight = title_weight
        self.split_elisions = split_elisions

    def __call__(self, text: str) -> str:
        if self.split_elisions:
            text = text.replace("\u2019", "'").replace("\u2018", "'")
        if self.title_weight:
            title = text.split("\n", 1)[0]
            text = (title + "\n") * self.title_weight + text
        text = text.lower()
        return _ELISION.sub(r"\1 ", text) if self.split_elisions else text


class HeadPreprocessor(FrenchPreprocessor):
    """The first `lines` lines (title and lead), prepared like the full text."""

    def __init__(self, lines: int = 2):
        super().__init__(0)
        self.lines = lines

    def __call__(self, text: str) -> str:
        return super().__call__("\n".join(text.split("\n", self.lines)[: self.lines]))


def _object_column(values: list) -> np.ndarray:
    """A list of arrays as a 1-D object array (numpy would stack equal-length arrays into a 2-D one)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _sparray_configured() -> bool:
    from sklearn import get_config

    return get_config().get("sparse_interface", "spmatrix") == "sparray"


def _sparse(data, indices, indptr, shape):
    """A CSR matrix of scikit-learn's configured sparse interface (what CountVectorizer returns)."""
    cls = sp.csr_array if _sparray_configured() else sp.csr_matrix
    return cls((data, indices, indptr), shape=shape)


class FastTfidfTransformer(TfidfTransformer):
    """scikit-learn's TfidfTransformer, its `transform` without the per-call input checks for what the baselines
    hand it: a CSR matrix of float counts as wide as the fitted vocabulary. The library's own steps on a copy (the
    sublinear tf, the idf, the row norm by the routine `normalize` calls), so the same matrix, entry for entry
    (tests/test_throughput.py); any other input takes the library's transform, checks and messages included. The
    checks (`validate_data` twice, each asking narwhals whether a sparse matrix is a data frame) cost ~0.5 ms a
    call, and a request makes four calls: a tenth of scoring one article (docs/benchmarks.md)."""

    def transform(self, X, copy=True):
        if not (sp.issparse(X) and X.format == "csr" and X.dtype in (np.float32, np.float64) and X.shape[0]
                and hasattr(self, "idf_") and X.shape[1] == len(self.idf_) and self.norm in ("l1", "l2", None)):
            return super().transform(X, copy=copy)
        from sklearn.utils.sparsefuncs_fast import inplace_csr_row_normalize_l1, inplace_csr_row_normalize_l2

        X = X.copy() if copy else X
        if self.sublinear_tf:
            np.log(X.data, X.data)
            X.data += 1.0
        X.data *= self.idf_[X.indices]
        if self.norm == "l2":
            inplace_csr_row_normalize_l2(X)
        elif self.norm == "l1":
            inplace_csr_row_normalize_l1(X)
        sparray = _sparray_configured()
        if sparray != isinstance(X, sp.sparray):
            X = sp.csr_array(X) if sparray else sp.csr_matrix(X)
        return X


_HASH = 0x9E3779B97F4A7C15  # odd: invertible modulo 2**64
_HASH_INV = pow(_HASH, -1, 2**64)


def _word_tokens(chars: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tokens of scikit-learn's default token pattern, r"(?u)\\b\\w\\w+\\b", as spans of `chars`: every
    maximal run of two or more word characters (its matches, left to right). (starts, ends, 64-bit hashes:
    sum of code point * _HASH**k, k the place in the token, modulo 2**64)."""
    word = np.take(char_table(r"\w"), chars)  # take: faster than indexing with an array (the same values)
    edge = np.diff(np.concatenate(([False], word, [False])).view(np.int8))
    start, end = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
    start, end = start[end - start >= 2], end[end - start >= 2]
    power, inverse = _hash_powers(len(chars) + 1)
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(chars) + 1, dtype=np.uint64)
        np.cumsum(chars * power[: len(chars)], out=prefix[1:])
        hashes = (prefix[end] - prefix[start]) * inverse[start]
    return start, end, hashes


@functools.lru_cache(maxsize=2)
def _powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(over="ignore"):
        step = np.full(size, _HASH, dtype=np.uint64)
        step[0] = 1
        back = np.full(size, _HASH_INV, dtype=np.uint64)
        back[0] = 1
        return np.cumprod(step), np.cumprod(back)


def _hash_powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """_HASH**i and _HASH**-i (mod 2**64) for i < n, at least: constants, kept for the largest size asked (rounded
    up to a power of two), so that a batch does not recompute them."""
    return _powers(1 << max(16, (n - 1).bit_length()))


_FIBONACCI = np.uint64(0x9E3779B97F4A7C15)


class KeyTable:
    """A fixed map from int64 keys to non-negative int64 values, looked up for a whole array of keys at once:
    open addressing with linear probing in numpy arrays, at most a quarter full, so that most searches end at
    their first slot (a sorted array's binary search costs a chain of ~20 dependent memory reads per key); the
    few others probe the next slots eight at a time."""

    def __init__(self, keys: np.ndarray, values: np.ndarray):
        keys = np.asarray(keys, dtype=np.int64)
        if len(np.unique(keys)) != len(keys):
            raise ValueError("KeyTable keys must be distinct")
        self.bits = max(4, int(4 * max(len(keys), 1) - 1).bit_length())
        self.keys = np.zeros(1 << self.bits, dtype=np.int64)
        self.values = np.full(1 << self.bits, -1, dtype=np.int64)  # -1: an empty slot
        pending, slot = np.arange(len(keys)), self._home(keys)
        while len(pending):  # each round: every free slot takes the first key that wants it; the others move on
            free = self.values[slot] < 0
            taken, first = np.unique(slot[free], return_index=True)
            winners = pending[free][first]
            self.keys[taken], self.values[taken] = keys[winners], np.asarray(values, dtype=np.int64)[winners]
            placed = np.zeros(len(pending), dtype=bool)
            placed[np.flatnonzero(free)[first]] = True
            pending, slot = pending[~placed], (slot[~placed] + 1) & ((1 << self.bits) - 1)

    def _home(self, keys: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return ((keys.view(np.uint64) * _FIBONACCI) >> np.uint64(64 - self.bits)).astype(np.int64)

    def get(self, keys: np.ndarray) -> np.ndarray:
        """The value of each key, -1 for a key not in the table."""
        keys = np.asarray(keys, dtype=np.int64)
        home = self._home(keys)
        value = self.values[home]
        hit = (value >= 0) & (self.keys[home] == keys)
        out = np.where(hit, value, -1)
        # an empty slot ends a search (a key sits at the first slot free from its home when it was placed, and
        # no slot is emptied later); a slot of another key sends it on
        todo = np.flatnonzero((value >= 0) & ~hit)
        ahead = np.arange(1, 9)
        while len(todo):
            slots = (home[todo, None] + ahead) & ((1 << self.bits) - 1)
            value = self.values[slots]
            match = (value >= 0) & (self.keys[slots] == keys[todo, None])
            found = match.any(axis=1)
            out[todo[found]] = value[found, match[found].argmax(axis=1)]
            todo = todo[~found & (value >= 0).all(axis=1)]
            ahead = ahead + 8
        return out


def _chunks(docs: list, chars: int) -> list[tuple[int, int]]:
    """Consecutive (start, end) ranges of docs, each of about `chars` characters at most (a longer doc alone)."""
    ends = np.cumsum(np.fromiter((len(d) if isinstance(d, str) else 0 for d in docs), np.int64, len(docs)))
    out, lo = [], 0
    while lo < len(docs):
        hi = max(lo + 1, int(np.searchsorted(ends, (ends[lo - 1] if lo else 0) + chars, side="right")))
        out.append((lo, hi))
        lo = hi
    return out or [(0, 0)]


class FastCountVectorizer(CountVectorizer):
    """scikit-learn's CountVectorizer (its fit, vocabulary, preprocessor and tokenizer) with `transform` vectorised
    for the analyzers the baselines use: `word` with 1- and 2-grams, and `char_wb`.

    The library builds each n-gram of each document as a string and looks it up in a Python loop: 90 % of the
    serving time. Here the whole batch is one array of code points: the word tokens are the default token
    pattern's matches found as runs of word characters (`_word_tokens`), each n-gram becomes an integer key (a
    word: its token's number, found by hash and checked character by character; a bigram: its two token numbers;
    a character n-gram: its characters as digits of a base-(alphabet + 1) number, so distinct strings get distinct
    keys) and all keys are looked up at once (`KeyTable`). The preprocessor is the vectorizer's own, so the
    matrix is CountVectorizer.transform's, entry for entry (tests/test_throughput.py). Any other setting (stop
    words, a custom token pattern, tokenizer or analyzer, word n-grams beyond 2, an alphabet too large for 64-bit
    keys) takes the library's path, as does a vectorizer whose `lookup_` is None."""

    CHUNK_CHARS = 1 << 20  # documents are vectorised together up to about this many characters at a time

    def fit_transform(self, raw_documents, y=None):
        X = super().fit_transform(raw_documents, y)
        self.lookup_ = self._build_lookup()
        return X

    def _build_lookup(self) -> dict | None:
        if self.stop_words is not None or self.tokenizer is not None or callable(self.analyzer):
            return None
        terms = self.get_feature_names_out()
        if self.analyzer == "word" and self.ngram_range[1] <= 2 and self.token_pattern == r"(?u)\b\w\w+\b":
            parts = [t.split(" ") for t in terms]
            tokens = list(dict.fromkeys(w for p in parts for w in p))  # every token of a feature, numbered
            number = dict(zip(tokens, range(len(tokens))))
            chars, starts = code_points(tokens)
            _, _, hashes = _word_tokens(chars)  # each token is one run of word characters: its own hash
            if len(hashes) != len(tokens) or len(np.unique(hashes)) != len(tokens):  # distinct, for KeyTable
                return None  # never seen; the library's path then
            first = np.fromiter((number[p[0]] for p in parts), np.int64, len(parts))
            last = np.fromiter((number[p[-1]] for p in parts), np.int64, len(parts))
            single = np.fromiter(map(len, parts), np.int64, len(parts)) == 1
            unigram = np.full(len(tokens), -1, np.int64)
            unigram[first[single]] = np.flatnonzero(single)
            return {"tokens": KeyTable(hashes.view(np.int64), np.arange(len(tokens))), "chars": chars, "starts": starts,
                    "sizes": np.fromiter(map(len, tokens), np.int64, len(tokens)), "unigram": unigram,
                    "features": KeyTable(first[~single] * len(tokens) + last[~single], np.flatnonzero(~single))}
        if self.analyzer == "char_wb":
            alphabet = np.array(sorted({ord(c) for t in terms for c in t}), dtype=np.int64)
            base = len(alphabet) + 1
            if base ** self.ngram_range[1] >= 2**63:
                return None
            digit = dict(zip(alphabet.tolist(), range(1, base)))
            keys = np.empty(len(terms), dtype=np.int64)
            for j, t in enumerate(terms):
                k = 0
                for c in t:
                    k = k * base + digit[ord(c)]
                keys[j] = k
            return {"alphabet": alphabet, "features": KeyTable(keys, np.arange(len(terms)))}
        return None

    def transform(self, raw_documents):
        lookup = getattr(self, "lookup_", None)
        if lookup is None or isinstance(raw_documents, str):
            return super().transform(raw_documents)  # the library's checks and messages too
        docs = list(raw_documents)
        features = self._word_features if self.analyzer == "word" else self._char_features
        rows, cols = [], []
        for lo, hi in _chunks(docs, self.CHUNK_CHARS):  # bounded memory for a training set or a huge request
            r, c = features(docs[lo:hi], lookup)
            rows.append(r + lo)
            cols.append(c)
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        # counted by sorting (document, feature) pairs: each row's columns come out sorted, as CountVectorizer's
        pairs, counts = np.unique(rows * len(self.vocabulary_) + cols, return_counts=True)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(pairs // len(self.vocabulary_), minlength=len(docs)))])
        return _sparse(counts.astype(self.dtype), (pairs % len(self.vocabulary_)).astype(np.int32), indptr,
                       (len(docs), len(self.vocabulary_)))

    def _preprocessed(self, docs: list) -> list[str]:
        """The vectorizer's own decode then preprocessor on each document; decode, a no-op on a str of `content`
        input, is skipped there (a method call for each of a batch's hundreds of evidence sentences)."""
        preprocess = self.build_preprocessor()
        if self.input != "content" or not all(isinstance(d, str) for d in docs):
            docs = [self.decode(d) for d in docs]
        return [preprocess(d) for d in docs]

    def _word_features(self, docs: list, lookup: dict) -> tuple[np.ndarray, np.ndarray]:
        """(document, feature) of every word n-gram occurrence that is a feature. The tokens are found as runs of
        word characters over the whole batch (`_word_tokens`, the default pattern's matches) and identified by
        hash, each hit then checked character by character against the token it names: exact, no hash luck."""
        chars, doc_start = code_points(self._preprocessed(docs))
        start, end, hashes = _word_tokens(chars)
        ids = lookup["tokens"].get(hashes.view(np.int64))
        hit = np.flatnonzero(ids >= 0)
        size = end[hit] - start[hit]
        same = size == lookup["sizes"][ids[hit]]
        hit, size = hit[same], size[same]
        if len(hit):  # every character of each hit against its vocabulary token's (a token has two or more)
            first = np.cumsum(size) - size  # where each hit's characters start in the flat comparison
            at = np.arange(first[-1] + size[-1])
            differ = np.logical_or.reduceat(
                np.take(chars, np.repeat(start[hit] - first, size) + at)
                != np.take(lookup["chars"], np.repeat(lookup["starts"][ids[hit]] - first, size) + at), first)
            hit = hit[~differ]
        checked = np.zeros(len(ids), dtype=bool)
        checked[hit] = True
        ids = np.where(checked, ids, -1)
        doc = np.searchsorted(doc_start, start, side="right") - 1
        min_n, max_n = self.ngram_range
        rows, cols = [], []
        if min_n == 1:
            rows.append(doc)
            cols.append(np.where(ids >= 0, lookup["unigram"][ids], -1))
        if max_n == 2 and len(ids) > 1:
            a, b = ids[:-1], ids[1:]
            pair = (a >= 0) & (b >= 0) & (doc[:-1] == doc[1:])  # both known tokens, in the same document
            rows.append(doc[:-1][pair])
            cols.append(lookup["features"].get(a[pair] * len(lookup["sizes"]) + b[pair]))
        rows, cols = (np.concatenate(x) if x else np.zeros(0, np.int64) for x in (rows, cols))
        return rows[cols >= 0], cols[cols >= 0]

    def _char_features(self, docs: list, lookup: dict) -> tuple[np.ndarray, np.ndarray]:
        """(document, feature) of every char_wb n-gram occurrence that is a feature. As the library: each
        whitespace-separated word padded with a space each side, every window of n characters inside it for n
        in ngram_range, and a padded word shorter than the smallest n once, whole. (The library first turns
        runs of white space into one space: `str.split` splits on the same white space, so that changes no word.)"""
        words = [d.split() for d in self._preprocessed(docs)]
        flat = [w for ws in words for w in ws]
        if not flat:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        word_doc = np.repeat(np.arange(len(docs)), np.fromiter(map(len, words), np.int64, len(words)))
        size = np.fromiter(map(len, flat), np.int64, len(flat)) + 2  # padded
        chars = np.frombuffer((" " + "  ".join(flat) + " ").encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        alphabet = lookup["alphabet"]
        at = np.searchsorted(alphabet, chars).clip(max=len(alphabet) - 1)
        digit = np.where(alphabet[at] == chars, at + 1, 0)  # 0: a character no feature holds
        base = len(alphabet) + 1
        unknown = np.concatenate([[0], np.cumsum(digit == 0)])
        start = np.cumsum(size) - size
        pos_word = np.repeat(np.arange(len(flat)), size)
        word_end = (start + size)[pos_word]  # per position: the end of its padded word
        min_n, max_n = self.ngram_range
        rows, keys = [], []
        key = digit.copy()  # key[p]: the window of length n starting at p
        for n in range(1, max_n + 1):
            if n > 1:
                key = key[:-1] * base + digit[n - 1:]
            p = np.arange(len(key))
            inside = (p + n <= word_end[: len(key)]) & (unknown[n:] - unknown[: len(key)] == 0)
            if n >= min_n:
                take = inside
            else:  # below the range: only a whole padded word shorter than min_n counts, once
                take = np.zeros(len(key), dtype=bool)
                short = start[size == n]
                take[short] = inside[short]
            rows.append(word_doc[pos_word[: len(key)][take]])
            keys.append(key[take])
        rows, cols = np.concatenate(rows), lookup["features"].get(np.concatenate(keys))
        return rows[cols >= 0], cols[cols >= 0]


WORDS = "words"  # the frame column of each article's word counts (WordColumns)


class WordColumns(TransformerMixin, BaseEstimator):
    """The input frame plus each article's word n-gram counts, counted once for every task that reads them: the
    `words` column, per row a [2, k] int32 array (the vocabulary ids of its n-grams, sorted, and their counts) from
    `vectorizer` (a FastCountVectorizer fitted on the `text` column). A model shares one fitted WordColumns between
    its tasks (a FrozenEstimator, the first step of each task's pipeline); each task's `WordTfidf` then picks its
    own terms and weights out of the counts. (One column: selecting several columns of a frame costs pandas
    half a millisecond a request.)"""

    def __init__(self, vectorizer=None):
        self.vectorizer = vectorizer

    def fit(self, X, y=None):
        self.vectorizer_ = clone(self.vectorizer).fit(_column(X["text"]))
        return self

    def transform(self, X):
        counts = sp.csr_matrix(self.vectorizer_.transform(_column(X["text"])))
        rows = np.vstack([counts.indices, counts.data]).astype(np.int32)  # counts are whole numbers
        return X.assign(**{WORDS: _object_column(np.split(rows, counts.indptr[1:-1], axis=1))})

    def get_feature_names_out(self, input_features=None):
        names = input_features if input_features is not None else self.feature_names_in_
        return np.asarray([*names, WORDS], dtype=object)


class WordTfidf(TransformerMixin, BaseEstimator):
    """A task's word TF-IDF features from the shared counts (the `words` column, made by `words`, the model's fitted
    WordColumns, whose vocabulary names the features). The task's own vocabulary is the shared terms that pass
    its min_df / max_df / max_features on its own training rows, chosen as CountVectorizer chooses them, and its
    idf is its own (TfidfTransformer): the features of a TfidfVectorizer fitted on those rows, while the
    tokenising and counting ran once for all tasks. The shared vocabulary must hold every term the task's own
    vectorizer would keep: fitted on the union of the tasks' rows with the smallest min_df, it does."""

    def __init__(self, words=None, min_df: float = 1, max_df: float = 1.0, max_features: int | None = None,
                 sublinear_tf: bool = False):
        self.words = words
        self.min_df = min_df
        self.max_df = max_df
        self.max_features = max_features
        self.sublinear_tf = sublinear_tf

    def _shared_counts(self, X):
        rows = _column(X)
        indptr = np.concatenate([[0], np.cumsum(np.fromiter((r.shape[1] for r in rows), np.int64, len(rows)))])
        ids, counts = np.concatenate(rows, axis=1) if rows else np.zeros((2, 0), np.int32)
        return sp.csr_matrix((counts.astype(np.float32), ids, indptr),
                             shape=(len(rows), len(self.words.vectorizer_.vocabulary_)))

    def _own(self, X):
        """The shared counts restricted to this task's terms, renumbered (each row stays sorted)."""
        col = self.position_[X.indices]
        keep = col >= 0
        row = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(row[keep], minlength=X.shape[0]))])
        return sp.csr_matrix((X.data[keep], col[keep], indptr), shape=(X.shape[0], len(self.columns_)))

    def fit(self, X, y=None):
        from numbers import Integral

        X = self._shared_counts(X)
        n = X.shape[0]
        high = self.max_df if isinstance(self.max_df, Integral) else self.max_df * n
        low = self.min_df if isinstance(self.min_df, Integral) else self.min_df * n
        if high < low:
            raise ValueError("max_df corresponds to < documents than min_df")
        df = np.bincount(X.indices, minlength=X.shape[1])
        mask = (df > 0) & (df >= low) & (df <= high)  # df > 0: CountVectorizer only knows the terms it saw
        if self.max_features is not None and mask.sum() > self.max_features:
            tfs = np.asarray(X.sum(axis=0)).ravel()
            top = np.zeros(len(mask), dtype=bool)
            top[np.flatnonzero(mask)[(-tfs[mask]).argsort()[: self.max_features]]] = True
            mask = top
        if not mask.any():
            raise ValueError("After pruning, no terms remain. Try a lower min_df or a higher max_df.")
        self.columns_ = np.flatnonzero(mask)
        self.position_ = np.full(X.shape[1], -1, dtype=np.int64)
        self.position_[self.columns_] = np.arange(len(self.columns_))
        self.tfidf_ = FastTfidfTransformer(sublinear_tf=self.sublinear_tf).fit(self._own(X))
        return self

    def transform(self, X):
        return self.tfidf_.transform(self._own(self._shared_counts(X)))

    def get_feature_names_out(self, input_features=None):
        return self.words.vectorizer_.get_feature_names_out()[self.columns_]


def shared_words(texts: list[str], ngram_range, title_weight: int, min_df: int):
    """The fitted word counter that tasks share (a FrozenEstimator: fitting a task's pipeline leaves it as is):
    the 1- or 2-grams of `texts` (the union of the sharing tasks' training rows) seen in at least `min_df` of them."""
    from sklearn.frozen import FrozenEstimator

    vec = FastCountVectorizer(preprocessor=FrenchPreprocessor(title_weight, split_elisions=False),
                              ngram_range=tuple(ngram_range), min_df=min_df, dtype=np.float32)
    return FrozenEstimator(WordColumns(vec).fit(frame(texts)))


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
    its first or last month. An undated article is its own state, one more column (`date=unknown`): the model
    learns it from training rows whose date was blanked (`fit_task`'s `date_dropout`), so "no date" means "any
    time", not "the newest month". The range starts at the `trim` quantile of the training dates: a handful of
    stragglers years before the rest teach nothing, and their near-constant steps slowed the SVM solver by a
    third."""

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
        months = np.array([-1 if m is None else m for m in map(month_index, _column(X))], dtype=np.int64)
        steps = np.arange(self.first_ + 1, self.last_ + 1)  # months before first_ read as first_: below every step
        known = months >= 0
        dense = np.zeros((len(months), len(steps) + 1), dtype=np.float32)
        dense[:, :-1] = (months[:, None] >= steps[None, :]) & known[:, None]
        dense[:, -1] = ~known
        return sp.csr_matrix(dense * np.float32(self.weight))

    def get_feature_names_out(self, input_features=None):
        steps = [f"date>={m // 12}-{m % 12 + 1:02d}" for m in range(self.first_ + 1, self.last_ + 1)]
        return np.array([*steps, "date=unknown"], dtype=object)


class MonthPrior:
    """What a publisher's month says about its sections, as a prior shift on a content model's probabilities
    (Saerens et al., 2002): p(y | text, month) is taken as p(y | text) * p(y | month) / p(y), renormalised.
    p(y | month) is counted on the training rows within `window` months either side, smoothed toward p(y) by
    `alpha` pseudo-articles; `strength` scales the shift in log space (0: none). The content model stays what it
    is: an undated article, or one from a source whose dates it never learned, gets the content answer exactly,
    and only the publisher's own months move it (no `france` section before 2018-01: its share is ~0 then). A
    date outside the training range reads as its nearest month."""

    def __init__(self, strength: float = 1.0, window: int = 2, alpha: float = 20.0):
        self.strength, self.window, self.alpha = strength, window, alpha

    def fit(self, dates: list[str | None], y: np.ndarray, n_classes: int) -> MonthPrior:
        months = np.array([-1 if m is None else m for m in map(month_index, dates)])
        known = months >= 0
        if not known.any():
            raise ValueError("month prior: no training row has a readable date (YYYY-MM-DD)")
        self.first_ = int(months[known].min())
        span = int(months[known].max()) - self.first_ + 1
        counts = np.zeros((span, n_classes))
        np.add.at(counts, (months[known] - self.first_, np.asarray(y)[known]), 1)
        kernel = np.ones(2 * self.window + 1)
        near = np.stack([np.convolve(counts[:, k], kernel, mode="same") for k in range(n_classes)], axis=1)
        prior = (counts.sum(axis=0) + 1) / (counts.sum() + n_classes)
        by_month = (near + self.alpha * prior) / (near.sum(axis=1, keepdims=True) + self.alpha)
        self.log_ratio_ = np.log(by_month) - np.log(prior)
        return self

    def adjust(self, proba: np.ndarray, dates: list[str | None]) -> np.ndarray:
        """`proba` with the rows that have a date shifted by their month's prior; the others as they are."""
        months = {i: m for i, m in enumerate(map(month_index, dates)) if m is not None}
        if not months or not self.strength:
            return proba
        rows = list(months)
        at = np.clip(np.array(list(months.values())) - self.first_, 0, len(self.log_ratio_) - 1)
        out = proba.copy()
        shifted = np.log(np.clip(proba[rows], 1e-12, 1)) + self.strength * self.log_ratio_[at]
        shifted = np.exp(shifted - shifted.max(axis=1, keepdims=True))
        out[rows] = shifted / shifted.sum(axis=1, keepdims=True)
        return out

    def to_json(self) -> dict:
        return {"strength": self.strength, "window": self.window, "alpha": self.alpha, "first_month": self.first_,
                "log_ratio": np.round(self.log_ratio_, 6).tolist()}

    @classmethod
    def from_json(cls, d: dict) -> MonthPrior:
        prior = cls(d["strength"], d["window"], d["alpha"])
        prior.first_, prior.log_ratio_ = d["first_month"], np.asarray(d["log_ratio"])
        return prior


def blank_dates(dates: list[str | None], share: float, seed: int) -> list[str | None]:
    """`dates` with a random `share` of them set to None (seeded): the undated state the model is trained on."""
    if not share:
        return list(dates)
    blank = np.random.default_rng(seed).random(len(dates)) < share
    return [None if b else d for d, b in zip(dates, blank)]


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
        # a TfidfVectorizer, with the counting vectorised (the same features)
        counts = FastCountVectorizer(preprocessor=FrenchPreprocessor(0, split_elisions=False), ngram_range=(1, 2),
                                     min_df=2, dtype=np.float32)
        clf = LogisticRegression(C=self.C, class_weight="balanced", max_iter=2000)
        steps = [("counts", counts), ("tfidf", FastTfidfTransformer(sublinear_tf=True)), ("clf", clf)]
        return Pipeline(steps).fit(sents, labels)

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
        """Per text and stance: the highest sentence probability in the title and lead (0 without one), the
        highest anywhere, the mean of the three highest; all texts at once (grouped reductions over sentences)."""
        scored = self._scored(model, texts)
        out = np.zeros((len(texts), 3 * len(self.stances_)), dtype=np.float32)
        sizes = np.fromiter((len(ss) for ss, _ in scored), np.int64, len(scored))
        if not sizes.sum() or not self.stances_:
            return out
        probs = np.concatenate([p for ss, p in scored if len(ss)])
        head = np.fromiter((line <= 1 for ss, _ in scored for line, _ in ss), bool, int(sizes.sum()))
        has = np.flatnonzero(sizes)  # texts with sentences; their sentences are consecutive in `probs`
        starts = (np.cumsum(sizes) - sizes)[has]
        doc = np.repeat(np.arange(len(has)), sizes[has])
        from_end = np.repeat(starts + sizes[has], sizes[has]) - 1 - np.arange(len(doc))  # places before its text's end
        for j in range(len(self.stances_)):
            col = probs[:, j]
            order = np.lexsort((col, doc))  # by text, then lowest first
            top = from_end < 3  # the last three of each text in that order: its three highest, ascending
            # summed in the probabilities' dtype, lowest first: what np.sort(col)[::-1][:3].mean() computes
            top_sum = np.add.reduceat(col[order][top], np.flatnonzero(np.diff(doc[top], prepend=-1)))
            head_max = np.maximum.reduceat(np.where(head, col, -np.inf), starts)
            out[has, 3 * j] = np.where(np.isfinite(head_max), head_max, 0.0)
            out[has, 3 * j + 1] = np.maximum.reduceat(col, starts)
            out[has, 3 * j + 2] = top_sum / np.minimum(sizes[has], 3).astype(col.dtype)
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
    if isinstance(estimator, (LinearSVC, LogisticRegression)) and sp.issparse(X) and X.format == "csr" and X.shape[0] \
            and X.shape[1] == estimator.coef_.shape[1]:
        # the library's decision_function without its per-call input checks (~0.9 ms a call for one article,
        # `validate_data` asking narwhals whether a sparse matrix is a data frame): the same product and sum
        d = safe_sparse_dot(X, estimator.coef_.T, dense_output=True) + estimator.intercept_
        d = d.ravel() if d.shape[1] == 1 else d
    else:
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


def word_vectorizer(cfg: BaselineTaskConfig) -> WordTfidf:
    return WordTfidf(min_df=cfg.word_min_df, max_df=cfg.word_max_df, max_features=cfg.word_max_features,
                     sublinear_tf=cfg.sublinear_tf)


def build_pipeline(cfg: BaselineTaskConfig, words, seed: int = 0, n_jobs: int | None = None,
                   classes: list[str] | None = None) -> Pipeline:
    """words: the fitted word counter the task reads (`shared_words`), its pipeline's first step.
    n_jobs: processes for fitting (the vectorisers side by side, the class-bias folds); `fit_task` sets them
    back to one before the pipeline is saved, so that serving never spawns workers."""
    vectorizers = [("word", word_vectorizer(cfg).set_params(words=words), WORDS)]
    if cfg.char_ngram_range:
        # a TfidfVectorizer, with the counting vectorised (the same features)
        counts = FastCountVectorizer(
            preprocessor=HeadPreprocessor() if cfg.char_scope == "head" else FrenchPreprocessor(cfg.title_weight),
            analyzer="char_wb", ngram_range=tuple(cfg.char_ngram_range), min_df=cfg.char_min_df,
            max_features=cfg.char_max_features, dtype=np.float32)
        char = Pipeline([("counts", counts), ("tfidf", FastTfidfTransformer(sublinear_tf=True))])
        vectorizers.append(("char", char, "text"))
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
    return Pipeline([("words", words), ("features", columns), ("clf", clf)])


def frame(texts: list[str], dates: list[str | None] | None = None, evidence: list[list[str]] | None = None) -> pd.DataFrame:
    """The pipelines' input: `text`, `date` ('YYYY-MM-DD' or None) for the models that use it, and `evidence`
    (the annotators' sentences, training rows only: empty lists when predicting)."""
    return _frame_columns(texts, dates, evidence).to_frame()


def _frame_columns(texts, dates, evidence) -> Columns:
    n = len(texts)
    return Columns({"text": list(texts), "date": list(dates) if dates is not None else [None] * n,
                    "evidence": evidence if evidence is not None else [[] for _ in range(n)]})


class Columns(dict):
    """`frame`'s columns as plain lists, for scoring through `proba_tasks`: what the fitted steps read of a frame
    (a column by name, columns by a list of names, `assign`) without pandas' per-call cost. Building the frame,
    selecting each block's columns and assigning the word counts took ~3 ms a request, a fifth of scoring one
    article (docs/benchmarks.md). Training and `features` use the DataFrame."""

    def __getitem__(self, key):
        if isinstance(key, list):
            return Columns({k: dict.__getitem__(self, k) for k in key})
        return dict.__getitem__(self, key)

    def assign(self, **columns) -> Columns:
        return Columns({**self, **columns})

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(dict(self))


def fit_task(cfg: BaselineTaskConfig, texts: list[str], labels: np.ndarray, seed: int = 0,
             n_jobs: int | None = None, dates: list[str | None] | None = None,
             evidence: list[list[str]] | None = None, classes: list[str] | None = None, words=None) -> Pipeline:
    """classes: the task's label names (class positions index them), for a bias target or the evidence features.
    words: the fitted word counter shared with the model's other tasks (`shared_words`); None: one of its own."""
    if words is None:
        words = shared_words(texts, cfg.word_ngram_range, cfg.title_weight, cfg.word_min_df)
    if cfg.date_weight and dates is not None:
        dates = blank_dates(dates, cfg.date_dropout, seed)
    pipe = build_pipeline(cfg, words, seed, n_jobs, classes).fit(frame(texts, dates, evidence), labels)
    return pipe.set_params(**{k: None for k in pipe.get_params() if k.endswith("n_jobs")})


def features(pipe: Pipeline, texts: list[str], dates: list[str | None] | None = None):
    """The fitted pipeline's feature matrix for these texts (to reuse one transform for several steps)."""
    return pipe[:-1].transform(frame(texts, dates))


def proba_tasks(pipes: dict[str, Pipeline], n_classes: dict[str, int], texts: list[str],
                dates: list[str | None] | None = None) -> dict[str, np.ndarray]:
    """Each task's probabilities (`proba_full`), the word counts computed once for the tasks whose pipelines
    share their first step (the same fitted `shared_words` object)."""
    from sklearn import config_context

    X = _frame_columns(texts, dates, None)
    counted: dict[int, Columns] = {}
    out = {}
    # fitted pipelines on frames this module builds: their parameters were checked at fit, their features are
    # finite. Skipping scikit-learn's per-call checks of both took 11-14 % off the scorer's CPU time (a batch of
    # 32 articles, one article; docs/benchmarks.md)
    with config_context(assume_finite=True, skip_parameter_validation=True):
        for task, pipe in pipes.items():
            if pipe.steps[0][0] != "words":  # saved before the tasks shared their word counts
                out[task] = proba_full(pipe, pipe[:-1].transform(X.to_frame()), n_classes[task])
                continue
            first = pipe.steps[0][1]
            if id(first) not in counted:
                counted[id(first)] = first.transform(X)
            out[task] = proba_full(pipe, column_features(pipe.named_steps["features"], counted[id(first)]),
                                   n_classes[task])
    return out


def column_features(columns: ColumnTransformer, X: pd.DataFrame | Columns):
    """`columns.transform(X)` for the fitted ColumnTransformer of `build_pipeline` (sparse output, no transformer
    weights, every other column dropped): each block's transform on its columns, stacked as ColumnTransformer
    stacks them. What it leaves out is the per-call work around the blocks (checking the frame's columns
    and feature names against the fit, joblib dispatch, re-checking each block), which cost as much as the
    features themselves for one article (docs/benchmarks.md). The same matrix, entry for entry
    (tests/test_throughput.py); any other ColumnTransformer goes through its own transform."""
    blocks = columns.transformers_
    if columns.transformer_weights or not getattr(columns, "sparse_output_", False) or any(
            isinstance(t, str) and t != "drop" for _, t, _ in blocks):
        return columns.transform(X.to_frame() if isinstance(X, Columns) else X)
    return sp.hstack([t.transform(X[c]) for _, t, c in blocks if not (isinstance(t, str) and t == "drop")]).tocsr()


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
