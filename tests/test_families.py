"""Model families are units: a new one is a module and a table entry, and every family's served model reads the
text its training read."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO, SHARDS, small_overrides
from training.config import load_config
from training.errors import ConfigError
from training.models import families


@pytest.fixture
def prior_family(monkeypatch):
    monkeypatch.setitem(families.FAMILIES, "prior", "tests.fake_families:PRIOR")
    from tests.fake_families import PRIOR

    return PRIOR


def _prior_config(tmp_path, build_dir, *overrides):
    f = tmp_path / "prior.yaml"
    f.write_text(f"defaults: [{REPO / 'configs' / 'base.yaml'}]\nexperiment: vigie-prior\nmodel:\n  family: prior\n")
    return load_config(f, [*small_overrides(build_dir), *overrides])


@pytest.mark.slow
def test_a_new_family_runs_train_register_predict_with_nothing_but_its_module(prior_family, small_build, mlflow_store,
                                                                              tmp_path):
    from mlflow import MlflowClient

    from training.cli import main
    from training.registry import register_best
    from training.train import train

    checked = prior_family.checked
    result = train(_prior_config(tmp_path, small_build[2], "model.smoothing=0.5"))
    assert prior_family.checked == checked + 1  # the family's pre-check ran
    m = result["metrics"]
    assert {"validation_topic_macro_f1", "test_topic_macro_f1", "validation_stance_macro_f1", "validation_macro_f1_mean"} <= set(m)
    run = MlflowClient().get_run(result["run_id"])
    assert run.data.tags["vigie.family"] == "prior"
    assert run.data.params["model.smoothing"] == "0.5"

    reg = register_best(experiment="vigie-prior")
    assert reg.promoted and reg.run_id == result["run_id"]
    out = tmp_path / "pred.jsonl"
    assert main(["predict", "--model", "models:/vigie@champion", str(REPO / "seeds"), "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1
    # every article gets the training label frequencies: the majority topic of the build
    train_topics = small_build[1]["splits"]["train"]["topic"]
    assert rows[0]["topic"] == max(train_topics, key=train_topics.get)


def test_an_unknown_family_is_a_config_error_naming_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"baseline.yaml: model: unknown model family 'nope'; known: baseline, camembert$"):
        load_config(REPO / "configs" / "baseline.yaml", ["model.family=nope"])


# --- one text assembly: the served model reads what training read ------------------------------------------------


def _shard_records(ids: set[str]) -> dict[str, dict]:
    from training.io import read_jsonl

    out = {}
    for f in sorted(SHARDS.glob("*.jsonl.gz")):
        for _, rec in read_jsonl(f):
            if str(rec["id"]) in ids:
                out[str(rec["id"])] = rec
    return out


def _raw_text(rec: dict) -> str:
    return "\n".join(p for p in (rec.get("title"), rec.get("abstract"), rec.get("text")) if p)


@pytest.mark.slow
def test_served_model_reads_the_built_text_and_reproduces_the_logged_validation_metric(small_build, use_trained_store):
    """Rebuild `title\\nlead\\nbody` from the raw shard records of the small build: the served model's input text is
    the built `text` column, with the article's source and without it; and the logged model, fed those raw rows,
    scores what the run logged on validation."""
    from datasets import load_from_disk
    from mlflow import MlflowClient

    from training.data.dataset import task_data
    from training.evaluate import evaluate_task
    from training.models.contract import prepare_frame
    from training.registry import load_model

    cfg, _, _ = small_build
    dsd = load_from_disk(str(f"{cfg.data.output_dir}/{cfg.data.name}"))
    run = MlflowClient().get_run(use_trained_store["run_id"])
    model = load_model(run.data.tags["vigie.model_uri"])
    served = model.unwrap_python_model()

    for split in ("train", "validation", "test"):
        ds = dsd[split].filter(lambda r: r["source"] == "orangesum")
        recs = _shard_records(set(ds["id"]))
        assert len(recs) == len(ds) > 0
        raw = pd.DataFrame({"text": [_raw_text(recs[i]) for i in ds["id"]], "source": ds["source"]})
        texts, _ = prepare_frame(raw, served.boilerplate)
        assert texts == ds["text"], split
        unsourced, _ = prepare_frame(raw[["text"]], served.boilerplate)
        assert unsourced == ds["text"], split  # the union of the sources' boilerplate drops nothing more here

    val = dsd["validation"]
    recs = _shard_records(set(val["id"]))
    logged = run.data.metrics
    for task in ("topic", "stance"):
        d = task_data(val, task)
        if not len(d.y):
            continue
        pos = {i: k for k, i in enumerate(val["id"])}
        frame = pd.DataFrame({
            "text": [_raw_text(recs[i]) if i in recs else val[pos[i]]["text"] for i in d.ids],
            "date": d.dates,
            "source": [val[pos[i]]["source"] for i in d.ids],
        })
        labels = list(val.features[task].names)
        # without its date: the content answer, the logged headline; with date and source: the `_dated` figure
        for columns, suffix in ((["text", "source"], ""), (["text", "date", "source"], "_dated")):
            if f"validation_{task}_macro_f1{suffix}" not in logged:
                assert suffix and task == "stance"  # the stance model reads no date: no dated figure
                continue
            pred = model.predict(frame[columns])
            proba = pred[[f"{task}_proba_{lab}" for lab in labels]].to_numpy(dtype=np.float64)
            metrics, _ = evaluate_task("validation", task, d.y, proba, labels)
            assert metrics[f"validation_{task}_macro_f1"] == pytest.approx(
                logged[f"validation_{task}_macro_f1{suffix}"], abs=1e-9), (task, suffix)
