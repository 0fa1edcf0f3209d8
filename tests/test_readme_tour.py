"""The README's tour, read from README.md itself and run as a user pastes it.

The commands are the lines of the ``bash`` block that follows ``<!-- tour -->`` in the
README (continuation lines joined), run one by one with ``bash`` in a fresh folder that
looks like the repository root (``vlm/`` is there for ``accelerate launch vlm/train.py``
and its configs). Each must exit 0 and write what the README says it writes, so the
README and this test cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- tour -->"

pytestmark = pytest.mark.slow


def tour_commands(readme: str) -> list[str]:
    """The tour's commands: the ``bash`` block after the marker, one entry per command.

    Examples
    --------
    >>> tour_commands("x\\n<!-- tour -->\\n```bash\\n# c\\na \\\\\\n  b\\n\\nc\\n```\\n")
    ['a b', 'c']
    """
    start = readme.index(MARKER)
    block = re.search(r"```bash\n(.*?)```", readme[start:], flags=re.DOTALL)
    if block is None:
        raise ValueError(f"no bash block after {MARKER}")
    text = re.sub(r"[ \t]*\\\n\s*", " ", block.group(1))
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(root.glob(pattern))


#: What each command writes (checked right after it ran): command prefix -> check.
def _check(command: str, root: Path, out: str) -> None:
    tour = root / "tour"
    if command.startswith("psgvlm synth --nights 4"):
        assert len(_files(tour / "nights", "synth-*-PSG.edf")) == 4
        assert len(_files(tour / "nights", "synth-*-Hypnogram.edf")) == 4
    elif command.startswith("psgvlm info"):
        assert "synth-0000-PSG.edf" in out and "EEG" in out
    elif command.startswith("psgvlm render"):
        manifest = json.loads((tour / "shards" / "manifest.json").read_text())
        assert manifest
        for split in ("train", "val", "test"):
            assert _files(tour / "shards", f"{split}-*.tar"), split
    elif command.startswith("accelerate launch"):
        adapter = tour / "run" / "adapter"
        assert (adapter / "adapter_config.json").is_file()
        assert (adapter / "render.json").is_file()
    elif command.startswith("psgvlm eval"):
        metrics = json.loads((tour / "eval" / "metrics.json").read_text())
        assert metrics["n"] > 0 and 0.0 <= metrics["accuracy"] <= 1.0
    elif command.startswith("psgvlm synth --nights 1"):
        assert (tour / "new" / "synth-0100-PSG.edf").is_file()
    elif command.startswith("psgvlm stage"):
        night = tour / "night"
        for name in ("hypnogram.csv", "hypnogram.edf", "hypnogram.png", "summary.json"):
            assert (night / name).is_file(), name
        summary = json.loads((night / "summary.json").read_text())
        assert summary["epochs"] == 120 and summary["agreement"]["epochs_compared"] == 120
    elif command.startswith("psgvlm ask"):
        assert "N3" in out and (tour / "ask" / "epoch_00040.png").is_file()
    elif "psgvlm chat" in command:
        headers = re.findall(r"^epoch (\d+) of 120", out, flags=re.MULTILINE)
        assert headers == ["0", "1", "60"], out
        assert out.count("claims checked:") == 2
    elif command.startswith("psgvlm explain"):
        data = json.loads((tour / "explain" / "epoch_00040.json").read_text())
        assert {a["method"] for a in data["attributions"]} == {"occlusion", "gradxinput"}
        assert (tour / "explain" / "epoch_00040_occlusion.png").is_file()
    else:
        raise AssertionError(f"the test does not know what {command!r} writes")


def test_tour_commands_come_from_the_readme():
    commands = tour_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(commands) == 10
    model_commands = [c for c in commands if " --model " in c]
    assert len(model_commands) == 5 and all("--model tiny:qwen2vl" in c for c in model_commands)
    assert any("psgvlm chat" in c for c in commands)


def test_the_readme_tour_runs_as_written(tmp_path):
    commands = tour_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    (tmp_path / "vlm").symlink_to(ROOT / "vlm")  # as at the repository root
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for command in commands:
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, f"{command}\n{done.stderr[-3000:]}"
        _check(command, tmp_path, done.stdout)
