"""``psgvlm bench kernel``: the CPU render kernel of a git revision against the working tree.

Separate benchmark runs on a shared VM swing by ±15 %, more than most kernel changes
gain. This benchmark compiles both kernels in one process (``engine/raster/kernels.py``
as of ``--base``, read with ``git show``, and the working tree's), renders the same
synthetic epochs with each in alternating rounds on one thread, and reports the median
of the per-round time ratios beside each kernel's times. Layout and column tables come
from the working tree's ``engine.raster.layout`` and from each revision's own
``column_tables``.

Whether the working tree's kernel still draws the right pixels is checked against the
pin, not against ``--base``: the adversarial set of :mod:`bench.adversarial` (~2,000
cases, a few seconds) must give the pinned hashes, or the command exits 1. When the
base's source differs, its kernel is checked against the pin too (the "same bytes as the
previous kernel" claim of a change), and both kernels' pages of the timed epochs are
compared; neither of these decides the exit status. When the base's kernel source is the
working tree's, one compiled kernel (from numba's disk cache) serves as both, and the
ratio only measures the noise.

    psgvlm bench kernel --base HEAD~1 --rounds 40
"""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import adversarial
from .render import load_bench_epochs
from .report import (
    BenchError,
    machine_info,
    markdown_table,
    report_dir,
    short_commit,
    summarize,
    write_report,
)

__all__ = [
    "kernel_source",
    "load_kernel_module",
    "module_renderer",
    "bench_kernel",
    "add_arguments",
    "run",
]

_KERNELS = "engine/raster/kernels.py"
_ROOT = Path(__file__).resolve().parents[1]


