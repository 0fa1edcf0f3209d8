"""LoRA / QLoRA fine-tuning of a vision-language model on rendered PSG shards.

Run it (one process, or as many as the accelerate config says)::

    accelerate launch vlm/train.py --config vlm/configs/qwen2vl_lora.yaml
    accelerate launch --config_file vlm/configs/accelerate_multi_cpu.yaml \\
        vlm/train.py --config vlm/configs/tiny_cpu.yaml --max_steps 50
    psgvlm train --config vlm/configs/tiny_cpu.yaml --output_dir runs/tiny      # in-process
    psgvlm train --launch --accelerate_config vlm/configs/accelerate_ddp.yaml \\
        --config vlm/configs/qwen2vl_lora.yaml                                  # via accelerate

Settings come from the dataclasses below: defaults, then the YAML file given by
``--config`` (flat ``key: value``), then ``--key value`` options. ``model: tiny:qwen2vl``
(or ``tiny:llava``) builds a tiny random model into ``tiny_cache_dir`` on first use, so the
tiny configs run on a fresh clone without downloads.

The loop: AdamW on the trainable parameters, cosine schedule with linear warmup, gradient
accumulation and clipping; the loss is each sample's mean answer-token cross-entropy,
weighted per class when ``class_weights: auto``. ``Accelerator(mixed_precision=None)`` so
``accelerate launch --mixed_precision`` is respected; on CPU each process uses
``num_threads`` torch threads (default 1). Logs (loss, lr, samples/s) go to the console,
``output_dir/log.jsonl`` and TensorBoard when installed. Every ``save_steps`` and at the end,
``output_dir/checkpoint-NNNNNN/`` holds the adapter (safetensors) + processor, the
accelerator state (optimizer, scheduler, RNG, trainable weights only) and
``trainer_state.json``; ``--resume auto`` continues from the latest one at its step (the
resampled data stream is reseeded with that step, see :mod:`vlm.data`). The final adapter
is ``output_dir/adapter``. Every adapter folder also gets ``render.json``, the shards'
render parameters (:class:`vlm.stage.RenderConfig`), so ``psgvlm stage/ask/chat/eval`` draw
new epochs the same way without the training shards.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a script: `accelerate launch vlm/train.py`
    _here = Path(__file__).resolve().parent
    # vlm/ itself must not shadow packages (`evaluate`, `data`, `model`) on sys.path.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
import typing  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402

from engine.errors import ModelError, PSGError  # noqa: E402
from vlm.model import QUANTIZATIONS, LoraArgs  # noqa: E402

__all__ = [
    "ModelArgs",
    "LoraArgs",
    "DataArgs",
    "TrainArgs",
    "parse_config",
    "latest_checkpoint",
    "train",
    "main",
    "add_arguments",
    "run",
]

logger = logging.getLogger("vlm.train")


@dataclass
class ModelArgs:
    """Which model to fine-tune and how to load it."""

    model: str = "tiny:qwen2vl"
    family: str | None = None
    quantization: str | None = None
    dtype: str = "auto"
    gradient_checkpointing: bool = False
    image_size: str = "224x224"
    tiny_cache_dir: str = "~/.cache/psgvlm/tiny"

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATIONS:
            raise ModelError(f"quantization {self.quantization!r}: expected 4bit, 8bit or null")


@dataclass
class DataArgs:
    """Which shards, what the assistant answers, and class balance."""

    train_shards: str = ""
    eval_shards: str | None = None
    answer_mode: str = "label"
    class_weights: str = "none"
    shuffle_buffer: int = 1000
    num_workers: int = 0
    eval_limit: int = 200

    def __post_init__(self) -> None:
        if self.class_weights not in ("auto", "none"):
            raise PSGError(f"class_weights {self.class_weights!r}: expected auto or none")


@dataclass
class TrainArgs:
    """Optimisation, logging and checkpointing."""

    output_dir: str = "runs/vlm"
    max_steps: int = 300
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_grad_norm: float = 1.0
    logging_steps: int = 10
    save_steps: int = 100
    eval_steps: int = 0
    seed: int = 0
    resume: str | None = None
    num_threads: int = 1

    def __post_init__(self) -> None:
        for name in (
            "max_steps",
            "per_device_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "save_steps",
            "num_threads",
        ):
            if getattr(self, name) <= 0:
                raise PSGError(f"{name} must be positive, got {getattr(self, name)}")


_SECTIONS = (ModelArgs, LoraArgs, DataArgs, TrainArgs)


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _none_or(kind):
    def convert(text: str):
        return None if str(text).lower() in ("none", "null") else kind(text)

    return convert


def _add_fields(parser: argparse.ArgumentParser) -> None:
    for section in _SECTIONS:
        group = parser.add_argument_group(section.__name__)
        hints = typing.get_type_hints(section)
        for f in dataclasses.fields(section):
            kind = hints[f.name]
            args = typing.get_args(kind)
            optional = isinstance(kind, types.UnionType) and type(None) in args
            if optional:
                kind = next(a for a in args if a is not type(None))
            opts: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": f.name}
            if kind is bool:
                opts.update(type=_bool, nargs="?", const=True, metavar="BOOL")
            elif typing.get_origin(kind) is list:
                opts.update(nargs="*", type=str)
            else:
                opts["type"] = _none_or(kind) if optional else kind
            group.add_argument(f"--{f.name}", **opts)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="YAML file of settings (flat key: value)")
    _add_fields(parser)
    return parser


def _sections_from(values: dict[str, Any]) -> tuple[ModelArgs, LoraArgs, DataArgs, TrainArgs]:
    known = {f.name for s in _SECTIONS for f in dataclasses.fields(s)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PSGError(f"unknown settings {unknown}")
    return tuple(  # type: ignore[return-value]
        s(**{f.name: values[f.name] for f in dataclasses.fields(s) if f.name in values})
        for s in _SECTIONS
    )


def _merge(config: Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if config is not None:
        try:
            loaded = yaml.safe_load(Path(config).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise PSGError(f"cannot read config {config}: {err}") from None
        if not isinstance(loaded, dict):
            raise PSGError(f"{config}: expected a mapping of settings")
        values.update(loaded)
    values.update(overrides)
    return values


def parse_config(argv: list[str] | None = None) -> tuple[ModelArgs, LoraArgs, DataArgs, TrainArgs]:
    """Settings from defaults, ``--config FILE.yaml`` and ``--key value`` overrides."""
    namespace = vars(_build_parser().parse_args(argv))
    config = namespace.pop("config", None)
    return _sections_from(_merge(config, namespace))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The highest-step ``checkpoint-*`` directory with a ``trainer_state.json``, if any."""
    found = [
        p for p in Path(output_dir).glob("checkpoint-*") if (p / "trainer_state.json").is_file()
    ]
    return max(
        found,
        key=lambda p: json.loads((p / "trainer_state.json").read_text())["step"],
        default=None,
    )


