"""`vigie register`: the best finished run -> a registered version -> the `champion` alias, behind a gate.

The gate: the alias moves only when the candidate beats the current champion on the same metric, and only
between runs that serve the same tasks (a topic-only run never replaces a champion with a stance head: its
mean would average over topic alone). When the candidate was evaluated on another dataset (another
fingerprint: new labels, say), the champion is scored again on the candidate's validation split, and the
two are compared on that; the message says so. Otherwise nothing moves and the message says why. Aliases, not
the deprecated stages. A version is only created for a run whose model artifacts are really there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException

from training import tracking
from training.errors import InputError, InvalidInput

ALIAS = "champion"
FINGERPRINT_TAG = "vigie.dataset_fingerprint"
TASKS_TAG = "vigie.tasks"  # the tasks a run's model serves (its trained heads)
DATASET_PATH_TAG = "vigie.dataset_path"  # the built dataset folder a run was evaluated on


@dataclass
class RegisterResult:
    promoted: bool
    version: str | None
    run_id: str | None
    message: str


def _experiments(client, name: str | None) -> list[str]:
    if name:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise InputError(f"--experiment {name}: no such experiment in {tracking.tracking_uri()}")
        return [exp.experiment_id]
    return [e.experiment_id for e in client.search_experiments()]


def best_run(client, experiment_ids: list[str], metric: str, tasks: str | None = None):
    """The best finished run with a complete model; with `tasks`, among the runs serving exactly those tasks."""
    runs = client.search_runs(
        experiment_ids,
        filter_string=f"attributes.status = 'FINISHED' and metrics.`{metric}` > -1e30 and tags.`vigie.family` != ''",
        order_by=[f"metrics.`{metric}` DESC", "attributes.start_time DESC"],
        max_results=200,
    )
    runs = [r for r in runs if not r.data.tags.get("mlflow.parentRunId") or r.data.tags.get("vigie.sweep_trial")]
    if tasks is not None:
        runs = [r for r in runs if r.data.tags.get(TASKS_TAG) == tasks]
    for r in runs:
        if _model_uri_if_complete(client, r):
            return r
    return None


def _model_uri_if_complete(client, run) -> str | None:
    """The logged model's URI (models:/<model id>) when its MLmodel file is really stored, else None."""
    model_id = run.data.tags.get("vigie.model_id")
    if not model_id:
        return None
    try:
        names = {f.path for f in mlflow.artifacts.list_artifacts(artifact_uri=f"models:/{model_id}")}
    except (MlflowException, OSError):
        return None
    return f"models:/{model_id}" if "MLmodel" in names else None


def _describe(run, metric: str) -> str:
    m = run.data.metrics
    heads = ", ".join(f"{k} {m[k]:.4f}" for k in sorted(m) if k.endswith(("macro_f1", "macro_f1_mean", "_accuracy")) and not k.startswith("train_"))
    t = run.data.tags
    return (f"Run {run.info.run_name} ({run.info.run_id}), family {t.get('vigie.family')}, dataset {t.get('vigie.dataset')} "
            f"fingerprint {t.get(FINGERPRINT_TAG, '?')[:12]}, config {t.get('vigie.config_path')}, commit {t.get('vigie.git_commit')}. "
            f"Selection metric {metric} = {m.get(metric)}. {heads}. Run link: {tracking.tracking_uri()} -> runs/{run.info.run_id}")


def register_best(experiment: str | None = None, metric: str = "validation_macro_f1_mean", name: str = "vigie") -> RegisterResult:
    tracking.check_reachable()
    client = tracking.setup()
    with tracking.store_lock():  # concurrent `vigie register`s: one decides at a time, on what the other wrote
        return _register_best(client, experiment, metric, name)


