"""The package's layers, read from its imports (AST, function-level imports included): see docs/architecture.md."""

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "drifting_policy"
# Each module's layer: an import may only point to the same layer or one below (scripts and envs sit above all).
LAYERS = {
    "utils": 0, "field": 0, "nn": 1, "data": 1, "policies": 2, "factory": 3, "config": 3, "toys": 3,
    "evaluation": 4, "training": 5, "benchmark": 6,
}
IMAGE_MAY_USE = {"image", "field", "utils"}  # the image subpackage never touches the robot stack


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Absolute module names ``path`` imports anywhere (top level or inside functions)."""
    tree = ast.parse(path.read_text())
    package = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import module`
    return out


def package_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in imports_of(path) if m in modules and m != name}
    return graph


def top(name: str) -> str:
    return name.split(".")[1] if name.count(".") >= 1 else name


def test_the_package_never_imports_envs():
    offenders = sorted(f"{module_name(p)} imports {m}" for p in PACKAGE.rglob("*.py") for m in imports_of(p)
                       if m == "envs" or m.startswith("envs."))
    assert offenders == []


def test_no_import_cycles_between_modules():
    graph = package_graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_imports_only_point_down_the_layers():
    wrong = []
    for name, deps in package_graph().items():
        if name == "drifting_policy":
            continue
        src = top(name)
        for dep in deps:
            dst = top(dep)
            if dep == "drifting_policy" or dst == src:
                continue
            if src == "image":
                if dst not in IMAGE_MAY_USE:
                    wrong.append(f"{name} -> {dep} (image uses field and utils only)")
            elif dst == "image" or LAYERS[dst] > LAYERS[src]:
                wrong.append(f"{name} (layer {LAYERS[src]}) -> {dep} (layer {LAYERS.get(dst, 'image')})")
    assert wrong == []


def test_every_module_has_a_layer():
    assert {top(n) for n in package_graph() if n != "drifting_policy"} <= set(LAYERS) | {"image"}
