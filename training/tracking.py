"""Every MLflow tracking call of the project lives here (the registry's live in registry.py).

Default store: `sqlite:///mlruns/mlflow.db` with artifacts under `mlruns/artifacts/` (MLflow 3.17+ refuses a
plain `./mlruns` file store); `MLFLOW_TRACKING_URI` overrides it. A run always ends FINISHED, FAILED or
KILLED: exceptions, Ctrl-C and SIGTERM are caught here; a SIGKILL cannot be, and `vigie runs cleanup` marks
such orphans KILLED. Every store write runs with Ctrl-C and SIGTERM held back until it is done (`signals_deferred`):
an interrupt in the middle of a SQLite write leaves that write's transaction open and its lock held, and the run
could then not be closed as KILLED ("database is locked").
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

DEFAULT_STORE_DIR = Path("mlruns")
MAX_PARAM_VALUE = 6000
MAX_PARAMS = 500


def default_tracking_uri() -> str:
    return f"sqlite:///{(DEFAULT_STORE_DIR / 'mlflow.db').resolve()}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def uses_default_store() -> bool:
    return not os.environ.get("MLFLOW_TRACKING_URI")


def sqlite_path(uri: str | None = None) -> Path | None:
    uri = uri or tracking_uri()
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@contextmanager
def store_lock() -> Iterator[None]:
    """An exclusive lock beside a sqlite store (no-op for servers, which serialise writes themselves).
    Two processes must not create the store's tables at once, nor race on the registry's read-then-write."""
    db = sqlite_path()
    if db is None:
        yield
        return
    import fcntl

    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_initialised: set[str] = set()


def setup() -> MlflowClient:
    if uses_default_store():
        DEFAULT_STORE_DIR.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if uri in _initialised:
        return MlflowClient()
    with store_lock():  # the first client creates or migrates the tables (tracking and registry stores)
        client = MlflowClient()
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
    _initialised.add(uri)
    return client


def check_reachable(timeout_s: float = 5.0) -> None:
    """Fail fast, with the URI in the message, when a remote tracking server does not answer."""
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.request

    from training.errors import InputError

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).read()
    except Exception as e:  # noqa: BLE001 - any failure means: not reachable
        raise InputError(f"MLflow tracking server {uri} is not reachable ({type(e).__name__}: {e}); "
                         "start it or unset MLFLOW_TRACKING_URI to use the local store") from None


# What decides the page the MLflow UI opens an experiment on, read from its bundle
# (mlflow/server/js/build/static/js/main.*.js; tests/test_reviewer_view.py checks that the strings are still there):
# - the experiment tag `mlflow.experimentKind`: the kind selector writes it (`setExperimentTag({key:
#   "mlflow.experimentKind", value: kind})`), and the kind hook reads it (`tags.find(e => "mlflow.experimentKind"
#   === e.key)`); "custom_model_development" is "Machine learning" (Training runs), "genai_development" the GenAI
#   pages (Overview, Traces). Set on every vigie experiment;
# - in 3.17 that hook reads the tag only when the "workflow switch" flag is off, and the flag is on in the shipped
#   build: the kind comes from the workflow type instead, the `workflowType` URL parameter ("machine_learning" or
#   "genai") or else the browser's `mlflow.workflowType_v1` local-storage entry, "genai" until the user flips the
#   sidebar's GenAI / Machine learning switch. Hence `ui_url`, which names the workflow in the URL.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
UI_WORKFLOW = "machine_learning"


def _mark_training_experiment(client: MlflowClient, exp) -> None:
    """Tag `exp` as a machine-learning experiment (idempotent: no write when it already is)."""
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def experiment_id(name: str) -> str:
    """The id of experiment `name`, created when missing; every vigie experiment is tagged as a machine-learning
    one (`EXPERIMENT_KIND_TAG`), also one created before this tag was set."""
    client = setup()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = (DEFAULT_STORE_DIR / "artifacts").resolve().as_uri() if uses_default_store() else None
        try:
            return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except mlflow.exceptions.MlflowException:  # created meanwhile by a concurrent run
            exp = client.get_experiment_by_name(name)
    _mark_training_experiment(client, exp)
    return exp.experiment_id


def ui_url(base: str, experiment_id: str | None = None) -> str:
    """The UI's address for the experiments list (or one experiment's runs) in its Machine learning workflow."""
    page = f"experiments/{experiment_id}/runs" if experiment_id else "experiments"
    return f"{base.rstrip('/')}/#/{page}?workflowType={UI_WORKFLOW}"


GIT_COMMIT_TAG = "vigie.git_commit"  # the commit, with "-dirty" when tracked files differ from it


def git_commit() -> str:
    """HEAD's commit, "<sha>-dirty" when tracked files were changed since, "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt so that the run is closed as KILLED."""


_DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_deferring = threading.local()


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM received inside the block take effect when it ends, through the handlers that were in
    place; a second one does not wait (whoever presses Ctrl-C twice wants out now). Main thread only (signal
    handlers can only be set there); nested blocks are one block."""
    if threading.current_thread() is not threading.main_thread() or getattr(_deferring, "active", False):
        yield
        return
    previous = {s: signal.getsignal(s) for s in _DEFERRED_SIGNALS}
    pending: list[int] = []

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)

    def hold(signum, frame):
        if pending:
            pending.clear()
            restore()
            _deliver(signum, previous[signum])
            return
        pending.append(signum)

    for s in _DEFERRED_SIGNALS:
        signal.signal(s, hold)
    _deferring.active = True
    try:
        yield
    finally:
        _deferring.active = False
        restore()
        if pending:
            _deliver(pending[0], previous[pending[0]])


def _deliver(signum: int, handler) -> None:
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)  # the default action, now that the default handler is back


def _store_write(fn):
    """`fn` runs inside `signals_deferred`: a store write is never cut in the middle by Ctrl-C."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        with signals_deferred():
            return fn(*args, **kwargs)
    return wrapper


_EXTRA_TAGS: ContextVar[dict[str, str]] = ContextVar("vigie_extra_run_tags", default={})


@contextmanager
def extra_run_tags(tags: dict[str, str]) -> Iterator[None]:
    """Tags added to every run that `run()` starts inside this block (a sweep tags its trials' runs so)."""
    token = _EXTRA_TAGS.set({**_EXTRA_TAGS.get(), **tags})
    try:
        yield
    finally:
        _EXTRA_TAGS.reset(token)


@contextmanager
def run(experiment: str, run_name: str, tags: dict[str, str], description: str = "", nested: bool = False,
        run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """A run that ends FINISHED on success, KILLED on Ctrl-C/SIGTERM, FAILED on any other error.
    With `run_id`, that existing run is reopened (RUNNING again) instead of a new one being started."""
    exp_id = experiment_id(experiment)
    tags = {**tags, **_EXTRA_TAGS.get(), "vigie.pid": str(os.getpid()), "vigie.host": socket.gethostname(),
            "mlflow.note.content": description}
    tags.setdefault(GIT_COMMIT_TAG, git_commit())
    if tags[GIT_COMMIT_TAG] != "unknown":  # MLflow's own tag (the run page's "Source" commit): the bare sha
        tags[MLFLOW_GIT_COMMIT] = tags[GIT_COMMIT_TAG].removesuffix("-dirty")
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise _Terminated()

    if not nested:
        try:
            signal.signal(signal.SIGTERM, on_term)
        except ValueError:  # not the main thread
            pass
    started = False
    try:
        with signals_deferred():  # an interrupt held back here surfaces once the run exists, and closes it
            if run_id:
                active = mlflow.start_run(run_id=run_id, tags=tags, nested=nested)
            else:
                active = mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags, nested=nested)
            started = True
        yield active
    except KeyboardInterrupt:
        if started:
            _end_run(RunStatus.KILLED)
        raise
    except BaseException:
        if started:
            _end_run(RunStatus.FAILED)
        raise
    else:
        _end_run(RunStatus.FINISHED)
    finally:
        if not nested:
            try:
                signal.signal(signal.SIGTERM, previous)
            except ValueError:
                pass


@_store_write
def _end_run(status: int) -> None:
    mlflow.end_run(RunStatus.to_string(status))


@_store_write
def log_params(params: dict[str, Any]) -> None:
    """Flattened config as params, bounded: values cut to MLflow's length limit, at most MAX_PARAMS."""
    items = []
    for k, v in sorted(params.items())[:MAX_PARAMS]:
        s = json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else str(v)
        items.append((k[:250], s[:MAX_PARAM_VALUE]))
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i : i + 100]))


@_store_write
def log_metrics(metrics: dict[str, float], step: int | None = None, model_id: str | None = None, dataset=None) -> None:
    """With `model_id` (and `dataset`), the metrics are also the logged model's: its page lists them, per dataset."""
    clean = {k: float(v) for k, v in metrics.items() if v is not None}
    items = list(clean.items())
    for i in range(0, len(items), 500):
        mlflow.log_metrics(dict(items[i : i + 500]), step=step, model_id=model_id, dataset=dataset)


