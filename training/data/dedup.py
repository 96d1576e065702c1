"""Duplicate groups: exact (same normalised body, or same normalised title) and near (MinHash LSH on word
shingles of the body). Articles of one group must land in one split; exact copies collapse to one row.

MinHash signatures are computed with numpy (word ids -> shingle hashes -> min over universal hash
permutations), then indexed with datasketch's LSH; every candidate pair is confirmed by its true Jaccard
similarity, so LSH only decides which pairs get compared."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from datasketch import LeanMinHash, MinHashLSH

from training.data.cleaning import normalize_many

_MASK32 = np.uint64(0xFFFFFFFF)


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class DedupResult:
    group: list[int]  # group id (smallest member index) of each article
    exact_of: list[int]  # index of the article this one is an exact copy of (itself if none)
    near_pairs: int  # candidate pairs confirmed as near-duplicates


def shingle_hashes(norm_texts: Sequence[str], k: int, seed: int) -> list[np.ndarray]:
    """Each text's distinct word k-gram shingles as uint32 hashes, computed for the whole corpus at once:
    words are dictionary-encoded in one pass (Arrow, in C++), then k-grams are hashed with numpy."""
    import pyarrow as pa
    import pyarrow.compute as pc

    tokens = pc.utf8_split_whitespace(pa.array(list(norm_texts), type=pa.large_string()))
    counts = pc.list_value_length(tokens).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    encoded = pc.dictionary_encode(pc.list_flatten(tokens))
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    rng = np.random.default_rng(seed)
    word_hash = rng.integers(0, 2**32, size=len(encoded.dictionary), dtype=np.uint64)[codes]
    mult = rng.integers(1, 2**32, size=k, dtype=np.uint64) | np.uint64(1)
    h = np.zeros(max(len(word_hash) - k + 1, 0), dtype=np.uint64)
    for j in range(k):
        h = (h + word_hash[j : j + len(h)] * mult[j]) & _MASK32
    out = []
    for c, e in zip(counts, np.cumsum(counts)):
        start = e - c
        if c == 0:
            out.append(np.zeros(0, dtype=np.uint64))
        elif c < k:  # a text shorter than one shingle: hash its words as one
            out.append(np.array([int(word_hash[start:e].sum() & _MASK32)], dtype=np.uint64))
        else:
            out.append(np.unique(h[start : e - k + 1]))
    return out


def minhash_signature(shingle_hashes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((np.outer(a, shingle_hashes) + b[:, None]) & _MASK32).min(axis=1)


def find_duplicates(
    bodies: Sequence[str],
    titles: Sequence[str],
    *,
    threshold: float = 0.8,
    num_perm: int = 64,
    shingle_size: int = 5,
    min_title_words: int = 4,
    seed: int = 1,
) -> DedupResult:
    n = len(bodies)
    uf = UnionFind(n)
    norm_bodies = normalize_many(list(bodies))
    norm_titles = normalize_many(list(titles))
    exact_of = list(range(n))
    first_body: dict[str, int] = {}
    first_title: dict[str, int] = {}
    for i, (nb, nt) in enumerate(zip(norm_bodies, norm_titles)):
        j = first_body.setdefault(nb, i)
        if j != i:
            exact_of[i] = j
            uf.union(i, j)
        if len(nt.split()) >= min_title_words:  # short generic titles ("Le point") are not evidence of a copy
            j = first_title.setdefault(nt, i)
            if j != i:
                uf.union(i, j)

    # Near-duplicates among the distinct bodies only.
    distinct = [i for i in range(n) if exact_of[i] == i]
    hashes = dict(zip(distinct, shingle_hashes([norm_bodies[i] for i in distinct], shingle_size, seed)))
    rng = np.random.default_rng(seed + 1)
    a = rng.integers(1, 2**32, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint64)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    shingle_sets: dict[int, np.ndarray] = {}
    sigs: dict[int, LeanMinHash] = {}
    for i in distinct:
        s = hashes[i]
        if len(s) == 0:
            continue
        shingle_sets[i] = s
        sigs[i] = LeanMinHash(seed=seed, hashvalues=minhash_signature(s, a, b), scheme="affine32")
        lsh.insert(i, sigs[i], check_duplication=False)
    near = 0
    for i, sig in sigs.items():
        for j in lsh.query(sig):
            if j <= i:
                continue
            x, y = shingle_sets[i], shingle_sets[j]
            inter = len(np.intersect1d(x, y, assume_unique=True))
            if inter / (len(x) + len(y) - inter) >= threshold:
                uf.union(i, j)
                near += 1
    return DedupResult(group=[uf.find(i) for i in range(n)], exact_of=exact_of, near_pairs=near)
