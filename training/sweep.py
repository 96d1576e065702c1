"""`vigie sweep`: an Optuna search over `sweep.space`, one nested MLflow run a trial under one parent run.

- The study lives in SQLite beside the MLflow store (`mlruns/optuna.db` for the default store, the folder of
  the `.db` file when MLFLOW_TRACKING_URI names a SQLite file, `mlruns/optuna.db` for any other store).
- Rerunning with the same study name continues it: same study, same parent run (its id is kept as a study
  user attribute), and trials are run until the study holds `trials` COMPLETE ones.
- A trial's config is the sweep's config with the sampled values set at their dotted keys; `train()` logs it
  as a nested run tagged `vigie.sweep_trial=<trial number>`. The parent is tagged `vigie.sweep=<study>` and
  carries the best trial so far: `best_<metric>`, `best_<key>` (a metric for numbers, a tag otherwise).
- A failed trial is recorded FAILED (nested run and Optuna trial) and the sweep goes on; after
  MAX_FAILURES_IN_A_ROW the sweep stops. Ctrl-C/SIGTERM leaves the trial's run KILLED, the parent KILLED,
  and the study resumable.
- Pruning (`sweep.pruner: median`): the trainer calls `trial_callback(step, value)` with an intermediate
  value of the selection metric (CamemBERT after each evaluation; baselines never, so they are never pruned).
  A pruned trial's run ends KILLED with the tag `vigie.sweep_state=pruned`.
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from training import tracking
from training.config import Config, SweepParam, apply_override, flatten, format_validation_error
from training.errors import ConfigError

MAX_FAILURES_IN_A_ROW = 3
PARENT_ATTR = "mlflow_parent_run_id"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- where the study lives ----------------------------------------------------------------------------------


def storage_path() -> Path:
    """The SQLite file of the Optuna studies, beside the MLflow store."""
    uri = tracking.tracking_uri()
    if uri.startswith("sqlite:///"):
        db = uri[len("sqlite:///"):].split("?", 1)[0]
        folder = Path(db).parent
    else:  # a tracking server, a database server: keep the studies in the local store folder
        folder = tracking.DEFAULT_STORE_DIR
    return (folder / "optuna.db").resolve()


def storage_url() -> str:
    path = storage_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def default_study_name(cfg: Config) -> str:
    if cfg.sweep.study_name:
        return cfg.sweep.study_name
    stem = Path(cfg.config_path).stem if cfg.config_path else cfg.model.family
    return f"{cfg.experiment}-{stem}"


# --- the search space and the trial config ------------------------------------------------------------------


def _encodable(choices: list[Any]) -> bool:
    return all(c is None or isinstance(c, (bool, int, float, str)) for c in choices)


def suggest(trial, key: str, p: SweepParam) -> Any:
    if p.type == "categorical":
        if _encodable(p.choices):
            return trial.suggest_categorical(key, p.choices)
        # Optuna stores only scalars: lists (n-gram ranges...) travel as JSON text
        return json.loads(trial.suggest_categorical(key, [json.dumps(c) for c in p.choices]))
    if p.type == "int":
        step = int(p.step) if p.step else 1
        return trial.suggest_int(key, int(p.low), int(p.high), step=step, log=p.log)
    return trial.suggest_float(key, float(p.low), float(p.high), step=p.step, log=p.log)


def _set_dotted(data: dict, key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def trial_config(cfg: Config, values: dict[str, Any], run_name: str | None = None, description: str | None = None) -> Config:
    """cfg with `values` set at their dotted keys, validated like a config file."""
    data = cfg.model_dump(mode="json")
    where = f"{cfg.config_path or 'config'} (sweep.space)"
    for key, value in values.items():
        apply_override(copy.deepcopy(data), f"{key}=0", where)  # names an unknown key like an override would
        _set_dotted(data, key, copy.deepcopy(value))
    if run_name is not None:
        data["run_name"] = run_name
    if description is not None:
        data["description"] = description
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, where)) from None


def check_space(cfg: Config) -> None:
    """Fail before any work when the space is empty, names unknown keys, or its bounds do not validate."""
    space = cfg.sweep.space
    if not space:
        raise ConfigError(f"{cfg.config_path or 'config'}: sweep.space is empty: nothing to search")
    for bound in ("low", "high"):
        values = {}
        for key, p in space.items():
            if p.type == "categorical":
                values[key] = p.choices[0] if bound == "low" else p.choices[-1]
            else:
                v = getattr(p, bound)
                values[key] = int(v) if p.type == "int" else float(v)
        trial_config(cfg, values)


# --- the sweep ------------------------------------------------------------------------------------------------


def _create_study(cfg: Config, name: str, sampler_seed: int):
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # heartbeats: a trial whose process died (SIGKILL) is marked FAIL by the next sweep of the study
        storage = optuna.storages.RDBStorage(storage_url(), heartbeat_interval=60, grace_period=180)
    pruner = optuna.pruners.MedianPruner() if cfg.sweep.pruner == "median" else optuna.pruners.NopPruner()
    return optuna.create_study(study_name=name, storage=storage, direction=cfg.sweep.direction, load_if_exists=True,
                               sampler=optuna.samplers.TPESampler(seed=sampler_seed), pruner=pruner)


def _check_same_study(study, cfg: Config, fingerprint: str) -> None:
    attrs = study.user_attrs
    expected = {"metric": cfg.sweep.metric, "direction": cfg.sweep.direction, "dataset_fingerprint": fingerprint}
    for key, value in expected.items():
        if key in attrs and attrs[key] != value:
            raise ConfigError(f"study '{study.study_name}' in {storage_path()} was run with {key} {attrs[key]!r}, "
                              f"this config gives {value!r}: its trials are not comparable; choose another --study name")
    for key, value in expected.items():
        study.set_user_attr(key, value)
    study.set_user_attr("space", {k: p.model_dump() for k, p in cfg.sweep.space.items()})


def _counts(study) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(t.state.name for t in study.get_trials(deepcopy=False)))


def _log_best(study, cfg: Config) -> dict | None:
    """The best trial so far onto the (active) parent run; returns it as a dict, or None without one."""
    from optuna.trial import TrialState

    counts = _counts(study)
    complete = counts.get("COMPLETE", 0)
    tracking.log_metrics({"sweep_trials_complete": complete, "sweep_trials_failed": counts.get("FAIL", 0),
                          "sweep_trials_pruned": counts.get("PRUNED", 0)}, step=complete)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    best = study.best_trial
    metrics = {f"best_{cfg.sweep.metric}": best.value}
    tags = {"vigie.sweep_best_trial": str(best.number), "vigie.sweep_best_run_id": best.user_attrs.get("mlflow_run_id", "")}
    values = best.user_attrs.get("values", best.params)
    for key, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[f"best_{key}"] = value
        else:
            tags[f"best_{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    tracking.log_metrics(metrics, step=complete)
    tracking.set_tags(tags)
    with tempfile.TemporaryDirectory(prefix="vigie-sweep-") as tmp:
        out = Path(tmp) / "sweep"
        out.mkdir()
        study.trials_dataframe(attrs=("number", "value", "params", "state", "duration", "user_attrs")).to_csv(out / "trials.csv", index=False)
        (out / "best.json").write_text(json.dumps({"study": study.study_name, "trial": best.number, "value": best.value,
                                                   "params": values, "run_id": best.user_attrs.get("mlflow_run_id")}, indent=2))
        tracking.log_artifacts(out, "sweep")
    return {"trial": best.number, "value": best.value, "params": values, "run_id": best.user_attrs.get("mlflow_run_id")}


def _trial_run_id(parent_run_id: str, experiment: str, number: int) -> str | None:
    """The (latest) nested run of trial `number` under the parent run."""
    ids = [r.info.run_id for r in tracking.child_runs(parent_run_id, experiment)
           if r.data.tags.get("vigie.sweep_trial") == str(number)]
    return ids[-1] if ids else None


def sweep(cfg: Config, trials: int, study_name: str | None = None) -> dict:
    """Run trials until the study holds `trials` complete ones. Returns {study, parent_run_id, best, counts}."""
    import optuna

    from training.data.dataset import load_built
    from training.train import train

    if trials < 1:
        raise ConfigError("--trials must be at least 1")
    check_space(cfg)
    tracking.check_reachable()
    name = study_name or default_study_name(cfg)
    _, stats, _ = load_built(cfg.data)  # built once here, not inside the first trial
    fingerprint = stats["fingerprint"]

    probe = _create_study(cfg, name, cfg.sweep.sampler_seed)
    already = len(probe.trials)
    # a resumed study gets a fresh sampler seed, so that its random start-up trials do not repeat earlier ones
    study = _create_study(cfg, name, cfg.sweep.sampler_seed + already) if already else probe
    _check_same_study(study, cfg, fingerprint)
    _say(f"study '{name}' in {storage_path()}: {already} trial(s) so far, {_counts(study).get('COMPLETE', 0)} complete; "
         f"target {trials} complete")

    parent_id = study.user_attrs.get(PARENT_ATTR)
    if parent_id and tracking.get_run(parent_id) is None:
        _say(f"parent run {parent_id} of study '{name}' is not in {tracking.tracking_uri()}: starting a new one")
        parent_id = None
    tags = {"vigie.sweep": name, "vigie.sweep_storage": str(storage_path()), "vigie.family": cfg.model.family,
            "vigie.dataset": cfg.data.name, "vigie.dataset_fingerprint": fingerprint,
            "vigie.config_path": cfg.config_path or "", "vigie.git_commit": tracking.git_commit()}
    description = cfg.description or f"Optuna sweep '{name}' over {', '.join(cfg.sweep.space)}"
    space = cfg.sweep.space

    def objective(trial) -> float:
        values = {key: suggest(trial, key, p) for key, p in space.items()}
        trial.set_user_attr("values", values)
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        _say(f"--- trial {trial.number}: {shown}")
        trial_cfg = trial_config(cfg, values, run_name=f"{name}-trial-{trial.number}",
                                 description=f"sweep '{name}' trial {trial.number}: {shown}")

        def report(step: int, value: float) -> None:
            trial.report(float(value), int(step))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} ({cfg.sweep.metric} {value:.4f})")

        try:
            with tracking.extra_run_tags({"vigie.sweep_trial": str(trial.number), "vigie.sweep_study": name}):
                result = train(trial_cfg, nested=True, trial_callback=report)
        except optuna.TrialPruned:
            run_id = _trial_run_id(parent_id, cfg.experiment, trial.number)
            if run_id:
                trial.set_user_attr("mlflow_run_id", run_id)
                tracking.end_run_as(run_id, "KILLED", {"vigie.sweep_state": "pruned"})
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:500])
            raise
        trial.set_user_attr("mlflow_run_id", result["run_id"])
        value = result["metrics"].get(cfg.sweep.metric)
        if value is None:
            raise ValueError(f"trial run {result['run_id']} logged no metric '{cfg.sweep.metric}' (sweep.metric)")
        return float(value)

    with tracking.run(cfg.experiment, f"sweep-{name}", tags, description=description, run_id=parent_id) as parent:
        new_parent = parent_id is None
        parent_id = parent.info.run_id
        if new_parent:
            study.set_user_attr(PARENT_ATTR, parent_id)
            study.set_user_attr("mlflow_tracking_uri", tracking.tracking_uri())
            resolved = cfg.model_dump(mode="json")
            tracking.log_params({**flatten(resolved), "sweep.study": name, "sweep.storage": str(storage_path())})
        _say(f"parent run {parent_id} (sweep-{name}) in experiment '{cfg.experiment}', store {tracking.tracking_uri()}"
             + ("" if new_parent else " (resumed)"))
        failures = 0
        best = _log_best(study, cfg) if new_parent else None
        while _counts(study).get("COMPLETE", 0) < trials:
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
            last = study.get_trials(deepcopy=False)[-1]
            if last.state.name == "FAIL":
                failures += 1
                if failures >= MAX_FAILURES_IN_A_ROW:
                    raise ConfigError(f"{failures} trials in a row failed (last: trial {last.number}); see the FAILED "
                                      f"runs under parent run {parent_id} and fix the config or sweep.space")
            else:
                failures = 0
            best = _log_best(study, cfg)
        if best is None:  # resumed a study that already had its trials
            best = _log_best(study, cfg)
        counts = _counts(study)
        _say(f"study '{name}': {counts}")
        if best:
            _say(f"best trial {best['trial']}: {cfg.sweep.metric} {best['value']:.4f}, {best['params']} (run {best['run_id']})")
    summary = {"study": name, "storage": str(storage_path()), "parent_run_id": parent_id, "best": best, "counts": counts}
    print(json.dumps(summary, indent=2, default=str))
    return summary