def kernel_source(revision: str | None, root: Path = _ROOT) -> str:
    """Text of ``engine/raster/kernels.py`` at ``revision`` (``None``: the working tree).

    Raises
    ------
    BenchError
        When git cannot show the file at that revision (no repository, unknown revision).
    """
    if revision is None:
        return (root / _KERNELS).read_text()
    try:
        shown = subprocess.run(
            ["git", "show", f"{revision}:{_KERNELS}"],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        raise BenchError("git is not installed: --base needs a git checkout") from None
    if shown.returncode != 0:
        raise BenchError(f"git show {revision}:{_KERNELS} failed: {shown.stderr.strip()}")
    return shown.stdout


def load_kernel_module(source: str, name: str) -> types.ModuleType:
    """Execute a kernels.py text as module ``name``, with numba's disk cache off.

    Both revisions' functions share qualified names, so they must not share cache entries.
    """
    source = source.replace("cache=True", "cache=False")
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


def _tree_module(source: str) -> types.ModuleType:
    """The working tree's kernels: the imported module (numba's disk cache) when its file
    holds ``source``, else ``source`` compiled afresh."""
    import engine.raster.kernels as imported

    if Path(imported.__file__).read_text() == source:
        return imported
    return load_kernel_module(source, "kernels_tree")


def module_renderer(module: types.ModuleType) -> adversarial.Renderer:
    """``render(signals, spec)`` drawn by ``module``'s CPU kernel (for the pin check)."""

    def render(signals: np.ndarray, spec: Any) -> np.ndarray:
        signals = np.ascontiguousarray(signals, dtype=np.float32)
        planes = 3 if spec.color else 1
        pages = np.empty((len(signals), spec.height * spec.width * planes), np.uint8)
        _caller(module, spec, signals.shape[2])(signals, pages)
        return pages.reshape((len(signals), spec.height, spec.width)
                             + ((planes,) if spec.color else ()))  # fmt: skip

    return render


def _pin_summary(result: adversarial.CheckResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "checked": result.checked,
        "pixels_changed": result.pixels_changed[:50],
        "inputs_changed": result.inputs_changed[:50],
        "unpinned": result.unpinned[:50],
        "skipped_labelled": result.skipped_labelled,
        "notes": result.notes,
    }


def _caller(module: types.ModuleType, spec: Any, n_samples: int) -> Callable[..., Any]:
    """``draw(batch, pages)`` with this revision's CPU kernel, arguments matched by name."""
    from engine.raster.layout import layout_for

    render_cpu, _ = module.build_render_kernels(spec.antialias, spec.color)
    columns = module.column_tables(n_samples, spec.width)
    layout = layout_for(spec)
    # Kernels before git 31dff2f took a per-channel table of shades instead of the ink.
    levels = layout.levels
    fade = 255 - layout.ink.astype(np.int64)[:, None, :]
    level = np.arange(levels + 1, dtype=np.int64)[None, :, None]
    known = {
        **columns._asdict(),
        "blank": layout.template.reshape(-1),
        "width": spec.width,
        "gain": layout.gain,
        "mid_fx": layout.mid_fx,
        "first_row": layout.row_first,
        "last_row": layout.row_last,
        "ink": layout.ink,
        "shades": np.ascontiguousarray((255 - level * fade // levels).astype(np.uint8)),
        "half_width": layout.half_width_fx,
        "levels": levels,
    }
    names = list(inspect.signature(render_cpu.py_func).parameters)[2:]  # after signals, blank
    names.remove("pages")
    missing = [n for n in names if n not in known]
    if missing:
        raise BenchError(f"{module.__name__}: unknown kernel arguments {missing}")

    def draw(batch: np.ndarray, pages: np.ndarray) -> None:
        render_cpu(batch, known["blank"], pages, *(known[n] for n in names))

    return draw


def bench_kernel(
    base: str,
    *,
    channels: int = 6,
    size: tuple[int, int] = (448, 224),
    epochs: int = 384,
    rounds: int = 40,
    batch_size: int = 64,
    hours: float = 0.5,
    pins: str | Path = adversarial.PIN_FILE,
    pins_fast: bool = False,
) -> dict[str, Any]:
    """Time the kernel of ``base`` (A) and of the working tree (B) in alternating rounds.

    Returns
    -------
    dict
        ``settings``, ``machine``, ``pins`` (the working tree's and, when its source
        differs, the base's kernel against the adversarial pin), ``same_bytes_as_base``
        (the two kernels' pages of the timed epochs), per-kernel ``us_per_image``
        summaries, and ``ratio`` (A time / B time per round: > 1 means the working tree is
        faster).
    """
    import numba

    from engine.pipeline import write_synthetic_nights
    from engine.raster import RenderSpec

    if rounds < 1 or epochs < 1 or batch_size < 1:
        raise BenchError("--rounds, --epochs and --batch-size must be positive")
    if not Path(pins).is_file():
        raise BenchError(f"no pin file at {pins} (python -m bench.adversarial --update makes one)")
    with tempfile.TemporaryDirectory(prefix="psgvlm-bench-kernel-") as tmp:
        nights = write_synthetic_nights(Path(tmp) / "nights", 1, hours)
        signals, roles, names = load_bench_epochs(nights, channels, epochs)
    width, height = size
    spec = RenderSpec.for_roles(roles, width=width, height=height, labels=names)
    numba.set_num_threads(1)
    base_source, tree_source = kernel_source(base), kernel_source(None)
    same_source = base_source == tree_source
    tree = _tree_module(tree_source)
    modules = {"A": tree if same_source else load_kernel_module(base_source, "kernels_base"),
               "B": tree}  # fmt: skip
    kernels = {key: _caller(module, spec, signals.shape[2]) for key, module in modules.items()}
    checked = {"B": adversarial.check_pins(pins_fast, path=pins, renderer=module_renderer(tree))}
    if not same_source:
        checked["A"] = adversarial.check_pins(
            pins_fast, path=pins, renderer=module_renderer(modules["A"])
        )
    planes = 3 if spec.color else 1
    pages = {k: np.empty((batch_size, height * width * planes), np.uint8) for k in kernels}
    batches = [slice(lo, min(lo + batch_size, epochs)) for lo in range(0, epochs, batch_size)]
    same = True
    for batch in batches:
        count = batch.stop - batch.start
        for key, draw in kernels.items():
            draw(signals[batch], pages[key][:count])
        same &= bool(np.array_equal(pages["A"][:count], pages["B"][:count]))
    seconds: dict[str, list[float]] = {k: [] for k in kernels}
    for _ in range(rounds):
        for key, draw in kernels.items():
            started = time.perf_counter()
            for batch in batches:
                draw(signals[batch], pages[key][: batch.stop - batch.start])
            seconds[key].append((time.perf_counter() - started) / epochs * 1e6)
    ratio = np.asarray(seconds["A"]) / np.asarray(seconds["B"])
    return {
        "benchmark": "kernel",
        "settings": {
            "base": base,
            "same_source": same_source,
            "channels": channels,
            "size": f"{width}x{height}",
            "epochs": epochs,
            "rounds": rounds,
            "batch_size": batch_size,
            "pins": str(Path(pins).resolve().relative_to(_ROOT))
            if Path(pins).resolve().is_relative_to(_ROOT)
            else str(pins),
            "pins_fast": pins_fast,
        },  # fmt: skip
        "machine": machine_info(),
        "pins": {
            "tree": _pin_summary(checked["B"]),
            "base": _pin_summary(checked["A"]) if "A" in checked else None,
        },
        "same_bytes_as_base": same,
        "us_per_image": {key: summarize(values) for key, values in seconds.items()},
        "ratio": summarize(ratio.tolist()),
    }


def _pin_line(which: str, pins: dict[str, Any] | None) -> str:
    if pins is None:
        return f"{which}: the same source as the working tree (not checked twice)."
    verdict = "yes" if pins["ok"] else "**NO**"
    changed = len(pins["pixels_changed"]) + len(pins["inputs_changed"]) + len(pins["unpinned"])
    extra = f" ({changed} case(s) differ)" if changed else ""
    skipped = f"; {pins['skipped_labelled']} labelled skipped" if pins["skipped_labelled"] else ""
    return f"{which}: {verdict}, {pins['checked']} cases{extra}{skipped}."


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a short markdown page."""
    settings, times, ratio = report["settings"], report["us_per_image"], report["ratio"]
    rows = [
        [label, f"{times[key]['min']:.1f}", f"{times[key]['median']:.1f}"]
        for key, label in (("A", f"A: `{settings['base']}`"), ("B", "B: working tree"))
    ]
    noise = (
        " A and B are the same source: the ratio measures noise only."
        if settings["same_source"]
        else ""
    )
    subset = "fast subset" if settings["pins_fast"] else "full set"
    return "\n".join(
        [
            "# Render kernel A/B (one process, alternating rounds, 1 thread)",
            "",
            f"{settings['channels']} channels, {settings['size']}, {settings['epochs']} epochs "
            f"per round in batches of {settings['batch_size']}, {settings['rounds']} rounds; "
            f"git {short_commit(report['machine'])}.{noise}",
            "",
            markdown_table(["kernel", "min µs/image", "median µs/image"], rows),
            "",
            f"**A / B time per round: median {ratio['median']:.3f}** "
            f"(quartiles {ratio['q1']:.3f}-{ratio['q3']:.3f}, min {ratio['min']:.3f}, "
            f"max {ratio['max']:.3f}; > 1: the working tree is faster).",
            "",
            f"Pinned pixels (`{settings['pins']}`, adversarial {subset}):",
            "- " + _pin_line("working tree", report["pins"]["tree"]),
            "- " + _pin_line(f"base `{settings['base']}`", report["pins"]["base"]),
            f"- the timed epochs, A against B: "
            f"{'same bytes' if report['same_bytes_as_base'] else 'different bytes'}.",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm bench kernel``."""
    parser.add_argument("--base", default="HEAD", help="git revision to compare against")
    parser.add_argument("--channels", type=int, default=6, help="channels per image (1-8)")
    parser.add_argument("--size", default="448x224", help="WIDTHxHEIGHT")
    parser.add_argument("--epochs", type=int, default=384, help="epochs per round")
    parser.add_argument("--rounds", type=int, default=40, help="rounds per kernel")
    parser.add_argument("--batch-size", type=int, default=64, help="epochs per kernel call")
    parser.add_argument("--hours", type=float, default=0.5, help="synthetic night length")
    parser.add_argument("--pins", type=Path, default=adversarial.PIN_FILE,
                        help="adversarial pin file to check the kernels against")  # fmt: skip
    parser.add_argument("--pins-fast", action="store_true", help="check the fast subset only")
    parser.add_argument("--name", default="kernel", help="report name (NAME.json, NAME.md)")
    parser.add_argument("--out", type=Path, help="report directory (default bench/results/MACHINE)")


def run(args: argparse.Namespace) -> int:
    """Run ``psgvlm bench kernel`` and write ``kernel.json`` and ``kernel.md``."""
    from engine.raster.layout import parse_size

    report = bench_kernel(
        args.base,
        channels=args.channels,
        size=parse_size(args.size),
        epochs=args.epochs,
        rounds=args.rounds,
        batch_size=args.batch_size,
        hours=args.hours,
        pins=args.pins,
        pins_fast=args.pins_fast,
    )
    markdown = render_markdown(report)
    out = report_dir(args.out, report["machine"])
    json_path, md_path = write_report(out, args.name, report, markdown)
    print(markdown)
    tree = report["pins"]["tree"]
    if not tree["ok"]:
        print("\nThe working tree's kernel does not draw the pinned pixels:", file=sys.stderr)
        for line in tree["pixels_changed"] + tree["inputs_changed"]:
            print(f"  {line}", file=sys.stderr)
        print("Re-pin on purpose if the change is meant to: python -m bench.adversarial --update",
              file=sys.stderr)  # fmt: skip
    print(f"\nwrote {json_path}, {md_path}")
    return 0 if tree["ok"] else 1
