"""The tables of ``bench/RESULTS.md``, generated from the committed reports.

Every table in RESULTS.md sits between two marker comments that name what it shows and
the report(s) it comes from, relative to ``bench/``::

    <!-- table: render-throughput results/amd-epyc-2cpu/render.json -->
    | size | stage | ... |
    <!-- end table -->

``python -m bench.tables`` (or ``psgvlm bench tables``) rewrites every such block from its
report(s); ``--check`` changes nothing and exits 1 (printing a diff) where RESULTS.md
differs from what the reports give, which tests/test_bench.py asserts never happens. The
reports are the JSON files the benchmarks write into ``bench/results/<machine>/``.

Kinds (:data:`KINDS`): ``provenance`` (one line per report: command, git commit and
whether the tree was clean, machine, device, date), ``render-throughput``,
``render-ratios``, ``render-goals``, ``model`` (train and infer reports), ``kernel``
and ``pins`` (the adversarial pin file of :mod:`bench.adversarial`).

Examples
--------
>>> text = "a\\n<!-- table: nothing-here -->\\nold\\n<!-- end table -->\\nb\\n"
>>> [(b.kind, b.args) for b in find_blocks(text)]
[('nothing-here', ())]
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .report import BenchError, format_rate, goal_line, markdown_table

__all__ = ["RESULTS", "KINDS", "Block", "find_blocks", "generate", "update", "main"]

#: The results page whose tables are generated.
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

_BLOCK = re.compile(
    r"^<!-- table: (?P<head>[^\n]*?) -->\n(?P<body>.*?)^<!-- end table -->$",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Block:
    """One generated block: its kind, its report paths and where its body lies."""

    kind: str
    args: tuple[str, ...]
    start: int  # offset of the body
    end: int  # offset of the end marker


def find_blocks(text: str) -> list[Block]:
    """The marked blocks of a page, in order."""
    blocks = []
    for match in _BLOCK.finditer(text):
        kind, *args = match["head"].split()
        blocks.append(Block(kind, tuple(args), match.start("body"), match.start() + len(match[0])
                            - len("<!-- end table -->")))  # fmt: skip
    return blocks


def _load(base: Path, relative: str) -> dict[str, Any]:
    path = base / relative
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"{path}: no such report (run the benchmark, commit its JSON)") from None
    except json.JSONDecodeError as err:
        raise BenchError(f"{path}: not JSON ({err})") from None


# ----------------------------------------------------------------------------------------
# Kinds
# ----------------------------------------------------------------------------------------
def _provenance(reports: Sequence[tuple[str, dict[str, Any]]]) -> str:
    lines = []
    for path, report in reports:
        machine = report["machine"]
        commit = f"`{(machine.get('git_commit') or '?')[:7]}`"
        if machine.get("git_dirty"):
            files = machine.get("git_dirty_files") or []
            more = ", ..." if len(files) > 8 else ""
            commit += f" plus uncommitted changes ({', '.join(files[:8])}{more})"
        elif machine.get("git_dirty") is False:
            commit += ", clean tree"
        else:
            commit += f" (from {machine.get('git_commit_from', 'git')}; clean tree unknown)"
        gpu = machine.get("gpu") or "no GPU"
        wall = f", {report['wall_s']:g} s wall" if "wall_s" in report else ""
        load = machine.get("load_average")
        lines.append(
            f"- [`{path}`]({path}): `{machine['command']}` at git {commit}, "
            f"{machine['date'].replace('T', ' ').replace('+00:00', ' UTC')}; {machine['cpu']}, "
            f"{machine['usable_cores']} usable cores, {gpu}; load average {load} at the "
            f"start{wall}; source digest `{machine.get('source_digest', '?')}`"
        )
    return "\n".join(lines)


def _render_throughput(reports: Sequence[tuple[str, dict[str, Any]]]) -> str:
    rows = []
    for _, report in reports:
        for stage in report["stages"]:
            rate = stage["rate"]
            rows.append([
                stage["size"], stage["label"], stage["cores"],
                f"{format_rate(rate['median'])} {stage['unit']}",
                f"{format_rate(rate['q1'])}–{format_rate(rate['q3'])}",
                f"{format_rate(rate['min'])}–{format_rate(rate['max'])}",
                format_rate(stage["per_core"]),
                "-" if stage["bytes_per_image"] is None else f"{stage['bytes_per_image']:,.0f}",
                f"{stage['peak_rss_mb']:,.0f}",
                "-" if stage["startup_s"] is None else f"{stage['startup_s']:.2f}",
            ])  # fmt: skip
    return markdown_table(
        ["size", "stage", "cores", "median", "quartiles", "min–max", "per core", "bytes/image",
         "peak RSS MiB", "start-up s"],
        rows,
    )  # fmt: skip


def _render_ratios(reports: Sequence[tuple[str, dict[str, Any]]]) -> str:
    rows = [
        [r["size"], r["name"], r["paired"], f"{r['median']:.3g}x",
         f"{r['q1']:.3g}–{r['q3']:.3g}", f"{r['min']:.3g}–{r['max']:.3g}", r["repeats"]]
        for _, report in reports
        for r in report["ratios"]
    ]  # fmt: skip
    return markdown_table(
        ["size", "ratio", "paired by", "median", "quartiles", "min–max", "pairs"], rows
    )


def _render_goals(reports: Sequence[tuple[str, dict[str, Any]]]) -> str:
    return "\n".join(goal_line(line) for _, report in reports for line in report["goals"])


def _model(reports: Sequence[tuple[str, dict[str, Any]]]) -> str:
    rows = []
    for _, report in reports:
        machine = report["machine"]
        rss = f"{report['peak_rss_mb'] / 1024:.2f} GiB" if report.get("peak_rss_mb") else "-"
        if report["benchmark"] == "train":
            rate, what = report["samples_per_s"], "samples/s"
            detail = (
                f"LoRA r={report['lora']['r']} on {', '.join(report['lora']['targets'])}"
                f"{' + vision' if report['lora']['vision'] else ''}; {report['steps']} steps, "
                f"the first {report['warmup_steps_excluded']} left out; "
                f"{report['s_per_step']['median']:.3f} s/step"
            )
        elif report["benchmark"] == "infer":
            rate, what = report["epochs_per_s"], "epochs/s"
            detail = (
                f"`score_candidates`, {report['candidates']} answers per epoch, "
                f"{report['epochs']} epochs x {rate['repeats']}, batch {report['batch_size']}; "
                f"model load {report['load_s']} s excluded"
            )
        else:
            raise BenchError(f"a model table takes train/infer reports, not {report['benchmark']}")
        size = "x".join(map(str, report["image_size"]))
        rows.append([
            f"`{machine['command']}`", f"`{report['model']}` on {report['device']}, {size}",
            detail, f"{format_rate(rate['median'])} {what}",
            f"{format_rate(rate['q1'])}–{format_rate(rate['q3'])}",
            f"{format_rate(rate['min'])}–{format_rate(rate['max'])}", rss,
        ])  # fmt: skip
    return markdown_table(
        ["command", "model", "what", "median", "quartiles", "min–max", "peak RSS"], rows
    )


def _kernel(reports: Sequence[tuple[str, dict[str, Any]]]) -> str:
    rows = []
    for _, report in reports:
        settings, times, ratio = report["settings"], report["us_per_image"], report["ratio"]
        pins = report["pins"]

        def verdict(check: dict[str, Any] | None) -> str:
            if check is None:
                return "same source"
            return f"{'same' if check['ok'] else 'DIFFERENT'} ({check['checked']:,} cases)"

        rows.append([
            f"`{settings['base']}` vs the tree", settings["size"], settings["channels"],
            settings["rounds"], f"{times['A']['median']:.1f} → {times['B']['median']:.1f}",
            f"**{ratio['median']:.3f}x**", f"{ratio['q1']:.3f}–{ratio['q3']:.3f}",
            f"{ratio['min']:.3f}–{ratio['max']:.3f}", verdict(pins["tree"]),
            verdict(pins["base"]),
        ])  # fmt: skip
    return markdown_table(
        ["A / B", "size", "channels", "rounds", "µs/image A → B (medians)", "A / B time",
         "quartiles", "min–max", "tree vs pin", "base vs pin"],
        rows,
    )  # fmt: skip


def _pins(reports: Sequence[tuple[str, dict[str, Any]]]) -> str:
    lines = []
    for path, pins in reports:
        at, cases, corners, every = (
            pins["pinned_at"], pins["cases"], pins["corner_cases"], pins["fast_every"]
        )  # fmt: skip
        fast = sum(1 for i in range(cases) if i < corners or i % every == 0)
        state = {True: " plus uncommitted changes", False: ", clean tree"}.get(at["git_dirty"], "")
        lines.append(
            f"- [`{path}`]({path}): {cases:,} adversarial cases ({corners} written by hand), "
            f"pinned at git `{(at['git_commit'] or '?')[:7]}`{state}, "
            f"{at['date'].replace('T', ' ').replace('+00:00', ' UTC')} (numpy {at['numpy']}, "
            f"numba {at['numba']}, Pillow {at['pillow']}); CI checks {fast} of them (the "
            f"hand-written ones and every {every}th)"
        )
    return "\n".join(lines)


#: kind -> table maker (it takes one or more ``(path, report)`` pairs)
KINDS: dict[str, Callable[[Sequence[tuple[str, dict[str, Any]]]], str]] = {
    "provenance": _provenance,
    "render-throughput": _render_throughput,
    "render-ratios": _render_ratios,
    "render-goals": _render_goals,
    "model": _model,
    "kernel": _kernel,
    "pins": _pins,
}


def generate(kind: str, paths: Sequence[str], base: Path = RESULTS.parent) -> str:
    """The body of a block of ``kind`` made from the reports at ``paths`` (relative to ``base``)."""
    if kind not in KINDS:
        raise BenchError(f"unknown table kind {kind!r}; known: {', '.join(KINDS)}")
    if not paths:
        raise BenchError(f"a {kind} table needs at least one report")
    return KINDS[kind]([(path, _load(base, path)) for path in paths])


def render_page(text: str, base: Path = RESULTS.parent) -> str:
    """``text`` with every marked block regenerated."""
    out, last = [], 0
    for block in find_blocks(text):
        out += [text[last : block.start], generate(block.kind, block.args, base), "\n"]
        last = block.end
    out.append(text[last:])
    return "".join(out)


def update(path: str | Path = RESULTS, check: bool = False) -> list[str]:
    """Regenerate the page's tables; return the diff (empty when it was up to date).

    With ``check`` the file is left as it is.
    """
    path = Path(path)
    text = path.read_text()
    new = render_page(text, path.parent)
    diff = list(difflib.unified_diff(text.splitlines(), new.splitlines(), str(path),
                                     f"{path} (generated)", lineterm=""))  # fmt: skip
    if diff and not check:
        path.write_text(new)
    return diff


def referenced_reports(path: str | Path = RESULTS) -> list[Path]:
    """Every report a page's blocks read, as paths."""
    path = Path(path)
    blocks = find_blocks(path.read_text())
    return sorted({(path.parent / arg).resolve() for b in blocks for arg in b.args})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm bench tables`` / ``python -m bench.tables``."""
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if the page differs from its reports")  # fmt: skip
    parser.add_argument("--page", type=Path, default=RESULTS, help="the results page")


def run(args: argparse.Namespace) -> int:
    """Regenerate (or ``--check``) the tables of the results page."""
    diff = update(args.page, check=args.check)
    if not diff:
        print(f"{args.page}: tables match their reports")
        return 0
    if args.check:
        print("\n".join(diff))
        print(f"\n{args.page}: tables differ from their reports; run python -m bench.tables",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"{args.page}: tables regenerated ({sum(d.startswith('+') for d in diff) - 1} lines)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.tables``."""
    parser = argparse.ArgumentParser(prog="python -m bench.tables",
                                     description=__doc__.split("\n")[0])  # fmt: skip
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except BenchError as err:
        print(f"bench tables: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
