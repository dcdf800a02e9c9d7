"""The package's layers, checked on the source (pure AST: nothing of ragtune is imported).

ragtune.core is the bottom layer; retrieval, generation and audit sit on core only; the pipeline (a chosen RAG
system as one object) sits on core, retrieval and generation; train sits below evaluate and never uses the pipeline.
Every import counts, also the lazy ones inside functions (they are dependencies all the same). Private names
stay in their module, the import graph has no cycle, no function grows past 80 lines unless the allow-list
below says why, and test hooks read from the environment belong in the tests, not in the product.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ragtune"
MAX_FUNCTION_LINES = 80

# Functions and methods longer than MAX_FUNCTION_LINES that may stay so: {qualified name: reason}. A qualified
# name is module.function, module.Class.method or module.outer.inner; a length runs from the ``def`` line to the
# last line (docstring included, decorators not). The goal is an empty dict: an entry that is no longer too long
# fails the test too, so the list only shrinks.
LONG_FUNCTIONS: dict[str, str] = {
}

# Which ragtune packages each layer may import (itself included). Layers not listed here (ragtune.train,
# ragtune.evaluate and the top-level ragtune package) may import any layer, except what FORBIDDEN says.
ALLOWED = {
    "ragtune.core": {"ragtune.core"},
    "ragtune.retrieval": {"ragtune.core", "ragtune.retrieval"},
    "ragtune.generation": {"ragtune.core", "ragtune.generation"},
    "ragtune.audit": {"ragtune.core", "ragtune.audit"},
    "ragtune.pipeline": {"ragtune.core", "ragtune.retrieval", "ragtune.generation", "ragtune.pipeline"},
}
# On top of ALLOWED: imports no module of a layer may make.
FORBIDDEN = {
    "ragtune.train": {"ragtune.evaluate", "ragtune.pipeline"},
}


@dataclass
class Import:
    """One import statement's target in a ragtune module (``line`` in ``source``)."""

    source: str
    target: str  # the deepest ragtune module the statement names
    names: tuple[str, ...]  # the names taken from it (``from target import a, b``); empty for ``import target``
    line: int
    lazy: bool  # inside a function
    type_only: bool = False  # under ``if TYPE_CHECKING:`` (still a dependency: it counts)

    def how(self) -> str:
        return ", inside a function" if self.lazy else ", under TYPE_CHECKING" if self.type_only else ""


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    imports: list[Import] = field(default_factory=list)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def parse_package(root: Path = PACKAGE) -> dict[str, Module]:
    modules = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        modules[name] = Module(name, path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    for module in modules.values():
        module.imports = list(find_imports(module, set(modules)))
    return modules


def _resolve_relative(module: Module, level: int, target: str | None) -> str:
    package = module.name.split(".")
    if module.path.name != "__init__.py":
        package = package[:-1]
    base = package[:len(package) - level + 1]
    return ".".join(base + ([target] if target else []))


def _deepest_module(name: str, known: set[str]) -> str | None:
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk_with_scope(tree: ast.AST):
    """(node, inside_a_function, under_type_checking) for every node."""
    stack = [(tree, False, False)]
    while stack:
        node, lazy, type_only = stack.pop()
        yield node, lazy, type_only
        inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        typing_body = node.body if _is_type_checking(node) else ()
        stack.extend((child, inner, type_only or any(child is b for b in typing_body))
                     for child in ast.iter_child_nodes(node))


def _imported_module_name(node: ast.AST) -> str | None:
    """``importlib.import_module("ragtune.x")``: the module's name, when written as a constant."""
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    return node.args[0].value if name == "import_module" and isinstance(node.args[0].value, str) else None


def find_imports(module: Module, known: set[str]):
    def ragtune_name(name: str | None) -> bool:
        return bool(name) and name.split(".")[0] == "ragtune"

    for node, lazy, type_only in _walk_with_scope(module.tree):
        found: list[tuple[str, tuple[str, ...]]] = []  # (imported name, names taken from it)
        if isinstance(node, ast.Import):
            found = [(alias.name, ()) for alias in node.names if ragtune_name(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(module, node.level, node.module) if node.level else node.module
            if ragtune_name(base):
                names = [a.name for a in node.names]
                # ``from ragtune.core import data`` imports the module ragtune.core.data.
                found = [(f"{base}.{n}", ()) for n in names if f"{base}.{n}" in known]
                rest = tuple(n for n in names if f"{base}.{n}" not in known)
                if rest or not found:
                    found.append((base, rest))
        elif ragtune_name(_imported_module_name(node)):
            found = [(_imported_module_name(node), ())]
        for target, names in found:
            yield Import(module.name, _deepest_module(target, known) or target, names, node.lineno, lazy, type_only)


@lru_cache(maxsize=1)
def package_modules() -> dict[str, Module]:
    return parse_package()


def layer_of(name: str) -> str:
    return ".".join(name.split(".")[:2])


def where(module: Module, line: int) -> str:
    return f"{module.path.relative_to(PACKAGE.parent)}:{line}"


# ---------------------------------------------------------------------------- the rules, as functions of the parse


def layer_violations(modules: dict[str, Module], layers: tuple[str, ...]) -> list[str]:
    """Imports made by modules of ``layers`` that ALLOWED and FORBIDDEN do not permit."""
    found = []
    for module in modules.values():
        layer = layer_of(module.name)
        if layer not in layers:
            continue
        for imp in module.imports:
            target_layer = layer_of(imp.target)
            if target_layer == layer:
                continue
            allowed = ALLOWED.get(layer)
            if (allowed is not None and target_layer not in allowed) or target_layer in FORBIDDEN.get(layer, ()):
                found.append(f"{where(module, imp.line)}: {module.name} imports {imp.target}{imp.how()}")
    return found


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _ragtune_names(module: Module) -> dict[str, str]:
    """Local names bound to something of ragtune by an import: local name -> its dotted ragtune name
    (``import ragtune.core.data as d``: d -> ragtune.core.data; ``from ragtune.core.data import Corpus``:
    Corpus -> ragtune.core.data.Corpus; ``import ragtune.core.data``: ragtune -> ragtune)."""
    names = {}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ragtune":
                    names[alias.asname or "ragtune"] = alias.name if alias.asname else "ragtune"
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(module, node.level, node.module) if node.level else node.module
            if base and base.split(".")[0] == "ragtune":
                for alias in node.names:
                    names[alias.asname or alias.name] = f"{base}.{alias.name}"
    return names


def private_access_violations(modules: dict[str, Module]) -> list[str]:
    """Private names of ragtune modules used from outside them: imported (``from ragtune.x import _name``), or read
    through an imported module or name (``module._name``, ``SomeClass._name``, ``ragtune.x._name``)."""
    found = []
    for module in modules.values():
        for imp in module.imports:
            for name in imp.names:
                if _is_private(name) and imp.target != module.name:
                    found.append(f"{where(module, imp.line)}: {module.name} imports {imp.target}.{name}")
        imported = _ragtune_names(module)
        for node in ast.walk(module.tree):
            if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
                continue
            chain, value = [], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if not isinstance(value, ast.Name) or value.id not in imported:
                continue
            owner = ".".join([imported[value.id], *reversed(chain)])
            if owner != module.name:
                found.append(f"{where(module, node.lineno)}: {module.name} reads {owner}.{node.attr}")
    return found


def import_cycles(modules: dict[str, Module]) -> list[list[str]]:
    """The import graph's cycles (one per strongly connected component of more than one module),
    each as a path ``a -> b -> ... -> a``."""
    graph = {name: sorted({i.target for i in m.imports if i.target in modules and i.target != name})
             for name, m in modules.items()}
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], [0]

    def strongconnect(v):  # Tarjan's algorithm (recursive: the package is far from the recursion limit)
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: list[str], graph: dict[str, list[str]]) -> list[str]:
    """One cycle through the component's first module: a shortest path back to it."""
    members, start = set(component), component[0]
    previous, frontier = {start: None}, [start]
    while frontier:
        following = []
        for v in frontier:
            for w in graph[v]:
                if w == start:
                    path = [v]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if w in members and w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    return component


def describe_cycle(cycle: list[str], modules: dict[str, Module]) -> str:
    steps = []
    for a, b in zip(cycle, cycle[1:]):
        imp = next(i for i in modules[a].imports if i.target == b)
        steps.append(f"{a} -> {b} ({where(modules[a], imp.line)}{imp.how()})")
    return "; ".join(steps)


def function_lengths(modules: dict[str, Module]) -> dict[str, tuple[int, str]]:
    """Every function and method: qualified name -> (lines from ``def`` to its last line, file:line)."""
    lengths = {}

    def visit(node: ast.AST, prefix: str, module: Module) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}.{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lengths[name] = (child.end_lineno - child.lineno + 1, where(module, child.lineno))
                visit(child, name, module)
            else:
                visit(child, prefix, module)

    for module in modules.values():
        visit(module.tree, module.name, module)
    return lengths


def long_functions(modules: dict[str, Module], limit: int = MAX_FUNCTION_LINES) -> dict[str, tuple[int, str]]:
    return {name: info for name, info in function_lengths(modules).items() if info[0] > limit}


def _environment_key(node: ast.AST) -> ast.AST | None:
    """The key expression of an environment read: os.environ[k], os.environ.get(k), os.getenv(k), k in os.environ,
    os.environ.pop/setdefault(k)."""
    def is_environ(value):
        return (isinstance(value, ast.Attribute) and value.attr == "environ") or (
            isinstance(value, ast.Name) and value.id == "environ")

    if isinstance(node, ast.Subscript) and is_environ(node.value):
        return node.slice
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("get", "pop", "setdefault") and is_environ(func.value):
            return node.args[0]
        if (isinstance(func, ast.Attribute) and func.attr == "getenv") or (
                isinstance(func, ast.Name) and func.id == "getenv"):
            return node.args[0]
    if isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) and any(
            is_environ(c) for c in node.comparators):
        return node.left
    return None


