"""Reading a package's imports with ``ast``, for the tests that hold its layers and its module graph.

Every ``import`` and ``from … import`` counts, wherever it is written: at module level, inside a function or
under ``if TYPE_CHECKING``. A relative import is resolved against the module that writes it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Imported:
    """One imported name: ``module`` is the absolute module a statement names (``import a.b``: ``a.b``;
    ``from a import b``: ``a``), ``name`` what it takes from it (None for ``import a.b``)."""

    line: int
    module: str
    name: str | None = None


def module_names(folder: Path, package: str) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module under ``folder``, the package ``package`` (a package's
    ``__init__.py`` is the package itself)."""
    modules = {}
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(folder).with_suffix("").parts
        dotted = [package, *(part for part in parts if part != "__init__")]
        modules[".".join(dotted)] = path
    return modules


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a ``from … import`` names, with a relative one resolved against ``module``."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    base = parts[: len(parts) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(path: Path, module: str) -> list[Imported]:
    """Every name the file of ``module`` imports, in the order ``ast.walk`` meets them."""
    found: list[Imported] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [Imported(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, path.name == "__init__.py")
            found += [Imported(node.lineno, source, alias.name) for alias in node.names]
    return found
