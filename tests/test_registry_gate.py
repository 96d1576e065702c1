"""The registry gate compares like with like: runs serving the same tasks, scored on the same data."""

from __future__ import annotations

import pytest

from tests.conftest import REPO, small_overrides
from training.config import load_config


@pytest.mark.slow
def test_the_gate_compares_runs_serving_the_same_tasks_on_the_same_data(small_build, mlflow_store, tmp_path):
    from mlflow import MlflowClient

    from training.registry import register_best, rescore_on_candidate_data
    from training.train import train

    base = small_overrides(small_build[2]) + ["experiment=vigie-gate"]
    cfg = lambda *o: load_config(REPO / "configs" / "baseline.yaml", base + list(o))  # noqa: E731
    both = train(cfg())
    assert register_best(experiment="vigie-gate").promoted

    # a topic-only run: its mean is its topic macro-F1 alone, higher than a two-task mean, and it must not win
    topic_only = train(cfg("model.stance.enabled=false"))
    assert topic_only["metrics"]["validation_macro_f1_mean"] > both["metrics"]["validation_macro_f1_mean"]
    res = register_best(experiment="vigie-gate")
    assert not res.promoted and "only runs serving the same tasks are compared" in res.message
    client = MlflowClient()
    assert client.get_model_version_by_alias("vigie", "champion").run_id == both["run_id"]

    # a run on another dataset: the champion is scored again on that run's validation split
    other = train(cfg("data.max_articles=300", "data.name=orangesum-gate", "model.stance.C=1"))
    champ = client.get_model_version_by_alias("vigie", "champion")
    rescored = rescore_on_candidate_data(client, champ, client.get_run(other["run_id"]), "validation_macro_f1_mean")
    res = register_best(experiment="vigie-gate")
    assert "scored again on the candidate's validation split, dataset" in res.message and f"{rescored:.4f}" in res.message
    assert res.promoted == (other["metrics"]["validation_macro_f1_mean"] > rescored)
