"""Topic transfer in time: fit on the built train split's articles up to a cut-off date, score the later ones.

    .venv/bin/python bench/temporal_holdout.py [--cutoff 2019-06-30] [--config configs/baseline.yaml] [key=value ...]

After the cut-off a model meets months it never saw and sections that grew since (most `societe/sante`,
`high-tech`, `media` articles are from 2020-06 on). Readings of the later articles:
- the configured topic model from the content alone (what any other source gets);
- the same with its month prior (`model.topic.date_prior`, fitted on the early articles; a later month reads
  as the last one it saw), as served to the source the dates came from;
- the alternative mechanism, month features inside the model (`date_weight` 0.2, a `date_dropout` share of
  training dates blanked), read with and without the date.
Only the build's `train` split is read (OrangeSum `test` and `valid` are never touched); nothing is selected here.
Prints one JSON line per reading, then a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cutoff", default="2019-06-30", help="last publication date of the fitted articles")
    ap.add_argument("--config", default=str(REPO / "configs" / "baseline.yaml"))
    ap.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = ap.parse_args()

    import numpy as np

    from training.config import load_config
    from training.data.dataset import TaskData, load_built, task_data
    from training.evaluate import evaluate_task
    from training.models.baseline import MonthPrior, calibrate_task, features, fit_task, proba_full

    cfg = load_config(args.config, args.overrides)
    dsd, stats, _ = load_built(cfg.data)
    labels = list(dsd["train"].features["topic"].names)
    d = task_data(dsd["train"], "topic")
    early = [i for i, x in enumerate(d.dates) if x and x <= args.cutoff]
    late = [i for i, x in enumerate(d.dates) if x and x > args.cutoff]

    def part(idx) -> TaskData:
        return TaskData([d.ids[i] for i in idx], [d.texts[i] for i in idx], d.y[idx], [d.dates[i] for i in idx],
                        [d.evidence[i] for i in idx])

    # a tenth of the early articles calibrates the SVM's softmax temperature, as validation does in training
    calib = set(np.random.default_rng(cfg.train.seed).choice(early, len(early) // 10, replace=False).tolist())
    fit, cal, held = part([i for i in early if i not in calib]), part(sorted(calib)), part(late)
    print(f"dataset {stats['fingerprint'][:12]}: fit on {len(fit.y)} train articles dated <= {args.cutoff}, "
          f"score {len(held.y)} later ones", file=sys.stderr)
    tcfg = cfg.model.topic
    rows = []

    def read(model: str, reading: str, proba, seconds: float) -> None:
        m, _ = evaluate_task("late", "topic", held.y, proba, labels, intervals=False)
        row = {"model": model, "reading": reading, "macro_f1": round(m["late_topic_macro_f1"], 4),
               "accuracy": round(m["late_topic_accuracy"], 4), "n_fit": len(fit.y), "n_scored": len(held.y),
               "fit_seconds": round(seconds), "cutoff": args.cutoff}
        print(json.dumps(row), flush=True)
        rows.append(row)

    features_cfg = tcfg.model_copy(update={"date_weight": 0.2, "date_prior": 0.0})
    for name, model_cfg in ((f"configured (date_prior {tcfg.date_prior}, window {tcfg.date_prior_window})", tcfg),
                            (f"month features (date_weight 0.2, date_dropout {features_cfg.date_dropout})", features_cfg)):
        t0 = time.time()
        pipe = fit_task(model_cfg, fit.texts, fit.y, seed=cfg.train.seed, n_jobs=cfg.train.num_threads or -1,
                        dates=fit.dates, classes=labels)
        seconds = time.time() - t0
        calibrate_task(pipe, features(pipe, cal.texts, cal.dates), cal.y)
        content = proba_full(pipe, features(pipe, held.texts, None), len(labels))
        read(name, "content only", content, seconds)
        if model_cfg.date_prior:
            prior = MonthPrior(model_cfg.date_prior, model_cfg.date_prior_window).fit(fit.dates, fit.y, len(labels))
            read(name, "with date (month prior)", prior.adjust(content, held.dates), seconds)
        if model_cfg.date_weight:
            read(name, "with date", proba_full(pipe, features(pipe, held.texts, held.dates), len(labels)), seconds)
    support = np.bincount(held.y, minlength=len(labels))
    print("\n| model | reading | macro-F1 | accuracy |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['reading']} | {r['macro_f1']:.4f} | {r['accuracy']:.4f} |")
    print("\nlater articles per class: " + ", ".join(f"{lab} {n}" for lab, n in zip(labels, support)))


if __name__ == "__main__":
    main()