def ragtune_environment_reads(modules: dict[str, Module]) -> list[str]:
    """Environment reads of RAGTUNE_* names, and any RAGTUNE_* name written down in the product at all (a name
    kept in a constant and read later is a read all the same)."""
    found = []
    for module in modules.values():
        keys = set()
        for node in ast.walk(module.tree):
            key = _environment_key(node)
            if key is not None and "RAGTUNE_" in ast.unparse(key):
                found.append(f"{where(module, node.lineno)}: reads the environment variable {ast.unparse(key)}")
                keys.update(id(n) for n in ast.walk(key))
        for node in ast.walk(module.tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("RAGTUNE_")
                    and id(node) not in keys):
                found.append(f"{where(module, node.lineno)}: names {node.value!r}")
    return found


# ---------------------------------------------------------------------------- the tests


def test_the_package_parses_and_imports_are_found():
    modules = package_modules()
    assert {"ragtune.core.data", "ragtune.retrieval.first_stage", "ragtune.train.runner",
            "ragtune.evaluate.systems", "ragtune.audit"} <= set(modules)
    targets = {i.target for i in modules["ragtune.retrieval.first_stage"].imports}
    assert "ragtune.core.bm25" in targets


def test_core_imports_only_core():
    found = layer_violations(package_modules(), ("ragtune.core",))
    assert not found, "ragtune.core may import only ragtune.core:\n" + "\n".join(found)


