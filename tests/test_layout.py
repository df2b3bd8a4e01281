"""The package's structure map: no import circle, no import against the layers.

Every ``import agent…`` in agent/ counts, lazy ones inside functions too: a lazy
import hides a circle from the interpreter, not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "agent"

#: Lower layers never import higher ones. Within a layer, imports are allowed
#: unless listed in SIBLINGS_APART.
LAYERS: dict[str, int] = {
    "agent": 0,
    "agent.clock": 0,
    "agent.errors": 0,
    "agent.audio": 0,
    "agent.wire": 0,
    "agent.config": 0,
    "agent.metrics": 0,
    "agent.stages": 1,
    # Published to by the server (marks) and the clients (turns): below both.
    "agent.telemetry": 1,
    "agent.server": 2,
    "agent.client": 2,
    "agent.jobs": 3,
    "agent.report": 3,
    "agent.cli": 4,
    "agent.pytest_plugin": 4,
}
#: The agent server and its clients talk only through agent.wire.
SIBLINGS_APART = {("agent.server", "agent.client"), ("agent.client", "agent.server")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str) -> set[str]:
    """The agent modules that ``path`` imports (``from agent.x import y`` counts x.y if it is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "agent")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if base.split(".")[0] != "agent":
                continue
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def structure_map() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in imports_of(path, name) if m in modules and m != name}
        for name, path in modules.items()
    }


def layer_of(module: str) -> str:
    """The LAYERS key ``module`` belongs to ("" if none: a new top-level entry needs a layer)."""
    keys = [k for k in LAYERS if module == k or (k != "agent" and module.startswith(k + "."))]
    return max(keys, key=len, default="")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_structure_map_has_no_import_circle() -> None:
    graph = structure_map()
    # A package's __init__ re-exporting its own modules is not a circle a reader meets.
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_imports_point_inward() -> None:
    wrong = []
    for name, imported in sorted(structure_map().items()):
        here = layer_of(name)
        for target in sorted(imported):
            there = layer_of(target)
            if LAYERS[there] > LAYERS[here] or (here, there) in SIBLINGS_APART:
                wrong.append(f"{name} -> {target}")
    assert not wrong, "upward imports:\n" + "\n".join(wrong)


def test_every_module_has_a_layer() -> None:
    assert [name for name in structure_map() if not layer_of(name)] == []


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ],
)
def test_find_cycle(graph: dict[str, set[str]], cycle: list[str] | None) -> None:
    assert find_cycle(graph) == cycle


def test_map_sees_lazy_imports() -> None:
    graph = structure_map()
    assert "agent.config.accelerators" in graph["agent.stages.llm"]
    assert "agent.jobs.runner" in graph["agent.pytest_plugin"]  # imported inside a function


def test_top_level_stays_small() -> None:
    entries = [p for p in PACKAGE.iterdir() if p.name not in ("__pycache__",)]
    assert len(entries) <= 17, sorted(p.name for p in entries)


#: Calls that read a clock. Sleeping is not reading; agent/clock.py is the one reader.
CLOCK_READS = {
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "monotonic_ns"),
    ("time", "perf_counter"),
    ("time", "perf_counter_ns"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("loop", "time"),
}


def clock_reads(source: str) -> list[int]:
    """Lines of ``source`` that call one of CLOCK_READS (``x.y()`` with x, y as listed)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and (node.func.value.id, node.func.attr) in CLOCK_READS
        ):
            lines.append(node.lineno)
    return lines


def test_only_clock_py_reads_a_clock() -> None:
    readers = {
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in PACKAGE.rglob("*.py")
        if path != PACKAGE / "clock.py"
        for line in clock_reads(path.read_text(encoding="utf-8"))
    }
    assert readers == set()


def test_clock_reads_are_found() -> None:
    assert clock_reads("import time\nx = time.monotonic()\ny = time.sleep(1)\n") == [2]
    assert clock_reads("from datetime import datetime\nt = datetime.now()\n") == [2]
    assert clock_reads((PACKAGE / "clock.py").read_text(encoding="utf-8")) != []
