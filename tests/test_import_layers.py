"""Import graph of robot_rt and percept_fast: no cycles, and robot_rt's layers only import downwards.

The graph is read from the sources with `ast` (nothing is imported), counting every import, also those inside
functions: a lazy import is still a dependency. An edge goes to the module named (a package's `__init__` when
the name is a package), not to the packages above it, so a package `__init__` that re-exports its modules is
no cycle. Native extensions (`robot_rt._control`, ...) and third-party modules are leaves.
`ROBOT_RT_LAYERS` is the table of docs/architecture.md ("Layers"); the test checks that both agree.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# robot_rt sub-package (or top-level module) -> the robot_rt parts it may import. Anything not listed may not
# import anything from robot_rt; the private helpers `_io` and `_native` may be imported by everyone.
ROBOT_RT_LAYERS: dict[str, tuple[str, ...]] = {
    "robot": (),
    "ballistics": (),
    "estimation": ("ballistics",),
    "control": ("robot",),
    "envs": ("robot", "ballistics", "estimation"),
    "sim": ("control", "envs", "robot", "estimation", "ballistics"),
    "bridge": ("control", "sim", "envs", "robot"),
    "learning": ("bridge", "envs", "estimation", "robot"),
    "logs": ("control", "estimation", "ballistics", "robot"),
    "cli": ("control", "sim", "learning", "logs"),
}
SHARED = ("_io", "_native")


def module_files(package: str) -> dict[str, Path]:
    """Dotted module name -> source file of every module of `package`."""
    root = REPO / package
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module a dotted name refers to: itself, else its longest prefix that is a module of ours."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of `modules` that `module` imports (anywhere in its source)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import name`: the submodule pkg.name when there is one, else pkg itself
            names = [
                f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules else prefix for alias in node.names
            ]
        else:
            continue
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph(*packages: str) -> dict[str, set[str]]:
    modules: dict[str, Path] = {}
    for package in packages:
        modules.update(module_files(package))
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted; sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def layer_of(module: str) -> str:
    """'robot_rt.control.loop' -> 'control'; 'robot_rt.cli' -> 'cli'; 'robot_rt' -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


# ------------------------------------------------------------------------------------------------ tests


def test_the_graph_reader_sees_lazy_relative_and_package_imports(tmp_path):
    src = tmp_path / "pkg"
    (src / "sub").mkdir(parents=True)
    (src / "__init__.py").write_text("from .a import x\n")
    (src / "a.py").write_text("def f():\n    from .sub import b\n    from pkg.sub.b import y\n")
    (src / "sub" / "__init__.py").write_text("")
    (src / "sub" / "b.py").write_text("from .. import a\nimport numpy\nfrom pkg import sub\n")
    modules = {"pkg": src / "__init__.py", "pkg.a": src / "a.py", "pkg.sub": src / "sub/__init__.py"}
    modules["pkg.sub.b"] = src / "sub" / "b.py"
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.sub.b"}, "pkg.sub": set(), "pkg.sub.b": {"pkg.a", "pkg.sub"}}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b"]]


def test_robot_rt_has_no_import_cycles():
    assert cycles(import_graph("robot_rt")) == []


def test_percept_fast_has_no_import_cycles():
    assert cycles(import_graph("percept_fast")) == []


def test_the_two_packages_do_not_import_each_other():
    graph = import_graph("robot_rt", "percept_fast")
    crossing = sorted((a, b) for a, targets in graph.items() for b in targets if a.split(".")[0] != b.split(".")[0])
    assert crossing == []


def test_robot_rt_imports_only_downwards():
    graph = import_graph("robot_rt")
    known = set(ROBOT_RT_LAYERS) | set(SHARED) | {""}
    assert {layer_of(m) for m in graph} <= known, "a new robot_rt part: add it to ROBOT_RT_LAYERS and the docs"
    bad = []
    for module, targets in sorted(graph.items()):
        layer = layer_of(module)
        allowed = set(ROBOT_RT_LAYERS.get(layer, ())) | set(SHARED) | {layer}
        bad += [f"{module} -> {t}" for t in sorted(targets) if layer_of(t) not in allowed and layer_of(t) != ""]
    assert bad == []


def test_control_is_only_the_real_time_core():
    """robot_rt.control reaches nothing of the simulated far end, the envs, the bridge or the learning loops."""
    graph = import_graph("robot_rt")
    reached = {t for m, targets in graph.items() if layer_of(m) == "control" for t in targets}
    # '' is the robot_rt package itself: `from robot_rt import _control` (a native module, no source here)
    assert {layer_of(t) for t in reached} <= {"", "control", "robot", *SHARED}


def test_docs_table_matches_the_layers():
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and (m := re.fullmatch(r"`(\w+)`", cells[0])):
            rows[m.group(1)] = tuple(re.findall(r"`(\w+)`", cells[1]))
    assert rows == {k: tuple(v) for k, v in ROBOT_RT_LAYERS.items()}


if __name__ == "__main__":  # pragma: no cover - a quick look at the graph
    for name, deps in sorted(import_graph("robot_rt").items()):
        print(name, "->", ", ".join(sorted(deps)))
