"""LoRA / QLoRA fine-tuning of a vision-language model on rendered PSG shards.

Run it (one process, or as many as the accelerate config says)::

    accelerate launch vlm/train.py --config vlm/configs/qwen2vl_lora.yaml
    accelerate launch --config_file vlm/configs/accelerate_multi_cpu.yaml \\
        vlm/train.py --config vlm/configs/tiny_cpu.yaml --max_steps 50
    psgvlm train --config vlm/configs/tiny_cpu.yaml --output_dir runs/tiny      # in-process
    psgvlm train --launch --accelerate_config vlm/configs/accelerate_ddp.yaml \\
        --config vlm/configs/qwen2vl_lora.yaml                                  # via accelerate

Settings are the dataclasses below, parsed by ``transformers.HfArgumentParser``: model
(:class:`ModelArgs`), LoRA (:class:`vlm.model.LoraArgs`), data (:class:`DataArgs`) and
training (:class:`TrainingArgs`, i.e. ``transformers.TrainingArguments``: ``report_to``,
``save_total_limit``, ``activation_checkpointing``, ``eval_strategy``, ``deepspeed``,
``fsdp``... with psgvlm's defaults for a few). They come from the defaults, then the YAML
file given by ``--config`` (flat ``key: value``, read as if typed before the other
options), then ``--key value`` options; option names are never abbreviated. ``model:
tiny:qwen2vl`` (or ``tiny:llava``) builds a tiny random model on first use, so the tiny
configs run on a fresh clone without downloads.

Training is :class:`vlm.trainer.StageTrainer` (``transformers.Trainer``): the loss is each
sample's mean answer-token cross-entropy, weighted per class with ``class_weights: auto``;
evaluation (``eval_strategy: steps``) scores the stage labels of the evaluation shards
(``eval_accuracy``). A run directory ``OUTPUT_DIR`` holds ``config.yaml`` (these
settings), ``log.jsonl`` (every log, also shown on the console and sent to ``report_to``),
``checkpoint-N/`` (adapter, processor, optimizer, scheduler and RNG state,
``trainer_state.json``) and the final ``adapter/``. Every adapter folder also gets
``render.json`` (:class:`vlm.render_setup.RenderConfig`, the shards' render parameters),
so ``psgvlm stage/ask/chat/eval`` draw new epochs the same way. An existing run directory
is refused unless ``--resume`` (``auto``: its latest checkpoint, at that step; the shard
stream is reseeded with the step, see :mod:`vlm.data`) or ``--overwrite`` (its checkpoints,
adapter and logs are deleted first) is given.

Errors print one line, ``psgvlm train: error: ...``; under ``accelerate launch`` the
launcher is then stopped (it exits with status 143) instead of printing its traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a script: `accelerate launch vlm/train.py`
    _here = Path(__file__).resolve().parent
    # vlm/ itself must not shadow packages (`data`, `model`) on sys.path.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402
from transformers import TrainingArguments  # noqa: E402
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, IntervalStrategy  # noqa: E402

from engine.errors import PSGError, ShardError  # noqa: E402
from vlm.train_args import (  # noqa: E402
    DataArgs,
    LoraArgs,
    ModelArgs,
    TrainingArgs,
    build_parser,
    parse_config,
)

__all__ = [
    "ModelArgs",
    "LoraArgs",
    "DataArgs",
    "TrainingArgs",
    "build_parser",
    "parse_config",
    "latest_checkpoint",
    "train",
    "main",
    "add_arguments",
    "run",
]

logger = logging.getLogger("vlm.train")

#: What a training run writes into its output directory (``runs``: TensorBoard events).
RUN_FILES: tuple[str, ...] = ("config.yaml", "log.jsonl", "adapter", "runs")


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The highest-step ``checkpoint-N`` directory with a ``trainer_state.json``, if any."""
    found = [
        p
        for p in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if (p / "trainer_state.json").is_file()
    ]
    return max(
        found,
        key=lambda p: json.loads((p / "trainer_state.json").read_text())["global_step"],
        default=None,
    )


