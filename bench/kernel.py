"""``psgvlm bench kernel``: the CPU render kernel of a git revision against the working tree.

Separate benchmark runs on a shared VM swing by ±15 %, more than most kernel changes
gain. This benchmark compiles both kernels in one process (``engine/raster/kernels.py``
as of ``--base``, read with ``git show``, and the working tree's), renders the same
synthetic epochs with each in alternating rounds on one thread, and reports the median
of the per-round time ratios beside each kernel's times. It also checks that both give
the same bytes. Layout and column tables come from the working tree's
``engine.raster.layout`` and from each revision's own ``column_tables``.

    psgvlm bench kernel --base HEAD~1 --rounds 40 --out bench/out
"""

from __future__ import annotations

import argparse
import inspect
import subprocess
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .render import load_bench_epochs
from .report import BenchError, machine_info, markdown_table, summarize, write_report

__all__ = ["kernel_source", "load_kernel_module", "bench_kernel", "add_arguments", "run"]

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
) -> dict[str, Any]:
    """Time the kernel of ``base`` (A) and of the working tree (B) in alternating rounds.

    Returns
    -------
    dict
        ``settings``, ``machine``, ``same_bytes``, per-kernel ``us_per_image`` summaries,
        and ``ratio`` (A time / B time per round: > 1 means the working tree is faster).
    """
    import numba

    from engine.pipeline import write_synthetic_nights
    from engine.raster import RenderSpec

    if rounds < 1 or epochs < 1 or batch_size < 1:
        raise BenchError("--rounds, --epochs and --batch-size must be positive")
    with tempfile.TemporaryDirectory(prefix="psgvlm-bench-kernel-") as tmp:
        nights = write_synthetic_nights(Path(tmp) / "nights", 1, hours)
        signals, roles, names = load_bench_epochs(nights, channels, epochs)
    width, height = size
    spec = RenderSpec.for_roles(roles, width=width, height=height, labels=names)
    numba.set_num_threads(1)
    kernels = {
        "A": _caller(
            load_kernel_module(kernel_source(base), "kernels_base"), spec, signals.shape[2]
        ),
        "B": _caller(
            load_kernel_module(kernel_source(None), "kernels_tree"), spec, signals.shape[2]
        ),
    }
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
            "channels": channels,
            "size": f"{width}x{height}",
            "epochs": epochs,
            "rounds": rounds,
            "batch_size": batch_size,
        },  # fmt: skip
        "machine": machine_info(),
        "same_bytes": same,
        "us_per_image": {key: summarize(values) for key, values in seconds.items()},
        "ratio": summarize(ratio.tolist()),
    }


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a short markdown page."""
    settings, times, ratio = report["settings"], report["us_per_image"], report["ratio"]
    rows = [
        [label, f"{times[key]['min']:.1f}", f"{times[key]['median']:.1f}"]
        for key, label in (("A", f"A: `{settings['base']}`"), ("B", "B: working tree"))
    ]
    return "\n".join(
        [
            "# Render kernel A/B (one process, alternating rounds, 1 thread)",
            "",
            f"{settings['channels']} channels, {settings['size']}, {settings['epochs']} epochs "
            f"per round in batches of {settings['batch_size']}, {settings['rounds']} rounds; "
            f"git {report['machine'].get('git_commit') or '?'}.",
            "",
            markdown_table(["kernel", "min µs/image", "median µs/image"], rows),
            "",
            f"**A / B time per round: median {ratio['median']:.3f}** "
            f"(min {ratio['min']:.3f}, max {ratio['max']:.3f}; > 1: the working tree is faster).",
            f"Same bytes: {'yes' if report['same_bytes'] else '**NO**'}.",
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
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="report directory")


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
    )
    markdown = render_markdown(report)
    json_path, md_path = write_report(args.out, "kernel", report, markdown)
    print(markdown)
    print(f"\nwrote {json_path}, {md_path}")
    return 0 if report["same_bytes"] else 1
