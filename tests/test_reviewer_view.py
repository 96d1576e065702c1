"""What a reviewer sees: experiments the MLflow UI opens on their training runs, runs that name their commit the
standard way, metric names without `/`, and a `vigie train` that notices new labels instead of training on an old
build."""

import json
import os
import re
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
from datasets import load_from_disk
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

from training import tracking
from training.config import load_config
from training.data.build import build_dataset, stale_inputs
from training.data.dataset import load_built
from training.data.schema import ORANGESUM_SECTIONS, STANCES
from training.errors import ConfigError, InputError
from training.evaluate import evaluate_task, metric_label, metric_labels

from tests.conftest import ADJUDICATED, REPO, SHARDS, small_overrides

UI_BUNDLE = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"


# --- the experiment page the UI opens ------------------------------------------------------------------------


def test_the_installed_ui_reads_the_names_tracking_sets():
    """The strings `tracking` relies on, as the installed UI bundle spells them: the experiment-kind tag and its
    machine-learning value, and the workflow type (URL parameter, local-storage key, value). An MLflow upgrade
    that renames one fails here, and the comment above tracking.EXPERIMENT_KIND_TAG needs a new look."""
    bundle = "".join(f.read_text(errors="ignore") for f in UI_BUNDLE.glob("main.*.js"))
    assert bundle, f"no UI bundle under {UI_BUNDLE}"
    assert f'"{tracking.EXPERIMENT_KIND_TAG}"===e.key' in bundle  # the kind hook reads the tag
    assert f'CUSTOM_MODEL_DEVELOPMENT="{tracking.EXPERIMENT_KIND}"' in bundle
    assert f'MACHINE_LEARNING="{tracking.UI_WORKFLOW}"' in bundle
    assert 'key:"mlflow.workflowType"' in bundle and 'get("workflowType")' in bundle
    chunks = "".join(f.read_text(errors="ignore") for f in UI_BUNDLE.glob("*.chunk.js"))
    assert f'key:"{tracking.EXPERIMENT_KIND_TAG}"' in chunks  # the kind selector writes the same tag


def test_every_vigie_experiment_is_tagged_as_machine_learning(mlflow_store):
    client = MlflowClient()
    new = tracking.experiment_id("reviewer-new")
    assert client.get_experiment(new).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    old = client.create_experiment("reviewer-old")  # made before the tag existed: no kind
    assert tracking.EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert tracking.experiment_id("reviewer-old") == old
    assert client.get_experiment(old).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    client.set_experiment_tag(old, tracking.EXPERIMENT_KIND_TAG, "genai_development")
    assert tracking.experiment_id("reviewer-old") == old
    assert client.get_experiment(old).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    other = client.create_experiment("reviewer-untouched")
    assert tracking.mark_training_experiments() >= 1  # what `vigie ui` does first, for every experiment
    assert client.get_experiment(other).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert tracking.mark_training_experiments() == 0  # idempotent
    assert tracking.ui_url("http://127.0.0.1:5001/") == "http://127.0.0.1:5001/#/experiments?workflowType=machine_learning"
    assert tracking.ui_url("http://h:1", old) == f"http://h:1/#/experiments/{old}/runs?workflowType=machine_learning"


# --- the run: commit tags, metric names ------------------------------------------------------------------------


def test_a_training_run_names_its_commit_and_has_no_slash_in_metric_names(use_trained_store):
    client = MlflowClient()
    run = client.get_run(use_trained_store["run_id"])
    t = run.data.tags
    if t["vigie.git_commit"] != "unknown":
        assert t[MLFLOW_GIT_COMMIT] == t["vigie.git_commit"].removesuffix("-dirty")
        assert len(t[MLFLOW_GIT_COMMIT]) == 40
    assert client.get_experiment(run.info.experiment_id).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    names = list(run.data.metrics)
    assert not [n for n in names if "/" in n]
    assert "validation_topic_f1_societe_culture" in names and "validation_topic_support_societe_fait-divers" in names


