"""The modules of the divergence registry import each other one way only (read with ``ast``).

Every ``import`` and ``from … import`` between the modules under ``divergence_lab/divergences/`` counts,
wherever it is written: at module level, inside a function, or under ``if TYPE_CHECKING``. A cycle among
them means that no module of the cycle can be read, or loaded, before the others.
"""

from __future__ import annotations

from pathlib import Path

from tests.import_graph import imports, module_names

PACKAGE = "divergence_lab.divergences"
FOLDER = Path(__file__).parents[2] / "divergence_lab" / "divergences"


def import_graph(folder: Path, package: str) -> dict[str, set[str]]:
    """``{module: the modules of the folder it imports}``; ``from pkg import sub`` imports ``pkg.sub`` where
    that is a module of the folder, and ``pkg`` itself otherwise."""
    modules = module_names(folder, package)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        imported: set[str] = set()
        for found in imports(path, module):
            whole = f"{found.module}.{found.name}" if found.name else found.module
            target = whole if whole in modules else found.module
            if target in modules:
                imported.add(target)
        graph[module] = imported - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as ``[a, b, …, a]``, or ``[]`` where there is none (depth-first search)."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str]:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return []
        path.append(module)
        for target in sorted(graph[module]):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return []

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return []


def test_the_divergence_modules_import_one_way() -> None:
    graph = import_graph(FOLDER, PACKAGE)
    assert f"{PACKAGE}.fused" in graph and f"{PACKAGE}.kernels" in graph[f"{PACKAGE}.fused"]
    assert find_cycle(graph) == []


def test_the_fused_path_needs_nothing_of_the_members() -> None:
    """The registry's base chooses the fused path, which knows members only through the contract it
    declares: it imports neither the base nor any member."""
    graph = import_graph(FOLDER, PACKAGE)
    assert graph[f"{PACKAGE}.fused"] == {f"{PACKAGE}.buffers", f"{PACKAGE}.kernels"}
    assert f"{PACKAGE}.fused" in graph[f"{PACKAGE}.base"]


def test_the_check_finds_a_cycle_hidden_in_a_function_or_under_type_checking(tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    (folder / "sub").mkdir(parents=True)
    (folder / "__init__.py").write_text("from pkg import a, b\n")
    (folder / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import f\n"
    )
    (folder / "b.py").write_text("def f():\n    from . import c\n")
    (folder / "c.py").write_text("import pkg.sub.d\n")
    (folder / "sub" / "__init__.py").write_text("")
    (folder / "sub" / "d.py").write_text("from ..a import x\n")
    graph = import_graph(folder, "pkg")
    assert graph == {
        "pkg": {"pkg.a", "pkg.b"},
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.c"},
        "pkg.c": {"pkg.sub.d"},
        "pkg.sub": set(),
        "pkg.sub.d": {"pkg.a"},
    }
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.sub.d", "pkg.a"]
    (folder / "sub" / "d.py").write_text("x = 1\n")
    assert find_cycle(import_graph(folder, "pkg")) == []
