"""`vigie sweep`: one parent run, nested trial runs, best trial on the parent; interrupted sweeps resume.

Runs on the session's small build (400 articles, conftest.py) in a temporary MLflow store.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from training import sweep as sweep_mod
from training import tracking
from training.cli import main
from training.config import load_config
from training.errors import ConfigError
from training.models import families

from tests.conftest import small_overrides
from tests.fake_families import SCRIPTED

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/baseline.yaml"
METRIC = "validation_macro_f1_mean"

@pytest.fixture
def tiny_overrides(small_build) -> list[str]:
    """The session's small build (conftest.py): a 400-article slice of the corpus."""
    return small_overrides(small_build[2])


@pytest.fixture
def scripted(monkeypatch, tiny_overrides) -> list[str]:
    """The baseline family with a hook before each trial's fit (tests/fake_families.py), registered in the family
    table: the overrides that select it. Set the hook with `monkeypatch.setattr(SCRIPTED, "before_fit", f)`."""
    monkeypatch.setitem(families.FAMILIES, "scripted", "tests.fake_families:SCRIPTED")
    return [*tiny_overrides, "model.family=scripted"]


@pytest.fixture
def store(mlflow_store, tmp_path) -> Path:
    """The folder of the temporary MLflow store (conftest.py), where the sweep puts optuna.db too."""
    return tmp_path


def _runs(client):
    exp = client.get_experiment_by_name("vigie")
    return client.search_runs([exp.experiment_id], max_results=1000)


def _split(runs):
    parents = [r for r in runs if r.data.tags.get("vigie.sweep")]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    return parents, trials


def _study(store: Path, name: str = "vigie-baseline"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{store / 'optuna.db'}")


@pytest.mark.slow
def test_sweep_three_trials_nested_under_one_parent(store, scripted, monkeypatch):
    def reporting(ctx):  # what an epoch-wise trainer does: report, then go on
        ctx.trial_callback(10, 0.25)  # (global step, validation macro-F1 mean), as the CamemBERT trainer reports
        ctx.trial_callback(20, 0.5)

    monkeypatch.setattr(SCRIPTED, "before_fit", reporting)
    assert main(["sweep", CONFIG, *scripted, "--trials", "3"]) == 0

    client = tracking.setup()
    parents, trials = _split(_runs(client))
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["vigie.sweep"] == "vigie-baseline"
    assert len(trials) == 3
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    assert {r.info.status for r in trials} == {"FINISHED"}
    assert sorted(r.data.tags["vigie.sweep_trial"] for r in trials) == ["0", "1", "2"]

    # the best trial, on the parent
    best = max(trials, key=lambda r: r.data.metrics[METRIC])
    pm = parent.data.metrics
    assert pm[f"best_{METRIC}"] == pytest.approx(best.data.metrics[METRIC])
    space = load_config(CONFIG).sweep.space
    numeric = [k for k, p in space.items() if p.type != "categorical"]
    assert numeric, "configs/baseline.yaml should sweep numeric parameters"
    for key in space:
        assert f"best_{key}" in pm or f"best_{key}" in parent.data.tags
    winner = client.get_run(parent.data.tags["vigie.sweep_best_run_id"])
    assert winner.data.metrics[METRIC] == pytest.approx(pm[f"best_{METRIC}"])
    for key in numeric:
        assert float(winner.data.params[key]) == pytest.approx(pm[f"best_{key}"])
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")} == {"sweep/best.json", "sweep/trials.csv"}

    # each trial ran with the values sampled for it, inside the space
    study = _study(store)
    by_number = {t.number: t for t in study.trials}
    for r in trials:
        t = by_number[int(r.data.tags["vigie.sweep_trial"])]
        assert t.user_attrs["mlflow_run_id"] == r.info.run_id
        for key in numeric:
            assert float(r.data.params[key]) == pytest.approx(t.params[key])
            assert space[key].low <= t.params[key] <= space[key].high

    # the study sits beside the MLflow store; the intermediate values reached it
    assert (store / "optuna.db").exists()
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert study.trials[0].intermediate_values == {10: 0.25, 20: 0.5}
    assert study.user_attrs[sweep_mod.PARENT_ATTR] == parent.info.run_id


@pytest.mark.slow
def test_interrupted_sweep_resumes_the_same_study_and_parent(store, scripted, monkeypatch):
    calls = {"n": 0}

    def interrupt_second(ctx):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of trial 1

    monkeypatch.setattr(SCRIPTED, "before_fit", interrupt_second)
    assert main(["sweep", CONFIG, *scripted, "--trials", "3"]) == 130

    client = tracking.setup()
    parents, trials = _split(_runs(client))
    assert len(parents) == 1 and parents[0].info.status == "KILLED"
    parent_id = parents[0].info.run_id
    status = {r.data.tags["vigie.sweep_trial"]: r.info.status for r in trials}
    assert status == {"0": "FINISHED", "1": "KILLED"}
    assert [t.state.name for t in _study(store).trials] == ["COMPLETE", "FAIL"]
    assert _study(store).trials[1].user_attrs.get("interrupted") is True

    # resume. The rerun's first trial fails with an error: recorded FAILED, and the sweep goes on; its second
    # reports an intermediate value that the pruner finds poor: pruned, its run KILLED
    calls["n"] = 0
    prune = {"now": False}
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: prune["now"])

    def fail_then_prune(ctx):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated trial failure")
        if calls["n"] == 2:
            prune["now"] = True
            try:
                ctx.trial_callback(1, 0.01)
            finally:
                prune["now"] = False

    monkeypatch.setattr(SCRIPTED, "before_fit", fail_then_prune)
    assert main(["sweep", CONFIG, *scripted, "--trials", "3"]) == 0

    parents, trials = _split(_runs(client))
    assert len(parents) == 1
    assert parents[0].info.run_id == parent_id
    assert parents[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent_id}
    status = {r.data.tags["vigie.sweep_trial"]: r.info.status for r in trials}
    assert status == {"0": "FINISHED", "1": "KILLED", "2": "FAILED", "3": "KILLED", "4": "FINISHED", "5": "FINISHED"}
    pruned = next(r for r in trials if r.data.tags["vigie.sweep_trial"] == "3")
    assert pruned.data.tags.get("vigie.sweep_state") == "pruned"
    study = _study(store)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "FAIL", "PRUNED", "COMPLETE", "COMPLETE"]
    assert "simulated trial failure" in study.trials[2].user_attrs["error"]
    assert study.trials[3].intermediate_values == {1: 0.01}
    finished = [r for r in trials if r.info.status == "FINISHED"]
    assert parents[0].data.metrics[f"best_{METRIC}"] == pytest.approx(max(r.data.metrics[METRIC] for r in finished))
    assert parents[0].data.metrics["sweep_trials_complete"] == 3

    # a third call with the target reached runs nothing more
    assert main(["sweep", CONFIG, *scripted, "--trials", "3"]) == 0
    assert len(_study(store).trials) == 6
    assert len(_split(_runs(client))[0]) == 1