def log_dataset_split(df, name: str, source: str, targets: str | None, context: str):
    with warnings.catch_warnings():  # two of MLflow's hints that say nothing about a dataset record:
        # a local path matches its "" and "file" sources, both LocalArtifactDatasetSource
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
        # the integer label columns; this schema is the record's, not a model signature that could meet a null
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer column")
        dataset = mlflow.data.from_pandas(df, source=source, name=name, targets=targets)  # the digest: no write yet
        with signals_deferred():
            mlflow.log_input(dataset, context=context)  # where the schema is inferred
    return dataset


def logged_model_id(model_uri: str) -> str | None:
    """The id of the MLflow 3 logged model a `models:/...` or `runs:/...` URI resolves to (its MLmodel file names
    it); None for a model logged before logged models existed."""
    from mlflow.models import get_model_info

    setup()
    return get_model_info(model_uri).model_id


@_store_write
def log_artifacts(local_dir: Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifacts(str(local_dir), artifact_path)


@_store_write
def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path)


@_store_write
def set_tags(tags: dict[str, str]) -> None:
    mlflow.set_tags(tags)


def signature(inputs: list[tuple[str, str, bool]], outputs: list[tuple[str, str]]):
    """A model signature from (name, type, required) input columns and (name, type) output columns (all
    optional: a model without a head returns nulls there)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec(t, name, required=req) for name, t, req in inputs]),
                          outputs=Schema([ColSpec(t, name, required=False) for name, t in outputs]))


@_store_write
def log_pyfunc_model(python_model, model_dir: Path, inputs: list[tuple[str, str, bool]], outputs: list[tuple[str, str]],
                     input_example, pip_requirements: list[str], code_paths: list[str]):
    """The run's model: `python_model` (a pyfunc PythonModel) with `model_dir` as its one artifact folder, and the
    signature of its input and output columns (the scoring server answers a request that does not fit with a 400)."""
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=python_model,
        artifacts={"model_dir": str(model_dir)},
        code_paths=code_paths,
        signature=signature(inputs, outputs),
        input_example=input_example,
        pip_requirements=pip_requirements,
    )


def active_run_id() -> str:
    return mlflow.active_run().info.run_id


def get_run(run_id: str):
    """The run, or None when the store does not have it (or it was deleted)."""
    client = setup()
    try:
        r = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return None
    return None if r.info.lifecycle_stage == "deleted" else r


def child_runs(parent_run_id: str, experiment: str) -> list:
    """The runs nested under `parent_run_id` in `experiment`, oldest first."""
    client = setup()
    return client.search_runs([experiment_id(experiment)], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                              order_by=["attributes.start_time ASC"], max_results=10_000)


@_store_write
def end_run_as(run_id: str, status: str, tags: dict[str, str] | None = None) -> None:
    """Set the final status (FINISHED, FAILED, KILLED) and tags of a run that is no longer active."""
    client = setup()
    for k, v in (tags or {}).items():
        client.set_tag(run_id, k, v)
    client.set_terminated(run_id, status=status)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale_runs(older_than_s: float = 0.0) -> int:
    """Mark orphaned RUNNING runs KILLED: runs started on this host by a process that is gone (SIGKILL, crash),
    and, with `older_than_s`, runs from other hosts started longer ago than that. Runs of live processes stay."""
    client = setup()
    now_ms = time.time() * 1000
    n = 0
    for exp in client.search_experiments():
        for r in client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=10_000):
            pid, host = r.data.tags.get("vigie.pid"), r.data.tags.get("vigie.host")
            if host == socket.gethostname() and pid and pid.isdigit():
                stale = not _pid_alive(int(pid))
            else:
                stale = older_than_s > 0 and (now_ms - r.info.start_time) > older_than_s * 1000
            if stale:
                client.set_terminated(r.info.run_id, status="KILLED")
                n += 1
    return n


def mark_training_experiments() -> int:
    """Tag every active experiment of the store as a machine-learning one; returns how many were tagged now."""
    client = setup()
    todo = [e for e in client.search_experiments() if e.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND]
    for exp in todo:
        _mark_training_experiment(client, exp)
    return len(todo)


def run_ui(host: str = "127.0.0.1", port: int = 5001) -> int:
    mark_training_experiments()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri(), "--host", host, "--port", str(port)]
    if uses_default_store():
        cmd += ["--default-artifact-root", (DEFAULT_STORE_DIR / "artifacts").resolve().as_uri()]
    print(f"MLflow UI on {ui_url(f'http://{host}:{port}')}  (store: {tracking_uri()})", file=sys.stderr)
    return subprocess.call(cmd)
