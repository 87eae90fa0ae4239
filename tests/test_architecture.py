"""The package's floors, read from its imports: no import cycles among ``fedforge`` modules,
and no module imports (at run time) from a floor above its own. Type-only imports (under
``if TYPE_CHECKING:``) are allowed to point up; they do not run."""

from __future__ import annotations

import ast
from pathlib import Path

import fedforge

ROOT = Path(fedforge.__file__).parent

# lowest first; a module's floor is that of the longest matching prefix
FLOORS: list[tuple[str, ...]] = [
    ("params", "seeding", "client", "plugins", "components"),
    ("aggregate", "optim", "transforms", "privacy", "secagg", "data", "models", "attacks"),
    ("algorithms", "llm"),
    ("participant",),
    ("server",),
    ("backends",),
    ("transport",),
    ("config", "experiment", "site"),
    ("cli", "dashboard", "__init__"),
]
# Known exceptions, each with the reason it stands (an empty list is the goal).
ALLOWED_UP: dict[tuple[str, str], str] = {
    ("backends.grpc_backend", "transport"): "the gRPC carrier is a backend over the wire's "
    "registry; moving the registry below backends is left for later",
}


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"] or ["__init__"]
    return ".".join(parts)


def _floor(mod: str) -> int:
    for level, names in enumerate(FLOORS):
        if any(mod == n or mod.startswith(n + ".") for n in names):
            return level
    raise AssertionError(f"module {mod} is on no floor; add it to FLOORS")


def _runtime_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, typing_only)
            return
        if not typing_only:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("fedforge."):
                    found.add(node.module[len("fedforge.") :])
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("fedforge."):
                        found.add(a.name[len("fedforge.") :])
        for child in ast.iter_child_nodes(node):
            visit(child, typing_only)

    visit(tree, False)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in ROOT.rglob("*.py") if "proto" not in p.parts}
    return {m: {i for i in _runtime_imports(p) if i in files or i.split(".")[0] in
                {n.split(".")[0] for n in files}} for m, p in files.items()}


def test_no_import_cycles():
    graph = _graph()
    mods = set(graph)

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges = {m: {r for i in deps if (r := resolve(i)) and r != m} for m, deps in graph.items()}
    # a package's __init__ re-exporting its own modules is not a cycle of concern
    edges = {
        m: {d for d in deps if not (d.startswith(m + ".") or m.startswith(d + "."))}
        for m, deps in edges.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    assert cycles == [], cycles


def test_no_module_imports_from_a_floor_above_its_own():
    bad = []
    for mod, deps in _graph().items():
        for dep in deps:
            if _floor(dep) > _floor(mod):
                key = next(
                    (k for k in ALLOWED_UP if mod.startswith(k[0]) and dep.startswith(k[1])), None
                )
                if key is None:
                    bad.append(f"{mod} -> {dep}")
    assert bad == [], "\n".join(sorted(bad))
