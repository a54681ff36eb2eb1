"""The import rule of utils/: each layer imports only the layers beneath it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LEAVES = {"utils.config", "utils.errors", "utils.io", "utils.text"}
# Layer -> the utils packages its modules may import (besides the leaves and itself). The
# data, heuristics and models packages are open to every layer.
ALLOWED = {
    "leaves": set(),
    "runs": set(),
    "loop": {"utils.runs"},
    "sweep": {"utils.runs"},
    "report": {"utils.runs"},
}


def layer_of(module: Path) -> str:
    parts = module.relative_to(ROOT / "utils").parts
    return parts[0] if len(parts) > 1 else "leaves"


def utils_imports(module: Path) -> set[str]:
    """Every ``utils.X`` package or leaf that ``module`` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found |= {".".join(n.split(".")[:2]) for n in names if n.startswith("utils.")}
    return found


MODULES = sorted((ROOT / "utils").rglob("*.py"))


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_utils_modules_import_only_the_layers_beneath(module: Path) -> None:
    layer = layer_of(module)
    own = set() if layer == "leaves" else {f"utils.{layer}"}
    allowed = LEAVES | own | ALLOWED[layer]
    assert utils_imports(module) <= allowed, (
        f"{module.relative_to(ROOT)} ({layer}) imports {sorted(utils_imports(module) - allowed)}"
    )


def test_the_rule_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "plan.py"
    module.write_text("def f():\n    from utils.loop.run import validate\n")
    assert utils_imports(module) == {"utils.loop"}


def test_every_layer_is_a_package() -> None:
    assert {p.parent.name for p in MODULES if p.name == "__init__.py"} >= set(ALLOWED) - {"leaves"}


# A script run by its path (``python data/create_splits.py``) has its own folder on sys.path,
# not the project root. Every script finds the root by the one guarded line below, and nothing
# else edits sys.path but the SLURM job, which must import the sweep's checkout.
SCRIPT_ROOT_LINE = "sys.path.insert(0, str(Path(__file__).resolve().parents[1]))"


def unguarded_path_edits(module: Path) -> list[int]:
    """Lines of ``module`` that change sys.path other than by the guarded script line."""
    tree = ast.parse(module.read_text())
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "__package__ in (None, '')":
            guarded |= {id(s) for s in node.body if ast.unparse(s) == SCRIPT_ROOT_LINE}
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and ast.unparse(node).startswith(("sys.path.insert", "sys.path.append"))
        and id(node) not in guarded
    ]


PROJECT_MODULES = sorted(
    p for p in ROOT.rglob("*.py") if not p.relative_to(ROOT).parts[0].startswith(".")
)


def test_scripts_find_the_project_root_one_way() -> None:
    edits = {
        str(p.relative_to(ROOT)): lines
        for p in PROJECT_MODULES
        if (lines := unguarded_path_edits(p)) and p != ROOT / "utils/sweep/slurm.py"
    }
    assert edits == {}


def test_the_path_rule_sees_an_unguarded_edit(tmp_path: Path) -> None:
    module = tmp_path / "script.py"
    guarded = f'if __package__ in (None, ""):\n    {SCRIPT_ROOT_LINE}\n'
    module.write_text(f"import sys\n{guarded}sys.path.insert(0, 'elsewhere')\n")
    assert unguarded_path_edits(module) == [4]
