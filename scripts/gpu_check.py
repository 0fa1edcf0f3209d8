"""Everything to measure on a GPU machine, in one run: ``scripts/gpu_check.sh``.

Writes ``gpu-check.json`` and ``gpu-check.md`` (git commit, device, date, every step's
figures or its error) into ``bench/results/<machine>/`` (``--out`` elsewhere). Steps, each
timed and recorded even when it fails; a step that would start past the time budget is
skipped and says so:

1. ``env``: torch, CUDA, the device and its memory, CuPy, numba's CUDA;
2. ``gpu_tests``: the native CUDA tests (``PSGVLM_TEST_GPU=1 python -m pytest -m gpu``);
3. ``render``: ``psgvlm bench render --device cuda`` (its report is kept beside this one),
   and EDF -> shards end to end on the device (PNG and JPEG) on synthetic nights;
4. ``qwen2vl``: Qwen2-VL-2B's architecture (hidden 1536, 28 layers, 12 heads, 2 KV heads,
   MLP 8960, vision depth 32, embed 1280, vocabulary 151,936) built from its config with
   random weights (no download) and loaded through :func:`vlm.model.
   load_model_and_processor`, as training loads it: LoRA training samples/s and peak
   memory at 448x224 in bf16 for batch 8/16/32 with gradient checkpointing on and off,
   QLoRA (NF4) peak memory and step time, label-scoring inference epochs/s
   (:func:`vlm.scoring.score_candidates`);
5. ``llava``: LLaVA-1.5-7B's architecture (CLIP ViT-L/14-336 + Llama-2-7B) at 4 bit:
   memory after loading and one LoRA training step.

The processors are the tiny models' (:mod:`vlm.tiny`): a small tokenizer whose ids are a
subset of the full vocabulary (the model keeps the real vocabulary size, so the
embeddings and the LM head cost what they cost), and the real image processors at the
real image sizes (448x224 -> 128 image tokens for Qwen2-VL, 336x336 -> 576 for LLaVA).

``--cpu-smoke`` runs every step at toy size on the CPU in well under a minute (CI runs it
through ``tests/test_gpu_check.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Qwen2-VL-2B's published sizes (config.json of Qwen/Qwen2-VL-2B-Instruct).
QWEN2VL_2B = {
    "text": {
        "vocab_size": 151936,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rope_theta": 1_000_000.0,
        "mrope_section": [16, 24, 24],
    },
    "vision": {"depth": 32, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4},
}
#: LLaVA-1.5-7B's (llava-hf/llava-1.5-7b-hf): CLIP ViT-L/14 at 336 px + Llama-2-7B.
LLAVA_7B = {
    "vision": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 336,
        "patch_size": 14,
        "projection_dim": 768,
    },
    "text": {
        "vocab_size": 32064,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
    },
}
#: Toy sizes of ``--cpu-smoke`` (the same code paths).
_TOY = {"hidden": 64, "layers": 2, "depth": 2, "vocab": None}


class Budget:
    """The run's time budget: steps that would start too late are skipped."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def _step(report: dict[str, Any], name: str, budget: Budget, need_s: float, run: Callable) -> None:
    """Run one step, recording its figures (or error) and seconds; skip it past the budget."""
    entry: dict[str, Any] = {"status": "ok"}
    if budget.left() < need_s:
        entry = {"status": "skipped", "reason": f"{budget.left():.0f} s left, {need_s:.0f} needed"}
        report["steps"][name] = entry
        print(f"[gpu-check] {name}: skipped ({entry['reason']})", flush=True)
        return
    print(f"[gpu-check] {name} ...", flush=True)
    started = time.monotonic()
    try:
        entry.update(run() or {})
    except Exception as err:  # noqa: BLE001 - every step is reported, whatever fails
        entry = {
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc()[-4000:],
        }
    entry["seconds"] = round(time.monotonic() - started, 1)
    report["steps"][name] = entry
    print(f"[gpu-check] {name}: {entry['status']} ({entry['seconds']} s)", flush=True)


