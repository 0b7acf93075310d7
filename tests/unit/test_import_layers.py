"""The store, gates and contract packages are layered: their modules import each other with no circle.

The check reads the source (no import runs), with the rules of the project's
``import_cycles.py``: every import counts, including those under ``if TYPE_CHECKING:``
and inside functions; only an import of the package face itself (``from factory.store
import Store``) is ignored, since every module of a package loads its face anyway.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _modules(folder: Path, package: str) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` under ``folder`` (the package ``package``)."""
    modules = {}
    for path in sorted(folder.rglob("*.py")):
        parts = list(path.relative_to(folder).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join([package, *parts])] = path
    return modules


def _edges(folder: Path, package: str) -> dict[str, set[str]]:
    """Which modules of the package each module imports (the package face left out)."""
    modules = _modules(folder, package)
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = module.split(".")
                    parts = parts[: len(parts) - node.level + (1 if is_package else 0)]
                    base = ".".join(parts + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            edges[module] |= {t for t in targets if t in modules and t not in (module, package)}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("package", ["factory.store", "factory.gates", "factory.contract", "factory.train",
                                     "factory.serve", "factory.runtime", "factory"])
def test_package_imports_have_no_cycle(package):
    """A module that imports one that imports it back (even for type hints) makes the package's layers a tangle."""
    folder = ROOT.joinpath(*package.split("."))
    cycles = _cycles(_edges(folder, package))
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles) + (
        ": move what both need (a base class, a Protocol, a constant) into the lower module"
    )


def test_check_finds_a_cycle_through_type_checking_and_function_imports(tmp_path):
    """If the check could not see a circle hidden under TYPE_CHECKING or in a function, the test above would pass vacuously."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.a import A\n")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import b\nA = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import C\n")
    (pkg / "c.py").write_text("from . import a\nfrom pkg import A\nC = 1\n")
    (pkg / "d.py").write_text("from pkg import A\n")  # the package face: not an edge

    assert _cycles(_edges(pkg, "pkg")) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
