"""The shape of the code: one-way imports, no cycles, modules of a readable size.

Imports are read from the source (every ``import`` statement, those inside functions
included), so a cycle hidden by a function-level import is found too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_VLM_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _graph(package: str) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in (ROOT / package).rglob("*.py")}
    return {
        name: {m for m in _imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_vlm_has_no_import_cycle():
    assert _cycle(_graph("vlm")) is None


@pytest.mark.parametrize("package", ["engine", "vlm", "bench", "psgvlm"])
def test_the_packages_have_no_import_cycle_between_them(package):
    assert _cycle(_graph(package)) is None


#: The one place engine touches torch: nvJPEG through torchvision, imported inside
#: ``encode_jpeg_cuda`` only (the GPU path), never by the render pipeline.
_GPU_JPEG = {"engine/encode.py": ["torch", "torchvision.io", "torchvision.io.encode_jpeg"]}


def test_engine_never_imports_vlm_bench_or_torch():
    offenders = {}
    for path in (ROOT / "engine").rglob("*.py"):
        bad = {
            m
            for m in _imports(path)
            if m.split(".")[0] in ("vlm", "bench", "torch", "torchvision", "transformers")
        }
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == _GPU_JPEG


def test_importing_the_render_pipeline_leaves_torch_out():
    code = (
        "import sys, engine.pipeline, engine.io.edf, engine.raster; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_training_does_not_import_inference_and_inference_not_the_generator():
    graph = _graph("vlm")
    inference = {"vlm.runtime", "vlm.sources", "vlm.answers", "vlm.attribution"}
    commands = {m for m in graph if m.startswith("vlm.commands")}

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert reach("vlm.train") & (inference | commands) == set()
    for module in graph:
        if module == "vlm.train" or module.startswith("vlm.train"):
            continue
        path = ROOT / (module.replace(".", "/") + ".py")
        if not path.is_file():
            path = ROOT / module.replace(".", "/") / "__init__.py"
        assert "engine.synth" not in _imports(path), module


def test_vlm_modules_stay_readable():
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
        for p in (ROOT / "vlm").rglob("*.py")
    }
    assert {p: n for p, n in sizes.items() if n > MAX_VLM_LINES} == {}
