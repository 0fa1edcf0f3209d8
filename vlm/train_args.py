"""Settings of ``vlm/train.py``: four dataclasses parsed by ``transformers.HfArgumentParser``.

:class:`ModelArgs`, :class:`vlm.model.LoraArgs`, :class:`DataArgs` and
:class:`TrainingArgs` (``transformers.TrainingArguments`` with psgvlm's defaults for a few
settings, three of its own: ``overwrite``, ``num_threads``, ``early_stopping_patience``,
and ``--resume`` for ``resume_from_checkpoint``). :func:`parse_config` reads the defaults, then the YAML file
given by ``--config`` (flat ``key: value``, read as if typed before the other options),
then the ``--key value`` options. Option names are never abbreviated (``--max_step`` is an
error, not ``--max_steps``); every option's help ends with its default; ``null`` / ``none``
unset a psgvlm setting that may be unset (transformers reads its own settings).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, SchedulerType, TrainingArguments

from engine.errors import ModelError, PSGError
from vlm.model import QUANTIZATIONS, LoraArgs

__all__ = [
    "ModelArgs",
    "LoraArgs",
    "DataArgs",
    "TrainingArgs",
    "SECTIONS",
    "build_parser",
    "parse_config",
]


def _help(text: str) -> dict[str, Any]:
    return {"help": text}


@dataclass
class ModelArgs:
    """Which model to fine-tune and how to load it."""

    _argument_group_name = "model"

    model: str = field(
        default="tiny:qwen2vl",
        metadata=_help("Hub id, local model directory, or tiny:qwen2vl / tiny:llava"),
    )
    family: str | None = field(
        default=None, metadata=_help("qwen2vl or llava, checked against the config")
    )
    quantization: str | None = field(
        default=None, metadata=_help("4bit (QLoRA, NF4) or 8bit base weights; null: none")
    )
    dtype: str = field(
        default="auto", metadata=_help("weights dtype: auto (bf16 on GPU, fp32 on CPU) or a name")
    )
    image_size: str = field(
        default="224x224", metadata=_help("WIDTHxHEIGHT of the shard images (builds tiny models)")
    )
    tiny_cache_dir: str | None = field(
        default=None,
        metadata=_help("where tiny: models are built; null: $PSGVLM_CACHE_DIR/tiny"),
    )

    def __post_init__(self) -> None:
        from vlm.tiny import parse_image_size

        if self.quantization not in QUANTIZATIONS:
            raise ModelError(f"quantization {self.quantization!r}: expected 4bit, 8bit or null")
        parse_image_size(self.image_size)


@dataclass
class DataArgs:
    """Which shards, what the assistant answers, and class balance."""

    _argument_group_name = "data"

    train_shards: str = field(
        default="", metadata=_help("training shards: a glob, a brace pattern or a directory")
    )
    eval_shards: str | None = field(
        default="auto",
        metadata=_help(
            "evaluation shards (glob or directory; must exist); auto: the val-*.tar beside "
            "the training shards when there are any; null: no evaluation"
        ),
    )
    answer_mode: str = field(
        default="label", metadata=_help("assistant answer: label, or evidence (label + reason)")
    )
    class_weights: str = field(
        default="none", metadata=_help("auto: inverse-frequency loss weight per class; none")
    )
    shuffle_buffer: int = field(
        default=1000, metadata=_help("samples held by each stream's shuffle buffer")
    )
    eval_limit: int = field(
        default=200, metadata=_help("evaluate on at most this many samples (the first ones)")
    )

    def __post_init__(self) -> None:
        if self.class_weights not in ("auto", "none"):
            raise PSGError(f"class_weights {self.class_weights!r}: expected auto or none")
        if self.shuffle_buffer < 1 or self.eval_limit < 1:
            raise PSGError("shuffle_buffer and eval_limit must be positive")


@dataclass
class TrainingArgs(TrainingArguments):
    """``transformers.TrainingArguments`` with psgvlm's defaults and options.

    A stream has no epochs, so ``max_steps`` counts the training; ``ignore_data_skip``
    defaults to true because a resumed stream is reseeded instead of replayed.
    """

    _argument_group_name = "training (transformers.TrainingArguments)"

    output_dir: str = field(default="runs/vlm", metadata=_help("the run directory"))
    max_steps: int = field(default=300, metadata=_help("optimizer steps to train"))
    learning_rate: float = field(default=2e-4, metadata=_help("peak learning rate (AdamW)"))
    lr_scheduler_type: SchedulerType | str = field(
        default="cosine", metadata=_help("learning-rate schedule after the warm-up")
    )
    warmup_steps: float = field(
        default=10, metadata=_help("linear warm-up steps (or a fraction of max_steps if < 1)")
    )
    logging_steps: float = field(default=10, metadata=_help("log every this many steps"))
    save_steps: float = field(default=100, metadata=_help("checkpoint every this many steps"))
    seed: int = field(default=0, metadata=_help("seed of the model init and the shard streams"))
    ignore_data_skip: bool = field(
        default=True,
        metadata=_help("on resume, do not replay the stream up to the step (it is reseeded)"),
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "continue a run: auto (latest checkpoint of output_dir, or start) or "
            "a checkpoint directory",
            "aliases": ["--resume"],
        },
    )
    overwrite: bool = field(
        default=False,
        metadata=_help("train into an existing run directory, deleting its checkpoints, "
                       "adapter and logs first"),
    )  # fmt: skip
    num_threads: int = field(default=1, metadata=_help("torch threads per process on CPU"))
    early_stopping_patience: int | None = field(
        default=None,
        metadata=_help("stop after this many evaluations without improving "
                       "metric_for_best_model (default metric: accuracy)"),
    )  # fmt: skip

    def __post_init__(self) -> None:
        import torch

        if self.max_steps <= 0:
            raise PSGError(f"max_steps must be positive, got {self.max_steps}")
        if self.num_threads <= 0:
            raise PSGError(f"num_threads must be positive, got {self.num_threads}")
        if self.overwrite and self.resume_from_checkpoint is not None:
            raise PSGError("give --resume (continue the run) or --overwrite (replace it), not both")
        if self.early_stopping_patience is not None:
            self.load_best_model_at_end = True
        if self.load_best_model_at_end and self.metric_for_best_model is None:
            self.metric_for_best_model = "accuracy"
        if not torch.cuda.is_available():
            # Under torchrun-style launchers (LOCAL_RANK set) this makes a MULTI_CPU gloo
            # group instead of every process running as rank 0.
            self.use_cpu = True
        super().__post_init__()


SECTIONS = (ModelArgs, LoraArgs, DataArgs, TrainingArgs)

_LORA_HELP = {
    "lora_r": "LoRA rank",
    "lora_alpha": "LoRA scaling numerator (the scale is lora_alpha / lora_r)",
    "lora_dropout": "dropout on the LoRA inputs",
    "lora_targets": "modules to adapt: default (language-model attention + MLP projections), "
    "a regex over full module names, or comma-separated name suffixes",
    "lora_vision": "also adapt the vision tower and its projector / merger",
    "modules_to_save": "modules trained fully and saved with the adapter "
    "(lm_head embed_tokens for a random tiny model)",
}
#: Settings of earlier psgvlm versions, now spelled as transformers spells them.
_RENAMED = {
    "per_device_batch_size": "per_device_train_batch_size",
    "num_workers": "dataloader_num_workers",
    "resume": "resume_from_checkpoint (or --resume on the command line)",
}
_NULL = ("null", "none")


class _Parser(HfArgumentParser):
    """``HfArgumentParser`` whose errors are :class:`PSGError` (one line, close names)."""

    def error(self, message: str):
        unknown = re.findall(r"--[\w-]+", message) if "unrecognized" in message else []
        options = list(self._option_string_actions)
        close = [m for u in unknown for m in difflib.get_close_matches(u, options, 1)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise PSGError(f"{message}{hint}; see --help")


def build_parser(add_help: bool = True, description: str = __doc__) -> HfArgumentParser:
    """The parser of ``vlm/train.py`` / ``psgvlm train``: ``--config`` and every setting.

    Every option's help ends with its default; abbreviations are refused; errors raise
    :class:`PSGError`.

    Parameters
    ----------
    add_help : bool
        Add ``-h/--help`` (not when the options join ``psgvlm train``'s parser).
    description : str
        Text of ``--help`` above the options.
    """
    parser = _Parser(
        SECTIONS,
        prog="psgvlm train",
        description=description,
        allow_abbrev=False,
        add_help=add_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", type=Path, help="YAML file of settings (flat key: value) (default: none)"
    )
    for action in parser._actions:
        if action.dest in ("help", "config"):
            continue
        text = action.help or _LORA_HELP[action.dest]
        store_false = action.nargs == 0 and action.const is False
        default = "" if store_false else f" (default: {action.default})".replace("%", "%%")
        action.help = text + default
    return parser


def _config_argv(path: Path, known: set[str]) -> tuple[list[str], dict[str, Any]]:
    """A YAML file's settings as option tokens, and its null / empty-list ones as defaults."""
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise PSGError(f"cannot read config {path}: {err}") from None
    if not isinstance(values, dict):
        raise PSGError(f"{path}: expected a mapping of settings")
    for key in values:
        if key not in known:
            renamed = _RENAMED.get(key)
            close = difflib.get_close_matches(str(key), sorted(known), 1)
            hint = (
                f"; now {renamed}" if renamed else (f"; did you mean {close[0]}?" if close else "")
            )
            raise PSGError(f"{path}: unknown setting {key!r}{hint}")
    tokens: list[str] = []
    defaults: dict[str, Any] = {}
    for key, value in values.items():
        if value is None or value == []:
            defaults[key] = value
        elif isinstance(value, list):
            tokens += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            tokens += [f"--{key}", json.dumps(value)]
        else:
            tokens += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return tokens, defaults


def parse_config(
    argv: list[str] | None = None, description: str = __doc__
) -> tuple[ModelArgs, LoraArgs, DataArgs, TrainingArgs]:
    """Settings from defaults, ``--config FILE.yaml`` and ``--key value`` options.

    Parameters
    ----------
    argv : list of str, optional
        The options (default: ``sys.argv[1:]``).
    description : str
        Text of ``--help`` above the options.

    Returns
    -------
    (ModelArgs, LoraArgs, DataArgs, TrainingArgs)

    Raises
    ------
    PSGError
        For unknown or abbreviated options, unreadable or unknown YAML settings and
        invalid values.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    first.add_argument("--config", type=Path)
    config = first.parse_known_args(argv)[0].config
    parser = build_parser(description=description)
    known = {f.name for s in SECTIONS for f in dataclasses.fields(s) if f.init}
    if config is not None:
        tokens, defaults = _config_argv(config, known)
        parser.set_defaults(**defaults)
        argv = tokens + argv
    values = vars(parser.parse_args(argv))
    sections = []
    for section in SECTIONS:
        hints = typing.get_type_hints(section)  # (HfArgumentParser rewrites Field.type)
        kwargs = {}
        for f in dataclasses.fields(section):
            if f.init and f.name in values:
                value = values[f.name]
                ours = section is not TrainingArgs or f.name in TrainingArgs.__annotations__
                optional = ours and type(None) in typing.get_args(hints[f.name])
                null = optional and isinstance(value, str) and value.lower() in _NULL
                kwargs[f.name] = None if null else value
        try:
            sections.append(section(**kwargs))
        except (TypeError, ValueError) as err:  # e.g. transformers' checks, a YAML null
            raise PSGError(str(err).strip().replace("\n", " ")) from None
    return tuple(sections)  # type: ignore[return-value]
