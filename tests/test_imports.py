"""The layering of DESIGN, read from the source: no import cycle between packages."""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import chatlens

ROOT = Path(chatlens.__file__).parent
# Modules every layer reads (the one Settings, the typed application state's container);
# they import nothing of chatlens's packages (test_shared_modules_import_no_package).
SHARED = {"chatlens", "chatlens.settings", "chatlens.state"}


@dataclass(frozen=True)
class Import:
    importer: str  # the module
    imported: str
    where: str  # file:line

    @property
    def edge(self) -> tuple[str, str]:
        return unit(self.importer), unit(self.imported)


def unit(module: str) -> str:
    """chatlens.chat.service → chatlens.chat; a module at the top is its own unit."""
    return ".".join(module.split(".")[:2])


def modules() -> dict[str, Path]:
    """Every importable module of chatlens, by name."""
    # Alembic's migration scripts are not: their folder is no package, Alembic loads them.
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        folders = path.relative_to(ROOT.parent).parent.parts
        packages = [ROOT.parent.joinpath(*folders[: i + 1]) for i in range(len(folders))]
        if not all((package / "__init__.py").exists() for package in packages):
            continue
        parts = [*folders, path.stem]
        if path.stem == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def module_imports(module: str, path: Path) -> list[Import]:
    """The chatlens modules `module` imports, at module level or inside a function alike."""
    is_package = path.stem == "__init__"
    package = module if is_package else module.rpartition(".")[0]
    top = path.parents[len(module.split(".")) - (0 if is_package else 1)]  # holds chatlens/
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # Relative: `from . import x` in a.b.c is a.b's, `from .. import x` a's.
            levels = package.split(".")
            base = levels[: len(levels) - node.level + 1] if node.level else []
            source = ".".join([*base, *([node.module] if node.module else [])])
            # `from chatlens import models` imports the module chatlens.models, too.
            names = [source, *(f"{source}.{alias.name}" for alias in node.names)]
        else:
            continue
        where = f"{path.relative_to(top)}:{node.lineno}"
        found += [
            Import(module, name, where)
            for name in names
            if name == "chatlens" or name.startswith("chatlens.")
        ]
    return found


def imports() -> list[Import]:
    return [item for module, path in modules().items() for item in module_imports(module, path)]


def package_graph(found: list[Import]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for item in found:
        importer, imported = item.edge
        if importer != imported:
            graph[importer].add(imported)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each loop of the graph, as the packages in order, first repeated."""
    found: list[list[str]] = []
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> None:
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if target in path:
                found.append([*path[path.index(target) :], target])
            elif target not in done:
                visit(target)
        path.pop()
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node)
    return found


def describe(cycle: list[str], found: list[Import]) -> str:
    steps = []
    for importer, imported in pairwise(cycle):
        where = next(i.where for i in found if i.edge == (importer, imported))
        steps.append(f"{importer} → {imported} ({where})")
    return "; ".join(steps)


def test_the_walk_sees_every_module_but_the_migration_scripts() -> None:
    found = modules()
    assert {"chatlens.app", "chatlens.chat.pipeline", "chatlens.observability.sentry"} <= set(found)
    assert not any(name.startswith("chatlens.db.migrations") for name in found)


def test_imports_inside_functions_and_relative_ones_count(tmp_path: Path) -> None:
    source = tmp_path / "chatlens" / "chat" / "service.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "import structlog\n"
        "from . import repository\n"
        "from ..db import base\n"
        "def f():\n"
        "    from chatlens.inference import service\n"
    )
    found = module_imports("chatlens.chat.service", source)
    assert [(i.imported, i.where) for i in found] == [
        ("chatlens.chat", "chatlens/chat/service.py:2"),
        ("chatlens.chat.repository", "chatlens/chat/service.py:2"),
        ("chatlens.db", "chatlens/chat/service.py:3"),
        ("chatlens.db.base", "chatlens/chat/service.py:3"),
        ("chatlens.inference", "chatlens/chat/service.py:5"),
        ("chatlens.inference.service", "chatlens/chat/service.py:5"),
    ]


def test_no_import_cycle_between_packages() -> None:
    found = imports()
    loops = cycles(package_graph(found))
    assert not loops, "import cycles: " + " | ".join(describe(loop, found) for loop in loops)


def test_cycles_are_found_and_named() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]


def test_observability_imports_no_other_package() -> None:
    outside = sorted(
        f"{item.imported} ({item.where})"
        for item in imports()
        if unit(item.importer) == "chatlens.observability"
        and unit(item.imported) not in {"chatlens.observability", *SHARED}
    )
    assert not outside, "observability imports " + ", ".join(outside)


def test_shared_modules_import_no_package() -> None:
    packages = {unit(name) for name in modules()}  # `chatlens.__version__` is a name, not one
    outside = sorted(
        f"{item.imported} ({item.where})"
        for item in imports()
        if unit(item.importer) in SHARED and unit(item.imported) in packages - SHARED
    )
    assert not outside, "shared modules import " + ", ".join(outside)


def test_no_router_imports_another_router() -> None:
    """A router's dependencies come from its package's deps.py."""
    routers = [
        item
        for item in imports()
        if item.importer.rpartition(".")[2].endswith("router")
        and item.imported.rpartition(".")[2].endswith("router")
    ]
    assert not routers, ", ".join(f"{i.importer} → {i.imported} ({i.where})" for i in routers)
