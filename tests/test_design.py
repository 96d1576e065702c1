"""The layout rules of the project, checked on the source: imports run one way, MLflow is called from one
place, and orchestration never names a model family."""

from __future__ import annotations

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "training"
FAMILY_FILES = {"models/families.py", "models/baseline_family.py", "models/camembert_family.py"}


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports(path: Path) -> set[str]:
    """Every module of the package that `path` imports, at module level or inside a function (what runs), but not
    under `if TYPE_CHECKING:` (what only a type checker reads)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                         for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in MODULES}


def test_imports_have_no_cycle():
    graph = {m: imports(p) - {m} for m, p in MODULES.items()}
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as e:
        raise AssertionError(f"import cycle: {' -> '.join(e.args[1])}") from None


def test_the_cycle_check_can_fail(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("from training.train import train\n")
    assert "training.train" in imports(a)
    graph = {"x": {"y"}, "y": {"x"}}
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError:
        return
    raise AssertionError("a two-module cycle went unnoticed")


def test_data_never_imports_the_stages_after_it():
    """The data stage reads its config section and the shared words; nothing of models, training or serving."""
    upstream = ("training.data", "training.io", "training.errors", "training.config")
    for m, p in MODULES.items():
        if m.startswith("training.data"):
            later = {i for i in imports(p) if not i.startswith(upstream)}
            assert not later, f"{m} imports {later}"


def test_every_mlflow_call_lives_in_tracking_or_registry():
    """pyfunc.py defines the served model: it subclasses mlflow's PythonModel and raises its 400 exception, and
    makes no call to a tracking store."""
    allowed = {"training.tracking", "training.registry", "training.models.pyfunc"}
    users = set()
    for m, p in MODULES.items():
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "mlflow" or n.startswith("mlflow.") for n in names):
                users.add(m)
    assert users <= allowed, f"mlflow imported outside tracking/registry: {sorted(users - allowed)}"


def test_family_names_appear_only_in_the_family_modules_and_the_table():
    pattern = re.compile(r"""["'](baseline|camembert)["']""")
    found = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if pattern.search(p.read_text())}
    assert found <= FAMILY_FILES, f"family names outside the family modules: {sorted(found - FAMILY_FILES)}"


def test_a_baseline_run_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys; from training.config import load_config; from training.models import families; "
            "import training.train, training.predict, training.models.pyfunc; "
            "cfg = load_config('configs/baseline.yaml'); f = families.get(cfg.model.family); f.check(cfg.model); "
            "families.config_class('camembert'); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(m for m in sys.modules if m.startswith(('torch', 'transformers')))[:5]")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
