"""The package's layers (README, Layout): imports only downward, no circle, small modules, private helpers
kept private, benchmarks that use the library rather than the CLI, and tests laid out like the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "timm_introspect"
#: bottom to top; a module may import from its own layer's folder and from layers below
LAYERS = [("errors", "log", "version"), ("core",), ("nets", "data"), ("io",), ("model",), ("training",), ("jobs",),
          ("apps",), ("cli", "__init__")]
#: the corruption tables (the original generators' parameters), allowed to be long
LONG = {"data/cifar10c/corruptions.py"}
MAX_LINES = 350


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS and to the README's layout")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Package modules ``module`` imports (at any place in the file, TYPE_CHECKING blocks included)."""
    deps = set()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "timm_introspect":
                target = node.module
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                deps.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name.split(".")[0] == "timm_introspect")
    return {d for d in deps if d in modules and d != module}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def test_imports_go_only_downward(graph):
    upward = [f"{m} -> {d}" for m, deps in graph.items() for d in deps
              if m != "timm_introspect" and _layer(d) > _layer(m)]
    assert not upward, "imports from a higher layer:\n" + "\n".join(sorted(upward))


def test_no_import_circle(graph):
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if d.startswith(m + ".") or m == "timm_introspect":
                continue  # a package importing its own submodules
            if state.get(d) == 1:
                raise AssertionError("import circle: " + " -> ".join([*stack[stack.index(d):], d]))
            if d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_modules_are_small():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES and str(p.relative_to(PACKAGE)) not in LONG}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_private_names_stay_in_their_module():
    crossing = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("timm_introspect")):
                crossing += [f"{path.relative_to(ROOT)}: {a.name}" for a in node.names
                             if a.name.startswith("_") and not a.name.startswith("__")]
    assert not crossing, "private names imported across modules:\n" + "\n".join(crossing)


def test_benchmarks_import_no_cli_code():
    for path in (ROOT / "benchmarks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module != "timm_introspect.cli" and not node.module.endswith(".cli"), \
                    f"{path.name} imports {node.module}"


def test_tests_mirror_the_layers():
    # tests/<layer>/test_*.py for each layer folder; only cross-layer tests (this one) stay at the top
    tests = Path(__file__).parent
    folders = {p.name for p in tests.iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    layer_folders = {name for names in LAYERS[1:-1] for name in names}
    assert folders <= layer_folders, f"test folders that are no layer: {folders - layer_folders}"
    assert [p.name for p in tests.glob("test_*.py")] == ["test_layers.py"]