def _run_artifacts(output_dir: Path) -> list[Path]:
    if not output_dir.is_dir():
        return []
    named = [output_dir / name for name in RUN_FILES if (output_dir / name).exists()]
    return sorted([*named, *output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")])


def _start_point(args: TrainingArgs) -> Path | None:
    """The checkpoint to resume from (None: step 0), by the run-directory policy.

    Raises
    ------
    PSGError
        For an existing run directory without ``--resume`` / ``--overwrite``, a finished
        run without checkpoints under ``--resume auto``, or a resume path that is not a
        checkpoint.
    """
    output_dir = Path(args.output_dir)
    found = _run_artifacts(output_dir)
    resume = args.resume_from_checkpoint
    if resume is None:
        if found and not args.overwrite:
            names = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
            raise PSGError(
                f"{output_dir} already holds a training run ({names}); pass --resume auto to "
                "continue it, --overwrite to replace it, or another --output_dir"
            )
        return None
    if resume != "auto":
        if not (Path(resume) / "trainer_state.json").is_file():
            raise PSGError(f"--resume {resume}: not a checkpoint directory (no trainer_state.json)")
        return Path(resume)
    checkpoint = latest_checkpoint(output_dir)
    if checkpoint is None and (output_dir / "adapter").exists():
        raise PSGError(
            f"--resume auto: {output_dir} holds a final adapter but no checkpoint to continue "
            "from; pass --overwrite to train it again, or another --output_dir"
        )
    if checkpoint is None:
        logger.info("--resume auto: no checkpoint in %s; starting at step 0", output_dir)
    return checkpoint


def _prepare_output_dir(output_dir: Path, overwrite: bool, step: int) -> None:
    """Main process: delete the old run (``--overwrite``) or drop its logs after ``step``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for path in _run_artifacts(output_dir):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            logger.info("--overwrite: removed %s", path)
    log = output_dir / "log.jsonl"
    if log.is_file():
        rows = [line for line in log.read_text().splitlines() if json.loads(line)["step"] <= step]
        log.write_text("".join(row + "\n" for row in rows))


def _eval_urls(spec: str | None, train_urls: list[str]) -> list[str]:
    """Evaluation shards of ``eval_shards`` (see :class:`DataArgs`); [] for none."""
    from vlm.data import expand_shards

    if spec is None:
        return []
    if spec != "auto":
        try:
            return expand_shards(spec, "val")
        except ShardError as err:
            raise ShardError(f"eval_shards: {err}") from None
    folder = Path(train_urls[0]).parent
    urls = sorted(str(p) for p in folder.glob("val-*.tar")) if "://" not in train_urls[0] else []
    if urls:
        logger.info("eval_shards auto: the %d val shard(s) in %s", len(urls), folder)
    else:
        logger.info("eval_shards auto: no val-*.tar in %s, so no evaluation", folder)
    return urls


def _render_config(urls: list[str], answer_mode: str):
    """The shards' render setup, or None (with a warning) when their metadata lacks it."""
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


def _write_config(path: Path, sections: tuple[Any, ...]) -> None:
    """The run's settings as a YAML file that ``--config`` reads back."""
    settings: dict[str, Any] = {}
    for section in sections:
        if isinstance(section, TrainingArguments):
            settings.update(section.to_dict())
        else:
            settings.update(dataclasses.asdict(section))
    path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")


@dataclasses.dataclass
class _Inputs:
    """What :func:`train` checked before loading the model."""

    resume: Path | None  # checkpoint to resume from
    step: int  # its step (0: a new run)
    urls: list[str]  # training shards
    eval_samples: list[dict[str, Any]]  # the same on every process
    weights: Any  # per-class loss weights (numpy array) or None


def _check_inputs(data_args: DataArgs, args: TrainingArgs) -> _Inputs:
    """The run directory policy, the shards and the evaluation samples, checked.

    Turns evaluation off (saying why) when there are no evaluation shards.
    """
    from vlm.data import balanced_class_weights, count_classes, expand_shards, read_samples

    if not data_args.train_shards:
        raise ShardError("train_shards is not set (a shard glob or a directory)")
    resume = _start_point(args)
    step = 0
    if resume is not None:
        step = json.loads((resume / "trainer_state.json").read_text())["global_step"]
    urls = expand_shards(data_args.train_shards, "train")
    eval_urls = _eval_urls(data_args.eval_shards, urls)
    wants_eval = args.eval_strategy != IntervalStrategy.NO
    if args.load_best_model_at_end and not eval_urls:
        raise PSGError("early stopping / load_best_model_at_end needs eval_shards")
    if wants_eval and not eval_urls:
        logger.info("no evaluation shards: evaluation off")
        args.eval_strategy = IntervalStrategy.NO
    elif eval_urls and not wants_eval:
        logger.info("eval_strategy is no: the evaluation shards are not used")
    eval_samples = []
    if eval_urls and wants_eval:
        logger.info("reading up to %d evaluation samples", data_args.eval_limit)
        eval_samples = read_samples(eval_urls, data_args.eval_limit, split_by_node=False)
        if not eval_samples:
            raise ShardError(f"eval_shards: no scored samples in {len(eval_urls)} shard(s)")
    weights = None
    if data_args.class_weights == "auto":
        logger.info("counting classes in %d shard(s)", len(urls))
        counts = count_classes(urls)
        weights = balanced_class_weights(counts)
        logger.info(
            "class counts %s -> loss weights %s", counts.tolist(), weights.round(3).tolist()
        )
    return _Inputs(resume, step, urls, eval_samples, weights)


def train(
    model_args: ModelArgs, lora_args: LoraArgs, data_args: DataArgs, args: TrainingArgs
) -> Path:
    """Fine-tune and return the final adapter directory (see the module docstring).

    The run directory, the shards and the evaluation samples are checked before the
    model loads.

    Raises
    ------
    PSGError
        For a refused run directory, missing shards, corrupt evaluation samples, and
        model or adapter errors.
    """
    import torch
    from accelerate import PartialState

    if args.device.type == "cpu":  # also sets up the processes as the arguments say
        torch.set_num_threads(args.num_threads)
    state = PartialState()
    if not state.is_main_process:
        logging.getLogger("vlm").setLevel(logging.WARNING)
    inputs = _check_inputs(data_args, args)
    output_dir = Path(args.output_dir)
    state.wait_for_everyone()  # every process has checked the run directory
    render_config = None
    if state.is_main_process:
        render_config = _render_config(inputs.urls, data_args.answer_mode)
        _prepare_output_dir(output_dir, args.overwrite, inputs.step)
        _write_config(output_dir / "config.yaml", (model_args, lora_args, data_args, args))

    from transformers import EarlyStoppingCallback, set_seed

    from vlm.data import ChatCollator, make_dataset
    from vlm.model import load_model_and_processor, resolve_model_id
    from vlm.tiny import parse_image_size
    from vlm.trainer import JsonlLog, SaveRenderSetup, StageTrainer

    set_seed(args.seed)
    logger.info("loading %s (tiny: models are built on first use)", model_args.model)
    with args.main_process_first(local=True, desc="resolving the model"):
        name = resolve_model_id(
            model_args.model, parse_image_size(model_args.image_size), model_args.tiny_cache_dir
        )
    model, processor, family = load_model_and_processor(
        name,
        family=model_args.family,
        quantization=model_args.quantization,
        dtype=model_args.dtype,
        lora=lora_args,
        device=str(args.device),
        gradient_checkpointing=bool(args.activation_checkpointing),
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info(
        "%s (%s): %d of %d parameters trainable; %d process(es) on %s, from step %d",
        name, family, trainable, total, args.world_size, args.device, inputs.step,
    )  # fmt: skip
    callbacks = [JsonlLog(output_dir / "log.jsonl"), SaveRenderSetup(render_config)]
    if args.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(args.early_stopping_patience))
    trainer = StageTrainer(
        model=model,
        args=args,
        data_collator=ChatCollator(processor, data_args.answer_mode, inputs.weights),
        train_dataset=make_dataset(
            inputs.urls,
            training=True,
            seed=args.seed + inputs.step,
            shuffle_buffer=data_args.shuffle_buffer,
        ),
        eval_dataset=inputs.eval_samples or None,
        processing_class=processor,
        callbacks=callbacks,
    )
    resume = None if inputs.resume is None else str(inputs.resume)
    if inputs.step < args.max_steps:
        trainer.train(resume_from_checkpoint=resume)
    else:  # Trainer would take one more step
        logger.info("step %d >= max_steps %d: the adapter is the checkpoint's", inputs.step,
                    args.max_steps)  # fmt: skip
        model.load_adapter(resume, model.active_adapter, is_trainable=True)
    final = output_dir / "adapter"
    trainer.save_model(str(final))
    if state.is_main_process and render_config is not None:
        render_config.save(final)
    logger.info("adapter saved to %s", final)
    state.wait_for_everyone()
    return final


def _accelerate_launcher():
    """The ``accelerate launch`` process that started this one, or None."""
    import psutil

    try:
        parent = psutil.Process(os.getppid())
        command = parent.cmdline()
    except psutil.Error:
        return None
    names = [Path(part).name for part in command[:3]]
    launcher = "accelerate.commands.launch" in command or "accelerate-launch" in names
    return parent if launcher or ("accelerate" in names and "launch" in command) else None


def _wait_drained(fd: int, timeout_s: float = 2.0) -> None:
    """Wait until the reader of pipe ``fd`` has taken what was written (FIONREAD == 0)."""
    import fcntl
    import struct
    import termios

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            pending = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:  # not a pipe
            return
        if not struct.unpack("i", pending)[0]:
            return
        time.sleep(0.02)


def _fail(message: str, grace_s: float = 10.0) -> int:
    """Print ``psgvlm train: error: MESSAGE`` once; stop an ``accelerate launch`` parent.

    The launcher tees the child's stderr; once it has copied the line it is sent SIGTERM,
    stops every process and exits with status 143 without printing a traceback of the
    failed child. The other ranks, which fail the same way on the same settings, wait to
    be stopped; a rank that fails alone reports after ``grace_s``.
    """
    line = f"psgvlm train: error: {message}"
    rank = int(os.environ.get("RANK", "0"))
    launcher = _accelerate_launcher()
    if rank == 0 or launcher is None:
        print(line, file=sys.stderr, flush=True)
    if launcher is not None:
        if rank == 0:
            _wait_drained(sys.stderr.fileno())
            time.sleep(0.1)  # the launcher writes out what it read before the signal lands
            launcher.send_signal(signal.SIGTERM)
        time.sleep(grace_s)
        if rank != 0:
            print(line, file=sys.stderr, flush=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Script entry point (``accelerate launch vlm/train.py ...``): parse settings, train."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        train(*parse_config(argv, description=__doc__))
    except PSGError as err:
        return _fail(str(err))
    return 0


_SPECIAL = ("config", "launch", "accelerate_config", "num_processes", "command", "verbose")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm train``: the script's settings plus ``--launch``.

    Settings not given stay out of the namespace, so that :func:`run` can put the
    ``--config`` file under them.
    """
    parser.allow_abbrev = False
    parser.usage = "psgvlm train [--config YAML] [--launch] [--SETTING VALUE ...] (see --help)"
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    group = parser.add_argument_group("psgvlm train")
    group.add_argument(
        "--launch",
        action="store_true",
        help="run through `accelerate launch` instead of in-process (default: false)",
    )
    group.add_argument(
        "--accelerate_config",
        type=Path,
        help="accelerate config file for --launch, e.g. accelerate_ddp.yaml (default: none)",
    )
    group.add_argument(
        "--num_processes", type=int, help="processes for --launch (default: the config's)"
    )
    source = build_parser(add_help=False, description=__doc__)
    parser._add_container_actions(source)  # the settings, with their groups and help
    for action in source._actions:
        action.default = argparse.SUPPRESS


def _to_cli(values: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in values.items():
        if isinstance(value, list):
            out += [f"--{key}", *map(str, value)]
        elif isinstance(value, bool):
            out += [f"--{key}", str(value).lower()]
        else:
            out += [f"--{key}", "null" if value is None else str(value)]
    return out


def run(args: argparse.Namespace) -> int:
    """``psgvlm train``: the same settings, in-process or through ``accelerate launch``."""
    argv = [] if getattr(args, "config", None) is None else ["--config", str(args.config)]
    argv += _to_cli({k: v for k, v in vars(args).items() if k not in _SPECIAL})
    sections = parse_config(argv, description=__doc__)
    if not args.launch:
        train(*sections)
        return 0
    _start_point(sections[3])  # refuse an existing run directory before spawning
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if args.accelerate_config is not None:
        cmd += ["--config_file", str(args.accelerate_config)]
    if args.num_processes is not None:
        cmd += ["--num_processes", str(args.num_processes)]
    cmd += [str(Path(__file__).resolve()), *argv]
    logger.info("running %s", " ".join(cmd))
    return subprocess.call(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})


if __name__ == "__main__":
    sys.exit(main())
