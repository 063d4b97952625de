"""The package's layout: one package per station in loop order, each importing only from those below it,
no import circles, no imports hidden in functions, no private names used across modules."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flywheel"

# Bottom first: a unit may import only units listed before it (and itself).
ORDER = [
    "errors",
    "formats",
    "config",
    "auth",
    "stats",
    "progress",
    "csvfiles",
    "store",
    "traces",
    "ingest",
    "scrub",
    "review",
    "sampling",
    "vectors",
    "labeling",
    "evals",
    "drift",
    "online",
    "privacy",
    "cycle",
    "demo",
    "overview",
    "audit",
    "warmup",
    "cycle_cli",
    "__main__",
]


def where(module: str, node: ast.AST) -> str:
    path = MODULES[module]
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return f"{shown}:{node.lineno}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "flywheel"


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(name: str) -> str:
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports(path: Path) -> list[tuple[ast.AST, str, list[str], bool]]:
    """(node, module imported, names imported, at top level) of every flywheel import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flywheel"):
            for alias in node.names:
                whole = f"{node.module}.{alias.name}"
                target = whole if whole in MODULES else node.module
                found.append((node, resolve(target), [alias.name], id(node) in top))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("flywheel"):
                    found.append((node, resolve(alias.name), [], id(node) in top))
    return found


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for _, target, _, _ in imports(path):
            if target != module:
                edges[module].add(target)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(set(edges) | {t for targets in edges.values() for t in targets}):
        if node not in index:
            visit(node)
    return found


def test_every_unit_has_a_place_in_the_order():
    assert {unit(m) for m in MODULES} - {"flywheel"} <= set(ORDER)


def test_no_import_circles_between_modules_or_stations():
    edges = graph()
    assert circles(edges) == []
    stations: dict[str, set[str]] = defaultdict(set)
    for module, targets in edges.items():
        for target in targets:
            if unit(module) != unit(target):
                stations[unit(module)].add(unit(target))
    assert circles(stations) == []


def test_no_station_imports_one_above_it():
    back = [
        f"{where(module, node)} {unit(module)} -> {unit(target)}"
        for module in MODULES
        for node, target, _, _ in imports(MODULES[module])
        if unit(target) != "flywheel" and ORDER.index(unit(target)) > ORDER.index(unit(module))
    ]
    assert back == []


# The command line's handlers import their station when they run: a short command (`scrub`) must not pay
# for pandas, torch or anthropic at start-up (test_scrub_command_imports_only_the_scrubber).
LAZY_AT_THE_EDGE = ("cli", "cycle_cli")


def test_no_imports_hidden_in_functions():
    hidden = [
        f"{where(module, node)} {target}"
        for module in MODULES
        for node, target, _, top in imports(MODULES[module])
        if not top and module.rpartition(".")[2] not in LAZY_AT_THE_EDGE
    ]
    assert hidden == []


def test_no_private_name_is_imported_from_another_module():
    private = [
        f"{where(module, node)} {name} from {target}"
        for module in MODULES
        for node, target, names, _ in imports(MODULES[module])
        for name in names
        if name.startswith("_") and target != module
    ]
    assert private == []


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("from flywheel.demo.build import build_demo\n", "back"),
        ("def f():\n    from flywheel.store.db import open_db\n", "hidden"),
        ("from flywheel.evals.versions import _secret\n", "private"),
    ],
)
def test_the_checks_catch_what_they_look_for(tmp_path, monkeypatch, source, problem):
    """Each rule flags a module that breaks it (a rule that flags nothing could pass on anything)."""
    module = "flywheel.store.probe"
    path = tmp_path / "probe.py"
    path.write_text(source)
    monkeypatch.setitem(MODULES, module, path)
    checks = {
        "back": test_no_station_imports_one_above_it,
        "hidden": test_no_imports_hidden_in_functions,
        "private": test_no_private_name_is_imported_from_another_module,
    }
    with pytest.raises(AssertionError):
        checks[problem]()


def test_a_circle_is_found():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


WRITE_SQL = re.compile(
    r"\b(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|REPLACE\s+INTO|UPDATE|DELETE\s+FROM)\s+\[?\"?(\w+)", re.I
)
WRITE_CALL = re.compile(
    r"""(?:\[|table\()\s*["'](\w+)["']\s*[\])]\s*\.\s*"""
    r"""(?:insert|upsert|update|delete|insert_all|upsert_all|delete_where)\b"""
)


def writers(tables: set[str]) -> dict[str, set[str]]:
    """Table -> the stations whose code writes it (the schema's migrations aside)."""
    found: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        if module == "flywheel.store.migrations":
            continue
        text = path.read_text(encoding="utf-8")
        for match in [*WRITE_SQL.finditer(text), *WRITE_CALL.finditer(text)]:
            if match.group(1) in tables:
                found[match.group(1)].add(unit(module))
    return found


def test_every_table_is_written_by_one_station(db):
    tables = set(db.table_names())
    written = writers(tables)
    assert len(written) >= 50, "the scan finds the writes"
    assert {t: sorted(s) for t, s in written.items() if len(s) > 1} == {}


def test_a_second_writer_is_found(db, tmp_path, monkeypatch):
    path = tmp_path / "probe.py"
    path.write_text('def f(db):\n    db.execute("DELETE FROM labels WHERE id = 1")\n')
    monkeypatch.setitem(MODULES, "flywheel.evals.probe", path)
    assert writers(set(db.table_names()))["labels"] == {"labeling", "evals"}
