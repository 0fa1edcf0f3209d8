"""``scripts/gpu_check.sh --cpu-smoke``: every step of the GPU check at toy size, on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_every_step_and_writes_its_report(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, VIRTUAL_ENV=sys.prefix)
    done = subprocess.run(
        [str(ROOT / "scripts" / "gpu_check.sh"), "--cpu-smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["cpu_smoke"] is True
    assert report["machine"]["git_commit"] and report["machine"]["date"]
    steps = report["steps"]
    assert list(steps) == ["env", "gpu_tests", "render", "qwen2vl", "llava"]
    assert all(step["status"] == "ok" for step in steps.values()), steps
    jobs = steps["render"]["end_to_end"]["jobs"]
    assert {job["format"] for job in jobs} == {"png", "jpg"} and all(j["epochs"] > 0 for j in jobs)
    qwen = steps["qwen2vl"]
    assert [run["gradient_checkpointing"] for run in qwen["lora_bf16"]] == [False, True]
    assert all(run["samples_per_s"] > 0 for run in qwen["lora_bf16"])
    assert qwen["qlora_nf4"]["samples_per_s"] > 0 and qwen["scoring"]["epochs_per_s"] > 0
    assert steps["llava"]["training_step"]["step_s"] > 0
    markdown = (tmp_path / "gpu-check.md").read_text()
    assert "Qwen2-VL-2B architecture" in markdown and "LLaVA-1.5-7B architecture" in markdown


def test_the_full_size_configs_are_the_published_ones():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    text, vision = gpu_check.QWEN2VL_2B["text"], gpu_check.QWEN2VL_2B["vision"]
    assert (text["hidden_size"], text["num_hidden_layers"], text["num_attention_heads"]) == (
        1536,
        28,
        12,
    )
    assert (text["num_key_value_heads"], text["intermediate_size"]) == (2, 8960)
    assert (vision["depth"], vision["embed_dim"]) == (32, 1280)
    assert sum(text["mrope_section"]) == text["hidden_size"] // text["num_attention_heads"] // 2
    llava = gpu_check.LLAVA_7B
    assert (llava["text"]["hidden_size"], llava["text"]["num_hidden_layers"]) == (4096, 32)
    assert (llava["vision"]["image_size"], llava["vision"]["num_hidden_layers"]) == (336, 24)
