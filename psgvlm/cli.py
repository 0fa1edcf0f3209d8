"""The ``psgvlm`` command.

Each subcommand lives in the module that does its job and exposes
``add_arguments(parser)`` and ``run(args) -> int``. Only the chosen subcommand's
module is imported, so ``psgvlm info`` starts without torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from engine.errors import PSGError

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("engine.info", "describe a recording: channels, rates, hypnogram, montage, problems"),
    "synth": ("engine.synth", "write synthetic PSG nights as EDF + EDF+ hypnogram files"),
    "synth-report": ("engine.synth_report", "plot synthetic vs real per-stage EEG spectra"),
    "render": ("engine.pipeline", "render recordings into WebDataset shards"),
    "fetch": ("engine.fetch", "download a public dataset (Sleep-EDF Expanded)"),
    "bench": ("bench.cli", "throughput benchmarks (render, kernel, train, infer)"),
    "tiny-model": (
        "vlm.tiny",
        "build a tiny randomly initialised Qwen2-VL / LLaVA for offline use",
    ),
    "train": ("vlm.train", "LoRA / QLoRA fine-tuning on shards (wraps vlm/train.py)"),
    "eval": ("vlm.commands.evaluate", "evaluate a model on shards or recordings"),
    "stage": ("vlm.commands.stage", "stage a whole night: hypnogram CSV, EDF+, plot, statistics"),
    "ask": ("vlm.commands.ask", "ask one question about one epoch"),
    "chat": ("vlm.commands.ask", "interactive chat about a recording's epochs"),
    "explain": ("vlm.commands.explain", "attribution heatmaps for an epoch's predicted stage"),
    "serve": ("vlm.commands.serve", "review nights in the browser: ask, explain, correct, export"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: psgvlm COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'psgvlm COMMAND --help' for a command's options."]
    return "\n".join(lines)


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless it already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default in (None, False, argparse.SUPPRESS)
            or action.required
            or not action.option_strings
        ):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})" if shown != "" else text


def build_parser(command: str) -> tuple[argparse.ArgumentParser, object]:
    """The parser of one subcommand (no abbreviations) and the module that runs it."""
    module = importlib.import_module(COMMANDS[command][0])
    parser = argparse.ArgumentParser(
        prog=f"psgvlm {command}",
        description=COMMANDS[command][1],
        allow_abbrev=False,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    if command in ("ask", "chat"):
        module.add_arguments(parser, command)
    else:
        module.add_arguments(parser)
    return parser, module


def _quiet_libraries() -> None:
    """Hide library chatter that says nothing about the user's data: bitsandbytes'
    note on optional CPU kernels and transformers' deprecation notices of its own calls."""
    import warnings

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def _quiet_broken_pipe() -> int:
    """A reader closed our output (``psgvlm info FILE | head``): stop without a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, as a killed pipeline writer reports


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``psgvlm`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from engine import __version__

        print(f"psgvlm {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"psgvlm: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        parser, module = build_parser(command)
        args = parser.parse_args(rest)
        args.command = command
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(levelname)s %(name)s: %(message)s",
        )
        if not args.verbose:
            _quiet_libraries()
        return int(module.run(args) or 0)
    except PSGError as err:
        print(f"psgvlm {command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"psgvlm {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _quiet_broken_pipe()


if __name__ == "__main__":
    sys.exit(main())