def test_storage_beside_the_tracking_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'team' / 'mlflow.db'}")
    assert sweep_mod.storage_path() == (tmp_path / "team" / "optuna.db").resolve()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///rel/store/mlflow.db")
    assert sweep_mod.storage_path() == (tmp_path / "rel" / "store" / "optuna.db").resolve()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert sweep_mod.storage_path() == (tmp_path / "mlruns" / "optuna.db").resolve()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert sweep_mod.storage_path() == (tmp_path / "mlruns" / "optuna.db").resolve()


def test_trial_config_sets_dotted_keys_and_names_bad_ones(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_config(CONFIG)
    before = cfg.model_dump()
    tc = sweep_mod.trial_config(cfg, {"model.topic.C": 2.5, "model.topic.word_ngram_range": [1, 3],
                                      "model.stance.classifier": "logreg"}, run_name="t-0")
    assert tc.model.topic.C == 2.5 and tc.model.topic.word_ngram_range == (1, 3)
    assert tc.model.stance.classifier == "logreg" and tc.run_name == "t-0"
    assert cfg.model_dump() == before  # the sweep's own config is left alone
    with pytest.raises(ConfigError, match="model.topic.CC"):
        sweep_mod.trial_config(cfg, {"model.topic.CC": 1.0})
    with pytest.raises(ConfigError, match=r"topic\.C: Input should be greater than 0"):
        sweep_mod.trial_config(cfg, {"model.topic.C": -1.0})
    bad = load_config(CONFIG, ["sweep.space={}"])
    with pytest.raises(ConfigError, match="sweep.space is empty"):
        sweep_mod.check_space(bad)


def test_suggest_handles_every_kind_of_parameter():
    from training.config import SweepParam

    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    c = sweep_mod.suggest(trial, "c", SweepParam(low=0.01, high=10, log=True))
    n = sweep_mod.suggest(trial, "n", SweepParam(type="int", low=1, high=3))
    k = sweep_mod.suggest(trial, "k", SweepParam(type="categorical", choices=["linear_svc", "logreg"]))
    r = sweep_mod.suggest(trial, "r", SweepParam(type="categorical", choices=[[1, 1], [1, 2]]))
    assert 0.01 <= c <= 10 and n in (1, 2, 3) and k in ("linear_svc", "logreg") and r in ([1, 1], [1, 2])
