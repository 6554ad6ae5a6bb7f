"""The house rules of docs/architecture.md, checked by walking every import of the engine with
`ast` (imports inside functions included): the floors, who may read runs and files, no private
names across modules, and the size of modules and functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parent.parent / "stforecast"

# The floors, from the ground up: a module imports only from its own floor or below.
FLOORS = {
    "_version": 0,
    "errors": 0,
    "models": 0,
    "motion": 0,  # optical flow and advection: numpy and scipy only
    "pysteps_nowcasts": 0,  # pysteps' nowcasts: baselines, and the S-PROG guide of a model
    "io": 1,
    "pretrained": 1,  # the shipped models: weights and cards, found by name
    "devices": 2,
    "config": 3,  # the recipe schema validates units with data.units: one floor with data
    "data": 3,
    "rundir": 4,
    "training": 5,
    "forecasting": 5,
    "viz": 5,
    "export": 6,
    "evaluation": 6,
    "__init__": 7,  # the package root hands out the public API lazily
    "__main__": 8,  # `python -m stforecast`: the command line's entry point
    "cli": 8,
}

# Functions allowed past 80 lines, each with its reason.
LONG_FUNCTIONS: dict[str, str] = {}


def _modules() -> list[Path]:
    return sorted(ENGINE.rglob("*.py"))


def _name(path: Path) -> str:
    parts = list(path.relative_to(ENGINE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package(path: Path) -> str:
    """`stforecast.data.units` -> the `stforecast` subpackage or module: `data`."""
    rel = path.relative_to(ENGINE).with_suffix("").parts
    return rel[0]


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """Every import of a module as (module imported, names imported from it, line)."""
    tree = ast.parse(path.read_text())
    here = _name(path)
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out.append((module, [a.name for a in node.names], node.lineno))
    return out


def _targets(module: str, names: list[str]) -> list[str]:
    """The engine modules an import reaches (`from stforecast.data import units` reaches
    `stforecast.data.units`)."""
    if module != "stforecast" and not module.startswith("stforecast."):
        return []
    found = []
    for name in names or [""]:
        candidate = f"{module}.{name}" if name else module
        as_module = ENGINE.parent / Path(*candidate.split("."))
        if name and (as_module.with_suffix(".py").exists() or (as_module / "__init__.py").exists()):
            found.append(candidate)
        elif module == "stforecast" and name == "__version__":
            found.append("stforecast._version")
        else:
            found.append(module)
    return found


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


EDGES = [
    (path, target, line, names)
    for path in _modules()
    for module, names, line in _imports(path)
    for target in _targets(module, names)
]


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ENGINE.parent)}:{line}"


def test_every_engine_package_has_a_floor():
    packages = {_package(p) for p in _modules()}
    assert packages <= set(FLOORS), sorted(packages - set(FLOORS))


def test_floors_import_only_downwards():
    bad = []
    for path, target, line, _ in EDGES:
        mine, theirs = FLOORS[_package(path)], FLOORS[_top(target)]
        if theirs > mine:
            bad.append(f"{_where(path, line)} imports {target} (floor {theirs} > {mine})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        ("models", {"models"}),
        ("io", {"io", "errors", "_version"}),
    ],
)
def test_ground_floors_are_self_contained(package, allowed):
    bad = [
        f"{_where(path, line)} imports {target}"
        for path, target, line, _ in EDGES
        if _package(path) == package and _top(target) not in allowed
    ]
    assert not bad, "\n".join(bad)


def test_readers_of_runs_never_import_training():
    bad = [
        f"{_where(path, line)} imports {target}"
        for path, target, line, _ in EDGES
        if _package(path) in ("forecasting", "export", "evaluation", "viz")
        and _top(target) == "training"
    ]
    assert not bad, "\n".join(bad)


def test_training_reaches_files_only_through_data_and_rundir():
    """The trainer reads data through `data` and writes runs through `rundir`; from `io` it
    uses only the atomic writer (checkpoints)."""
    bad = [
        f"{_where(path, line)} imports {target}"
        for path, target, line, _ in EDGES
        if _package(path) == "training"
        and _top(target) == "io"
        and target != "stforecast.io.atomic"
    ]
    assert not bad, "\n".join(bad)


def test_engine_has_no_terminal_code():
    bad = []
    for path in _modules():
        if path.name == "__main__.py":
            continue
        for module, _, line in _imports(path):
            root = module.split(".")[0]
            if root in ("typer", "rich", "click") or module.startswith("stforecast.cli"):
                bad.append(f"{_where(path, line)} imports {module}")
    assert not bad, "\n".join(bad)


def test_no_private_names_across_modules():
    bad = []
    for path in _modules():
        here = _name(path)
        for module, names, line in _imports(path):
            if not module.startswith("stforecast"):
                continue
            private_module = [p for p in module.split(".") if p.startswith("_") and p != "__init__"]
            if private_module and module != "stforecast._version":
                bad.append(f"{_where(path, line)} imports private module {module}")
            for name in names:
                if name.startswith("_") and not name.startswith("__") and module != here:
                    bad.append(f"{_where(path, line)} imports {module}.{name}")
    assert not bad, "\n".join(bad)


def test_module_and_function_sizes():
    """No engine module over 500 lines, no function over 80 (LONG_FUNCTIONS lists the
    exceptions with their reasons)."""
    bad = []
    for path in _modules():
        source = path.read_text()
        lines = len(source.splitlines())
        if lines > 500:
            bad.append(f"{path.relative_to(ENGINE.parent)}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                key = f"{_name(path)}.{node.name}"
                if length > 80 and key not in LONG_FUNCTIONS:
                    bad.append(f"{_where(path, node.lineno)} {node.name}: {length} lines")
    assert not bad, "\n".join(bad)


def test_the_walker_sees_imports_inside_functions(tmp_path):
    """The checks above are only as good as the walker: a lazy import counts."""
    module = ENGINE / "forecasting" / "service.py"
    lazy = [(m, line) for m, _, line in _imports(module) if m.startswith("stforecast")]
    tree = ast.parse(module.read_text())
    top_level = {n.lineno for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)}
    assert any(line not in top_level for _, line in lazy)
