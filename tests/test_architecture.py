"""The house's shape (CONTRIBUTING.md): no import cycle, no module-level ``__getattr__`` outside
a package's ``__init__.py``, and a module map that names exactly the package's modules.

The import rules between the rooms are import-linter contracts (``pyproject.toml``, run by
``lint-imports`` in ``.ci/run``); the cycle check here reads the same graph (``grimp``, imports
inside functions included), one module at a time.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grimp

import optuna_biotune

PACKAGE = Path(optuna_biotune.__file__).resolve().parent
CONTRIBUTING = PACKAGE.parent / "CONTRIBUTING.md"
ROOT = "top level"


def _modules() -> dict[str, set[str]]:
    """File names of the package's modules by folder (``""``: the top level)."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        folder = path.parent.relative_to(PACKAGE).as_posix()
        found.setdefault("" if folder == "." else folder, set()).add(path.name)
    return found


def _module_map() -> dict[str, set[str]]:
    """CONTRIBUTING's module map: folder (``""``: the top level) -> the ``name.py`` its row names.

    A room's row names its folder (`` `engine/` ``) in the first cell, which stands for the
    folder's ``__init__.py``; the second cell names the modules as `` `name.py` ``.
    """
    lines = CONTRIBUTING.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| room |"))
    rows: dict[str, set[str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 3, f"a row of the module map has {len(cells)} cells: {line[:80]}"
        room, modules = cells[0], cells[1]
        if room == ROOT:
            folder = ""
        else:
            match = re.fullmatch(r"`([\w/]+)/`", room)
            assert match, f"a room's first cell names its folder as `name/`, got {room!r}"
            folder = match.group(1)
        assert folder not in rows, f"the module map has two rows for {room}"
        rows[folder] = set(re.findall(r"`(\w+\.py)`", modules))
    return rows


def test_no_import_cycle_inside_the_package() -> None:
    graph = grimp.build_graph("optuna_biotune", include_external_packages=False)
    seen: set[str] = set()
    cycles = []
    for module in sorted(graph.modules):
        if module in seen:
            continue
        # The strongly connected component of `module`: what it imports that imports it back.
        component = graph.find_upstream_modules(module) & graph.find_downstream_modules(module)
        if component:
            component |= {module}
            seen |= component
            edges = [
                f"{importer} -> {imported} (line "
                + ", ".join(
                    str(d["line_number"])
                    for d in graph.get_import_details(importer=importer, imported=imported)
                )
                + ")"
                for importer in sorted(component)
                for imported in sorted(graph.find_modules_directly_imported_by(importer))
                if imported in component
            ]
            cycles.append("; ".join(edges))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_module_getattr_outside_package_inits() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            defined = isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
            assigned = isinstance(node, ast.Assign | ast.AnnAssign) and any(
                isinstance(target, ast.Name) and target.id == "__getattr__"
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            )
            if defined or assigned:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not offenders, f"module-level __getattr__ outside a package's __init__.py: {offenders}"


def test_module_map_names_every_module_and_only_modules() -> None:
    modules, named = _modules(), _module_map()
    assert set(named) == set(modules), (
        f"folders without a row: {sorted(set(modules) - set(named))}; "
        f"rows without a folder: {sorted(set(named) - set(modules))}"
    )
    for folder, files in modules.items():
        # A room's row stands for its __init__.py; the top level's names it.
        expected = files - {"__init__.py"} if folder else files
        where = f"`{folder}/`" if folder else ROOT
        assert expected <= named[folder], (
            f"CONTRIBUTING's {where} row does not name {sorted(expected - named[folder])}"
        )
        assert named[folder] <= files, (
            f"CONTRIBUTING's {where} row names modules that do not exist: "
            f"{sorted(named[folder] - files)}"
        )
