"""The study and report layers import each other without cycles, and at module top.

The graph is read from the source (``ast``), function-level imports included, so a cycle cannot
hide behind an import placed inside a function. Deferred imports are allowed only for heavy
optional dependencies and for the modules that ``divssl --help`` loads.
"""

from __future__ import annotations

import ast
from pathlib import Path

import divssl

SRC = Path(divssl.__file__).parent
LAYERS = ("study", "report")
# module -> deferred imports it may have (prefixes), each with its reason
DEFERRED_OK: dict[str, tuple[str, ...]] = {
    "divssl.study.backends": ("ray", "submitit"),  # optional extras
    "divssl.study.tracking": ("mlflow",),  # optional extra
    "divssl.study.cli": ("",),  # imported by `divssl --help`: no torch/pandas until a command runs
    "divssl.report": ("",),  # imported for its section names; builders load pandas/matplotlib
    # the trainer-building half of the planner is being moved onto the trainer's public builders
    # (issue 9, pretrain-stage); its deferred imports go with that change
    "divssl.study.plan": ("",),
    # spec validation stays light (no torch): the extractor registry loads only for a vendi block
    "divssl.study.spec": ("divssl.distances.extractors",),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    path = SRC.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(imported module, at module top?) for every executed import statement (those under
    ``if TYPE_CHECKING:`` only serve annotations); ``from pkg import mod`` imports ``pkg.mod``."""
    top = {id(node) for node in tree.body}
    typing_only = {
        id(inner)
        for node in tree.body
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.append((sub if _is_module(sub) else node.module, id(node) in top))
    return out


def _graph() -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    edges: dict[str, set[str]] = {}
    deferred: dict[str, list[str]] = {}
    for layer in LAYERS:
        for path in sorted((SRC / layer).glob("*.py")):
            name = _module_name(path)
            tree = ast.parse(path.read_text())
            for target, at_top in _imports(tree):
                if not at_top:
                    deferred.setdefault(name, []).append(target)
                if target.startswith(tuple(f"divssl.{layer_}" for layer_ in LAYERS)):
                    edges.setdefault(name, set()).add(target)
    return edges, deferred


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_study_and_report_modules():
    edges, _ = _graph()
    assert "divssl.study.worker" in edges["divssl.study.backends"]
    assert "divssl.study.backends" in edges["divssl.study.runner"]
    assert _cycle(edges) is None, " -> ".join(_cycle(edges) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None


def test_imports_are_at_module_top_unless_deferred_on_purpose():
    _, deferred = _graph()
    unexpected = {
        module: [t for t in targets if not t.startswith(DEFERRED_OK.get(module, ("\0",)))]
        for module, targets in deferred.items()
    }
    assert {m: t for m, t in unexpected.items() if t} == {}