def test_train_never_imports_evaluate_or_the_pipeline():
    found = layer_violations(package_modules(), ("ragtune.train",))
    assert not found, "ragtune.train may not import ragtune.evaluate or ragtune.pipeline:\n" + "\n".join(found)


def test_pipeline_imports_only_core_retrieval_generation_and_itself():
    modules = package_modules()
    assert {"ragtune.pipeline.rag", "ragtune.pipeline.spec", "ragtune.pipeline.stages"} <= set(modules)
    found = layer_violations(modules, ("ragtune.pipeline",))
    assert not found, ("ragtune.pipeline may import only ragtune.core, retrieval, generation and itself:\n"
                       + "\n".join(found))


def test_evaluate_builds_its_systems_through_the_pipeline():
    targets = {i.target for i in package_modules()["ragtune.evaluate.systems"].imports}
    assert {"ragtune.pipeline.rag", "ragtune.pipeline.stages"} <= targets


def test_retrieval_generation_and_audit_import_only_core_and_themselves():
    found = layer_violations(package_modules(), ("ragtune.retrieval", "ragtune.generation", "ragtune.audit"))
    assert not found, "retrieval, generation and audit may import only ragtune.core and themselves:\n" + "\n".join(
        found)


def test_no_private_name_is_used_outside_its_module():
    found = private_access_violations(package_modules())
    assert not found, "private names used outside their module:\n" + "\n".join(found)


def test_import_graph_has_no_cycle():
    modules = package_modules()
    cycles = import_cycles(modules)
    assert not cycles, "import cycles (lazy imports count):\n" + "\n".join(describe_cycle(c, modules) for c in cycles)


def test_no_function_is_longer_than_80_lines_unless_allowed():
    found = long_functions(package_modules())
    print("functions over", MAX_FUNCTION_LINES, "lines:", *(f"{name}: {n} lines ({at})"
                                                             for name, (n, at) in sorted(found.items())), sep="\n  ")
    unlisted = {name: info for name, info in found.items() if name not in LONG_FUNCTIONS}
    assert not unlisted, (f"longer than {MAX_FUNCTION_LINES} lines (split it, or add it to LONG_FUNCTIONS with a "
                          "reason):\n" + "\n".join(f"{n}: {lines} lines ({at})" for n, (lines, at) in unlisted.items()))
    stale = sorted(set(LONG_FUNCTIONS) - set(found))
    assert not stale, f"in LONG_FUNCTIONS but no longer over {MAX_FUNCTION_LINES} lines (remove them): {stale}"


def test_no_product_file_reads_a_ragtune_environment_variable():
    found = ragtune_environment_reads(package_modules())
    assert not found, "RAGTUNE_* environment variables in the product (test hooks belong in tests):\n" + "\n".join(
        found)
