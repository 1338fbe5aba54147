"""The import graph of `portable_wgangp`: no circle, and no module imports one of a layer above its own
(the layers of docs/architecture.md). Imports inside functions count too; `data` and the moved names of
`metrics` are looked up lazily (`importlib`) and so are not edges."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).parent.parent / "portable_wgangp"

LAYERS = [
    # 0: foundations, each one concept, no model
    {"errors", "_startup", "host_memory", "storage", "object_lock", "files", "backend", "rng", "losses"}
    | {"penalties"}
    | {"augment", "metrics", "datasets", "plots", "fid_inception"},
    {"sources", "rounds", "features"},  # 1: data: datasets -> sources -> rounds; datasets -> features
    {"distribution", "callbacks", "nets", "model"},  # 2: the model and its training
    {"config", "flags", "tasks", "checkpoints", "check", "runs"},  # 3: runs of the command line
    {"cli", "__main__", "__init__", "data"},  # 4: entry points and the names kept for earlier code
]
LAYER = {name: number for number, names in enumerate(LAYERS) for name in names}


def module_of(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]  # backend/* is one module: the per-backend glue


def imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("portable_wgangp"):
            rest = node.module.split(".")[1:]
            found |= {rest[0]} if rest else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "portable_wgangp":
                    found.add("__init__")
                elif alias.name.startswith("portable_wgangp."):
                    found.add(alias.name.split(".")[1])
    return found


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_of(path)
        edges.setdefault(name, set()).update(imports(path) - {name})
    return edges


def test_every_module_has_a_layer():
    assert set(graph()) == set(LAYER), set(graph()) ^ set(LAYER)


def test_no_module_imports_one_above_its_layer():
    upward = [
        f"{name} (layer {LAYER[name]}) imports {other} (layer {LAYER[other]})"
        for name, others in graph().items()
        for other in others
        if LAYER[other] > LAYER[name]
    ]
    assert not upward, upward


def test_the_import_graph_has_no_circle():
    edges, done, path = graph(), set(), []

    def visit(name):
        if name in path:
            raise AssertionError(" -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        path.append(name)
        for other in sorted(edges.get(name, ())):
            visit(other)
        path.pop()
        done.add(name)

    for name in sorted(edges):
        visit(name)
