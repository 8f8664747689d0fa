"""The profiler's modules import each other in one direction only.

Importing ``profiler.cudnn_algos`` at run time proves nothing (``profiler/__init__``
loads every module first), so the graph is read from the source: every import of a
``profiler`` module, at the top or inside a function (a lazy import is how a cycle
hides). ``timing`` and ``cudnn_algos`` used to import each other; the protocol both
need now lives in ``profiler.clock``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import hwprune.profiler as profiler

PKG = Path(profiler.__file__).parent


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n for n in names if n.startswith("hwprune.profiler.") and
                     (PKG / f"{n.split('.', 2)[2].replace('.', '/')}.py").exists())
    return found


def _graph() -> dict[str, set[str]]:
    return {f"hwprune.profiler.{p.stem}": _imports(p)
            for p in PKG.glob("*.py") if p.stem != "__init__"}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: finished

    def visit(node: str, path: list[str]) -> list[str] | None:  # path ends with node
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_graph_reader_sees_a_lazy_import_cycle():
    # The detector itself: the old timing <-> cudnn_algos shape must count as a cycle.
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_profiler_modules_import_without_a_cycle():
    graph = _graph()
    assert "hwprune.profiler.clock" in graph["hwprune.profiler.cudnn_algos"]
    assert "hwprune.profiler.timing" not in graph["hwprune.profiler.cudnn_algos"]
    assert not graph["hwprune.profiler.clock"] & {"hwprune.profiler.timing",
                                                  "hwprune.profiler.cudnn_algos"}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_public_timing_names_stay_in_profiler_timing():
    from hwprune.profiler import timing

    for name in ("TimingConfig", "TimingError", "Stats", "time_callable", "measure_key",
                 "cudnn_benchmark", "algorithm_count", "adaptive", "graph_calls",
                 "time_model", "model_input", "prepare_model"):
        assert hasattr(timing, name), name
    assert timing.TimingConfig is profiler.TimingConfig
