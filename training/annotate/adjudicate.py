"""Adjudication: every annotator's votes -> one final label per article, keeping all votes.

- one vote, or unanimous votes: that label (confidence: the lowest of the votes);
- disagreement: the adjudicator's decision from a decisions file (JSONL in the label schema, annotator = the
  adjudicator), which must exist for every disagreement; unresolved ones are reported and left out.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from training.annotate.agreement import votes_by_id
from training.data.schema import StanceAnnotation, Vote, read_stance_annotations
from training.io import write_jsonl


def adjudicate(votes: dict[str, list[StanceAnnotation]], decisions: dict[str, StanceAnnotation]) -> tuple[list[StanceAnnotation], list[str]]:
    final, unresolved = [], []
    for id_ in sorted(votes, key=lambda x: (len(x), x)):
        vs = votes[id_]
        kept = [Vote(annotator=v.annotator, stance=v.stance, confidence=v.confidence) for v in vs]
        stances = {v.stance for v in vs}
        if len(stances) == 1:
            evidence = next((v.evidence for v in vs if v.evidence), [])
            base = vs[0]
            final.append(StanceAnnotation(
                id=id_, stance=base.stance, confidence=min(v.confidence for v in vs), evidence=evidence,
                why=base.why, annotator="adjudicated" if len(vs) > 1 else base.annotator,
                guidelines=base.guidelines, stratum=base.stratum, time=max(v.time for v in vs), votes=kept,
            ))
        elif id_ in decisions:
            d = decisions[id_]
            final.append(d.model_copy(update={"votes": kept + [Vote(annotator=d.annotator, stance=d.stance, confidence=d.confidence)],
                                              "stratum": vs[0].stratum}))
        else:
            unresolved.append(id_)
    return final, unresolved


def adjudicate_files(files: list[Path], out: Path, decisions: Path | None = None) -> str:
    votes = votes_by_id(files)
    dec = {d.id: d for d in read_stance_annotations(decisions)} if decisions else {}
    final, unresolved = adjudicate(votes, dec)
    write_jsonl(out, [f.model_dump(exclude_none=True) for f in final])
    counts = Counter(f.stance for f in final)
    disagreements = sum(1 for v in votes.values() if len({x.stance for x in v}) > 1)
    msg = (f"{len(final)} final labels written to {out} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); "
           f"{disagreements} disagreements, {disagreements - len(unresolved)} resolved by the adjudicator")
    if unresolved:
        msg += f"; {len(unresolved)} UNRESOLVED and left out: {', '.join(unresolved[:20])}"
    return msg
