"""The model options every command shares, and the stagers they name.

``--model``, ``--adapter``, ``--ensemble``, ``--render-config``, ``--montage``,
``--device``, ``--quantization`` (:func:`add_model_arguments`) name one
:class:`vlm.runtime.Stager`; without ``--model`` the shipped stagers stand in
(:mod:`vlm.defaults`) and each recording gets the one whose montage it fills best::

    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    stager = stager_from_args(parser.parse_args([...]), "night.edf")
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from engine.errors import ModelError

from .defaults import default_stagers, stager_for
from .render_setup import RENDER_CONFIG_NAME
from .runtime import Stager

__all__ = [
    "DEFAULT_MODEL_HELP",
    "add_model_arguments",
    "add_grid_argument",
    "require_model",
    "stagers_from_args",
    "stager_from_args",
]

#: What ``--model`` defaults to in ``stage``, ``ask`` and ``chat``.
DEFAULT_MODEL_HELP = (
    "default, with no --adapter: the shipped stager whose montage the recording fills "
    "(vlm/default_models)"
)


def add_model_arguments(
    parser: argparse.ArgumentParser, ensemble: bool = True, default: str = DEFAULT_MODEL_HELP
) -> None:
    """Options every model command shares: model, adapter, render setup, montage, device.

    ``default`` tells what the command does without ``--model`` (end of its help).
    """
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        help="base model: a Hugging Face id (Qwen/Qwen2-VL-2B-Instruct), a local directory, "
        f"or tiny:qwen2vl / tiny:llava (a tiny random model built offline); {default}",
    )  # fmt: skip
    group.add_argument("--adapter", type=Path, help="LoRA adapter directory (vlm/train.py "
                       "output, e.g. runs/tiny_qwen2vl/adapter); omit with --model for "
                       "zero-shot")  # fmt: skip
    if ensemble:
        group.add_argument(
            "--ensemble", type=Path, nargs="+", default=[], metavar="ADAPTER",
            help="more adapters trained with the same render setup (e.g. other seeds): each "
            "epoch's stage probabilities are the mean over --adapter and these",
        )  # fmt: skip
    group.add_argument(
        "--render-config", type=Path,
        help=f"how the training images were drawn: a {RENDER_CONFIG_NAME} or the training "
        "shards (default: found from the adapter)",
    )  # fmt: skip
    group.add_argument(
        "--montage",
        help="other derivations for the model's rows, e.g. eeg=C3-A2 (same roles and order; "
        "default: the training montage, resolved through the alias table)",
    )
    group.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    group.add_argument("--quantization", choices=("4bit", "8bit"),
                       help="load the base weights with bitsandbytes (default: none)")  # fmt: skip


def add_grid_argument(parser: argparse.ArgumentParser) -> None:
    """``--hypnogram``: the epoch grid of a recording (scored or not)."""
    parser.add_argument(
        "--hypnogram", type=Path,
        help="hypnogram whose epochs form the grid (default: 30-s epochs from the recording "
        "start; prerau:/dreams: recordings bring their own)",
    )  # fmt: skip


def require_model(args: argparse.Namespace, what: str) -> None:
    """Refuse ``what`` (``--shards``...) without ``--model``: the shipped stagers are
    chosen by a recording's channels.

    Raises
    ------
    ModelError
        When ``args.model`` is None.
    """
    if args.model is None:
        raise ModelError(f"{what} needs --model (and --adapter): the shipped default stagers "
                         "are chosen by a recording's channels")  # fmt: skip


def stagers_from_args(args: argparse.Namespace) -> list[Stager]:
    """The stagers :func:`add_model_arguments` options name, without loading weights: the
    one of ``--model`` (with ``--adapter``, ``--ensemble``), else every shipped default
    stager (:func:`vlm.defaults.default_stagers`, with ``--device``, ``--quantization``, ``--montage``).

    Raises
    ------
    ModelError
        When adapters or ``--render-config`` come without ``--model``.
    """
    if args.model is None:
        adapters = [args.adapter, *getattr(args, "ensemble", ()), *getattr(args, "adapters", ())]
        if any(a is not None for a in adapters):
            raise ModelError("an adapter needs --model: the base model it was trained on")
        if args.render_config is not None:
            raise ModelError("--render-config needs --model; the shipped stagers bring their own")
        return default_stagers(args.device, args.quantization, args.montage)
    return [
        Stager.from_adapter(
            args.model,
            args.adapter,
            getattr(args, "ensemble", None) or (),
            args.render_config,
            args.device,
            args.quantization,
            args.montage,
        )
    ]


def stager_from_args(args: argparse.Namespace, recording: Any = None) -> Stager:
    """The :class:`Stager` named by :func:`add_model_arguments` options (no weights loaded);
    without ``--model``, the shipped stager whose montage ``recording`` fills with the most
    rows (:func:`vlm.defaults.stager_for` over :func:`stagers_from_args`)."""
    if recording is None:
        require_model(args, "this command")
    stagers = stagers_from_args(args)
    return stagers[0] if args.model is not None else stager_for(stagers, recording)
