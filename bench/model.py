"""``psgvlm bench train`` / ``psgvlm bench infer``: model throughput on rendered epochs.

Both benchmarks first render a short synthetic night into WebDataset shards with the
real pipeline (:func:`engine.pipeline.render_dataset`), so the model sees exactly what
training and staging see.

- ``train`` runs :func:`vlm.train.train` itself (:class:`vlm.trainer.StageTrainer`, a
  ``transformers.Trainer``: forward, backward, clipping, AdamW step, LoRA as the YAML
  config says) for a few steps with one log line per step, and reports the samples/s and
  s/step of the steps after the warm-up, read from the run's ``log.jsonl``. Data loading
  and collation count, as in real training.
- ``infer`` loads the model (and an optional adapter) with
  :func:`vlm.model.load_model_and_processor` and times :func:`vlm.scoring.score_candidates`
  (the five stage answers scored as whole sequences) over the rendered epochs: epochs/s.

``--model tiny:qwen2vl`` (the default) builds a tiny random Qwen2-VL into the cache
directory on first use; on a GPU name the real model, e.g.
``--model Qwen/Qwen2-VL-2B-Instruct --config vlm/configs/qwen2vl_lora.yaml``.

Examples
--------
::

    psgvlm bench train --steps 10
    psgvlm bench infer --epochs 32

Each writes ``OUT/{train,infer}.json`` and ``.md``, ``OUT`` by default
``bench/results/<machine>/`` (see :mod:`bench.report`).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.raster.layout import parse_size

from .report import (
    BenchError,
    PeakRSS,
    format_rate,
    machine_info,
    markdown_table,
    report_dir,
    short_commit,
    summarize,
    write_report,
)

__all__ = [
    "MODEL_LIBRARIES",
    "default_config",
    "render_bench_shards",
    "bench_train",
    "bench_infer",
    "add_arguments",
    "run",
]

logger = logging.getLogger(__name__)

#: Libraries named in the model reports besides the base ones.
MODEL_LIBRARIES: tuple[str, ...] = ("torch", "transformers", "peft", "accelerate", "bitsandbytes")

_CONFIGS = Path(__file__).resolve().parents[1] / "vlm" / "configs"
_MONTAGE = "eeg=C4-M1,eog=E1-M2,emg=chin"


def default_config(model: str) -> Path:
    """The shipped training config for a model: ``tiny_cpu.yaml`` or ``qwen2vl_lora.yaml``."""
    return _CONFIGS / ("tiny_cpu.yaml" if model.startswith("tiny:") else "qwen2vl_lora.yaml")


def render_bench_shards(out: Path, size: tuple[int, int], epochs: int) -> Path:
    """Render at least ``epochs`` synthetic epochs into ``out/train-*.tar``; return ``out``."""
    from engine.pipeline import RenderSettings, render_dataset

    settings = RenderSettings(montage=_MONTAGE, width=size[0], height=size[1])
    hours = max(epochs, 8) / 120.0 + 0.01
    render_dataset(
        [], out, settings, synthetic=1, synthetic_hours=hours, split=(1.0, 0.0, 0.0),
        progress=False,
    )  # fmt: skip
    return out


def _torch_device(requested: str | None) -> str:
    import torch

    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"--device {requested}: no CUDA device is available")
    return requested


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _config_values(config: Path) -> dict[str, Any]:
    import yaml

    try:
        values = yaml.safe_load(Path(config).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise BenchError(f"cannot read config {config}: {err}") from None
    if not isinstance(values, dict):
        raise BenchError(f"{config}: expected a mapping of settings")
    return values


def bench_train(
    model: str = "tiny:qwen2vl",
    *,
    config: str | Path | None = None,
    steps: int = 12,
    warmup: int = 2,
    batch_size: int | None = None,
    image_size: tuple[int, int] = (448, 224),
    tiny_cache_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Time ``steps`` training steps of :func:`vlm.train.train`; return the report dict.

    Parameters
    ----------
    model : str
        Hub id, local directory or ``tiny:qwen2vl`` / ``tiny:llava``.
    config : path, optional
        Training YAML (LoRA, dtype, threads...); default :func:`default_config`.
    steps, warmup : int
        Steps run, and how many of the first are left out of the figures.
    batch_size : int, optional
        Samples per step (default: the config's ``per_device_train_batch_size``).
    image_size : (int, int)
        Rendered image ``(width, height)``; the tiny model is built for it.
    tiny_cache_dir : path, optional
        Where ``tiny:`` models are built (default: the config's ``tiny_cache_dir``, else
        ``$PSGVLM_CACHE_DIR/tiny``).
    work_dir : path, optional
        Scratch folder for shards and the run (default: a temporary folder).
    """
    from vlm.train import parse_config, train

    if steps < 1 or warmup < 0 or warmup >= steps:
        raise BenchError(f"need steps >= 1 and 0 <= warmup < steps, got {steps} and {warmup}")
    if batch_size is not None and batch_size < 1:
        raise BenchError(f"--batch-size must be positive, got {batch_size}")
    config = Path(config) if config is not None else default_config(model)
    with tempfile.TemporaryDirectory(prefix="psgvlm-bench-train-", dir=work_dir) as scratch:
        values = _config_values(config)
        batch = int(batch_size or values.get("per_device_train_batch_size", 8))
        shards = render_bench_shards(Path(scratch) / "shards", image_size, 4 * batch)
        overrides: dict[str, Any] = {
            "model": model,
            "image_size": f"{image_size[0]}x{image_size[1]}",
            "train_shards": str(shards / "train-*.tar"),
            "eval_shards": None,
            "output_dir": str(Path(scratch) / "run"),
            "max_steps": steps,
            "per_device_train_batch_size": batch,
            "gradient_accumulation_steps": 1,
            "warmup_steps": min(int(values.get("warmup_steps", 0)), steps),
            "logging_steps": 1,
            "save_steps": steps,
            "shuffle_buffer": 4 * batch,
            "dataloader_num_workers": 0,
            "eval_strategy": "no",
            "report_to": "none",
        }
        if tiny_cache_dir is not None:
            overrides["tiny_cache_dir"] = str(tiny_cache_dir)
        argv = ["--config", str(config)]
        for key, value in overrides.items():
            argv += [f"--{key}", "null" if value is None else str(value)]
        model_args, lora_args, data_args, train_args = parse_config(argv)
        started = time.perf_counter()
        with PeakRSS(interval=0.05) as peak:
            train(model_args, lora_args, data_args, train_args)
        wall = time.perf_counter() - started
        log = [
            json.loads(line)
            for line in (Path(train_args.output_dir) / "log.jsonl").read_text().splitlines()
        ]
    per_step = [entry for entry in log if "samples_per_s" in entry]
    measured = per_step[warmup:]
    if not measured:
        raise BenchError(f"the training log holds {len(per_step)} steps; expected {steps}")
    import torch

    threads = train_args.num_threads if not torch.cuda.is_available() else None
    return {
        "benchmark": "train",
        "model": model,
        "config": str(config),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "gpu": _gpu_name(),
        "torch_threads": threads,
        "image_size": list(image_size),
        "batch_size": batch,
        "steps": steps,
        "warmup_steps_excluded": warmup,
        "lora": {
            "r": lora_args.lora_r,
            "alpha": lora_args.lora_alpha,
            "targets": lora_args.lora_targets,
            "vision": lora_args.lora_vision,
            "modules_to_save": list(lora_args.modules_to_save),
        },
        "quantization": model_args.quantization,
        "dtype": model_args.dtype,
        "samples_per_s": summarize([e["samples_per_s"] for e in measured]),
        "s_per_step": summarize([e["s_per_step"] for e in measured]),
        "loss_first_last": [per_step[0].get("loss"), per_step[-1].get("loss")],
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(peak.bytes / 2**20, 1),
        "machine": machine_info(MODEL_LIBRARIES, gpu=_gpu_name()),
    }


