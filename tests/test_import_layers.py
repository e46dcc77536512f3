"""The package's layers import downward only, as docs/architecture.md lists them (read with ``ast``).

Every ``import`` and ``from … import`` of ``divergence_lab`` modules is read, at module level and inside
functions alike, relative ones resolved (:mod:`tests.import_graph`): a deferred import is still a
dependency. The layer of a module is the layer of its sub-package (``divergence_lab.run.stages`` is in
``run``); the package's own ``__init__`` (which registers the config resolvers) is the root and belongs to
no layer.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.import_graph import imports, module_names

PACKAGE = Path(__file__).parents[1] / "divergence_lab"
ARCHITECTURE = Path(__file__).parents[1] / "docs" / "architecture.md"
LAYER_LINE = re.compile(r"^(\d+)\.\s+\*\*(?P<name>[^*]+)\*\*\s*:\s*(?P<packages>[a-z_, ]+)\s+—", re.M)


def declared_layers(text: str) -> dict[str, int]:
    """``{sub-package: layer}`` from the numbered list of docs/architecture.md
    (``1. **ground**: ground — …``)."""
    layers: dict[str, int] = {}
    for match in LAYER_LINE.finditer(text):
        for package in match["packages"].split(","):
            layers[package.strip()] = int(match.group(1))
    return layers


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``divergence_lab`` import in the file of ``module`` (``from
    divergence_lab import divergences``: ``divergence_lab.divergences``)."""
    found = []
    for imported in imports(path, module):
        if imported.module == PACKAGE.name and imported.name is not None:
            found.append((imported.line, f"{imported.module}.{imported.name}"))
        elif imported.module.startswith(f"{PACKAGE.name}."):
            found.append((imported.line, imported.module))
    return found


def sub_package(module: str) -> str:
    return module.split(".")[1]


def upward_imports(package: Path, layers: dict[str, int]) -> list[str]:
    """``file:line imports module (layer a > layer b)`` for every import of a higher layer."""
    problems = []
    for module, path in module_names(package, package.name).items():
        relative = path.relative_to(package)
        if module == package.name:
            continue  # the package root
        own = relative.parts[0].removesuffix(".py")
        for line, imported in imported_modules(path, module):
            target = sub_package(imported)
            if target not in layers or own not in layers:
                problems.append(f"{relative}:{line}: {own} or {target} is in no layer of the architecture")
            elif layers[target] > layers[own]:
                problems.append(f"{relative}:{line} imports {imported} ({target} is above {own})")
    return problems


def test_every_sub_package_has_a_layer() -> None:
    layers = declared_layers(ARCHITECTURE.read_text())
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file() and p.name != "conf"}
    assert packages - set(layers) == set()


def test_no_module_imports_a_layer_above_its_own() -> None:
    layers = declared_layers(ARCHITECTURE.read_text())
    assert upward_imports(PACKAGE, layers) == []


def test_the_report_reads_only_the_record_format() -> None:
    """The report imports nothing of the package but the ground layer (the run-record format) and itself."""
    outside = [
        f"{path.relative_to(PACKAGE)}:{line} imports {imported}"
        for module, path in module_names(PACKAGE, PACKAGE.name).items()
        if module.startswith(f"{PACKAGE.name}.report")
        for line, imported in imported_modules(path, module)
        if sub_package(imported) not in ("ground", "report")
    ]
    assert outside == []


def test_the_check_finds_an_upward_import(tmp_path: Path) -> None:
    package = tmp_path / "divergence_lab"
    (package / "ground").mkdir(parents=True)
    (package / "run").mkdir()
    (package / "ground" / "errors.py").write_text("def f():\n    from divergence_lab.run import pipeline\n")
    (package / "run" / "pipeline.py").write_text("from divergence_lab.ground.errors import f\n")
    problems = upward_imports(package, {"ground": 0, "run": 4})
    assert problems == ["ground/errors.py:2 imports divergence_lab.run (run is above ground)"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("1. **ground**: ground — errors", {"ground": 1}),
        ("2. **blocks**: data, models — x", {"data": 2, "models": 2}),
    ],
)
def test_layers_are_read_from_the_numbered_list(line: str, expected: dict[str, int]) -> None:
    assert declared_layers(line) == expected