def _resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    if resume is None or resume.lower() in ("none", "false", ""):
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise PSGError(f"resume {resume}: not a checkpoint directory (no trainer_state.json)")
    return path


class _Logger:
    """Console + JSONL (+ TensorBoard when installed) metrics, main process only."""

    def __init__(self, output_dir: Path, active: bool) -> None:
        self.active = active
        self.jsonl = None
        self.tensorboard = None
        if not active:
            return
        self.jsonl = open(output_dir / "log.jsonl", "a")  # noqa: SIM115 (closed in close())
        if importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(output_dir / "tensorboard"))

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.active:
            return
        logger.info("step %d: %s", step, " ".join(f"{k}={v:.4g}" for k, v in values.items()))
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _sample_loss(model, batch: dict[str, Any]):
    import torch
    import torch.nn.functional as F

    from vlm.data import NON_MODEL_KEYS

    inputs = {k: v for k, v in batch.items() if k not in NON_MODEL_KEYS}
    logits = model(**inputs, use_cache=False).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    mask = targets != -100
    token_loss = F.cross_entropy(logits[mask].float(), targets[mask], reduction="none")
    rows = torch.nonzero(mask)[:, 0]
    per_sample = torch.zeros(mask.shape[0], device=logits.device).index_add(0, rows, token_loss)
    per_sample = per_sample / mask.sum(1).clamp(min=1)
    weight = batch.get("sample_weight")
    return per_sample.mean() if weight is None else (per_sample * weight).mean()


def _render_config(urls: list[str], answer_mode: str):
    """The shards' :class:`vlm.stage.RenderConfig`, or None (with a warning) when their
    metadata does not hold render parameters (shards not written by ``psgvlm render``)."""
    from vlm.render_setup import RENDER_CONFIG_NAME, RenderConfig

    try:
        return RenderConfig.from_shards(urls, answer_mode)
    except PSGError as err:
        logger.warning(
            "%s; no %s is saved with the adapter: give psgvlm stage/ask/chat --render-config",
            err,
            RENDER_CONFIG_NAME,
        )
        return None