# ----------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------
def step_env(smoke: bool) -> dict[str, Any]:
    import numba
    import torch

    from engine.raster import cuda_available
    from engine.raster.gpu import cuda_unavailable_reason

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "numba": numba.__version__,
        "numba_cuda": cuda_available(),
        "numba_cuda_reason": cuda_unavailable_reason(),
    }
    try:
        import cupy

        info["cupy"] = cupy.__version__
    except ImportError:
        info["cupy"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["device"] = props.name
        info["device_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["bf16"] = torch.cuda.is_bf16_supported()
    nvidia = shutil.which("nvidia-smi")
    if nvidia:
        done = subprocess.run(
            [nvidia, "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        info["nvidia_smi"] = done.stdout.strip()
    if not smoke and not info["cuda_available"]:
        raise RuntimeError("no CUDA device: run with --cpu-smoke on a machine without a GPU")
    return info


def step_gpu_tests(smoke: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
               "tests/test_raster_cuda.py", "tests/test_dsp_cuda.py"]  # fmt: skip
    if smoke:
        command.append("--collect-only")  # no GPU: check that the command runs
    env = dict(os.environ, PSGVLM_TEST_GPU="0" if smoke else "1")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
    if done.returncode != 0:
        raise RuntimeError("pytest -m gpu failed:\n" + "\n".join(tail))
    return {"command": " ".join(["PSGVLM_TEST_GPU=1", *command[1:]]), "summary": tail[-1:]}


def _render_job(
    nights: Path, out: Path, device: str, fmt: str, size: tuple[int, int], workers: int = 1
) -> dict[str, Any]:
    from engine.pipeline import RenderSettings, render_dataset

    settings = RenderSettings(
        montage="eeg=C4-M1,eog=E1-M2,emg=chin,eeg=F4-M1,eog=E2-M1,eeg=O2-M1",
        width=size[0],
        height=size[1],
        fmt=fmt,
    )
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    report = render_dataset(
        [f"synthetic:{nights}"], out, settings, split=(1.0, 0.0, 0.0), device=device,
        workers=workers, progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if not report.ok:
        raise RuntimeError(f"render failed: {report.failed[:1]}")
    nbytes = sum(p.stat().st_size for p in out.glob("*.tar"))
    shutil.rmtree(out, ignore_errors=True)
    return {
        "device": device,
        "format": fmt,
        "workers": workers,
        "epochs": report.epochs,
        "seconds": round(seconds, 2),
        "epochs_per_s": round(report.epochs / seconds, 1),
        "read_filter_s": round(report.read_seconds, 2),
        "draw_encode_write_s": round(report.draw_seconds, 2),
        "bytes_per_epoch": round(nbytes / max(report.epochs, 1)),
    }


def step_render(smoke: bool, out_dir: Path, scratch: Path) -> dict[str, Any]:
    from engine.pipeline import write_synthetic_nights
    from engine.raster import cuda_available

    results: dict[str, Any] = {}
    device = "cuda" if cuda_available() else "cpu"
    count, hours = (1, 60 / 3600) if smoke else (4, 2.0)
    nights = write_synthetic_nights(scratch / "nights", count, hours)
    size = (64, 32) if smoke else (448, 224)
    jobs = []
    # The first run of a process loads (or compiles) the kernels: not timed.
    _render_job(nights, scratch / "warm", device, "png", size)
    for fmt in ("png", "jpg"):
        jobs.append(_render_job(nights, scratch / "out", device, fmt, size))
        if device == "cuda":
            jobs.append(_render_job(nights, scratch / "out", "cpu", fmt, size))
    results["end_to_end"] = {
        "nights": count,
        "hours_each": hours,
        "channels": 6,
        "size": f"{size[0]}x{size[1]}",
        "jobs": jobs,
    }
    if not smoke:
        bench_out = out_dir / "gpu-bench-render"
        command = [sys.executable, "-m", "bench.render", "--device", "cuda", "--quick",
                   "--sizes", "448x224", "--workers", "1", "--out", str(bench_out)]  # fmt: skip
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400)
        if done.returncode != 0:
            raise RuntimeError("bench render --device cuda failed:\n" + done.stderr[-3000:])
        bench = json.loads((bench_out / "render.json").read_text())
        results["bench_render"] = {
            "command": " ".join(["python", *command[1:]]),
            "report": str((bench_out / "render.json").relative_to(ROOT)),
            "stages": [
                {k: s[k] for k in ("key", "label", "size", "unit", "per_core", "startup_s")}
                | {"median": s["rate"]["median"], "min": s["rate"]["min"], "max": s["rate"]["max"]}
                for s in bench["stages"]
                if s["key"].startswith(("gpu", "e2e"))
            ],
        }
    return results


def _sample_images(n: int, size: tuple[int, int]) -> list:
    """``n`` rendered epochs (PIL images) of a synthetic signal at ``size``."""
    import numpy as np
    from PIL import Image

    from engine.raster import RenderSpec, render

    rng = np.random.default_rng(0)
    signals = (40 * rng.standard_normal((n, 3, 3000))).astype(np.float32)
    spec = RenderSpec.for_roles(["eeg", "eog", "emg"], width=size[0], height=size[1])
    return [Image.fromarray(page).convert("RGB") for page in render(signals, spec)]


def _samples(n: int, size: tuple[int, int]) -> list[dict[str, Any]]:
    images = _sample_images(n, size)
    return [{"image": image, "cls": i % 5, "meta": {}} for i, image in enumerate(images)]


def _model_inputs(batch: dict[str, Any], device: str) -> dict[str, Any]:
    return {
        k: v.to(device)
        for k, v in batch.items()
        if k not in ("cls", "answer_mask", "sample_weight")
    }


def _train_rate(
    model, processor, device: str, batch_size: int, steps: int, size, warm: int = 2
) -> dict:
    """LoRA training steps (forward, backward, AdamW) at ``batch_size``: samples/s, memory.

    ``warm`` steps run first, untimed (the first steps allocate and tune kernels)."""
    import torch

    from vlm.data import ChatCollator

    collator = ChatCollator(processor)
    batch = _model_inputs(collator(_samples(batch_size, size)), device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model.train()
    times = []
    for step in range(steps + warm):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if step >= warm:
            times.append(time.perf_counter() - started)
    times.sort()
    median = times[len(times) // 2]
    del optimizer
    return {
        "batch": batch_size,
        "step_s": round(median, 4),
        "samples_per_s": round(batch_size / median, 2),
        "step_s_min_max": [round(times[0], 4), round(times[-1], 4)],
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "loss": round(float(loss.detach()), 3),
    }


def _oom_safe(run: Callable[[], dict]) -> dict:
    import torch

    try:
        return run()
    except torch.cuda.OutOfMemoryError as err:
        torch.cuda.empty_cache()
        return {"status": "out of memory", "error": str(err).splitlines()[0]}


def _free() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _qwen_dir(smoke: bool, scratch: Path, size: tuple[int, int], device: str) -> tuple[Path, int]:
    """Qwen2-VL-2B (or a toy) with random weights, saved with the tiny model's processor."""
    import torch
    from transformers import AutoProcessor, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from vlm.tiny import build_tiny_model

    tiny = build_tiny_model("qwen2vl", scratch / "tiny-qwen2vl", image_size=size)
    processor = AutoProcessor.from_pretrained(tiny)
    small = json.loads((tiny / "config.json").read_text())
    tokenizer = processor.tokenizer
    text = dict(QWEN2VL_2B["text"])
    vision = dict(QWEN2VL_2B["vision"])
    if smoke:
        text.update(vocab_size=len(tokenizer), hidden_size=_TOY["hidden"], intermediate_size=128,
                    num_hidden_layers=_TOY["layers"], num_attention_heads=4,
                    num_key_value_heads=2, mrope_section=[2, 3, 3])  # fmt: skip
        vision.update(depth=_TOY["depth"], embed_dim=64, num_heads=4, mlp_ratio=2)
    section = text.pop("mrope_section")
    theta = text.pop("rope_theta")
    ids = {k: small[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                 "vision_end_token_id")}  # fmt: skip
    special = small.get("text_config", {})
    config = Qwen2VLConfig(
        text_config={
            **text,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": theta,
                "mrope_section": section,
            },  # fmt: skip
            "bos_token_id": special.get("bos_token_id"),
            "eos_token_id": special.get("eos_token_id"),
            "pad_token_id": special.get("pad_token_id"),
            "tie_word_embeddings": True,
        },
        vision_config={
            **vision,
            "hidden_size": text["hidden_size"],
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        tie_word_embeddings=True,
        **ids,
    )
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration(config).to(dtype)
    parameters = sum(p.numel() for p in model.parameters())
    out = scratch / "qwen2vl-random"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    del model
    _free()
    return out, parameters


def step_qwen2vl(smoke: bool, scratch: Path, budget: Budget) -> dict[str, Any]:
    import torch

    from vlm.model import LoraArgs, load_model_and_processor
    from vlm.scoring import score_candidates

    device = "cuda" if torch.cuda.is_available() and not smoke else "cpu"
    size = (448, 224)
    path, parameters = _qwen_dir(smoke, scratch, size, device)
    results: dict[str, Any] = {"parameters": parameters, "image": "448x224", "device": device}
    batches = (2,) if smoke else (8, 16, 32)
    steps = 1 if smoke else 4
    warm = 0 if smoke else 2
    lora = LoraArgs(lora_r=16, lora_alpha=32)
    runs = []
    for checkpointing in (False, True):
        model, processor, _ = load_model_and_processor(
            path, dtype="auto", lora=lora, device=device, gradient_checkpointing=checkpointing
        )
        for batch in batches:
            if budget.left() < 60 and not smoke:
                runs.append({"batch": batch, "gradient_checkpointing": checkpointing,
                             "status": "skipped (time budget)"})  # fmt: skip
                continue
            row = _oom_safe(
                functools.partial(_train_rate, model, processor, device, batch, steps, size, warm)
            )
            runs.append({"gradient_checkpointing": checkpointing, "batch": batch, **row})
        if not checkpointing:
            # Label scoring (inference) with the adapter in place, as staging runs it.
            images = _sample_images(4 if smoke else 256, size)
            if not smoke:
                score_candidates(model, processor, images[:8], batch_size=8)  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            score_candidates(model, processor, images, batch_size=4 if smoke else 32)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            results["scoring"] = {
                "epochs": len(images),
                "candidates": 5,
                "batch": 4 if smoke else 32,
                "epochs_per_s": round(len(images) / seconds, 2),
            }
        del model
        _free()
    results["lora_bf16"] = runs
    if budget.left() > 45 or smoke:

        def qlora() -> dict:
            model, processor, _ = load_model_and_processor(
                path, quantization="4bit", lora=lora, device=device, gradient_checkpointing=True
            )
            loaded = torch.cuda.memory_allocated() / 2**30 if device == "cuda" else None
            row = _train_rate(model, processor, device, batches[0], steps, size, warm)
            del model
            _free()
            return {"memory_after_load_gib": None if loaded is None else round(loaded, 2), **row}

        results["qlora_nf4"] = _oom_safe(qlora)
    return results


def step_llava(smoke: bool, scratch: Path) -> dict[str, Any]:
    import torch
    from transformers import (
        AutoProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    from vlm.model import LoraArgs, load_model_and_processor
    from vlm.tiny import build_tiny_model

    device = "cuda" if torch.cuda.is_available() and not smoke else "cpu"
    side = 336
    tiny = build_tiny_model("llava", scratch / "tiny-llava", image_size=(side, side))
    processor = AutoProcessor.from_pretrained(tiny)
    small = json.loads((tiny / "config.json").read_text())
    vision, text = dict(LLAVA_7B["vision"]), dict(LLAVA_7B["text"])
    if smoke:
        vision.update(hidden_size=64, intermediate_size=128, num_hidden_layers=_TOY["depth"],
                      num_attention_heads=4, projection_dim=64)  # fmt: skip
        text.update(vocab_size=len(processor.tokenizer), hidden_size=_TOY["hidden"],
                    intermediate_size=128, num_hidden_layers=_TOY["layers"],
                    num_attention_heads=4, num_key_value_heads=4)  # fmt: skip
    special = small.get("text_config", {})
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**vision),
        text_config=LlamaConfig(
            **text,
            bos_token_id=special.get("bos_token_id"),
            eos_token_id=special.get("eos_token_id"),
            pad_token_id=special.get("pad_token_id"),
            tie_word_embeddings=False,
        ),
        image_token_index=small["image_token_index"],
        image_seq_length=(side // 14) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaForConditionalGeneration(config).to(dtype)
    parameters = sum(p.numel() for p in model.parameters())
    path = scratch / "llava-random"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    del model
    _free()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model, processor, _ = load_model_and_processor(
        path, quantization="4bit", lora=LoraArgs(), device=device, gradient_checkpointing=True
    )
    loaded = torch.cuda.memory_allocated() / 2**30 if device == "cuda" else None
    row = _oom_safe(
        functools.partial(
            _train_rate, model, processor, device, 4, 1, (side, side), 0 if smoke else 1
        )
    )
    del model
    _free()
    shutil.rmtree(path, ignore_errors=True)
    return {
        "parameters": parameters,
        "device": device,
        "image": f"{side}x{side}",
        "quantization": "4bit NF4 (double quantisation), vision tower and projector in bf16",
        "memory_after_load_gib": None if loaded is None else round(loaded, 2),
        "training_step": row,
    }


# ----------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------
def _markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        "# GPU check" + (" (CPU smoke run, toy sizes)" if report["cpu_smoke"] else ""),
        "",
        f"- command: `{report['command']}` ({report['wall_s']} s)",
        f"- git {machine.get('git_commit', '?')[:12]}"
        + (" + uncommitted changes" if machine.get("git_dirty") else "")
        + f", {machine.get('date')}",
        f"- device: {machine.get('gpu') or 'no GPU'}; CPU {machine.get('cpu')}, "
        f"{machine.get('usable_cores')} cores",
        "",
        "| step | status | seconds |",
        "|---|---|---|",
    ]
    for name, entry in report["steps"].items():
        lines.append(f"| {name} | {entry['status']} | {entry.get('seconds', '-')} |")
    steps = report["steps"]
    render = steps.get("render", {})
    if render.get("end_to_end"):
        e2e = render["end_to_end"]
        lines += ["", f"## EDF -> shards ({e2e['nights']} nights of {e2e['hours_each']:g} h, "
                  f"{e2e['channels']} channels at 256 Hz, {e2e['size']})", "",
                  "| device | format | epochs/s | read+filter s | draw+encode+write s |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for job in e2e["jobs"]:
            lines.append(f"| {job['device']} | {job['format']} | {job['epochs_per_s']:,} | "
                         f"{job['read_filter_s']} | {job['draw_encode_write_s']} |")  # fmt: skip
    for stage in render.get("bench_render", {}).get("stages", []):
        if stage is render["bench_render"]["stages"][0]:
            lines += ["", "## bench render --device cuda", "", "| stage | median | min–max |",
                      "|---|---|---|"]  # fmt: skip
        lines.append(f"| {stage['label']} | {stage['median']:,.0f} {stage['unit']} | "
                     f"{stage['min']:,.0f}–{stage['max']:,.0f} |")  # fmt: skip
    qwen = steps.get("qwen2vl", {})
    if qwen.get("lora_bf16"):
        lines += ["", f"## Qwen2-VL-2B architecture, random weights ({qwen['parameters']:,} "
                  f"parameters), {qwen['image']}, {qwen['device']}", "",
                  "| training | batch | gradient checkpointing | samples/s | step s | peak GiB |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for run in qwen["lora_bf16"]:
            kind = "LoRA bf16" if qwen["device"] == "cuda" else "LoRA fp32"
            lines.append(f"| {kind} | {run['batch']} | {run['gradient_checkpointing']} | "
                         f"{run.get('samples_per_s', run.get('status'))} | "
                         f"{run.get('step_s', '-')} | {run.get('peak_memory_gib', '-')} |")  # fmt: skip
        q = qwen.get("qlora_nf4")
        if q:
            lines.append(f"| QLoRA NF4 | {q.get('batch', '-')} | True | "
                         f"{q.get('samples_per_s', q.get('status'))} | {q.get('step_s', '-')} | "
                         f"{q.get('peak_memory_gib', '-')} |")  # fmt: skip
        if qwen.get("scoring"):
            s = qwen["scoring"]
            lines += ["", f"Label scoring (5 candidates, batch {s['batch']}): "
                      f"**{s['epochs_per_s']} epochs/s** over {s['epochs']} epochs."]  # fmt: skip
    llava = steps.get("llava", {})
    if llava.get("training_step"):
        step = llava["training_step"]
        lines += ["", f"## LLaVA-1.5-7B architecture at 4 bit ({llava['parameters']:,} "
                  f"parameters), {llava['image']}, {llava['device']}", "",
                  f"- memory after loading: {llava['memory_after_load_gib']} GiB",
                  f"- one LoRA step at batch {step.get('batch')}: {step.get('step_s')} s, "
                  f"peak {step.get('peak_memory_gib')} GiB"]  # fmt: skip
    failed = [(n, e) for n, e in steps.items() if e["status"] == "failed"]
    if failed:
        lines += ["", "## Failures", ""]
        lines += [f"- {name}: {entry['error']}" for name, entry in failed]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="toy sizes on the CPU")
    parser.add_argument("--out", type=Path, help="report folder (default bench/results/MACHINE)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="time budget (s)")
    parser.add_argument("--skip", default="", help="comma-separated steps to leave out")
    args = parser.parse_args(argv)
    smoke = args.cpu_smoke
    started = time.monotonic()
    budget = Budget(args.budget_s)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if smoke:
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import torch

    from bench.report import machine_info, report_dir, write_report

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    machine = machine_info(["torch", "transformers", "peft", "bitsandbytes", "cupy"], gpu=gpu)
    out = args.out if args.out is not None else report_dir(None, machine)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "gpu-check",
        "cpu_smoke": smoke,
        "command": " ".join(["scripts/gpu_check.sh", *(argv or sys.argv[1:])]),
        "machine": machine,
        "steps": {},
    }
    with tempfile.TemporaryDirectory(prefix="psgvlm-gpu-check-") as tmp:
        scratch = Path(tmp)
        steps: list[tuple[str, float, Callable]] = [
            ("env", 0, lambda: step_env(smoke)),
            ("gpu_tests", 30, lambda: step_gpu_tests(smoke)),
            ("render", 60, lambda: step_render(smoke, out, scratch)),
            ("qwen2vl", 90, lambda: step_qwen2vl(smoke, scratch, budget)),
            ("llava", 60, lambda: step_llava(smoke, scratch)),
        ]
        for name, need, run in steps:
            if name in skip:
                report["steps"][name] = {"status": "skipped", "reason": "--skip"}
                continue
            with contextlib.chdir(ROOT):
                _step(report, name, budget, 0 if smoke else need, run)
    report["wall_s"] = round(time.monotonic() - started, 1)
    json_path, md_path = write_report(out, "gpu-check", report, _markdown(report))
    print(f"[gpu-check] wrote {json_path} and {md_path}")
    return 0 if all(e["status"] != "failed" for e in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
