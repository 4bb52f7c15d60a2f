"""The package's shape: every module imports, no import cycle among sentmim's modules (function-level imports
included: an import moved into a function hides a cycle, it does not remove it), and no module reaches into the
private attributes of another library (they change without notice in the library's next release)."""

import ast
import importlib
import pkgutil
from pathlib import Path

import sentmim

PACKAGE = Path(sentmim.__file__).parent


# -- reading the source ---------------------------------------------------------------------------------------------


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def parse_package(root: Path) -> dict[str, tuple[Path, ast.Module]]:
    """{module name: (file, syntax tree)} of every .py file of the package at `root`."""
    paths = sorted(root.rglob("*.py"))
    return {module_name(path, root): (path, ast.parse(path.read_text(), str(path))) for path in paths}


def runtime_nodes(tree: ast.AST):
    """Every node of the tree except those under `if TYPE_CHECKING:` (imports for type checkers only, never run)."""
    for node in ast.iter_child_nodes(tree):
        test = node.test if isinstance(node, ast.If) else None
        if isinstance(test, ast.Name | ast.Attribute) and "TYPE_CHECKING" in ast.unparse(test):
            yield from (child for branch in node.orelse for child in [branch, *runtime_nodes(branch)])
            continue
        yield node
        yield from runtime_nodes(node)


def import_source(node: ast.ImportFrom, name: str, path: Path) -> str:
    """The absolute name of the module an `from ... import` statement of module `name` (file `path`) reads."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level else ""
    return ".".join(part for part in (base, node.module) if part)


def imported_modules(name: str, path: Path, tree: ast.Module, modules: set[str]) -> set[str]:
    """The package's modules that module `name` imports, at any depth of its code."""
    found = set()
    for node in runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            source = import_source(node, name, path)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:
                    found.add(submodule)
                elif source in modules:
                    found.add(source)
    return found - {name}