def bench_infer(
    model: str = "tiny:qwen2vl",
    *,
    adapter: str | Path | None = None,
    epochs: int = 32,
    batch_size: int = 8,
    repeats: int = 3,
    image_size: tuple[int, int] = (448, 224),
    device: str | None = None,
    quantization: str | None = None,
    threads: int = 1,
    tiny_cache_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Time :func:`vlm.scoring.score_candidates` over rendered epochs; return the report dict.

    Parameters
    ----------
    model : str
        Hub id, local directory or ``tiny:qwen2vl`` / ``tiny:llava``.
    adapter : path, optional
        A saved LoRA adapter to stage with.
    epochs, batch_size, repeats : int
        Epochs scored per repetition, epochs per forward pass, timed repetitions (after
        one warm-up batch).
    image_size : (int, int)
        Rendered image ``(width, height)``.
    device : str, optional
        ``cpu`` / ``cuda`` (default: CUDA when available).
    quantization : {None, "4bit", "8bit"}
    threads : int
        torch threads on the CPU.
    tiny_cache_dir : path, optional
        Where ``tiny:`` models are built (default: ``$PSGVLM_CACHE_DIR/tiny``, see
        :func:`vlm.model.resolve_model_id`).
    work_dir : path, optional
        Scratch folder for the shards (default: a temporary folder).
    """
    import torch

    from vlm.data import build_question, expand_shards, read_samples
    from vlm.model import load_model_and_processor, resolve_model_id
    from vlm.scoring import score_candidates

    for name, value in (("epochs", epochs), ("batch-size", batch_size), ("repeats", repeats),
                        ("threads", threads)):  # fmt: skip
        if value < 1:
            raise BenchError(f"--{name} must be positive, got {value}")
    device = _torch_device(device)
    if device == "cpu":
        torch.set_num_threads(threads)
    path = resolve_model_id(model, image_size, tiny_cache_dir)
    with tempfile.TemporaryDirectory(prefix="psgvlm-bench-infer-", dir=work_dir) as scratch:
        shards = render_bench_shards(Path(scratch) / "shards", image_size, epochs)
        samples = read_samples(expand_shards(shards, "train"), limit=epochs)
    if len(samples) < epochs:
        raise BenchError(f"rendered {len(samples)} scored epochs, fewer than --epochs {epochs}")
    images = [s["image"] for s in samples]
    prompts = [build_question(s["meta"]) for s in samples]
    with PeakRSS(interval=0.05) as peak:
        loaded = time.perf_counter()
        net, processor, family = load_model_and_processor(
            path, adapter=adapter, quantization=quantization, device=device
        )
        load_s = time.perf_counter() - loaded
        warm = min(batch_size, epochs)
        score_candidates(net, processor, images[:warm], prompts[:warm], batch_size=batch_size)
        rates = []
        for _ in range(repeats):
            started = time.perf_counter()
            probs = score_candidates(net, processor, images, prompts, batch_size=batch_size)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            rates.append(epochs / (time.perf_counter() - started))
    return {
        "benchmark": "infer",
        "model": model,
        "family": family,
        "adapter": str(adapter) if adapter else None,
        "device": device,
        "gpu": _gpu_name(),
        "torch_threads": threads if device == "cpu" else None,
        "image_size": list(image_size),
        "epochs": epochs,
        "batch_size": batch_size,
        "candidates": int(probs.shape[1]),
        "quantization": quantization,
        "epochs_per_s": summarize(rates),
        "load_s": round(load_s, 2),
        "peak_rss_mb": round(peak.bytes / 2**20, 1),
        "machine": machine_info(MODEL_LIBRARIES, gpu=_gpu_name()),
    }


def _range(summary: dict[str, float]) -> str:
    return f"{format_rate(summary['min'])}–{format_rate(summary['max'])}"


def _markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    where = machine["gpu"] or f"{machine['cpu']}, {report['torch_threads']} torch thread(s)"
    lines = [
        f"# psgvlm {report['benchmark']} throughput",
        "",
        f"- model: `{report['model']}` on {report['device']} ({where})",
        f"- image {report['image_size'][0]}x{report['image_size'][1]}, "
        f"batch {report['batch_size']}",
        f"- command: `{machine['command']}`",
        f"- {machine['date']}, load average {machine['load_average']}, git {short_commit(machine)}",
        "",
    ]
    if report["benchmark"] == "train":
        rate, step = report["samples_per_s"], report["s_per_step"]
        lines.append(
            markdown_table(
                ["measure", "median", "min–max", "steps", "peak RSS MiB"],
                [
                    [
                        "samples/s",
                        format_rate(rate["median"]),
                        _range(rate),
                        rate["repeats"],
                        report["peak_rss_mb"],
                    ],
                    [
                        "s/step",
                        f"{step['median']:.3f}",
                        f"{step['min']:.3f}–{step['max']:.3f}",
                        step["repeats"],
                        report["peak_rss_mb"],
                    ],
                ],
            )  # fmt: skip
        )
        lora = report["lora"]
        lines += [
            "",
            f"LoRA r={lora['r']} alpha={lora['alpha']} targets={lora['targets']} "
            f"vision={lora['vision']} modules_to_save={lora['modules_to_save']}; "
            f"quantization {report['quantization']}, dtype {report['dtype']}; "
            f"{report['warmup_steps_excluded']} warm-up step(s) excluded; "
            "forward + backward + optimizer step, data loading included.",
        ]
    else:
        rate = report["epochs_per_s"]
        lines.append(
            markdown_table(
                ["measure", "median", "min–max", "repeats", "peak RSS MiB"],
                [
                    [
                        "epochs/s",
                        format_rate(rate["median"]),
                        _range(rate),
                        rate["repeats"],
                        report["peak_rss_mb"],
                    ]
                ],
            )  # fmt: skip
        )
        lines += [
            "",
            f"score_candidates over {report['epochs']} epochs x {report['candidates']} candidate "
            f"answers; adapter {report['adapter']}; model load {report['load_s']} s (excluded).",
        ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser, which: str = "train") -> None:
    """Options of ``psgvlm bench train`` (``which="train"``) or ``psgvlm bench infer``."""
    if which not in ("train", "infer"):
        raise BenchError(f"unknown model benchmark {which!r}; expected train or infer")
    parser.add_argument(
        "--model", default="tiny:qwen2vl", help="hub id, directory or tiny:qwen2vl (default)"
    )
    parser.add_argument("--image-size", default="448x224", help="WIDTHxHEIGHT of the renders")
    parser.add_argument("--batch-size", type=int, help="samples per step / forward pass")
    parser.add_argument("--tiny-cache-dir", type=Path, help="where tiny: models are built")
    parser.add_argument(
        "--out", type=Path, help="report directory (default: bench/results/MACHINE)"
    )
    if which == "train":
        parser.add_argument("--config", type=Path, help="training YAML (default: shipped one)")
        parser.add_argument("--steps", type=int, default=12, help="training steps (default 12)")
        parser.add_argument("--warmup", type=int, default=2, help="first steps left out")
    else:
        parser.add_argument("--adapter", type=Path, help="LoRA adapter directory")
        parser.add_argument("--epochs", type=int, default=32, help="epochs per repetition")
        parser.add_argument("--repeats", type=int, default=3, help="timed repetitions")
        parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
        parser.add_argument("--quantization", choices=("4bit", "8bit"), help="bitsandbytes")
        parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")


def run(args: argparse.Namespace) -> int:
    """Run ``psgvlm bench train`` or ``psgvlm bench infer`` and write its report."""
    size = parse_size(args.image_size)
    if args.which == "train":
        report = bench_train(
            args.model, config=args.config, steps=args.steps, warmup=args.warmup,
            batch_size=args.batch_size, image_size=size, tiny_cache_dir=args.tiny_cache_dir,
        )  # fmt: skip
        summary = report["samples_per_s"]
        headline = f"{format_rate(summary['median'])} samples/s"
    else:
        report = bench_infer(
            args.model, adapter=args.adapter, epochs=args.epochs,
            batch_size=args.batch_size or 8, repeats=args.repeats, image_size=size,
            device=args.device, quantization=args.quantization, threads=args.threads,
            tiny_cache_dir=args.tiny_cache_dir,
        )  # fmt: skip
        summary = report["epochs_per_s"]
        headline = f"{format_rate(summary['median'])} epochs/s"
    out = report_dir(args.out, report["machine"])
    json_path, md_path = write_report(out, args.which, report, _markdown(report))
    print(f"{args.which}: {headline} (min {format_rate(summary['min'])}, "
          f"max {format_rate(summary['max'])}); wrote {json_path} and {md_path}")  # fmt: skip
    return 0
