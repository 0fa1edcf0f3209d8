"""What CI runs: the README's test command with the docstring examples, and ruff.

The README's command stays ``python -m pytest -q``; pyproject.toml makes it collect the
docstring examples of the packages, and .ci/run adds ``ruff check`` and
``ruff format --check`` and fails when any step fails.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pytest_collects_the_docstring_examples_of_the_packages():
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[tool.pytest.ini_options]", 1)[1].split("\n[", 1)[0]
    values = dict(re.findall(r"^(testpaths|addopts) = (.+)$", section, re.MULTILINE))
    assert "--doctest-modules" in ast.literal_eval(values["addopts"]).split()
    assert {"tests", "engine", "vlm", "bench"} <= set(ast.literal_eval(values["testpaths"]))


def test_a_docstring_example_is_collected_by_the_plain_command():
    """``python -m pytest`` with no options collects engine's examples (pyproject.toml)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "engine/raster/__init__.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "engine/raster/__init__.py::engine.raster" in result.stdout


def test_ci_script_runs_ruff_and_the_readme_command():
    script = (ROOT / ".ci" / "run").read_text()
    steps = [line.strip() for line in script.splitlines() if not line.lstrip().startswith("#")]
    assert any(s.startswith("ruff check ") and s.endswith(". || failed+=(\"ruff check\")")
               for s in steps)  # fmt: skip
    assert any(s.startswith("ruff format --check ") for s in steps)
    assert any(s.startswith("python -m pytest -q") for s in steps)
    assert "exit 1" in script
    readme = (ROOT / "README.md").read_text()
    assert "python -m pytest -q" in readme
    assert subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")]).returncode == 0
