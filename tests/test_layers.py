"""The import structure: floors that only import downwards, no cycles, every module placed.

A module on floor n imports only modules on floors <= n (not even inside a function), and the
imports within a floor form no cycle. A new module must be given a floor here: that is the point.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "circuits_pl"
LAYOUT = PACKAGE.parent / "docs" / "layout.md"

FLOORS = [
    # 1. plain facts: torch only, no Lightning
    {"errors", "files", "usage", "short_help", "cadence", "writable", "tasks", "network", "optim", "train_block",
     "fused", "stream", "sweep", "init_weights", "memory", "population", "signals"},
    # 2. analysis without Lightning
    {"success", "verdicts", "readout", "plots", "basins", "study", "timeline"},
    # 3. Lightning parts
    {"compat", "data", "module", "callbacks", "interrupts", "atomic_checkpoint_io", "checkpoint_checks", "logger",
     "preflight", "strategy"},
    # 4. the end of a run, and runs on disk
    {"module_readout", "run_summary", "saved_run", "launch"},
    # 5. commands
    {"cli", "inspection", "report", "__main__", "__init__"},
]


def floor_of(module: str) -> int:
    top = module.split(".")[0]
    for n, names in enumerate(FLOORS):
        if top in names:
            return n
    raise AssertionError(f"circuits_pl.{module} has no floor in tests/test_layers.py: place it")


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(path: Path, name: str) -> set[str]:
    """circuits_pl modules imported anywhere in a file (top level and inside functions)."""
    found = set()
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.removeprefix("circuits_pl.") for a in node.names if a.name.startswith("circuits_pl.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside a subpackage
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                found.add(target)
            elif node.module == "circuits_pl":
                found |= {a.name for a in node.names if (PACKAGE / f"{a.name}.py").exists()
                          or (PACKAGE / a.name).is_dir()}
            elif node.module and node.module.startswith("circuits_pl."):
                found.add(node.module.removeprefix("circuits_pl."))
    return {f for f in found if f and f.split(".")[0] != name.split(".")[0]}


def test_every_module_has_a_floor_and_imports_only_downwards():
    bad = []
    for name, path in modules().items():
        mine = floor_of(name)
        for target in imports_of(path, name):
            if floor_of(target) > mine:
                bad.append(f"{name} (floor {mine + 1}) imports {target} (floor {floor_of(target) + 1})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycle():
    graph = {name.split(".")[0]: set() for name in modules()}
    for name, path in modules().items():
        graph[name.split(".")[0]] |= {t.split(".")[0] for t in imports_of(path, name)}
    graph.pop("__init__", None)
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == "__init__":
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail + [node, nxt]))
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_every_module_imports_on_its_own():
    """Each module imports with no other circuits_pl module loaded before it (one process; the
    circuits_pl modules are dropped from sys.modules between imports, torch and Lightning stay)."""
    code = (
        "import importlib, sys\n"
        "for n in sys.argv[1:]:\n"
        "    for m in [m for m in sys.modules if m == 'circuits_pl' or m.startswith('circuits_pl.')]:\n"
        "        del sys.modules[m]\n"
        "    importlib.import_module('circuits_pl.' + n)\n"
    )
    names = [n for n in modules() if n not in ("__main__", "__init__")]
    proc = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_floors_name_only_modules_that_exist():
    tops = {name.split(".")[0] for name in modules()}
    placed = set().union(*FLOORS)
    assert placed == tops, f"FLOORS names modules that do not exist: {sorted(placed - tops)}"


def readme_layout() -> dict[str, int]:
    """docs/layout.md's table: each backticked name of the file column, with its floor (0-based)."""
    section = LAYOUT.read_text()
    out, floor = {}, None
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3 or cells[0] in ("floor", "---"):
            continue
        if cells[0]:
            floor = int(cells[0].split()[0]) - 1
        for name in re.findall(r"`([^`]+)`", cells[1]):
            out[name] = floor
    return out


def test_readme_layout_lists_every_module_on_its_floor():
    """A module added without a line in docs/layout.md's table fails here (readout/ is one entry)."""
    on_disk = {p.name for p in PACKAGE.glob("*.py")} | {f"{p.name}/" for p in PACKAGE.iterdir()
                                                         if (p / "__init__.py").exists()}
    table = readme_layout()
    assert set(table) == on_disk, (f"in docs/layout.md but not in circuits_pl/: {sorted(set(table) - on_disk)}; "
                                   f"in circuits_pl/ but not in docs/layout.md: {sorted(on_disk - set(table))}")
    wrong = {name: floor + 1 for name, floor in table.items()
             if floor_of(name.removesuffix(".py").removesuffix("/")) != floor}
    assert not wrong, f"docs/layout.md puts these on another floor than tests/test_layers.py FLOORS: {wrong}"