def _register_best(client, experiment: str | None, metric: str, name: str) -> RegisterResult:
    try:
        champ = client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        champ = None
    champ_run = client.get_run(champ.run_id) if champ is not None else None
    champ_tasks = champ_run.data.tags.get(TASKS_TAG) if champ_run else None
    experiments = _experiments(client, experiment)
    candidate = best_run(client, experiments, metric, tasks=champ_tasks)
    other = best_run(client, experiments, metric) if champ_tasks else None
    if other is not None and other.data.tags.get(TASKS_TAG) == champ_tasks:
        other = None
    if other is not None and (candidate is None or other.data.metrics[metric] > candidate.data.metrics[metric]):
        # the best run overall serves other tasks: say why it is not the one considered
        why = (f"the best run {other.info.run_id} serves {other.data.tags.get(TASKS_TAG)}, the champion {name} "
               f"v{champ.version} serves {champ_tasks}; only runs serving the same tasks are compared (a mean over "
               "fewer tasks is not comparable)")
        if candidate is None or candidate.info.run_id == champ.run_id:
            return RegisterResult(False, champ.version if candidate else None, other.info.run_id, f"not promoted: {why}")
    if candidate is None:
        raise InputError(f"no finished run with metric '{metric}' and a complete model in {tracking.tracking_uri()}; run `vigie train` first")
    score = candidate.data.metrics[metric]
    try:
        client.create_registered_model(name, description="vigie: topic and stance toward the West of French news articles")
    except MlflowException:
        pass  # exists (or created concurrently)
    note = ""
    if champ is not None:
        if champ.run_id == candidate.info.run_id:
            return RegisterResult(False, champ.version, champ.run_id,
                                  f"champion unchanged: {name} v{champ.version} is already the best run ({metric} {score:.4f})")
        champ_score = champ_run.data.metrics.get(metric)
        if champ_run.data.tags.get(FINGERPRINT_TAG) != candidate.data.tags.get(FINGERPRINT_TAG):
            champ_score = rescore_on_candidate_data(client, champ, candidate, metric)
            note = (f" (the champion was scored again on the candidate's validation split, dataset "
                    f"{candidate.data.tags.get(FINGERPRINT_TAG, '?')[:12]}: {champ_score:.4f})")
        if champ_score is not None and score <= champ_score:
            return RegisterResult(False, None, candidate.info.run_id,
                                  f"not promoted: best candidate run {candidate.info.run_id} has {metric} {score:.4f}, "
                                  f"not better than champion {name} v{champ.version} ({champ_score:.4f}){note}")
    with tracking.signals_deferred():  # a Ctrl-C here would leave a new version that is not the champion
        version = _version_for_run(client, name, candidate, metric)
        client.set_registered_model_alias(name, ALIAS, version.version)
    before = f" (was v{champ.version}, {metric} {champ_run.data.metrics.get(metric):.4f}){note}" if champ else ""
    return RegisterResult(True, version.version, candidate.info.run_id,
                          f"promoted: {name} v{version.version} is @{ALIAS}{before}: run {candidate.info.run_id}, {metric} {score:.4f}")


def rescore_on_candidate_data(client, champ, candidate, metric: str) -> float:
    """The champion's `metric` (the mean of its tasks' validation macro-F1) on the candidate's validation split,
    read from the candidate's built dataset folder. InputError when that folder is gone or was rebuilt since."""
    import json
    from pathlib import Path

    import pandas as pd
    from datasets import load_from_disk

    from training.data.dataset import label_names, task_data
    from training.evaluate import evaluate_task, selection_metric

    folder = Path(candidate.data.tags.get(DATASET_PATH_TAG, ""))
    stats = folder / "stats.json"
    want = candidate.data.tags.get(FINGERPRINT_TAG)
    if not stats.is_file() or json.loads(stats.read_text()).get("fingerprint") != want:
        raise InputError(f"cannot compare run {candidate.info.run_id} with the champion: it was evaluated on dataset "
                         f"{str(want)[:12]}, which is no longer at '{folder}' (rebuild it with the run's config, or "
                         "evaluate both on one dataset)")
    if metric != "validation_macro_f1_mean":
        raise InputError(f"--metric {metric}: the champion can be scored again on another dataset only for "
                         "validation_macro_f1_mean")
    dsd = load_from_disk(str(folder))
    model = load_model(f"models:/{champ.name}/{champ.version}")
    tasks = client.get_run(champ.run_id).data.tags.get(TASKS_TAG, "").split(",")
    labels = label_names(dsd)
    metrics = {}
    sources = dict(zip(dsd["validation"]["id"], dsd["validation"]["source"]))
    for task in tasks:
        d = task_data(dsd["validation"], task)
        if not len(d.y):
            continue
        # no date: validation figures are the content-only ones (train.score_splits), as served to any source
        pred = model.predict(pd.DataFrame({"text": d.texts, "source": [sources[i] for i in d.ids]}))
        proba = pred[[f"{task}_proba_{lab}" for lab in labels[task]]].to_numpy(dtype=float)
        metrics.update(evaluate_task("validation", task, d.y, proba, labels[task], intervals=False)[0])
    return selection_metric(metrics, tasks)


