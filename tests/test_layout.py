"""The floor plan of job/ and workflows/: no import cycle, no oversized module, and one home for a run's files.

Read from the source with ast, so an import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("job", "workflows")
MAX_LINES = 500  # a module past this many lines holds two or three things that want names of their own
LONGER_ALLOWED = {"job/prepare.py"}  # being redesigned: each worker reads its own byte range
RUN_FILES = ("metrics.jsonl", "model.pt", "test_predictions.npz")  # named, written and read in job/runfiles.py only


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules a file imports, anywhere in it (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in modules:
                out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules}
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    (tmp_path / "a.py").write_text("from job import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from job.a import g\n")
    modules = {"job.a": tmp_path / "a.py", "job.b": tmp_path / "b.py"}
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert _cycle(graph) == ["job.a", "job.b", "job.a"]


def test_no_import_cycle_among_job_and_workflows():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert graph["job.train"], "the import graph came out empty: the parse is wrong"
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_no_module_under_job_is_longer_than_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "job").glob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert set(long) <= LONGER_ALLOWED, long


def _code_strings(tree: ast.AST) -> set[str]:
    """String constants of a module's code, docstrings left out."""
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings}


def test_a_run_folders_files_are_named_and_written_only_in_runfiles():
    """The history, the model file and the predictions have one home: no other module names or writes them."""
    for name, path in _modules().items():
        if name == "job.runfiles":
            continue
        source = path.read_text()
        named = _code_strings(ast.parse(source)) & set(RUN_FILES)
        assert not named, f"{name} names {named}: use job.runfiles"
        assert "torch.save(" not in source and "savez" not in source, f"{name} writes a run file itself: use job.runfiles"
    assert set(RUN_FILES) <= _code_strings(ast.parse((ROOT / "job" / "runfiles.py").read_text()))
