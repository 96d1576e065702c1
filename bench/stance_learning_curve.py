"""Stance learning curve: out-of-fold anti_occident F1 and average precision against the number of train labels.

    .venv/bin/python bench/stance_learning_curve.py [--config configs/baseline.yaml] [--fractions 0.25 0.5 0.75 1]

For each fraction, a stratified subsample of the built dataset's train stance labels; on it, 5-fold out-of-fold
predictions of the config's whole stance model (features, evidence scorer and decision rule refitted inside each
fold: the family's `cross_val_proba`). Prints one line per point, logs one MLflow run (`vigie-learning-curve`
experiment; metrics stepped by the number of labels) with the figure, and writes the figure to
docs/figures/stance_learning_curve.png. Reads train labels only: no validation or test row is touched."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/baseline.yaml")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()

    from sklearn.metrics import average_precision_score, f1_score
    from sklearn.model_selection import train_test_split

    from training import tracking
    from training.config import load_config
    from training.data.dataset import label_names, labelled_rows, load_built
    from training.evaluate import headless_pyplot
    from training.models import families
    from training.models.family import FitContext

    cfg = load_config(REPO / args.config)
    family = families.get(cfg.model.family)
    dsd, stats, data_path = load_built(cfg.data)
    labels = label_names(dsd)
    anti = labels["stance"].index("anti_occident")
    rows = labelled_rows(dsd["train"], "stance")
    y_all = np.asarray(dsd["train"]["stance"])[rows]
    points = []
    for frac in sorted(args.fractions):
        keep = rows if frac >= 1 else train_test_split(rows, train_size=frac, stratify=y_all, random_state=0)[0]
        sub = dsd.copy()
        sub["train"] = dsd["train"].select(np.sort(keep))
        ctx = FitContext(cfg=cfg, dsd=sub, labels=labels, tasks=["stance"], model_dir=Path(tempfile.mkdtemp()),
                         data_path=data_path, boilerplate=None, log_metrics=lambda *a, **k: None)
        d, proba = family.cross_val_proba(ctx, "stance", args.folds)
        pos = d.y == anti
        point = {"labels": len(d.y), "anti": int(pos.sum()), "f1": float(f1_score(pos, proba.argmax(1) == anti)),
                 "ap": float(average_precision_score(pos, proba[:, anti]))}
        points.append(point)
        print(f"{point['labels']:5d} train labels ({point['anti']:3d} anti_occident): "
              f"oof anti_occident F1 {point['f1']:.3f}  AP {point['ap']:.3f}", flush=True)

    plt = headless_pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    n = [p["labels"] for p in points]
    ax.plot(n, [p["f1"] for p in points], "o-", label="anti_occident F1 (decision rule)")
    ax.plot(n, [p["ap"] for p in points], "s-", label="anti_occident AP (ranking)")
    ax.set_xlabel("train stance labels")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title(f"stance learning curve, {args.folds}-fold out-of-fold", fontsize=9)
    fig.tight_layout()
    out = REPO / "docs" / "figures" / "stance_learning_curve.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    tags = {"vigie.dataset_fingerprint": stats["fingerprint"], "vigie.config_path": args.config,
            "vigie.git_commit": tracking.git_commit()}
    with tracking.run("vigie-learning-curve", "stance-learning-curve", tags, description="OOF anti_occident F1/AP vs labels"):
        for p in points:
            tracking.log_metrics({"oof_stance_f1_anti_occident": p["f1"], "oof_stance_ap_anti_occident": p["ap"]},
                                 step=p["labels"])
        tracking.log_artifact(out, "figures")
    print(f"figure: {out}")


if __name__ == "__main__":
    main()