def test_metric_label_is_the_one_mapping_of_labels_into_metric_names():
    assert metric_label("societe/culture") == "societe_culture"
    assert metric_label("high-tech") == "high-tech" and metric_label("anti_occident") == "anti_occident"
    labels = list(ORANGESUM_SECTIONS)
    y = np.arange(200) % len(labels)
    proba = np.eye(len(labels))[y] * 0.9 + 0.1 / len(labels)
    metrics, report = evaluate_task("validation", "topic", y, proba, labels, intervals=False)
    assert not [k for k in metrics if "/" in k]
    for lab in labels:
        assert metrics[f"validation_topic_f1_{metric_label(lab)}"] == report["per_class"][lab]["f1"] == 1.0
    with pytest.raises(ConfigError, match="societe/culture"):
        metric_labels(["societe/culture", "societe_culture"])


# --- a build notices new labels ---------------------------------------------------------------------------------


def _small_cfg(tmp: Path, annotations: Path, seeds: Path):
    """A small build of one shard and a copy of the seeds, labelled by a copy of the stance annotations."""
    return load_config(REPO / "configs" / "baseline.yaml", small_overrides(tmp, n=60) + [
        f"data.sources=[{{path: {SHARDS / 'orangesum_topic_00.jsonl.gz'}, name: orangesum}}, {{path: {seeds}, name: seeds}}]",
        f"data.annotations={annotations}",
    ]).data


def _relabel(path: Path, id_: str, stance: str) -> None:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in rows:
        if r["id"] == id_:
            r["stance"] = stance
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_train_rebuilds_the_dataset_when_the_labels_change(tmp_path, capsys):
    ann, seeds = tmp_path / "adjudicated.jsonl", tmp_path / "seeds"
    shutil.copy(ADJUDICATED, ann)
    shutil.copytree(REPO / "seeds", seeds)
    cfg = _small_cfg(tmp_path, ann, seeds)
    stats = build_dataset(cfg, progress=False)
    folder = Path(stats["output"])
    assert stale_inputs(cfg, folder).reasons == []

    _, again, _ = load_built(cfg, progress=False)  # nothing changed: the build is used as it is
    assert again["fingerprint"] == stats["fingerprint"] and "building dataset" not in capsys.readouterr().err
    later = os.stat(seeds / "labels.json").st_mtime_ns + 10**9
    for f in seeds.iterdir():  # touched, same bytes: no change either
        os.utime(f, ns=(later, later))
    load_built(cfg, progress=False)
    assert "building dataset" not in capsys.readouterr().err

    annotated = {a["id"] for a in map(json.loads, ann.read_text(encoding="utf-8").splitlines())}
    train = load_from_disk(str(folder))["train"]
    neutre = STANCES.index("neutre")
    id_ = next(i for i, s in zip(train["id"], train["stance"]) if i in annotated and s not in (-1, neutre))
    _relabel(ann, id_, "neutre")  # an adjudication changed its mind
    assert stale_inputs(cfg, folder).reasons == [f"data.annotations {ann} changed"]
    dsd, rebuilt, _ = load_built(cfg, progress=False)
    assert f"building dataset {folder}: data.annotations {ann} changed" in capsys.readouterr().err
    assert rebuilt["fingerprint"] != stats["fingerprint"]
    assert dict(zip(dsd["train"]["id"], dsd["train"]["stance"]))[id_] == neutre
    assert stale_inputs(cfg, folder).reasons == []

    shutil.rmtree(seeds)  # a source gone, labels unchanged: the build is used, with a warning
    _, kept, _ = load_built(cfg, progress=False)
    assert kept["fingerprint"] == rebuilt["fingerprint"]
    assert f"data.sources {seeds} not found: using dataset {folder} as built" in capsys.readouterr().err
    _relabel(ann, id_, "pro_occident")  # then new labels: a rebuild is needed and cannot be made
    with pytest.raises(InputError, match=rf"stale .*data\.annotations {re.escape(str(ann))} changed.*cannot be rebuilt.*"
                                         rf"{re.escape(str(seeds))} not found"):
        load_built(cfg, progress=False)
