"""The engine's layout (docs/architecture.md): core/ as packages that each import only the packages before them in
LAYERS, the command lines and engine processes above them all, no import circles, modules and functions of a
readable size, and no module reaching into another's private names or re-exporting names it does not use."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "core"
#: core's packages, lowest first: each may import only those before it.
LAYERS = ("common", "inputs", "outputs", "tiling", "network", "data", "mapping", "evaluation", "training",
          "finetuning", "cluster")
#: The entry modules at the top of core/: command lines and the QGIS plugin's engine processes.
ENTRIES = ("predict", "train", "evaluate", "evaluate_maps", "finetune", "batch", "worker", "finetune_worker",
           "export_litert")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def _name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(CORE.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """Every core module `name` imports, at the top or inside a function, importlib.import_module included."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else (node.module or "")
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            text = node.args[0].value
            targets = [f"core{text}" if text.startswith(".") else text]
        found |= {t for t in targets if t in MODULES and t != name}
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _layer(name: str) -> str:
    parts = name.split(".")
    if len(parts) == 1:
        return "core"
    return parts[1] if parts[1] in LAYERS else "entry"


def test_packages_are_the_layers_and_the_entries_sit_on_top():
    packages = {p.name for p in CORE.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(LAYERS)
    assert {p.stem for p in CORE.glob("*.py") if p.stem != "__init__"} == set(ENTRIES)
    for package in LAYERS:
        assert ast.get_docstring(ast.parse((CORE / package / "__init__.py").read_text())), package


def test_no_import_circles():
    state: dict[str, int] = {}

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        for dep in sorted(GRAPH[name]):
            assert state.get(dep) != 1, " -> ".join(stack + [name, dep])
            if dep not in state:
                visit(dep, stack + [name])
        state[name] = 2

    for name in MODULES:
        if name not in state:
            visit(name, [])


def test_a_package_imports_only_the_packages_before_it():
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    wrong = []
    for name, deps in GRAPH.items():
        source = _layer(name)
        for dep in deps:
            target = _layer(dep)
            if source in rank and (target in ("entry", "core") or (target != source and rank[target] > rank[source])):
                wrong.append(f"{name} -> {dep}")
            if source == "core" and dep != "core.common":
                wrong.append(f"{name} -> {dep}")
    assert wrong == []


def test_modules_and_functions_are_of_a_readable_size():
    long_modules = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert {n: k for n, k in long_modules.items() if k > MAX_MODULE_LINES} == {}
    long_functions = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name}: {length}")
    assert long_functions == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_names_from_other_modules_and_no_reexports(name):
    text = MODULES[name].read_text()
    assert "noqa: F401" not in text
    private = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("core")):
            private += [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
    assert private == []


def test_the_qgis_side_imports_nothing_of_the_engine_but_core_common():
    """ui/ and plugin.py reach the engine only through its process: of core they import the light contract modules
    (core.common), never a package that loads GDAL's Python bindings, Keras or TensorFlow."""
    wrong = []
    for path in sorted([*(REPO / "ui").rglob("*.py"), REPO / "plugin.py", REPO / "__init__.py"]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                names = [f"{module}.{a.name}" for a in node.names] if module in ("core", "") else [module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                bare = name.lstrip(".")
                if bare.startswith("core") and not (bare == "core.common" or bare.startswith("core.common.")):
                    wrong.append(f"{path.relative_to(REPO)}: {name}")
                if bare.split(".")[0] in ("tensorflow", "keras"):
                    wrong.append(f"{path.relative_to(REPO)}: {name}")
    assert wrong == []
