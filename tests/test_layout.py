"""The import rule of utils/: each layer imports only the layers beneath it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LEAVES = {"utils.config", "utils.errors", "utils.io"}
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