def import_graph(root: Path) -> dict[str, set[str]]:
    parsed = parse_package(root)
    modules = set(parsed)
    return {name: imported_modules(name, path, tree, modules) for name, (path, tree) in parsed.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search; a grey module reached again closes a cycle)."""
    state, stack = {}, []

    def visit(module: str) -> list[str] | None:
        state[module] = "grey"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "grey":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[module] = "black"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def is_private(attribute: str) -> bool:
    return attribute.startswith("_") and not (attribute.startswith("__") and attribute.endswith("__"))


def names_defined(parsed: dict[str, tuple[Path, ast.Module]]) -> set[str]:
    """Every name the package itself defines: functions, classes, assigned names and attributes, parameters."""
    names = set()
    for _, tree in parsed.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.id if isinstance(node, ast.Name) else node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return names


def foreign_private_accesses(root: Path) -> list[str]:
    """"module:line expression" for every private attribute of another library that the package uses: on a name
    imported from another package (`AcceleratorState._reset_state`), or on any object when the package defines no
    such name itself (`stream._ex_iterable`). Our own private names on our own objects are fine."""
    parsed = parse_package(root)
    own = names_defined(parsed)
    found = []
    for name, (_, tree) in parsed.items():
        foreign = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module.split(".")[0] != root.name:
                foreign.update(alias.asname or alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                foreign.update((alias.asname or alias.name).split(".")[0] for alias in node.names
                               if alias.name.split(".")[0] != root.name)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not is_private(node.attr):
                continue
            owner = node.value
            while isinstance(owner, ast.Attribute | ast.Call | ast.Subscript):
                owner = owner.func if isinstance(owner, ast.Call) else owner.value
            on_foreign_name = isinstance(owner, ast.Name) and owner.id in foreign
            if on_foreign_name or node.attr not in own:
                found.append((name, node.lineno, node.col_offset, ast.unparse(node)))
    return [f"{name}:{line} {expression}" for name, line, _, expression in sorted(found)]


def private_names_used_across_modules(root: Path, other_files: list[Path]) -> list[str]:
    """"file:line name" wherever a module of the package, or a script beside it, uses another module's private name
    (`from .plots import _figure`, `plots._read_jsonl(...)`): what two modules share belongs in a public home."""
    parsed = parse_package(root)
    modules = set(parsed)
    scripts = {path.stem: (path, ast.parse(path.read_text(), str(path))) for path in other_files}
    found = []
    for name, (path, tree) in {**parsed, **scripts}.items():
        module_aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                module_aliases.update(alias.asname for alias in node.names if alias.name in modules and alias.asname)
            elif isinstance(node, ast.ImportFrom):
                source = import_source(node, name, path)
                for alias in node.names:
                    if f"{source}.{alias.name}" in modules:
                        module_aliases.add(alias.asname or alias.name)
                    elif source in modules and source != name and is_private(alias.name):
                        found.append(f"{path.name}:{node.lineno} {source}.{alias.name}")
        found += [f"{path.name}:{node.lineno} {ast.unparse(node)}" for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and is_private(node.attr) and isinstance(node.value, ast.Name)
                  and node.value.id in module_aliases]
    return sorted(found)


# -- the package ----------------------------------------------------------------------------------------------------


def test_every_module_imports():
    names = [info.name for info in pkgutil.walk_packages(sentmim.__path__, "sentmim.")]
    assert "sentmim.evaluation" in names and "sentmim.console" in names
    for name in names:
        importlib.import_module(name)


def test_no_import_cycle_among_sentmims_modules():
    graph = import_graph(PACKAGE)
    assert "sentmim.evaluation" in graph["sentmim.plots"]  # the graph is read: plots scores with evaluation
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_no_private_attribute_of_another_library():
    assert foreign_private_accesses(PACKAGE) == []


def test_no_module_uses_another_modules_private_names():
    root = PACKAGE.parent
    scripts = sorted((root / "recipes").glob("*.py")) + sorted((root / "benchmarks").rglob("*.py"))
    assert private_names_used_across_modules(PACKAGE, scripts) == []


# -- the checks themselves, on small made-up packages ---------------------------------------------------------------


def write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    for relative, source in {"__init__.py": "", **files}.items():
        (package / relative).parent.mkdir(parents=True, exist_ok=True)
        (package / relative).write_text(source)
    return package


def test_a_cycle_hidden_in_a_function_is_found(tmp_path):
    package = write_package(tmp_path, {
        "plots.py": "def plot():\n    from .evaluation import encode\n",
        "evaluation.py": "from . import metrics\n\ndef run():\n    from pkg.plots import plot\n",
        "metrics.py": "import json\nfrom pkg.sub.deep import value\n",
        "sub/__init__.py": "", "sub/deep.py": "from .. import metrics as m\n",
    })
    graph = import_graph(package)
    assert graph["pkg.sub.deep"] == {"pkg.metrics"} and graph["pkg.metrics"] == {"pkg.sub.deep"}
    assert graph["pkg.evaluation"] == {"pkg.metrics", "pkg.plots"} and graph["pkg.plots"] == {"pkg.evaluation"}
    cycle = find_cycle(graph)
    assert cycle[0] == cycle[-1] and len(cycle) == 3


def test_no_cycle_in_a_one_way_package_and_type_checking_imports_do_not_count(tmp_path):
    package = write_package(tmp_path, {
        "plots.py": "from .evaluation import encode\n",
        "evaluation.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .plots import plot\n",
    })
    assert find_cycle(import_graph(package)) is None


def test_private_attributes_of_other_libraries_are_found(tmp_path):
    package = write_package(tmp_path, {"a.py": (
        "from accelerate.state import AcceleratorState\nimport torch\nfrom . import b\n\n"
        "class Ours:\n    def __init__(self):\n        self._cache = {}\n\n"
        "    def _helper(self):\n        return self._cache\n\n"
        "def run(stream, ours):\n"
        "    AcceleratorState._reset_state(reset_partial_state=False)\n"
        "    stream._ex_iterable.shuffle_data_sources(0)\n"
        "    torch.nn.Module()._parameters\n"
        "    b._helper()\n"  # a private name the package defines: another concern, not another library's
        "    return ours._helper(), ours.__class__, stream.__len__()\n"
    )})
    found = foreign_private_accesses(package)
    assert [entry.split(" ", 1)[1] for entry in found] == [
        "AcceleratorState._reset_state", "stream._ex_iterable", "torch.nn.Module()._parameters",
    ]
    assert found[0].startswith("pkg.a:13 ")


def test_private_names_used_across_modules_are_found(tmp_path):
    package = write_package(tmp_path, {
        "plots.py": "def _figure():\n    pass\n\ndef _read(): pass\n",
        "report.py": "from . import plots\nfrom .plots import _figure\n\ndef f():\n    plots._read()\n",
        "files.py": "def _local():\n    pass\n\ndef g():\n    _local()\n",  # a module's own private name is fine
    })
    script = tmp_path / "catch_up.py"
    script.write_text("import pkg.plots as p\nfrom pkg.plots import _read\n\np._figure()\n")
    assert private_names_used_across_modules(package, [script]) == [
        "catch_up.py:2 pkg.plots._read", "catch_up.py:4 p._figure", "report.py:2 pkg.plots._figure",
        "report.py:5 plots._read",
    ]