def _save_adapter(model, processor, render_config, adapter: Path) -> None:
    """Adapter weights + processor (+ ``render.json``) into ``adapter``; main process only."""
    model.save_pretrained(adapter, safe_serialization=True)
    processor.save_pretrained(adapter)
    if render_config is not None:
        render_config.save(adapter)


def _save_checkpoint(
    accelerator, model, processor, render_config, ckpt: Path, state: dict[str, Any]
) -> None:
    accelerator.save_state(str(ckpt / "state"))
    if accelerator.is_main_process:
        _save_adapter(accelerator.unwrap_model(model), processor, render_config, ckpt / "adapter")
        (ckpt / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n")
    accelerator.wait_for_everyone()


def train(
    model_args: ModelArgs, lora_args: LoraArgs, data_args: DataArgs, train_args: TrainArgs
) -> Path:
    """Fine-tune and return the final adapter directory (see the module docstring)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import get_cosine_schedule_with_warmup

    from vlm.data import (
        ChatCollator,
        balanced_class_weights,
        count_classes,
        expand_shards,
        make_dataset,
        read_samples,
    )
    from vlm.evaluate import evaluate_samples
    from vlm.model import load_model_and_processor
    from vlm.tiny import parse_image_size, resolve_tiny_model

    if not data_args.train_shards:
        raise PSGError("train_shards is not set (a shard glob or a directory)")
    # cpu=True without CUDA: under torchrun-style launchers (LOCAL_RANK set) this selects
    # MULTI_CPU with gloo instead of silently running every process as rank 0.
    accelerator = Accelerator(
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        mixed_precision=None,
        cpu=not torch.cuda.is_available(),
    )
    if accelerator.device.type == "cpu":
        torch.set_num_threads(train_args.num_threads)
    set_seed(train_args.seed)
    output_dir = Path(train_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    resume_from = _resolve_resume(train_args.resume, output_dir)

    with accelerator.main_process_first():
        model_path = resolve_tiny_model(
            model_args.model,
            Path(model_args.tiny_cache_dir).expanduser(),
            parse_image_size(model_args.image_size),
        )
    model, processor, family = load_model_and_processor(
        model_path,
        family=model_args.family,
        quantization=model_args.quantization,
        dtype=model_args.dtype,
        lora=lora_args,
        device=str(accelerator.device),
        gradient_checkpointing=model_args.gradient_checkpointing,
    )
    if accelerator.is_main_process:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        logger.info(
            "%s (%s): %d of %d parameters trainable; %d process(es), %s",
            model_path,
            family,
            trainable,
            total,
            accelerator.num_processes,
            accelerator.device,
        )
        settings = {
            k: v
            for s in (model_args, lora_args, data_args, train_args)
            for k, v in dataclasses.asdict(s).items()
        }
        (output_dir / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))

    urls = expand_shards(data_args.train_shards, "train")
    render_config = (
        _render_config(urls, data_args.answer_mode) if accelerator.is_main_process else None
    )
    weights = None
    if data_args.class_weights == "auto":
        counts = count_classes(urls)
        weights = balanced_class_weights(counts)
        logger.info(
            "class counts %s -> loss weights %s", counts.tolist(), weights.round(3).tolist()
        )
    collator = ChatCollator(processor, data_args.answer_mode, weights)
    eval_samples = []
    if data_args.eval_shards and train_args.eval_steps > 0 and accelerator.is_main_process:
        eval_samples = read_samples(
            expand_shards(data_args.eval_shards, "val"), limit=data_args.eval_limit
        )

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=train_args.learning_rate, weight_decay=train_args.weight_decay
    )
    # The prepared scheduler steps once per process per optimizer step.
    scheduler = get_cosine_schedule_with_warmup(
        optimizer,
        train_args.warmup_steps * accelerator.num_processes,
        train_args.max_steps * accelerator.num_processes,
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}

    def keep_trainable(models, weights_list, _output_dir):
        for i, state in enumerate(weights_list):
            weights_list[i] = {k: v for k, v in state.items() if k in trainable_names}

    accelerator.register_save_state_pre_hook(keep_trainable)

    step, samples_seen = 0, 0
    if resume_from is not None:
        state = json.loads((resume_from / "trainer_state.json").read_text())
        accelerator.load_state(str(resume_from / "state"), strict=False)
        step, samples_seen = int(state["step"]), int(state["samples_seen"])
        logger.info("resumed from %s at step %d (%d samples seen)", resume_from, step, samples_seen)
    if step >= train_args.max_steps:
        logger.info("nothing to do: step %d >= max_steps %d", step, train_args.max_steps)

    dataset = make_dataset(
        urls, training=True, seed=train_args.seed + step, shuffle_buffer=data_args.shuffle_buffer
    )
    loader = DataLoader(
        dataset,
        batch_size=train_args.per_device_batch_size,
        collate_fn=collator,
        num_workers=data_args.num_workers,
    )
    batches = iter(loader)
    log = _Logger(output_dir, accelerator.is_main_process)
    model.train()
    window_loss, window_batches, window_steps, window_samples = 0.0, 0, 0, 0
    window_start = time.perf_counter()
    while step < train_args.max_steps:
        batch = next(batches)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.accumulate(model):
            loss = _sample_loss(model, batch)
            accelerator.backward(loss)
            if accelerator.sync_gradients and train_args.max_grad_norm > 0:
                accelerator.clip_grad_norm_(params, train_args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        window_loss += loss.detach().float().item()
        window_batches += 1
        window_samples += len(batch["cls"]) * accelerator.num_processes
        if not accelerator.sync_gradients:
            continue
        step += 1
        window_steps += 1
        samples_seen += (
            train_args.per_device_batch_size
            * accelerator.num_processes
            * train_args.gradient_accumulation_steps
        )
        if step % train_args.logging_steps == 0 or step == train_args.max_steps:
            elapsed = time.perf_counter() - window_start
            mean_loss = accelerator.reduce(
                torch.tensor(window_loss / window_batches, device=accelerator.device), "mean"
            ).item()
            log.log(
                step,
                {
                    "loss": mean_loss,
                    "lr": scheduler.get_last_lr()[0],
                    "samples_per_s": window_samples / elapsed,
                    "s_per_step": elapsed / window_steps,
                },
            )
            window_loss, window_batches, window_steps, window_samples = 0.0, 0, 0, 0
            window_start = time.perf_counter()
        if eval_samples and step % train_args.eval_steps == 0:
            y_true, probs = evaluate_samples(
                accelerator.unwrap_model(model), processor, eval_samples
            )
            log.log(step, {"eval_accuracy": float((probs.argmax(1) == y_true).mean())})
        if step % train_args.save_steps == 0 or step == train_args.max_steps:
            _save_checkpoint(
                accelerator,
                model,
                processor,
                render_config,
                output_dir / f"checkpoint-{step:06d}",
                {
                    "step": step,
                    "samples_seen": samples_seen,
                    "max_steps": train_args.max_steps,
                    "seed": train_args.seed,
                },
            )
    log.close()
    final = output_dir / "adapter"
    if accelerator.is_main_process:
        _save_adapter(accelerator.unwrap_model(model), processor, render_config, final)
        logger.info("adapter saved to %s", final)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def main(argv: list[str] | None = None) -> int:
    """Script entry point: parse settings and train."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        train(*parse_config(argv))
    except PSGError as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 2
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm train``: the script's settings plus ``--launch``."""
    parser.add_argument("--config", type=Path, help="YAML file of settings (flat key: value)")
    parser.add_argument(
        "--launch",
        action="store_true",
        help="run through `accelerate launch` instead of in-process",
    )
    parser.add_argument(
        "--accelerate_config",
        type=Path,
        help="accelerate config file for --launch (e.g. accelerate_ddp.yaml)",
    )
    parser.add_argument("--num_processes", type=int, help="processes for --launch")
    _add_fields(parser)


def _to_cli(values: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in values.items():
        if isinstance(value, list):
            out += [f"--{key}", *map(str, value)]
        else:
            out += [f"--{key}", "null" if value is None else str(value)]
    return out


def run(args: argparse.Namespace) -> int:
    """``psgvlm train``: the same main, in-process or through ``accelerate launch``."""
    special = ("config", "launch", "accelerate_config", "num_processes", "command", "verbose")
    overrides = {k: v for k, v in vars(args).items() if k not in special}
    if not args.launch:
        train(*_sections_from(_merge(args.config, overrides)))
        return 0
    _sections_from(_merge(args.config, overrides))  # validate before spawning
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if args.accelerate_config is not None:
        cmd += ["--config_file", str(args.accelerate_config)]
    if args.num_processes is not None:
        cmd += ["--num_processes", str(args.num_processes)]
    cmd += [str(Path(__file__).resolve())]
    if args.config is not None:
        cmd += ["--config", str(args.config)]
    cmd += _to_cli(overrides)
    logger.info("running %s", " ".join(cmd))
    return subprocess.call(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})


if __name__ == "__main__":
    sys.exit(main())
