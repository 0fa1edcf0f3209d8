"""``psgvlm ask`` (one question) and ``psgvlm chat`` (a conversation) about a recording's epochs.

The answers come from :class:`vlm.answers.EpochChat` (stage probabilities from the model,
text from the epoch's measured features, checked against the signal). Command lines::

    psgvlm ask night.edf --epoch 120 "why not N3?" --model M --adapter A [--out DIR]
    psgvlm chat night.edf --model M --adapter A [--epoch 120] [--out DIR]
    psgvlm ask night.edf --epoch 120 "what stage is this?" --model M --adapter A --ensemble B C

With ``--ensemble`` the stage probabilities are the mean over ``--adapter`` and the other
members (as in ``psgvlm stage --ensemble``); "where did you look?" and generated
explanations use the first member. Arguments, files and the epoch number are checked
before the model loads.

``chat`` reads questions from standard input; ``next``, ``prev``, ``epoch N`` (or
``go to epoch N``), ``help`` and ``quit`` (also as ``:next``, ``:goto N``, ``:quit``...) move
between epochs and leave.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import IO

from engine.errors import PSGError

from ..answers import HELP, Answer, EpochChat
from ..model_options import add_grid_argument, add_model_arguments, stager_from_args

__all__ = ["format_answer", "chat_loop", "add_arguments", "run"]


def format_answer(answer: Answer) -> str:
    """The answer as printed by ``ask`` and ``chat``."""
    lines = [answer.text, f"image: {answer.image_path}"]
    if answer.marked_image_path is not None:
        lines.append(f"marked: {answer.marked_image_path}")
    lines.append(f"claims checked: {answer.claims_checked}, flagged: {len(answer.claims_flagged)}")
    return "\n".join(lines)


#: Words that move between epochs or leave, with or without a leading ``:``.
_QUIT = {"quit", "q", "exit", "bye"}
_GOTO = re.compile(r"^(?:go\s*to|goto|epoch|go\s+to\s+epoch|jump\s+to(?:\s+epoch)?)\s+(-?\d+)$")


def _chat_command(line: str) -> tuple[str, int | None] | None:
    """``(command, argument)`` when ``line`` moves between epochs, asks for help or leaves;
    None when it is a question. ``:`` forms and plain words are accepted alike.

    Examples
    --------
    >>> _chat_command("go to epoch 40"), _chat_command(":next"), _chat_command("why N2?")
    (('goto', 40), ('next', None), None)
    """
    text = line.strip().lower().rstrip(".!")
    colon = text.startswith(":")
    text = text.lstrip(":").strip()
    if text in _QUIT:
        return "quit", None
    if text in ("help", "?", "h"):
        return "help", None
    if text in ("next", "n", "prev", "previous", "p", "back"):
        return ("next" if text in ("next", "n") else "prev"), None
    match = _GOTO.match(text)
    if match:
        return "goto", int(match.group(1))
    if colon:
        return text.split()[0] if text else "", None
    return None


def chat_loop(chat: EpochChat, stdin: IO[str], stdout: IO[str]) -> int:
    """Read questions and commands from ``stdin`` until ``quit`` or end of input.

    The ``epoch N>`` prompt is shown only when ``stdin`` is a terminal.
    """

    def say(text: str) -> None:
        stdout.write(text + "\n")

    interactive = stdin.isatty()
    say(chat.header())
    say("(help lists questions and commands; quit leaves)")
    while True:
        if interactive:
            stdout.write(f"epoch {chat.epoch}> ")
            stdout.flush()
        line = stdin.readline()
        if not line:
            if interactive:
                stdout.write("\n")
            return 0
        if not line.strip():
            continue
        command = _chat_command(line)
        try:
            if command is None:
                say(format_answer(chat.ask(line.strip())))
                continue
            name, argument = command
            if name == "quit":
                return 0
            if name == "help":
                say(HELP)
                continue
            if name == "next":
                chat.next()
            elif name == "prev":
                chat.prev()
            elif name == "goto" and argument is not None:
                chat.goto(argument)
            else:
                say(f"unknown command :{name}; help lists the commands")
                continue
        except PSGError as err:
            say(f"error: {err}")
            continue
        say(chat.header())


def add_arguments(parser: argparse.ArgumentParser, command: str = "ask") -> None:
    """Options of ``psgvlm ask`` (one question) and ``psgvlm chat`` (interactive)."""
    if command not in ("ask", "chat"):
        raise ValueError(f"command must be 'ask' or 'chat', got {command!r}")
    parser.add_argument("recording", type=Path, help="EDF/EDF+/BDF recording or prerau:DIR")
    if command == "ask":
        parser.add_argument("question", help='e.g. "why not N3?"')
        parser.add_argument("--epoch", type=int, required=True, help="epoch number (0-based)")
        parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    else:
        parser.add_argument("--epoch", type=int, default=0, help="first epoch (default: 0)")
    add_grid_argument(parser)
    parser.add_argument("--out", type=Path, default=Path("."),
                        help="where epoch images are saved (default: the current folder)")  # fmt: skip
    parser.add_argument(
        "--generate", choices=("auto", "on", "off"), default="auto",
        help="the model's own explanation too (default: auto = when trained in evidence mode)",
    )  # fmt: skip
    parser.add_argument("--max-new-tokens", type=int, default=96,
                        help="generation length limit (default: 96)")  # fmt: skip
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """``psgvlm ask`` / ``psgvlm chat``: everything is checked before the model loads."""
    stager = stager_from_args(args, args.recording)
    source = stager.open(args.recording, args.hypnogram)
    caveat = stager.caveat(source)
    chat = EpochChat(
        source, stager, args.out,
        generate={"auto": None, "on": True, "off": False}[args.generate],
        max_new_tokens=args.max_new_tokens, epoch=args.epoch,
    )  # fmt: skip
    if getattr(args, "command", "ask") == "chat":
        if caveat:
            print(caveat)
        return chat_loop(chat, sys.stdin, sys.stdout)
    answer = chat.ask(args.question)
    if args.json:
        print(json.dumps({**answer.to_dict(), "caveat": caveat}, indent=1))
    else:
        print((caveat + "\n" if caveat else "") + format_answer(answer))
    return 0
