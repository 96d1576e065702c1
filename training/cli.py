"""`vigie` — thin command line: parse, load the config, call one stage. No logic lives here."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from training.errors import InputError

DEFAULT_CORPUS = "data/raw/orangesum/shards"


def _console():
    from rich.console import Console

    return Console(stderr=True)


# --- data ----------------------------------------------------------------------------------------------


def cmd_data_build(args) -> int:
    from training.config import load_config
    from training.data.build import build_dataset

    cfg = load_config(args.config, args.overrides)
    stats = build_dataset(cfg.data, progress=not args.quiet)
    c = _console()
    c.print(f"[green]wrote[/green] {stats['output']}  ({stats['seconds']:.1f} s)")
    for split, n in stats["splits"].items():
        c.print(f"  {split:<11} {n['rows']:>6} rows   stance labelled: {n['stance_labelled']}")
    c.print(f"  skipped inputs: {sum(stats['skipped'].values())}  duplicates removed: {stats['dedup']['removed']}")
    return 0


def cmd_data_fetch(args) -> int:
    from training.data.fetch import fetch_orangesum

    fetch_orangesum(Path(args.dest), source=args.from_path, base_url=args.url, progress=not args.quiet)
    return 0


# --- annotate ------------------------------------------------------------------------------------------


def cmd_annotate_sample(args) -> int:
    from training.annotate.corpus import load_articles
    from training.annotate.pool import build_pool, check_splits, write_pool

    check_splits(args.splits)  # refuse reserved splits before reading anything
    articles = load_articles(args.corpus).values()
    model_scores = None
    if args.model:
        from training.annotate.active import score_with_model

        model_scores = score_with_model(args.model, [a for a in articles if a.origin_split in args.splits])
    rows = build_pool(articles, splits=args.splits, random_size=args.random, seed=args.seed,
                      model_scores=model_scores, model_size=args.model_size)
    write_pool(Path(args.out), rows)
    from collections import Counter

    counts = Counter(r["stratum"] for r in rows)
    _console().print(f"[green]pool[/green] {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def cmd_annotate_round(args) -> int:
    from collections import Counter

    from training.annotate.active import score_with_model
    from training.annotate.corpus import load_articles
    from training.annotate.pool import build_round_pool, check_splits, write_pool
    from training.data.schema import read_stance_annotations

    check_splits(args.splits)
    labelled = {a.id: a for a in read_stance_annotations(Path(args.labels))}
    articles = list(load_articles(args.corpus).values())
    scores = score_with_model(args.model, [a for a in articles if a.origin_split in args.splits])
    rows = build_round_pool(articles, labelled, scores, splits=args.splits, model_size=args.model_size,
                            random_size=args.random, reread_size=args.reread, seed=args.seed, tag=args.tag)
    write_pool(Path(args.out), rows)
    counts = Counter(r["stratum"] for r in rows)
    _console().print(f"[green]pool[/green] {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def cmd_annotate_next(args) -> int:
    from training.annotate.session import run_session

    return run_session(Path(args.pool), Path(args.labels), args.annotator, args.corpus, limit=args.limit)


def cmd_annotate_validate(args) -> int:
    from training.annotate.validate import validate_files

    problems, counts = validate_files([Path(f) for f in args.files], [Path(p) for p in args.corpus])
    c = _console()
    for p in problems:
        c.print(f"[red]{p}[/red]")
    c.print(f"{sum(counts.values())} decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 1 if problems else 0


def cmd_annotate_agreement(args) -> int:
    from training.annotate.agreement import agreement_report

    print(agreement_report([Path(f) for f in args.files], only_pairs=not args.all))
    return 0


def cmd_annotate_adjudicate(args) -> int:
    from training.annotate.adjudicate import adjudicate_files

    summary = adjudicate_files([Path(f) for f in args.files], Path(args.out), decisions=args.decisions and Path(args.decisions))
    _console().print(summary)
    return 0


def cmd_annotate_export(args) -> int:
    from training.annotate.labelstudio import export_tasks

    n = export_tasks(Path(args.pool), args.corpus, Path(args.out))
    _console().print(f"wrote {n} Label Studio tasks to {args.out}")
    return 0


def cmd_annotate_import(args) -> int:
    from training.annotate.labelstudio import import_results

    n = import_results(Path(args.export), Path(args.out), pool=args.pool and Path(args.pool))
    _console().print(f"imported {n} decisions into {args.out}")
    return 0


# --- models, tracking, serving ---------------------------------------------------------------------------


def cmd_train(args) -> int:
    from training.config import load_config
    from training.train import train

    cfg = load_config(args.config, args.overrides)
    train(cfg)
    return 0


def cmd_register(args) -> int:
    from training.registry import register_best

    result = register_best(experiment=args.experiment, metric=args.metric, name=args.name)
    _console().print(result.message)
    return 0


def cmd_predict(args) -> int:
    if args.engine == "spark":
        from training.spark_score import predict_spark

        return predict_spark(args.paths, model_uri=args.model, output=args.output, batch_size=args.batch_size,
                             fmt=args.format)
    from training.predict import predict_paths

    return predict_paths(args.paths, model_uri=args.model, output=args.output, batch_size=args.batch_size,
                         fmt=args.format)


def cmd_evaluate(args) -> int:
    from training.assess import evaluate_file

    evaluate_file(args.file, model_uri=args.model, experiment=args.experiment, split=args.split_name,
                  batch_size=args.batch_size)
    return 0


def cmd_serve(args) -> int:
    from training.serve import serve

    from training.serve import DEFAULT_MAX_BODY_MB

    return serve(model_uri=args.model, host=args.host, port=args.port, workers=args.workers,
                 max_body_mb=args.max_request_mb or DEFAULT_MAX_BODY_MB)


def cmd_ui(args) -> int:
    from training.tracking import run_ui

    return run_ui(host=args.host, port=args.port)


def cmd_runs_cleanup(args) -> int:
    from training.tracking import cleanup_stale_runs

    n = cleanup_stale_runs(older_than_s=args.older_than)
    _console().print(f"marked {n} stale RUNNING run(s) as KILLED")
    return 0


def cmd_sweep(args) -> int:
    from training.config import load_config
    from training.sweep import sweep

    cfg = load_config(args.config, args.overrides)
    sweep(cfg, trials=args.trials, study_name=args.study)
    return 0


def cmd_model_tiny(args) -> int:
    from training.models.tiny import build_tiny_camembert

    out = build_tiny_camembert(Path(args.out), corpus=args.corpus, vocab_size=args.vocab_size,
                               max_texts=args.max_texts, layers=args.layers, hidden=args.hidden)
    _console().print(f"[green]tiny CamemBERT[/green] saved to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vigie", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build and fetch datasets").add_subparsers(dest="data_command", required=True)
    b = data.add_parser("build", help="raw files -> data/processed/<name>/ (DatasetDict + stats.json)")
    b.add_argument("config")
    b.add_argument("overrides", nargs="*", help="key.sub=value")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=cmd_data_build)
    f = data.add_parser("fetch", help="download OrangeSum, or import a local copy with --from")
    f.add_argument("name", choices=["orangesum"])
    f.add_argument("--from", dest="from_path", help="a clone of the upstream repo, or the JSONL shards folder")
    f.add_argument("--dest", default="data/raw/orangesum")
    f.add_argument("--url", default=None, help="base url of the upstream repository's raw files")
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=cmd_data_fetch)

    ann = sub.add_parser("annotate", help="stance annotation tools").add_subparsers(dest="ann_command", required=True)
    s = ann.add_parser("sample", help="build an annotation pool in strata")
    s.add_argument("--corpus", nargs="+", default=[DEFAULT_CORPUS])
    s.add_argument("--splits", nargs="+", default=["train", "unsplit"])
    s.add_argument("--random", type=int, default=300, help="size of the random stratum outside the pre-filter")
    s.add_argument("--model", help="a stance model (models:/... or runs:/...) for the active-learning stratum")
    s.add_argument("--model-size", type=int, default=200)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="data/annotations/stance/pool.jsonl")
    s.set_defaults(func=cmd_annotate_sample)
    r = ann.add_parser("round", help="a further, model-ranked annotation round after the first one")
    r.add_argument("--model", required=True, help="a stance model (models:/... or runs:/...) to rank articles with")
    r.add_argument("--labels", default="data/annotations/stance/adjudicated.jsonl", help="the labels of earlier rounds")
    r.add_argument("--corpus", nargs="+", default=[DEFAULT_CORPUS])
    r.add_argument("--splits", nargs="+", default=["train", "unsplit"])
    r.add_argument("--model-size", type=int, default=1500, help="unread articles ranked by the model")
    r.add_argument("--random", type=int, default=300, help="unread random articles from outside the pre-filter")
    r.add_argument("--reread", type=int, default=300, help="pre-filter neutre articles the model scores highest, read again")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--tag", default="r2", help="names the round's random stratum (random_<tag>)")
    r.add_argument("--out", default="data/annotations/stance/pool_r2.jsonl")
    r.set_defaults(func=cmd_annotate_round)
    n = ann.add_parser("next", help="show the next unread article of a pool and record the decision")
    n.add_argument("--pool", default="data/annotations/stance/pool.jsonl")
    n.add_argument("--annotator", required=True)
    n.add_argument("--labels", default=None, help="default: data/annotations/stance/votes/<annotator>.jsonl")
    n.add_argument("--corpus", nargs="+", default=[DEFAULT_CORPUS])
    n.add_argument("--limit", type=int, default=None, help="stop after this many decisions")
    n.set_defaults(func=cmd_annotate_next)
    v = ann.add_parser("validate", help="check label files: schema, reserved splits, verbatim evidence")
    v.add_argument("files", nargs="+")
    v.add_argument("--corpus", nargs="+", default=[DEFAULT_CORPUS])
    v.set_defaults(func=cmd_annotate_validate)
    a = ann.add_parser("agreement", help="Cohen's / Fleiss' kappa, confusion, per-class counts")
    a.add_argument("files", nargs="+")
    a.add_argument("--all", action="store_true", help="also list per-annotator-pair figures")
    a.set_defaults(func=cmd_annotate_agreement)
    j = ann.add_parser("adjudicate", help="merge votes into the final label file, keeping every vote")
    j.add_argument("files", nargs="+")
    j.add_argument("--decisions", help="adjudicator's decisions for the disagreements (JSONL)")
    j.add_argument("--out", default="data/annotations/stance/adjudicated.jsonl")
    j.set_defaults(func=cmd_annotate_adjudicate)
    e = ann.add_parser("export", help="pool -> Label Studio tasks JSON")
    e.add_argument("--pool", default="data/annotations/stance/pool.jsonl")
    e.add_argument("--corpus", nargs="+", default=[DEFAULT_CORPUS])
    e.add_argument("--out", required=True)
    e.set_defaults(func=cmd_annotate_export)
    i = ann.add_parser("import", help="Label Studio JSON export -> our JSONL")
    i.add_argument("export")
    i.add_argument("--pool", default="data/annotations/stance/pool.jsonl")
    i.add_argument("--out", required=True)
    i.set_defaults(func=cmd_annotate_import)

    t = sub.add_parser("train", help="train the models a config names and log the run to MLflow")
    t.add_argument("config")
    t.add_argument("overrides", nargs="*", help="key.sub=value")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("register", help="register the best finished run; promote it to @champion if it wins")
    r.add_argument("--experiment", default=None, help="default: every vigie experiment")
    r.add_argument("--metric", default="validation_macro_f1_mean")
    r.add_argument("--name", default="vigie", help="registered model name")
    r.set_defaults(func=cmd_register)

    pr = sub.add_parser("predict", help="batch prediction: JSONL/CSV/Parquet tables, .txt/.html articles -> predictions",
                        epilog="exit status: 0 every input predicted, 1 none predicted, 2 usage error, "
                               "3 some inputs skipped (the summary on stderr says which and why)")
    pr.add_argument("paths", nargs="+", help="files or folders: .jsonl[.gz] / .csv / .parquet with a 'text' column "
                                             "(optional title, date, source, id), .txt, .html; '-' reads JSONL from stdin")
    pr.add_argument("--model", default="models:/vigie@champion")
    pr.add_argument("--output", "-o", default=None, help="default: stdout (JSONL)")
    pr.add_argument("--format", choices=["jsonl", "csv", "parquet"], default=None,
                    help="default: from the -o suffix (.jsonl, .csv, .parquet)")
    pr.add_argument("--batch-size", type=int, default=256)
    pr.add_argument("--engine", choices=["local", "spark"], default="local",
                    help="spark: Parquet / JSON Lines tables -> a Parquet folder (-o), one resumable partition per "
                         "input file, on the Spark of spark-submit or on this machine (docs/scale.md)")
    pr.set_defaults(func=cmd_predict)

    ev = sub.add_parser("evaluate", help="score a labelled JSONL/CSV/Parquet file with a registered model; log the run")
    ev.add_argument("file", help="a `text` column (title on line 1, or a `title` column), `topic` and/or `stance` labels")
    ev.add_argument("--model", default="models:/vigie@champion")
    ev.add_argument("--experiment", default="vigie-evaluation")
    ev.add_argument("--split-name", default="evaluation", help="metric prefix: <split>_<task>_macro_f1")
    ev.add_argument("--batch-size", type=int, default=256)
    ev.set_defaults(func=cmd_evaluate)

    sv = sub.add_parser("serve", help="serve a registered model: MLflow's scoring app behind vigie's request guard")
    sv.add_argument("--model", default="models:/vigie@champion")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=5000)
    sv.add_argument("--workers", type=int, default=None, help="server processes (default: one per core)")
    sv.add_argument("--max-request-mb", type=float, default=None,
                    help="bodies over this size get 413 (default: 16)")
    sv.set_defaults(func=cmd_serve)

    u = sub.add_parser("ui", help="start the MLflow UI on the project's store")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=5001)
    u.set_defaults(func=cmd_ui)

    rc = sub.add_parser("runs", help="tracking store maintenance").add_subparsers(dest="runs_command", required=True)
    cl = rc.add_parser("cleanup", help="mark runs left RUNNING by a killed process as KILLED")
    cl.add_argument("--older-than", type=float, default=0.0, help="seconds since the run's last heartbeat")
    cl.set_defaults(func=cmd_runs_cleanup)

    sw = sub.add_parser("sweep", help="Optuna search over the config's sweep.space, one nested MLflow run a trial")
    sw.add_argument("config")
    sw.add_argument("overrides", nargs="*")
    sw.add_argument("--trials", type=int, default=20)
    sw.add_argument("--study", default=None, help="study name (default: from the config); reuse it to resume")
    sw.set_defaults(func=cmd_sweep)

    m = sub.add_parser("model", help="model utilities").add_subparsers(dest="model_command", required=True)
    tiny = m.add_parser("tiny", help="build a tiny CamemBERT (own tokenizer, random weights) for offline tests")
    tiny.add_argument("--out", default="models/camembert-tiny")
    tiny.add_argument("--corpus", nargs="+", default=[DEFAULT_CORPUS])
    tiny.add_argument("--vocab-size", type=int, default=8000)
    tiny.add_argument("--max-texts", type=int, default=20000)
    tiny.add_argument("--layers", type=int, default=2)
    tiny.add_argument("--hidden", type=int, default=128)
    tiny.set_defaults(func=cmd_model_tiny)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Ctrl-C / SIGINT always interrupts a command (cleanly, below): a non-interactive shell starts its background
    # jobs with SIGINT ignored, and Python would then never raise KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except InputError as e:
        print(f"vigie: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vigie: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
