"""`vigie predict`: article files in any format the readers know -> JSONL predictions (stdout or a file)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

from training.data.article import Skip
from training.data.readers import read_paths
from training.io import jsonl_text, write_jsonl
from training.models.contract import iso_date
from training.registry import load_model

OUTPUT_FIELDS = ("topic", "topic_score", "stance", "stance_score", "stance_evidence")


def predict_paths(paths: list[str], model_uri: str, output: str | None = None, batch_size: int = 256) -> int:
    from tqdm import tqdm

    skips: list[Skip] = []
    articles = list(read_paths(paths, skips.append))
    model = load_model(model_uri)
    rows: list[dict] = []
    dates = [iso_date(a.date) for a in articles]  # None where absent or unreadable: predicted as undated
    unreadable_dates = [a for a, d in zip(articles, dates) if a.date and d is None]
    bar = tqdm(total=len(articles), desc="predict", unit="article", file=sys.stderr, disable=len(articles) < batch_size)
    for k in range(0, len(articles), batch_size):
        batch = articles[k : k + batch_size]
        # the model cleans its input itself; it gets the article as title line + text, like any raw input, and
        # its publication date where the reader found a readable one
        pred = model.predict(pd.DataFrame({"text": [a.text for a in batch], "date": dates[k : k + batch_size]}))
        for a, row in zip(batch, pred.to_dict(orient="records")):
            rec = {"id": a.id, **{f: row.get(f) for f in OUTPUT_FIELDS}}
            if rec.get("stance_evidence") is not None:  # a JSON list in the served frame; a list in JSONL
                rec["stance_evidence"] = json.loads(rec["stance_evidence"])
            if a.path:
                rec["path"] = a.path
            rows.append(rec)
        bar.update(len(batch))
    bar.close()
    if output:
        write_jsonl(Path(output), rows)
    else:
        sys.stdout.write(jsonl_text(rows))
    reasons = Counter(s.reason.split(":")[0] for s in skips)
    summary = f"predicted {len(rows)} article(s)" + (f"; skipped {len(skips)}: " + ", ".join(f"{r} ({n})" for r, n in reasons.items()) if skips else "")
    print(summary, file=sys.stderr)
    if unreadable_dates:
        print(f"  {len(unreadable_dates)} article(s) with a date that is not YYYY-MM-DD, predicted as undated "
              f"(e.g. {unreadable_dates[0].path or unreadable_dates[0].id}: {unreadable_dates[0].date!r})", file=sys.stderr)
    for s in skips[:20]:
        print(f"  skipped {s}", file=sys.stderr)
    return 0