def _version_for_run(client, name: str, run, metric: str):
    for v in client.search_model_versions(f"name='{name}' and run_id='{run.info.run_id}'"):
        return v
    uri = _model_uri_if_complete(client, run)
    version = client.create_model_version(name, uri, run_id=run.info.run_id, model_id=uri.removeprefix("models:/"), description=_describe(run, metric),
                                          tags={FINGERPRINT_TAG: run.data.tags.get(FINGERPRINT_TAG, ""), "vigie.family": run.data.tags.get("vigie.family", "")})
    for _ in range(60):  # local stores register at once; remote ones may take a moment
        v = client.get_model_version(name, version.version)
        if v.status == "READY":
            return v
        time.sleep(0.5)
    return version


def model_version(uri: str) -> str | None:
    """The number of the registered version a `models:/<name>@<alias>` or `models:/<name>/<version>` URI names
    now, or None (a `runs:/` or `models:/<model id>` URI, an alias or name the registry does not know)."""
    version = registered_version(uri)
    return str(version.version) if version is not None else None


def pinned_uri(uri: str, version: str | None) -> str:
    """`models:/<name>@<alias>` -> `models:/<name>/<version>` once its version is resolved: what is loaded is then
    the version reported, even when the alias moves meanwhile. Any other URI is returned as it is."""
    if version and uri.startswith("models:/") and "@" in uri:
        return f"{uri.split('@', 1)[0]}/{version}"
    return uri


def load_model(uri: str = f"models:/vigie@{ALIAS}"):
    tracking.setup()
    try:
        return mlflow.pyfunc.load_model(uri)
    except MlflowException as e:
        raise InputError(f"cannot load model {uri} from {tracking.tracking_uri()}: {e.message.splitlines()[0]}") from None


def download_model(uri: str = f"models:/vigie@{ALIAS}") -> str:
    """A local copy of a model's files (for server workers that each load it); InputError when it is not there."""
    tracking.setup()
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri)
    except MlflowException as e:
        raise InputError(f"cannot load model {uri} from {tracking.tracking_uri()}: {e.message.splitlines()[0]}") from None


def scoring_app(model):
    """MLflow's own scoring app (an ASGI app: /invocations, /ping, /health, /version) for a loaded pyfunc."""
    from mlflow.pyfunc import scoring_server

    return scoring_server.init(model)


def predict(model, frame):
    """The loaded model's predictions for `frame`; InvalidInput with the model's message when it refuses the frame
    (a row it does not accept: the pyfunc answers such a request with an MlflowException, served as a 400)."""
    try:
        return model.predict(frame)
    except MlflowException as e:
        raise InvalidInput(e.message) from None


def spark_udf(spark, uri: str, result_type, env_manager: str = "local"):
    """The model as a Spark pandas UDF (`mlflow.pyfunc.spark_udf`) returning `result_type`, a struct of the output
    columns. `env_manager="local"`: executors use their own Python (which must hold vigie); `virtualenv`, `uv` or
    `conda` rebuild the model's logged environment on each executor. InputError when the model cannot be had."""
    tracking.setup()
    try:
        return mlflow.pyfunc.spark_udf(spark, uri, result_type=result_type, env_manager=env_manager)
    except MlflowException as e:
        raise InputError(f"cannot load model {uri} from {tracking.tracking_uri()}: {e.message.splitlines()[0]}") from None


def registered_version(uri: str):
    """The registered ModelVersion a `models:/<name>@<alias>` or `models:/<name>/<version>` URI names, else None
    (a `runs:/` URI or a bare logged-model id). `model_version` gives only its number."""
    ref = uri.removeprefix("models:/")
    if ref == uri or "/" not in ref and "@" not in ref:
        return None
    client = tracking.setup()
    try:
        if "@" in ref:
            return client.get_model_version_by_alias(*ref.split("@", 1))
        name, version = ref.split("/", 1)
        return client.get_model_version(name, version) if version.isdigit() else None
    except MlflowException:
        return None
