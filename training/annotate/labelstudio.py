"""Label Studio interchange: our pool -> Label Studio tasks (+ the labelling config), and Label Studio's JSON
export -> our label JSONL (one line per annotator and task, validated by the schema)."""

from __future__ import annotations

import json
from pathlib import Path

from training.annotate.corpus import load_articles
from training.annotate.pool import read_pool
from training.data.schema import GUIDELINES_VERSION, StanceAnnotation
from training.errors import InputError
from training.io import atomic_write_text, write_jsonl

LABEL_CONFIG = """<View>
  <Header value="$title"/>
  <Text name="lead" value="$lead"/>
  <Text name="body" value="$body"/>
  <Choices name="stance" toName="body" choice="single" required="true">
    <Choice value="anti_occident"/><Choice value="neutre"/><Choice value="pro_occident"/>
  </Choices>
  <Choices name="confidence" toName="body" choice="single" required="true">
    <Choice value="1"/><Choice value="2"/><Choice value="3"/>
  </Choices>
  <TextArea name="evidence" toName="body" placeholder="sentences of the article that carry the stance, verbatim, one per line"/>
  <TextArea name="why" toName="body" placeholder="one short sentence"/>
</View>
"""


def export_tasks(pool: Path, corpus: list[str], out: Path) -> int:
    rows = read_pool(pool)
    arts = load_articles(corpus, {r["id"] for r in rows})
    tasks = []
    for r in rows:
        a = arts.get(r["id"])
        if a is None:
            continue
        tasks.append({"data": {"article_id": a.id, "title": a.title, "lead": a.abstract, "body": a.body, "stratum": r["stratum"]}})
    atomic_write_text(out, json.dumps(tasks, ensure_ascii=False, indent=1))
    atomic_write_text(out.with_suffix(".label_config.xml"), LABEL_CONFIG)
    return len(tasks)


def _value(results: list[dict], name: str) -> str | list[str] | None:
    for r in results:
        if r.get("from_name") != name:
            continue
        v = r.get("value", {})
        if "choices" in v:
            return v["choices"][0] if v["choices"] else None
        if "text" in v:
            return v["text"]
    return None


def import_results(export: Path, out: Path, pool: Path | None = None) -> int:
    try:
        tasks = json.loads(Path(export).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{export}: not a Label Studio JSON export: {e}") from None
    if not isinstance(tasks, list):
        raise InputError(f"{export}: expected a list of tasks")
    strata = {r["id"]: r["stratum"] for r in read_pool(pool)} if pool and Path(pool).exists() else {}
    lines = []
    for t_i, task in enumerate(tasks):
        data = task.get("data", {})
        article_id = str(data.get("article_id", ""))
        for ann in task.get("annotations", []):
            if ann.get("was_cancelled"):
                continue
            res = ann.get("result", [])
            evidence = _value(res, "evidence") or []
            evidence = [e for chunk in ([evidence] if isinstance(evidence, str) else evidence) for e in chunk.split("\n") if e.strip()]
            who = ann.get("completed_by")
            who = who.get("email") or who.get("id") if isinstance(who, dict) else who
            try:
                rec = StanceAnnotation(
                    id=article_id, stance=_value(res, "stance"), confidence=int(_value(res, "confidence") or 0),
                    evidence=evidence, why=(_value(res, "why") or [""])[0] if isinstance(_value(res, "why"), list) else (_value(res, "why") or ""),
                    annotator=f"ls-{who}", guidelines=GUIDELINES_VERSION, stratum=data.get("stratum") or strata.get(article_id, "labelstudio"),
                    time=ann.get("created_at") or ann.get("updated_at") or "",
                )
            except Exception as e:  # pydantic ValidationError or a bad confidence
                raise InputError(f"{export}: task {t_i} (article {article_id}): invalid annotation: {e}") from None
            lines.append(rec.model_dump(exclude_none=True))
    write_jsonl(out, lines)
    return len(lines)
