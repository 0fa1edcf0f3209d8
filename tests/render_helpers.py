"""A synthetic night written by ``psgvlm synth`` and rendered by ``psgvlm render``, as a
user runs them (subprocesses), for the tests of render options."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path


def synth_and_render(
    tmp_path: Path, channels: str, seed: int, *render_args: str
) -> tuple[subprocess.CompletedProcess, dict | None]:
    """Half an hour of synthetic night with ``channels``, rendered into ``tmp_path/shards``
    with ``render_args``; the finished render and its first sample's JSON (None when it
    failed)."""
    nights = tmp_path / "nights"
    subprocess.run(
        [sys.executable, "-m", "psgvlm", "synth", "--nights", "1", "--hours", "0.5", "--seed",
         str(seed), "--channels", channels, "--out", str(nights)],
        check=True, capture_output=True,
    )  # fmt: skip
    out = tmp_path / "shards"
    done = subprocess.run(
        [sys.executable, "-m", "psgvlm", "render", f"synthetic:{nights}", "--out", str(out),
         "--size", "168x56", "--split", "1,0,0", "--no-progress", *render_args],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        return done, None
    with tarfile.open(sorted(out.glob("train-*.tar"))[0]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".json"))
        return done, json.load(tar.extractfile(member))
