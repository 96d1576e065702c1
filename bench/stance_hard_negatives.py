"""Does the sentence scorer learn better with hard negatives: the sentences of stance-bearing articles that the
annotators did not quote?

    .venv/bin/python bench/stance_hard_negatives.py '{"C": 10, "evidence_weight": 1, "class_bias_folds": 3, "bias_target": "anti_occident"}'

`bench/stance_cv.py` (5-fold out-of-fold over the train stance labels; validation and test never read) with the
evidence scorer's training sentences extended: besides the quoted evidence (labelled with its stance) and the
sentences of neutral articles, every unquoted sentence of a non-neutral article (one that neither contains nor is
contained in a quoted sentence) is added as a neutral sentence. Prints the same line as `stance_cv.py`."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def main() -> None:
    import stance_cv

    from training.data.cleaning import sentences
    from training.models import baseline

    quoted_only = baseline.EvidenceSentences._training_sentences

    def with_hard_negatives(self, texts, evidence, y):
        sents, labels = quoted_only(self, texts, evidence, y)
        extra = []
        for text, ev, c in zip(texts, evidence, y):
            if c == self.neutral or ev is None or not len(ev):
                continue
            quoted = [e.strip() for e in ev if e]
            extra += [s for _, s in sentences(text) if not any(q in s or s in q for q in quoted)]
        return list(sents) + extra, np.concatenate([labels, np.full(len(extra), self.neutral)])

    baseline.EvidenceSentences._training_sentences = with_hard_negatives
    stance_cv.main()


if __name__ == "__main__":
    main()
