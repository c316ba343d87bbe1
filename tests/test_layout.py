"""The architecture's rules, checked on the source: imports point one way, with no cycles.

`policies/` is pure math: it never imports the engine, SQL, YAML, HTTP or CLI libraries.
Module-level imports between the project's modules form no cycle (imports inside a function
are lazy by design and not counted).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "policies")
FORBIDDEN_IN_POLICIES = {"engine", "sqlalchemy", "sqlmodel", "yaml", "typer", "fastapi", "uvicorn", "httpx", "rich",
                         "matplotlib"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported at module level (not inside functions, nor under TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


MODULES = {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("policies")))
def test_policies_import_only_math(module: str) -> None:
    roots = {name.split(".")[0] for name in _top_level_imports(MODULES[module])}
    assert not roots & FORBIDDEN_IN_POLICIES, f"{module} imports {sorted(roots & FORBIDDEN_IN_POLICIES)}"


def test_project_modules_import_no_cycle() -> None:
    graph = {m: {i for i in _top_level_imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}
    # A package imports its own submodules from its __init__; that is re-export, not a cycle.
    graph = {m: {i for i in deps if not (m in PACKAGES or i.startswith(m + "."))} for m, deps in graph.items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(module):], module]))
        if module in done:
            return
        for dep in sorted(graph[module]):
            visit(dep, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_long_module_says_why_it_is_one_piece(module: str) -> None:
    lines = MODULES[module].read_text(encoding="utf-8").splitlines()
    if len(lines) > 400:
        head = "\n".join(lines[:12]).lower()
        assert "one piece" in head, f"{module} has {len(lines)} lines and no word at its top on why it is one piece"
