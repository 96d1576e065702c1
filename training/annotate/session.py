"""`vigie annotate next`: show the next unread article of a pool in full, record the decision, repeat.

Decisions are appended (and fsynced) one line at a time to the annotator's own file, so nothing is lost on a
crash and a session can stop and resume anywhere. The annotator sees no one else's labels.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.prompt import IntPrompt, Prompt

from training.annotate.corpus import load_articles
from training.annotate.pool import read_pool
from training.data.schema import StanceAnnotation, evidence_problems, read_stance_annotations
from training.io import append_jsonl

KEYS = {"a": "anti_occident", "n": "neutre", "p": "pro_occident"}


def run_session(pool_path: Path, labels: Path | None, annotator: str, corpus: list[str], limit: int | None = None,
                console: Console | None = None) -> int:
    console = console or Console()
    labels = labels or Path("data/annotations/stance/votes") / f"{annotator}.jsonl"
    done = {a.id for a in read_stance_annotations(labels) if a.annotator == annotator} if labels.exists() else set()
    todo = [r for r in read_pool(pool_path) if r["id"] not in done]
    if not todo:
        console.print(f"[green]nothing left to read in {pool_path} for {annotator}[/green]")
        return 0
    articles = load_articles(corpus, {r["id"] for r in todo[: limit or len(todo)]})
    recorded = 0
    for row in todo[: limit or len(todo)]:
        art = articles.get(row["id"])
        if art is None:
            console.print(f"[yellow]article {row['id']} is not in the corpus; skipped[/yellow]")
            continue
        console.rule(f"{recorded + len(done) + 1}/{len(done) + len(todo)}  id {art.id}  stratum {row['stratum']}  section {art.section}")
        console.print(Panel(f"[bold]{art.title}[/bold]\n\n[italic]{art.abstract}[/italic]\n\n{art.body}", expand=True))
        key = Prompt.ask("stance: (a)nti_occident (n)eutre (p)ro_occident, (s)kip, (q)uit", choices=["a", "n", "p", "s", "q"], console=console)
        if key == "q":
            break
        if key == "s":
            continue
        stance = KEYS[key]
        confidence = IntPrompt.ask("confidence (3 clear, 2 probable, 1 hard call)", choices=["1", "2", "3"], console=console)
        evidence: list[str] = []
        while stance != "neutre":
            sentence = Prompt.ask("evidence: a sentence copied from the article (empty line when done)", default="", console=console)
            if not sentence:
                if evidence:
                    break
                console.print("[red]a non-neutral label needs at least one evidence sentence[/red]")
                continue
            ann = StanceAnnotation(id=art.id, stance=stance, confidence=confidence, evidence=[sentence], annotator=annotator, stratum=row["stratum"])
            if evidence_problems(ann, art.text):
                console.print("[red]not found verbatim in the article; copy it exactly[/red]")
                continue
            evidence.append(sentence)
        why = Prompt.ask("why (one short sentence)", default="", console=console)
        ann = StanceAnnotation(id=art.id, stance=stance, confidence=confidence, evidence=evidence, why=why,
                               annotator=annotator, stratum=row["stratum"])
        append_jsonl(labels, ann.model_dump(exclude_none=True))
        recorded += 1
    console.print(f"recorded {recorded} decision(s) in {labels}")
    return 0
