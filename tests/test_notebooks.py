"""The notebooks in notebooks/ run top to bottom against a store, and are committed without outputs."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from tests.conftest import small_overrides

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
CONFIG = "configs/baseline.yaml"


def test_committed_notebooks_have_no_outputs():
    """Run `nbstripout notebooks/*.ipynb` before committing a notebook."""
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert paths, "no notebooks found"
    dirty = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
                dirty.append(f"{path.name} cell {i}")
    assert not dirty, f"notebook outputs committed (run nbstripout): {dirty}"


# --- executing them against a small temporary store ----------------------------------------------------------


@pytest.fixture(scope="module")
def small_store(small_build, tmp_path_factory):
    """The session's small build (conftest.py), two baseline runs with different C in a temporary store,
    the better one registered as @champion."""
    mp = pytest.MonkeyPatch()
    store = tmp_path_factory.mktemp("nb-store")
    cfg, _, tmp = small_build
    mp.chdir(REPO)
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    from training.config import load_config
    from training.registry import register_best
    from training.train import train

    base = small_overrides(tmp)
    runs = [train(load_config(CONFIG, [*base, f"model.topic.C={c}", f"model.stance.C={c}"]))["run_id"] for c in (0.05, 2.0)]
    result = register_best()
    assert result.promoted
    dataset = Path(cfg.data.output_dir) / cfg.data.name
    mp.setenv("VIGIE_DATASET", str(dataset))
    yield {"runs": runs, "champion_run": result.run_id, "dataset": dataset}
    mp.undo()


def _execute(name: str, cwd: Path) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def _outputs(nb, output_type: str | None = None, mime: str | None = None) -> list:
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if output_type and out.output_type != output_type:
                continue
            if mime and mime not in out.get("data", {}):
                continue
            found.append(out)
    return found


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") if out.output_type == "stream" else json.dumps(out.get("data", {})))
    return "\n".join(parts)


@pytest.mark.slow
def test_explore_data_notebook_runs(small_store):
    nb = _execute("01_explore_data.ipynb", NOTEBOOKS)  # as from `jupyter` in notebooks/
    assert not _outputs(nb, "error")
    assert len(_outputs(nb, mime="text/html")) >= 6  # the tables
    assert len(_outputs(nb, mime="image/png")) >= 1  # the length distribution
    text = _text(nb)
    assert small_store["dataset"].name in text and "fingerprint" in text
    for what in ("exact_copies_removed", "label conflicts: rows_dropped", "stance labelled", "politique"):
        assert what in text, what


@pytest.mark.slow
def test_compare_runs_notebook_runs(small_store):
    nb = _execute("02_compare_runs.ipynb", REPO)  # and from the repository root
    assert not _outputs(nb, "error")
    text = _text(nb)
    for run_id in small_store["runs"]:
        assert run_id in text  # the runs table
    assert "champion:  vigie v1" in text and f"({small_store['champion_run']})" in text
    assert "runner-up: run " in text
    assert "per-class F1" in text
    assert "validation articles get different topics" in text
    assert len(_outputs(nb, mime="image/png")) >= 3  # bar plots, per-class F1, confusion matrices
    assert len(_outputs(nb, mime="text/html")) >= 3  # runs table, per-class tables, disagreements
