"""Checkpoints of a long training run: where they go, which one a resume picks up, and their clean-up.

They go to `train.output_dir/<run name or model-data-fingerprint>-<config hash>`, stable across a crash and its
`train.resume=true` rerun, different for another config or dataset (so a resume never picks up the checkpoints of
another model, even under the same run name). Without `train.resume`, a rerun clears them and starts over. They
are removed once the trained model is saved: they exist to survive a crash, and the model itself travels with the
MLflow run (keeping them would pile up ~1.3 GB per camembert-base checkpoint for every run and sweep trial).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

PREFIX = "checkpoint-"


def checkpoint_dir(cfg, data_path: Path, model_name: str) -> Path:
    """cfg: the whole Config (its model and train sections key the folder); the folder is named after the run,
    or else after `model_name` (the pretrained model) and the dataset."""
    stats_file = Path(data_path) / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    fp = stats.get("fingerprint", "nodata")[:8]
    keyed = {"model": cfg.model.model_dump(mode="json"),
             "train": cfg.train.model_dump(mode="json", exclude={"resume", "num_threads", "output_dir"}),
             "data": fp}
    h = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:8]
    base = cfg.run_name or f"{Path(model_name).name}-{cfg.data.name}-{fp}"
    return Path(cfg.train.output_dir) / f"{base}-{h}"


def _checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The highest checkpoint-N holding trainer_state.json (a checkpoint cut short by a kill has none)."""
    found = [(int(p.name.removeprefix(PREFIX)), p) for p in _checkpoints(folder)
             if p.name.removeprefix(PREFIX).isdigit() and (p / "trainer_state.json").exists()]
    return max(found)[1] if found else None


def step_of(checkpoint: Path | None) -> int:
    return int(checkpoint.name.removeprefix(PREFIX)) if checkpoint else 0


def resume_point(folder: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from (resume=True and a complete one exists), else None, after clearing the
    checkpoints an earlier run left (resume=False): a fresh run never mixes its checkpoints with another's."""
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if resume:
        last = last_complete_checkpoint(folder)
        say(f"resuming from {last}" if last else
            f"train.resume=true but no complete checkpoint in {folder}: training from the start")
        return last
    old = _checkpoints(folder)
    if old:
        say(f"removing the checkpoints of an earlier run in {folder} (train.resume=true would continue it)")
        for p in old:
            shutil.rmtree(p)
    return None


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
